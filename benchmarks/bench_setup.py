"""
Session set-up and call latency in ``process`` mode, against ``inprocess``
mode in the same run, and what each protection of executor/isolation.py
costs a worker's start.

- **protections**: a worker process started, confined and answering its
  first request, with each protection added in turn, against a plain worker
  (no confinement) started the same way; then with all of them, forked by
  the fork server (executor/forkserver.py) instead of booted;
- **concurrent set-up**: ``--concurrent`` clients (default 25) enter
  ``RemoteProxyClient`` and ``create_proxy`` at once; p50 and p90 of the
  time each took, process mode against inprocess mode; target: process mode
  p50 under 1.5 s (absolute, reported in the notes);
- **call latency under load**: ``--sessions`` (default 10, 25, 50) sessions
  open, each calling ``echo`` back to back; p50 and p99 of a call, process
  mode against inprocess mode.

    python benchmarks/bench_setup.py [--concurrent 25] [--sessions 10,25,50] [--calls 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import running_executor, running_server  # noqa: E402
from report import Report, percentile  # noqa: E402

from executor.dispatch import Limits  # noqa: E402
from executor.isolation import Confinement  # noqa: E402
from executor.process import WorkerProcess  # noqa: E402
from remotemedia import RemoteExecutorConfig, RemoteProxyClient  # noqa: E402
from remotemedia.rpc import Kind, RPCProtocol  # noqa: E402

# Each protection added to the ones before it.
STEPS = [("nodump",), ("nodump", "cgroup"), ("nodump", "cgroup", "user"), ("nodump", "cgroup", "user", "namespaces")]


class Echo:
    def echo(self, value):
        return value


async def worker_start(confinement: Confinement | None) -> float:
    """Seconds from starting a worker to its first reply (an error for a call to no object)."""
    replied = asyncio.Event()

    async def on_reply(data: bytes) -> None:
        replied.set()

    start = time.perf_counter()
    worker = WorkerProcess(on_reply, lambda why: replied.set(), confinement)
    await worker.start()
    worker.configure("bench", 1 << 20, 1 << 20, Limits(memory_limit=confinement.memory_limit if confinement else None))
    worker.send(RPCProtocol(1 << 20, compress=False).encode(Kind.CALL, 1, [99, "echo", [], {}, 0, None]))
    await asyncio.wait_for(replied.wait(), 60)
    elapsed = time.perf_counter() - start
    await worker.close(5)
    return elapsed


async def lease_cost(report: Report, count: int = 50) -> None:
    """The executor's own share of confining a worker: a uid, a cgroup with its limit, a home; and their removal."""
    confinement = Confinement.probe(500)
    try:
        start = time.perf_counter()
        for _ in range(count):
            await confinement.lease().release()
        each = (time.perf_counter() - start) / count
    finally:
        confinement.close()
    report.note(f"a lease ({', '.join(confinement.active)}) and its release cost the executor {each * 1e3:.2f} ms")


async def protections(report: Report, repeats: int) -> None:
    await lease_cost(report)
    plain = [await worker_start(None) for _ in range(repeats)]
    for step in STEPS:
        confinement = Confinement.probe(500, wanted=step)
        try:
            if confinement.missing.keys() & set(step):
                report.note(f"protections {'+'.join(step)}: not measured, missing here ({confinement.missing})")
                continue
            samples = [await worker_start(confinement) for _ in range(repeats)]
            report.add(f"worker start to first reply, {'+'.join(step)}", ours=statistics.median(samples),
                       baseline=statistics.median(plain), unit="s", against="a plain worker")
            if step == STEPS[-1]:
                await confinement.start_spawner()
                if confinement.spawner is not None:
                    forked = [await worker_start(confinement) for _ in range(repeats)]
                    report.add("worker start to first reply, all protections, forked", ours=statistics.median(forked),
                               baseline=statistics.median(plain), unit="s", against="a plain worker")
        finally:
            await confinement.stop_spawner()
            confinement.close()


def config(server, mode: str) -> RemoteExecutorConfig:
    return RemoteExecutorConfig(host="127.0.0.1", port=server.port, auth_token=None, timeout=120,
                                heartbeat_timeout=60, requirements={"executor": f"bench-{mode}"})


async def open_session(server, mode: str, stack) -> tuple[float, object]:
    start = time.perf_counter()
    client = RemoteProxyClient(config(server, mode))
    await client.__aenter__()
    stack.append(client)
    remote = await client.create_proxy(Echo())
    return time.perf_counter() - start, remote


async def close_all(clients: list) -> None:
    await asyncio.gather(*(client.__aexit__(None, None, None) for client in clients), return_exceptions=True)
    clients.clear()


async def concurrent_setups(server, mode: str, count: int) -> list[float]:
    clients: list = []
    try:
        results = await asyncio.gather(*(open_session(server, mode, clients) for _ in range(count)))
        return [elapsed for elapsed, _ in results]
    finally:
        await close_all(clients)


async def latency(server, mode: str, sessions: int, calls: int) -> list[float]:
    clients: list = []
    try:
        remotes = []
        for _ in range(0, sessions, 10):  # opened ten at a time: the set-up is measured above
            remotes += [remote for _, remote in await asyncio.gather(
                *(open_session(server, mode, clients) for _ in range(min(10, sessions - len(remotes)))))]
        samples: list[float] = []

        async def caller(remote) -> None:
            for _ in range(3):
                await remote.echo(b"x" * 16)
            for _ in range(calls):
                start = time.perf_counter()
                await remote.echo(b"x" * 16)
                samples.append(time.perf_counter() - start)

        await asyncio.gather(*(caller(remote) for remote in remotes))
        return samples
    finally:
        await close_all(clients)


async def main(concurrent: int, sessions: list[int], calls: int, repeats: int) -> None:
    report = Report("setup")
    await protections(report, repeats)
    most = max([concurrent, *sessions]) + 2
    with running_server() as server, running_executor(
        server.url, "--name", "bench-process", "--mode", "process", "--max-sessions", str(most), "--log-level", "warning"
    ) as process_executor, running_executor(
        server.url, "--name", "bench-inprocess", "--mode", "inprocess", "--max-sessions", str(most), "--log-level", "warning"
    ):
        for line in process_executor.log().splitlines():
            if "isolation: no " in line:
                report.note(f"process-mode executor: {line.split(': ', 1)[1]}")
        setups = {mode: await concurrent_setups(server, mode, concurrent) for mode in ("inprocess", "process")}
        for q, name in ((0.5, "p50"), (0.9, "p90")):
            report.add(f"{concurrent} concurrent set-ups, {name}", ours=percentile(setups["process"], q),
                       baseline=percentile(setups["inprocess"], q), unit="s", against="inprocess mode")
        p50 = percentile(setups["process"], 0.5)
        report.note(f"process mode, {concurrent} concurrent set-ups: p50 {p50:.2f} s (target: under 1.5 s: "
                    f"{'met' if p50 < 1.5 else 'missed'})")
        for count in sessions:
            samples = {mode: await latency(server, mode, count, calls) for mode in ("inprocess", "process")}
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                report.add(f"call latency at {count} sessions, {name}", ours=percentile(samples["process"], q),
                           baseline=percentile(samples["inprocess"], q), unit="s", against="inprocess mode")
    report.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", type=int, default=25, help="clients setting up at once (default: %(default)s)")
    parser.add_argument("--sessions", default="10,25,50", help="session counts for call latency (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=50, help="calls per session (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="worker starts per protection (default: %(default)s)")
    args = parser.parse_args()
    asyncio.run(main(args.concurrent, [int(n) for n in args.sessions.split(",")], args.calls, args.repeats))
