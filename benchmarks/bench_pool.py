"""
Session pooling: the time from ``pipeline.run()`` to the first output, for a
first and a second run of the same pipeline whose one node is a remote TTS
(``TTSNode``, the bundled Piper voice, frames on the data channel), pooled
(``Pipeline(session_pool=SessionPool())``) against unpooled (each run opens
its own session and closes it).

Starts ``python -m remotemedia serve`` (a signaling server and one executor)
as a subprocess for each execution mode, stopped at the end. Per round, a new
pipeline (a new ``TTSNode``) runs twice unpooled, then twice with a new pool;
each run is timed from the call of ``pipeline.stream()`` to its first audio
frame (pairing, the WebRTC handshake, uploading the node, its
``initialize()`` loading the voice where it is not cached, and the first
sentence's synthesis). A warm-up run before the rounds takes this process's
own imports out of the figures.

Target: the pooled second run reaches its first output in at most 10% of
the first run's time (the baseline: the unpooled first run of the same
round). The same four runs of a node that costs nothing (``Echo``) show the
set-up alone. What is left in a pooled second run is the object's upload, its
``initialize()`` finding the voice in the executor's model cache, and the
first sentence's synthesis: the floor, measured too, is the same pipeline
with the node local and its voice loaded ("local, voice loaded").

    python benchmarks/bench_pool.py [--rounds 3] [--modes process,inprocess]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import ServeProcess  # noqa: E402
from report import Report  # noqa: E402

from remotemedia import Node, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, SessionPool  # noqa: E402
from remotemedia.nodes import TTSNode  # noqa: E402


class Echo(Node):
    """The set-up alone: a node that costs nothing."""

    def process(self, data):
        return data

TOKEN = "bench-pool-token"
TEXT = "Hello there. This is a pooled session."


async def first_output(pipeline: Pipeline) -> float:
    """Seconds from starting ``pipeline`` to its first output (the run is then left, which stops it)."""
    started = time.perf_counter()
    stream = pipeline.stream([TEXT]).__aiter__()
    async with contextlib.aclosing(stream):
        await asyncio.wait_for(stream.__anext__(), 120)
        return time.perf_counter() - started


def tts_pipeline(config: RemoteExecutorConfig, pool: SessionPool | None) -> Pipeline:
    node = RemoteObjectExecutionNode(TTSNode(), config, node_config={"streaming": True, "transport": "datachannel"})
    return Pipeline("bench-pool", session_pool=pool).add_node(node)


def echo_pipeline(config: RemoteExecutorConfig, pool: SessionPool | None) -> Pipeline:
    return Pipeline("bench-pool-echo", session_pool=pool).add_node(RemoteObjectExecutionNode(Echo(), config))


async def measure(config: RemoteExecutorConfig, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}
    await first_output(tts_pipeline(config, None))  # warm-up: this process's imports
    local = Pipeline("bench-pool-local").add_node(TTSNode())
    await first_output(local)  # the voice loaded here
    figures["tts local, voice loaded"] = [await first_output(local) for _ in range(rounds)]
    for _ in range(rounds):
        for name, make in (("tts", tts_pipeline), ("echo", echo_pipeline)):
            unpooled = make(config, None)
            for label in ("unpooled first", "unpooled second"):
                figures.setdefault(f"{name} {label}", []).append(await first_output(unpooled))
            async with SessionPool() as pool:
                pooled = make(config, pool)
                for label in ("pooled first", "pooled second"):
                    figures.setdefault(f"{name} {label}", []).append(await first_output(pooled))
                if (pool.opened, pool.reused) != (1, 1):
                    raise RuntimeError(f"the pooled runs did not share one session: opened {pool.opened}, reused {pool.reused}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="process,inprocess")
    args = parser.parse_args()
    report = Report("pool")
    for mode in args.modes.split(","):
        server = ServeProcess("--token", TOKEN, "--mode", mode)
        try:
            config = RemoteExecutorConfig(host="127.0.0.1", port=server.port, auth_token=TOKEN, timeout=60)
            figures = asyncio.run(measure(config, args.rounds))
        finally:
            server.stop()
        median = {label: statistics.median(samples) for label, samples in figures.items()}
        for name in ("tts", "echo"):
            baseline = median[f"{name} unpooled first"]
            against = f"{name} unpooled first run ({mode} mode)"
            labels = ["unpooled second", "pooled first", "pooled second"] + (["local, voice loaded"] if name == "tts" else [])
            for label in labels:
                target = 0.10 if label == "pooled second" else None
                report.add(f"{mode}: {name} {label}", ours=median[f"{name} {label}"], baseline=baseline, unit="s",
                           target=target, against=against)
        report.note(f"{mode} mode, every sample (s): "
                    + "; ".join(f"{k} {', '.join(f'{v:.3f}' for v in vs)}" for k, vs in figures.items()))
    report.finish()


if __name__ == "__main__":
    main()
