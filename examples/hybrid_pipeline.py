"""
Hybrid pipeline demo: local and remote nodes in one pipeline (the
specification's section 7, with the built-in audio nodes).

    tone (local) -> resample to 16 kHz (remote, streaming) -> -6 dB (remote) -> 20 ms chunks (local)

The two remote nodes are ordinary node instances wrapped in
``RemoteObjectExecutionNode``; they have equal configs, so they share one
session (one peer connection) with the executor. At the end it prints, per
node, where it ran and its latency (``pipeline.last_run_stats``).

    python -m remotemedia serve &                 # the embedded server, on localhost:50052
    python examples/hybrid_pipeline.py            # connects to localhost:50052
    python examples/hybrid_pipeline.py --serve    # starts the embedded server itself, then stops it
    python examples/hybrid_pipeline.py --host 10.0.0.12 --port 50052 --token "$SECRET"

``--transport datachannel`` carries the streaming node's audio losslessly on
the data channel instead of on a WebRTC media track (Opus).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from _embedded import add_server_arguments, server_config, run_main

from remotemedia import Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode
from remotemedia.nodes import ChunkerNode, GainNode, ResampleNode, ToneNode


def build(config: RemoteExecutorConfig, args: argparse.Namespace) -> Pipeline:
    """The pipeline: where each node runs is decided by how its instance is added."""
    return (
        Pipeline("hybrid")
        .add_node(ToneNode(args.frequency, args.duration, sample_rate=44100))
        .add_node(
            RemoteObjectExecutionNode(
                ResampleNode(16000),
                config,
                name="RemoteResample",
                node_config={"streaming": True, "transport": args.transport},
            )
        )
        .add_node(RemoteObjectExecutionNode(GainNode(-6.0), config, name="RemoteGain"))
        .add_node(ChunkerNode(0.02))
    )


def report(pipeline: Pipeline, frames: list, elapsed: float) -> None:
    print(f"pipeline   {pipeline!r}")
    print(f"{'node':<16} {'ran':<32} {'in':>5} {'out':>5} {'mean latency':>13} {'max':>10}")
    for stats in pipeline.last_run_stats:
        where = f"remote ({stats.location})" if stats.remote else stats.location
        mean = f"{stats.mean_latency * 1e3:.2f} ms" if stats.mean_latency is not None else "-"
        print(
            f"{stats.name:<16} {where:<32} {stats.inputs:>5} {stats.outputs:>5} "
            f"{mean:>13} {stats.max_latency * 1e3:>7.2f} ms"
        )
    signal = np.concatenate([frame.samples[0] for frame in frames])
    rate = frames[0].sample_rate
    peak_hz = np.argmax(np.abs(np.fft.rfft(signal))) * rate / len(signal)
    level = 20 * np.log10(np.max(np.abs(signal)))
    print(f"output     {len(frames)} frames, {len(signal) / rate:.2f} s at {rate} Hz")
    print(f"signal     peak at {peak_hz:.0f} Hz, level {level:.1f} dBFS")
    print(f"total      {elapsed * 1000:.0f} ms, connecting and uploading included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--transport", choices=["tracks", "datachannel"], default="tracks",
                        help="how the remote streaming node's audio travels (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of tone")
    parser.add_argument("--frequency", type=float, default=440.0, help="tone in Hz")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        config = server_config(args, stack)
        pipeline = build(config, args)
        started = time.perf_counter()
        frames = pipeline.run()
        report(pipeline, frames, time.perf_counter() - started)


if __name__ == "__main__":
    run_main(main)
