"""
Remote execution against raw aiortc and against a Ray actor, in the same run.

Starts a real signaling server and two real executors as subprocesses (one in
``process`` mode, one ``inprocess``), the raw baseline's echo peer
(``raw_aiortc.py --peer``) as another, and, when Ray is installed (the
``bench`` extra: ``./run bench`` installs it, the tests never do), a local Ray
(``ray.init(num_cpus=2)``) with an actor that has the same ``echo`` method.
Then measures on loopback, round after round, each side in turn so that all
of them see the same machine:

Against raw aiortc (the data-channel lane, process mode, as before):

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

Against a Ray actor, for each execution mode and each lane (the data channel
always; the direct TCP lane when this build has it: ``RemoteExecutorConfig``
has ``lane`` and the executor ``--direct``):

- **call round trip** p50 and p99 of ``echo(64 bytes)`` (a sync method on
  both sides; Ray's is ``ray.get(actor.echo.remote(x))``); target on the
  direct lane: p50 at most 0.5x Ray's inprocess, 0.75x in process mode;
- **1 MiB echo**: a 1 MiB float64 array echoed, one call after another
  (``--echoes`` and at least half a second a round), counted as bytes both
  ways per second; target on the direct lane: at least
  Ray's rate (1.0x) in both modes;
- **upload**: one 100 MiB array (``--upload-mib`` shrinks it) to a method
  that returns its size, bytes per second (no target);
- **connect + create_proxy**: entering a new client and creating the object,
  against creating a Ray actor and its first call returning (Ray's cluster is
  already up; its ``ray.init`` is reported in a note; no target).

Arrays are random, so the codec's LZ4 compression gains nothing a real
tensor would not give. The data-channel lane must stay no slower than it was:
compare its rows with an earlier run's, and its raw-aiortc ratios.

    python benchmarks/bench_remote.py [--calls 1000] [--rounds 3] [--upload-mib 100] [--no-ray]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import TOKEN, mode_config, mode_executor, running_cluster  # noqa: E402
from raw_aiortc import RawEchoPeer, bulk_throughput, echo_round_trips, setup_times  # noqa: E402
from report import Report, percentile  # noqa: E402

from remotemedia import RemoteExecutorConfig, RemoteProxyClient  # noqa: E402

MIB = 1024 * 1024
#: The executors' modes, in the order the rows are reported.
MODES = ("inprocess", "process")
#: Room above the largest array for the message around it (call id, method, codec headers).
ENVELOPE = MIB


class Echo:
    """The remote object: echoes (a sync and an async method), and swallows arrays."""

    def echo(self, value):
        return value

    async def echo_async(self, value):
        return value

    def sink(self, array) -> int:
        return int(array.nbytes)


class RayEcho:
    """The Ray actor: :class:`Echo`'s sync methods (an async one would make Ray run it as an asyncio actor)."""

    def echo(self, value):
        return value

    def sink(self, array) -> int:
        return int(array.nbytes)


def direct_lane_available() -> bool:
    """Whether this build has the direct lane: ``RemoteExecutorConfig.lane`` and the executor's ``--direct``."""
    if "lane" not in {f.name for f in dataclasses.fields(RemoteExecutorConfig)}:
        return False
    usage = subprocess.run(
        [sys.executable, "-m", "executor", "--help"], cwd=HERE.parent, capture_output=True, text=True, timeout=60
    ).stdout
    return "--direct" in usage


def float_array(nbytes: int) -> np.ndarray:
    """Random float64s (incompressible, like a real tensor's low bits), ``nbytes`` long."""
    return np.random.default_rng(1).standard_normal(nbytes // 8)


async def our_round_trips(method, payload, count: int, warmup: int = 20) -> list[float]:
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


#: Seconds one side's 1 MiB echoes last at least: a fast lane's ``--echoes`` alone would be over in milliseconds.
ECHO_SECONDS = 0.5


async def our_echo_rate(remote, array: np.ndarray, count: int) -> float:
    """Bytes both ways per second of echoes of ``array``, one after another: ``count``, and :data:`ECHO_SECONDS`."""
    start, done = time.perf_counter(), 0
    while done < count or time.perf_counter() - start < ECHO_SECONDS:
        back = await remote.echo(array)
        done += 1
    elapsed = time.perf_counter() - start
    assert back.shape == array.shape
    return 2 * array.nbytes * done / elapsed


async def our_upload_rate(remote, array: np.ndarray) -> float:
    start = time.perf_counter()
    assert await remote.sink(array) == array.nbytes
    return array.nbytes / (time.perf_counter() - start)


class RaySide:
    """
    A local Ray and one :class:`RayEcho` actor, driven from a thread: ``ray.get``
    blocks, and the event loop must go on answering the RemoteMedia clients'
    heartbeats meanwhile. Measured inside the thread, so the hand-off is not counted.
    """

    def __init__(self) -> None:
        import logging

        import ray

        self.ray = ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        self.actor_class = ray.remote(RayEcho)
        self.actor = self.actor_class.remote()
        self.ray.get(self.actor.echo.remote(b""))
        #: Seconds from ``ray.init`` to the first actor's first call returning.
        self.init_time = time.perf_counter() - start
        self.version = ray.__version__

    def round_trips(self, payload, count: int, warmup: int = 20) -> list[float]:
        get, echo = self.ray.get, self.actor.echo
        for _ in range(warmup):
            get(echo.remote(payload))
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            get(echo.remote(payload))
            samples.append(time.perf_counter() - start)
        return samples

    def echo_rate(self, array: np.ndarray, count: int) -> float:
        start, done = time.perf_counter(), 0
        while done < count or time.perf_counter() - start < ECHO_SECONDS:
            back = self.ray.get(self.actor.echo.remote(array))
            done += 1
        elapsed = time.perf_counter() - start
        assert back.shape == array.shape
        return 2 * array.nbytes * done / elapsed

    def upload_rate(self, array: np.ndarray) -> float:
        start = time.perf_counter()
        assert self.ray.get(self.actor.sink.remote(array)) == array.nbytes
        return array.nbytes / (time.perf_counter() - start)

    def setup(self) -> float:
        start = time.perf_counter()
        actor = self.actor_class.remote()
        self.ray.get(actor.echo.remote(b""))
        elapsed = time.perf_counter() - start
        self.ray.kill(actor)
        return elapsed

    def close(self) -> None:
        self.ray.shutdown()


def start_ray(enabled: bool) -> RaySide | None:
    """A :class:`RaySide`, or ``None`` (saying why) when Ray is off or not installed."""
    if not enabled:
        print("Ray: off (--no-ray): the rows against Ray are skipped")
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        print("Ray: not installed (pip install -e '.[bench]', or ./run bench): the rows against Ray are skipped")
        return None
    return RaySide()


@dataclasses.dataclass
class Side:
    """One RemoteMedia client measured against Ray: an execution mode and a lane."""

    mode: str
    lane: str
    config: RemoteExecutorConfig
    remote: object = None
    samples: dict = dataclasses.field(default_factory=lambda: {"rtt": [], "echo": [], "upload": [], "setup": []})

    @property
    def label(self) -> str:
        return f"{self.mode}, {'direct' if self.lane == 'direct' else 'data channel'}"


async def main(args: argparse.Namespace) -> None:
    direct = direct_lane_available()
    if not direct:
        print("direct lane: not available in this build")
    lanes = ("datachannel", "direct") if direct else ("datachannel",)
    upload_bytes = args.upload_mib * MIB
    limit = max(upload_bytes, MIB) + ENVELOPE
    executor_args = ["--max-message-size", str(limit)] + (["--direct", "127.0.0.1:0"] if direct else [])
    ray_side = start_ray(args.ray)
    results: dict[str, list] = {
        k: [] for k in ("raw_rtt", "our_rtt", "our_rtt_async", "raw_setup", "our_setup", "raw_bulk", "our_bulk")
    }
    ray_samples: dict[str, list] = {"rtt": [], "echo": [], "upload": [], "setup": []}
    small, echo_array, upload_array = bytes(64), float_array(MIB), float_array(upload_bytes)
    try:
        executors = [(*mode_executor(mode), *executor_args) for mode in MODES]
        with running_cluster(TOKEN, *executors) as (server, _), contextlib.ExitStack() as stack:
            sides = []
            for mode in MODES:
                base = dataclasses.replace(mode_config(server, TOKEN, mode), max_message_size=limit, timeout=300.0)
                for lane in lanes:
                    config = dataclasses.replace(base, lane=lane) if direct else base
                    sides.append(Side(mode, lane, config))
            async with contextlib.AsyncExitStack() as clients:
                peer = await clients.enter_async_context(RawEchoPeer())
                for side in sides:
                    client = await clients.enter_async_context(RemoteProxyClient(side.config))
                    side.remote = await client.create_proxy(Echo())
                    used = getattr(client, "lane", None)
                    if side.lane == "direct" and used != "direct":
                        print(f"{side.label}: the client says its lane is {used!r}, not 'direct'")
                # The raw-aiortc rows compare with today's default: process mode, data channel.
                today = next(s for s in sides if s.mode == "process" and s.lane == "datachannel")
                _pc, channel = await peer.connect()
                # A fresh SCTP association can stall once for its 1 s minimum RTO: warm all up.
                await bulk_throughput(channel, MIB)
                for side in sides:
                    await our_throughput(side.remote, MIB)
                    await side.remote.echo(echo_array)
                if ray_side is not None:
                    await asyncio.to_thread(ray_side.echo_rate, echo_array, 0)
                payload = bytes(16)
                for round_ in range(args.rounds):
                    print(f"round {round_ + 1} of {args.rounds}", flush=True)
                    results["raw_rtt"] += await echo_round_trips(channel, payload, args.calls)
                    results["our_rtt"] += await our_round_trips(today.remote.echo, payload, args.calls)
                    results["our_rtt_async"] += await our_round_trips(today.remote.echo_async, payload, args.calls)
                    results["raw_setup"] += await setup_times(peer, args.setups)
                    results["our_setup"] += [await our_setup(today.config) for _ in range(args.setups)]
                    results["raw_bulk"].append(await bulk_throughput(channel, args.bulk_mib * MIB))
                    results["our_bulk"].append(await our_throughput(today.remote, args.bulk_mib * MIB))
                    # Against Ray: each measure on every side in turn, the order reversed every other round.
                    order = sides if round_ % 2 == 0 else sides[::-1]
                    ray_first = round_ % 2 == 1
                    uploading = round_ < args.upload_rounds
                    if ray_side is not None and ray_first:
                        await ray_round(ray_side, ray_samples, args, small, echo_array, upload_array, uploading)
                    for side in order:
                        side.samples["rtt"] += await our_round_trips(side.remote.echo, small, args.calls)
                        side.samples["echo"].append(await our_echo_rate(side.remote, echo_array, args.echoes))
                        if uploading:
                            side.samples["upload"].append(await our_upload_rate(side.remote, upload_array))
                        side.samples["setup"] += [await our_setup(side.config) for _ in range(args.setups)]
                    if ray_side is not None and not ray_first:
                        await ray_round(ray_side, ray_samples, args, small, echo_array, upload_array, uploading)
    finally:
        if ray_side is not None:
            ray_side.close()
    hop = await thread_hop()
    raw_report(results, args.bulk_mib, hop)
    if ray_side is not None:
        ray_report(sides, ray_samples, ray_side, args.upload_mib)


async def ray_round(ray_side: RaySide, samples: dict, args, small, echo_array, upload_array, uploading: bool) -> None:
    samples["rtt"] += await asyncio.to_thread(ray_side.round_trips, small, args.calls)
    samples["echo"].append(await asyncio.to_thread(ray_side.echo_rate, echo_array, args.echoes))
    if uploading:
        samples["upload"].append(await asyncio.to_thread(ray_side.upload_rate, upload_array))
    for _ in range(args.setups):
        samples["setup"].append(await asyncio.to_thread(ray_side.setup))


def raw_report(results: dict, bulk_mib: int, hop: float) -> None:
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
    report.note("these rows: process mode, data-channel lane, against raw aiortc")
    report.finish()


#: The issue's targets against Ray, on the direct lane: call round trip p50 (at most) and 1 MiB echo (at least).
RTT_TARGETS = {"inprocess": 0.5, "process": 0.75}
ECHO_TARGET = 1.0


def ray_report(sides: list[Side], ray: dict, ray_side: RaySide, upload_mib: int) -> None:
    against = f"Ray {ray_side.version} actor"
    report = Report("remote-ray")
    for side in sides:
        direct = side.lane == "direct"
        s = side.samples
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            target = RTT_TARGETS[side.mode] if direct and q == 0.5 else None
            report.add(f"64 B call {name}, {side.label}", ours=percentile(s["rtt"], q),
                       baseline=percentile(ray["rtt"], q), unit="s", target=target, against=against)
        report.add(f"1 MiB echo, {side.label}", ours=statistics.median(s["echo"]) / 1e6,
                   baseline=statistics.median(ray["echo"]) / 1e6, unit="MB/s",
                   target=ECHO_TARGET if direct else None, against=against)
        if s["upload"]:
            report.add(f"{upload_mib} MiB upload, {side.label}", ours=statistics.median(s["upload"]) / 1e6,
                       baseline=statistics.median(ray["upload"]) / 1e6, unit="MB/s", against=against)
        report.add(f"connect + create_proxy, {side.label}", ours=statistics.median(s["setup"]),
                   baseline=statistics.median(ray["setup"]), unit="s", against=against)
    report.note(f"baseline: a {against} on this machine (ray.init(num_cpus=2)), driven with ray.get")
    report.note("1 MiB echo counts bytes both ways; Ray's connect is a new actor and its first call, "
                f"with its cluster already up (ray.init and the first actor took {ray_side.init_time:.2f} s)")
    if not any(side.lane == "direct" for side in sides):
        report.note("direct lane: not available in this build (only the data channel was measured)")
    report.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="round trips per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--setups", type=int, default=2, help="connection setups per round (default: %(default)s)")
    parser.add_argument("--bulk-mib", type=int, default=8, help="MiB per throughput run (default: %(default)s)")
    parser.add_argument("--echoes", type=int, default=8, help="1 MiB echoes per round, at least (default: %(default)s)")
    parser.add_argument("--upload-mib", type=int, default=100,
                        help="MiB of the one-array upload (default: %(default)s)")
    parser.add_argument("--upload-rounds", type=int, default=1,
                        help="rounds that measure the upload, the first ones (default: %(default)s)")
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the rows against Ray")
    asyncio.run(main(parser.parse_args()))
