"""
Several signaling instances on Redis against the standalone in-memory server, in one run.

For each setup (in memory; Redis with 1, 2 and 3 instances) it starts the
real servers as subprocesses (and its own ``redis-server``), registers
``--executors`` executors spread over the instances, and measures with
``SignalingClient`` in this process:

- **pair → paired**: one pairing at a time (each ended with ``bye``), the
  client on instance 0, the executors on all of them;
- **burst**: ``--pairings`` pairings at once, from ``--clients`` connections
  spread over the instances, against executors whose capacities add up to
  exactly that: every pairing must be served, none beyond an executor's capacity;
- **relay**: one ``offer`` from a client to its executor, one way (through
  Redis pub/sub when they are on different instances).

Targets (issue 25): every pairing served and capacity never exceeded;
pair → paired p50 through Redis at most 2x in memory.

    python benchmarks/bench_redis.py [--pairings 2000] [--executors 20] [--clients 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import ServerProcess  # noqa: E402
from redislab import redis_binary, running_redis  # noqa: E402

from remotemedia.exceptions import NoExecutorAvailable  # noqa: E402
from remotemedia.signaling import SignalingClient  # noqa: E402

SDP = "v=0\r\n" + "a=candidate:1 1 udp 2130706431 192.168.1.2 50000 typ host\r\n" * 40
LIMITS = (
    "--max-connections", "10000", "--max-connections-per-address", "10000",
    "--rate-limit", "100000", "--rate-burst", "100000", "--max-sessions-per-client", "1000",
)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.2f} ms"


def p50_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


async def measure(urls: list[str], args) -> dict:
    capacity = args.pairings // args.executors
    executors = []
    for i in range(args.executors):
        signaling = await SignalingClient.connect(urls[i % len(urls)])
        await signaling.register(f"bench-{i}", capacity)
        executors.append(signaling)
    try:
        # pair -> paired, one at a time; executors see the sessions and are told bye.
        client = await SignalingClient.connect(urls[0])
        latencies = []
        for _ in range(args.sequential):
            start = time.perf_counter()
            session = await client.pair(timeout=30)
            latencies.append(time.perf_counter() - start)
            await session.close("done")
        # relay: client on instance 0, executor on the last instance when there are several.
        target = executors[len(urls) - 1]
        session = await client.pair({"executor": f"bench-{len(urls) - 1}"}, timeout=30)
        far = await target.accept(timeout=30)
        while far.id != session.id:  # earlier sessions of the sequential pairings, ended
            far = await target.accept(timeout=30)
        relays = []
        for _ in range(args.relays):
            start = time.perf_counter()
            await session.send_offer(SDP)
            await far.expect("offer", timeout=30)
            relays.append(time.perf_counter() - start)
        await session.close("done")
        await client.close()
        # Wait until every slot is free again (the byes travel through the instances).
        await asyncio.sleep(0.5)

        clients = [await SignalingClient.connect(urls[i % len(urls)]) for i in range(args.clients)]
        per_client = args.pairings // args.clients

        async def pair(signaling):
            start = time.perf_counter()
            try:
                name = (await signaling.pair(timeout=120)).executor
            except NoExecutorAvailable:
                name = None
            return name, time.perf_counter() - start

        start = time.perf_counter()
        results = await asyncio.gather(*(pair(c) for c in clients for _ in range(per_client)))
        elapsed = time.perf_counter() - start
        served = Counter(name for name, _ in results if name is not None)
        for signaling in clients:
            await signaling.close()
        return {
            "pair": p50_p95(latencies),
            "relay": p50_p95(relays),
            "burst_rate": len(results) / elapsed,
            "burst": p50_p95([t for _, t in results]),
            "served": sum(served.values()),
            "asked": len(results),
            "max_per_executor": max(served.values()) if served else 0,
            "capacity": capacity,
        }
    finally:
        for signaling in executors:
            with contextlib.suppress(Exception):
                await signaling.close()


@contextlib.contextmanager
def servers(count: int, redis_url: str | None):
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(count):
            extra = ("--redis", redis_url) if redis_url else ()
            server = ServerProcess(*LIMITS, "--log-level", "warning", *extra)
            stack.callback(server.stop)
            started.append(server)
        yield [server.url for server in started]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairings", type=int, default=2000)
    parser.add_argument("--executors", type=int, default=20)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--relays", type=int, default=500)
    args = parser.parse_args()
    rows = []
    with servers(1, None) as urls:
        rows.append(("in memory", await measure(urls, args)))
    if redis_binary() is None:
        print("redis-server is not installed: only the in-memory server was measured (apt-get install redis-server)")
    else:
        for count in (1, 2, 3):
            with running_redis() as redis, servers(count, redis.url) as urls:
                rows.append((f"Redis, {count} instance{'s' if count > 1 else ''}", await measure(urls, args)))
    base = rows[0][1]["pair"][0]
    print(
        f"{args.pairings} pairings from {args.clients} connections against {args.executors} executors "
        f"(capacity {args.pairings // args.executors} each)"
    )
    print(f"{'setup':<20} {'pair p50':>10} {'p95':>10} {'x mem':>6} {'relay p50':>10} {'burst/s':>8} "
          f"{'burst p50':>10} {'served':>11} {'max/exec':>8}")
    for label, r in rows:
        print(
            f"{label:<20} {ms(r['pair'][0]):>10} {ms(r['pair'][1]):>10} {r['pair'][0] / base:6.2f} "
            f"{ms(r['relay'][0]):>10} {r['burst_rate']:8.0f} {ms(r['burst'][0]):>10} "
            f"{r['served']:>5}/{r['asked']:<5} {r['max_per_executor']:>4}/{r['capacity']}"
        )
    ok = all(r["served"] == r["asked"] and r["max_per_executor"] <= r["capacity"] for _, r in rows)
    print("targets: every pairing served, capacity never exceeded:", "met" if ok else "MISSED")
    ratios = [r["pair"][0] / base for label, r in rows[1:]]
    if ratios:
        print(f"targets: pair p50 through Redis at most 2x in memory: {'met' if max(ratios) <= 2 else 'MISSED'} "
              f"(worst {max(ratios):.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
