"""
Remote video effect: camera-like frames go to an executor over a WebRTC video
track (VP8), an effect runs there, and the processed frames come back over a
track, in real time.

    pattern 640x480 @ 30 fps (local) -> edges or negative (remote, over tracks) -> measured here

The effect is a plain node instance (``EdgeNode`` or ``InvertNode``, which
only have ``process()``), wrapped as a streaming remote node: each frame it
gets over the track goes through its ``process()`` on the executor. At the
end it prints where the effect ran, the frame rate that came back, and the
latency of each frame (arrival here minus its capture time).

    python examples/remote_video_effect.py --serve                   # starts the embedded server itself
    python examples/remote_video_effect.py --host 10.0.0.12 --port 50052 --effect invert
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import numpy as np
from _embedded import add_server_arguments, server_config, run_main

from remotemedia import Node, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, VideoFrame
from remotemedia.nodes import EdgeNode, InvertNode, VideoPatternNode

EFFECTS = {"edges": EdgeNode, "invert": InvertNode}


class Departures(Node):
    """Notes when each frame leaves for the executor (by its timestamp, which the tracks keep)."""

    def __init__(self) -> None:
        super().__init__("Departures")
        self.sent: dict[float, float] = {}

    async def process(self, frame: VideoFrame) -> VideoFrame:
        self.sent[round(frame.timestamp, 3)] = time.perf_counter()
        return frame


class Arrivals(Node):
    """Notes when each processed frame comes back: its latency is the time since it left."""

    def __init__(self, departures: Departures) -> None:
        super().__init__("Arrivals")
        self.departures = departures
        self.latencies: list[float] = []
        self.times: list[float] = []

    async def process(self, frame: VideoFrame) -> VideoFrame:
        now = time.perf_counter()
        self.times.append(now)
        sent = self.departures.sent.get(round(frame.timestamp, 3))
        if sent is not None:
            self.latencies.append(now - sent)
        return frame


async def run(config: RemoteExecutorConfig, args: argparse.Namespace) -> None:
    source = VideoPatternNode(args.width, args.height, fps=args.fps, duration_s=args.duration, realtime=True)
    effect = RemoteObjectExecutionNode(
        EFFECTS[args.effect](), config, name=f"Remote{args.effect.title()}", node_config={"streaming": True}
    )
    departures = Departures()
    arrivals = Arrivals(departures)
    pipeline = Pipeline("video").add_node(source).add_node(departures).add_node(effect).add_node(arrivals)
    started = time.perf_counter()
    frames = await pipeline.run_async()
    elapsed = time.perf_counter() - started
    stats = {s.name: s for s in pipeline.last_run_stats}
    where = stats[effect.name].location
    span = arrivals.times[-1] - arrivals.times[0] if arrivals.times else 0.0
    latencies = np.array(arrivals.latencies or [float("nan")]) * 1e3
    print(f"pipeline   {pipeline!r}")
    print(f"effect     {args.effect} ran on executor {where}, frames over WebRTC video tracks (VP8)")
    print(f"frames     {len(frames)} of {round(args.duration * args.fps)} came back, {args.width}x{args.height}")
    if len(frames) > 1:
        print(f"rate       {(len(frames) - 1) / span:.1f} fps over {span:.2f} s (source paced at {args.fps:g} fps)")
        print(
            f"latency    p50 {np.percentile(latencies, 50):.1f} ms, p90 {np.percentile(latencies, 90):.1f} ms "
            f"(there and back, VP8 both ways, the effect included)"
        )
        print(
            f"last frame at {frames[-1].timestamp:.3f} s: mean pixel value {frames[-1].image.mean():.0f} of 255 "
            f"(0 is all black, 255 all white)"
        )
    print(f"total      {elapsed * 1000:.0f} ms, connecting and uploading included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--effect", choices=sorted(EFFECTS), default="edges", help="default: %(default)s")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of video (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        config = server_config(args, stack)
        asyncio.run(run(config, args))


if __name__ == "__main__":
    run_main(main)
