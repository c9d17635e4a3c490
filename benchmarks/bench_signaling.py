"""
Signaling server: pairing time, relay latency, and a burst of pairings.

Starts the real server as a subprocess and measures, with raw websocket
clients in this process:

- **pair → paired**: from sending ``pair`` to receiving ``paired`` (each
  pairing ended with ``bye``), and the same through ``SignalingClient.pair``;
- **relay**: one ``offer`` from a client to its executor, one way (both ends
  live in this process, so one clock times both);
- **burst**: 200 clients connecting and pairing at once against 10 executors
  of capacity 20; every pairing must be served, 20 per executor.

The baseline, measured in the same run, is a plain aiohttp websocket relay in
its own process (this script started with ``--relay-server``): it forwards
each message from one socket to the other with no parsing. The ratio says
what the protocol's work (JSON, validation, routing) costs over moving the
bytes.

    python benchmarks/bench_signaling.py [--pairings 300] [--relays 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import running_server  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from remotemedia.signaling import SignalingClient  # noqa: E402

SDP = "v=0\r\n" + "a=candidate:1 1 udp 2130706431 192.168.1.2 50000 typ host\r\n" * 40


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.3f} ms"


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def ws(url: str):
    return connect(url, compression=None, max_size=2**22)


async def recv(sock, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(sock.recv(), timeout))


# -- measurements ----------------------------------------------------------------------


async def pair_times(url: str, count: int) -> list[float]:
    times = []
    async with ws(url) as executor, ws(url) as client:
        await executor.send(json.dumps({"type": "register", "name": "bench", "capacity": 1}))
        await recv(executor)
        for _ in range(count):
            start = time.perf_counter()
            await client.send('{"type":"pair"}')
            paired = await recv(client)
            times.append(time.perf_counter() - start)
            await recv(executor)  # session
            await client.send(json.dumps({"type": "bye", "session": paired["session"]}))
            await recv(executor)  # bye: the slot is free again
    return times


async def sdk_pair_times(url: str, count: int) -> list[float]:
    times = []
    async with await SignalingClient.connect(url) as executor, await SignalingClient.connect(url) as client:
        await executor.register("bench-sdk", capacity=1)
        for _ in range(count):
            start = time.perf_counter()
            session = await client.pair()
            times.append(time.perf_counter() - start)
            accepted = await executor.accept(timeout=10)
            await session.close()
            await accepted.recv(timeout=10)  # bye
    return times


async def relay_times(url: str, count: int) -> list[float]:
    times = []
    async with ws(url) as executor, ws(url) as client:
        await executor.send(json.dumps({"type": "register", "name": "relay", "capacity": 1}))
        await recv(executor)
        await client.send('{"type":"pair"}')
        session = (await recv(client))["session"]
        await recv(executor)
        offer = json.dumps({"type": "offer", "session": session, "sdp": SDP})
        for _ in range(count):
            start = time.perf_counter()
            await client.send(offer)
            await executor.recv()
            times.append(time.perf_counter() - start)
    return times


async def baseline_relay_times(url: str, count: int) -> list[float]:
    times = []
    async with ws(url) as a, ws(url) as b:
        await a.send("hello")  # the relay pairs its first two sockets
        await b.send("hello")
        offer = json.dumps({"type": "offer", "session": "x" * 22, "sdp": SDP})
        for _ in range(count):
            start = time.perf_counter()
            await a.send(offer)
            await b.recv()
            times.append(time.perf_counter() - start)
    return times


async def burst(url: str, health, executors: int, capacity: int, clients: int) -> tuple[float, dict, dict]:
    sockets = []
    try:
        counts = {}
        for i in range(executors):
            # Nobody reads the executors' session messages: let them queue.
            sock = await connect(url, compression=None, max_queue=None).__aenter__()
            sockets.append(sock)
            await sock.send(json.dumps({"type": "register", "name": f"burst-{i}", "capacity": capacity}))
            await recv(sock)
            counts[f"burst-{i}"] = 0

        async def one_client() -> str:
            sock = await connect(url, compression=None, open_timeout=30).__aenter__()
            sockets.append(sock)
            await sock.send('{"type":"pair"}')
            reply = await recv(sock, 30)
            assert reply["type"] == "paired", reply
            return reply["executor"]

        start = time.perf_counter()
        chosen = await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        for name in chosen:
            counts[name] += 1
        return elapsed, counts, health()
    finally:
        await asyncio.gather(*(sock.close() for sock in sockets), return_exceptions=True)


# -- the baseline relay process --------------------------------------------------------


def relay_server() -> None:
    """A plain aiohttp websocket relay: the first two sockets forward to each other."""
    from aiohttp import web

    peers: list = []

    async def handler(request):
        sock = web.WebSocketResponse(compress=False)
        await sock.prepare(request)
        peers.append(sock)
        me = len(peers) - 1
        async for msg in sock:
            other = me ^ 1
            if other < len(peers) and msg.data != "hello":
                await peers[other].send_str(msg.data)
        return sock

    async def main():
        app = web.Application()
        app.router.add_get("/ws", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"ws://127.0.0.1:{port}/ws", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(args) -> None:
    relay = subprocess.Popen(
        [sys.executable, __file__, "--relay-server"], stdout=subprocess.PIPE, text=True
    )
    try:
        baseline_url = relay.stdout.readline().strip()
        with running_server("--rate-limit", "100000", "--rate-burst", "100000", "--log-level", "warning") as server:
            # Warm both up first (imports, first connections).
            await pair_times(server.url, 20)
            await relay_times(server.url, 50)
            await baseline_relay_times(baseline_url, 50)

            pair_med, pair_p95 = summary(await pair_times(server.url, args.pairings))
            sdk_med, sdk_p95 = summary(await sdk_pair_times(server.url, args.pairings))
            relay_med, relay_p95 = summary(await relay_times(server.url, args.relays))
            base_med, base_p95 = summary(await baseline_relay_times(baseline_url, args.relays))
            elapsed, counts, health = await burst(server.url, server.health, 10, 20, 200)
    finally:
        relay.terminate()
        relay.wait(5)

    served = sum(counts.values())
    print(f"signaling server, {args.pairings} pairings and {args.relays} relays, median / p95")
    rows = [
        ("pair -> paired (raw websocket)", pair_med, pair_p95),
        ("pair -> paired (SignalingClient)", sdk_med, sdk_p95),
        (f"relay of one {len(SDP)} B offer, one way", relay_med, relay_p95),
        ("plain aiohttp relay, same message", base_med, base_p95),
    ]
    for label, med, p95 in rows:
        print(f"  {label:36} {ms(med)} / {ms(p95)}")
    print(f"  {'relay ratio (signaling / plain)':36} {relay_med / base_med:7.2f}")
    print(f"  200 clients pairing at once, 10 executors x 20: {served} served in {elapsed * 1e3:.0f} ms")
    print(f"    per executor: {sorted(set(counts.values()))}; sessions open: {health['sessions']}")
    if served != 200 or set(counts.values()) != {20}:
        raise SystemExit("FAILED: not every pairing was served evenly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pairings", type=int, default=300)
    parser.add_argument("--relays", type=int, default=1000)
    parser.add_argument("--relay-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.relay_server:
        relay_server()
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
