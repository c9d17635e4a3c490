"""
Remote execution against raw aiortc, in the same run.

Starts a real signaling server and a real executor as subprocesses, and the
raw baseline's echo peer (``raw_aiortc.py --peer``) as another, then measures
on loopback:

- **call round trip**: ``await remote.echo(x)`` with a 16-byte payload,
  against a raw data-channel echo of the same payload (p50 and p99);
  target: at most 1.3x. A sync method runs on the session's worker thread,
  off the event loop, and that hop alone costs about 0.1 ms here (two thread
  wake-ups); an async method is awaited on the loop, so both are reported;
- **setup**: entering ``RemoteProxyClient`` (websocket, pairing, offer and
  answer relayed, ICE, DTLS, SCTP, ticket) plus ``create_proxy``, against a
  raw peer connection whose SDP goes over a pipe (no target: ours does more);
- **throughput**: 1 MiB numpy arrays sent one call after another, against
  raw one-way bulk transfer in 64 KiB messages; target: at least 0.8x.

Rounds alternate between the two sides so that both see the same machine.

    python benchmarks/bench_remote.py [--calls 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import running_executor, running_server  # noqa: E402
from raw_aiortc import RawEchoPeer, bulk_throughput, echo_round_trips, setup_times  # noqa: E402
from report import Report, percentile  # noqa: E402

from remotemedia import RemoteExecutorConfig, RemoteProxyClient  # noqa: E402

MIB = 1024 * 1024


class Echo:
    """The remote object: echoes (a sync and an async method), and swallows arrays."""

    def echo(self, value):
        return value

    async def echo_async(self, value):
        return value

    def sink(self, array) -> int:
        return int(array.nbytes)


async def our_round_trips(method, payload: bytes, count: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await method(payload)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await method(payload)
        samples.append(time.perf_counter() - start)
    return samples


async def thread_hop(count: int = 2000) -> float:
    """Median seconds of one hand-off to a worker thread and back, back to back (threads kept busy)."""
    sys.path.insert(0, str(HERE.parent))
    from executor.worker import Worker

    worker = Worker("hop")
    samples = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await worker.run(int)
            samples.append(time.perf_counter() - start)
    finally:
        worker.stop()
    return statistics.median(samples)


async def our_setup(config: RemoteExecutorConfig) -> float:
    start = time.perf_counter()
    async with RemoteProxyClient(config) as client:
        await client.create_proxy(Echo())
        elapsed = time.perf_counter() - start
    return elapsed


async def our_throughput(remote, total: int) -> float:
    array = np.random.default_rng(0).integers(0, 255, MIB, dtype=np.uint8)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        sent += await remote.sink(array)
    return sent / (time.perf_counter() - start)


async def main(calls: int, rounds: int, setups: int, bulk_mib: int) -> None:
    results: dict[str, list] = {
        k: [] for k in ("raw_rtt", "our_rtt", "our_rtt_async", "raw_setup", "our_setup", "raw_bulk", "our_bulk")
    }
    with running_server() as server, running_executor(server.url, "--max-sessions", "4"):
        config = RemoteExecutorConfig(host="127.0.0.1", port=server.port, auth_token=None, timeout=60)
        async with RawEchoPeer() as peer, RemoteProxyClient(config) as client:
            _pc, channel = await peer.connect()
            remote = await client.create_proxy(Echo())
            # A fresh SCTP association can stall once for its 1 s minimum RTO: warm both up.
            await bulk_throughput(channel, MIB)
            await our_throughput(remote, MIB)
            payload = bytes(16)
            for _ in range(rounds):
                results["raw_rtt"] += await echo_round_trips(channel, payload, calls)
                results["our_rtt"] += await our_round_trips(remote.echo, payload, calls)
                results["our_rtt_async"] += await our_round_trips(remote.echo_async, payload, calls)
                results["raw_setup"] += await setup_times(peer, setups)
                results["our_setup"] += [await our_setup(config) for _ in range(setups)]
                results["raw_bulk"].append(await bulk_throughput(channel, bulk_mib * MIB))
                results["our_bulk"].append(await our_throughput(remote, bulk_mib * MIB))
    hop = await thread_hop()
    report = Report("remote")
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        report.add(f"call round trip {name}, sync method", ours=percentile(results["our_rtt"], q),
                   baseline=percentile(results["raw_rtt"], q), unit="s", target=1.3)
        report.add(f"call round trip {name}, async method", ours=percentile(results["our_rtt_async"], q),
                   baseline=percentile(results["raw_rtt"], q), unit="s", target=1.3)
    report.add("setup: enter + create_proxy (median)", ours=statistics.median(results["our_setup"]),
               baseline=statistics.median(results["raw_setup"]), unit="s")
    report.add(f"throughput, 1 MiB arrays ({bulk_mib} MiB)", ours=statistics.median(results["our_bulk"]) / 1e6,
               baseline=statistics.median(results["raw_bulk"]) / 1e6, unit="MB/s", target=0.8)
    extra = percentile(results["our_rtt"], 0.5) - percentile(results["our_rtt_async"], 0.5)
    report.note(
        f"a sync method runs on the session's worker thread: {extra * 1e3:.3f} ms more than an async one at p50; "
        f"the same hand-off in a tight loop, threads never idle, costs {hop * 1e3:.3f} ms, so the difference "
        "is waking two idle threads (futex, then the event loop's epoll), which only busy-waiting threads would avoid"
    )
    report.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="round trips per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--setups", type=int, default=3, help="connection setups per round (default: %(default)s)")
    parser.add_argument("--bulk-mib", type=int, default=16, help="MiB per throughput run (default: %(default)s)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds, args.setups, args.bulk_mib))
