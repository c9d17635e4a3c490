"""
Frames per second through a chain of 10 pass-through nodes.

Reports the pipeline's throughput with synchronous nodes (each call hops to a
worker thread) and asynchronous nodes (run on the loop), each as a ratio
against a plain baseline measured in the same run: 10 bare asyncio tasks
joined by asyncio.Queue, the least any scheduler of this shape can cost.

    python benchmarks/bench_pipeline.py [--frames 3000] [--nodes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from remotemedia import AudioFrame, Node, Pipeline


class SyncPass(Node):
    def process(self, data):
        return data


class AsyncPass(Node):
    async def process(self, data):
        return data


def frames(count: int) -> list[AudioFrame]:
    samples = np.zeros((1, 960), np.float32)  # 20 ms at 48 kHz
    return [AudioFrame(samples, 48000, i * 0.02) for i in range(count)]


async def baseline(inputs: list[AudioFrame], nodes: int) -> float:
    """10 plain tasks and queues, no framework."""
    done = object()
    queues = [asyncio.Queue(8) for _ in range(nodes + 1)]

    async def stage(inbox, outbox):
        while (item := await inbox.get()) is not done:
            await outbox.put(item)
        await outbox.put(done)

    async def feed():
        for item in inputs:
            await queues[0].put(item)
        await queues[0].put(done)

    started = time.perf_counter()
    tasks = [asyncio.create_task(feed())]
    tasks += [asyncio.create_task(stage(queues[i], queues[i + 1])) for i in range(nodes)]
    count = 0
    while await queues[-1].get() is not done:
        count += 1
    await asyncio.gather(*tasks)
    assert count == len(inputs)
    return count / (time.perf_counter() - started)


async def pipeline_fps(inputs: list[AudioFrame], nodes: int, node_type: type) -> float:
    pipeline = Pipeline("bench")
    for _ in range(nodes):
        pipeline.add_node(node_type())
    started = time.perf_counter()
    outputs = await pipeline.run_async(inputs)
    assert len(outputs) == len(inputs)
    return len(outputs) / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description="pipeline throughput")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--nodes", type=int, default=10)
    args = parser.parse_args()
    inputs = frames(args.frames)

    base = max([await baseline(inputs, args.nodes) for _ in range(3)])
    async_fps = max([await pipeline_fps(inputs, args.nodes, AsyncPass) for _ in range(3)])
    sync_fps = max([await pipeline_fps(inputs, args.nodes, SyncPass) for _ in range(3)])

    print(f"{args.frames} frames through {args.nodes} pass-through nodes (best of 3)")
    print(f"  baseline (bare asyncio tasks + queues) {base:10.0f} frames/s")
    print(f"  pipeline, async nodes                  {async_fps:10.0f} frames/s  "
          f"ratio {async_fps / base:.2f}")
    print(f"  pipeline, sync nodes (worker threads)  {sync_fps:10.0f} frames/s  "
          f"ratio {sync_fps / base:.2f}")
    print(f"  real-time headroom at 50 frames/s (20 ms audio): "
          f"{sync_fps / 50:.0f}x with sync nodes")


if __name__ == "__main__":
    asyncio.run(main())
