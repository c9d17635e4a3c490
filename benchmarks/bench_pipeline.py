"""
Frames per second through a chain of 10 pass-through nodes.

Reports the pipeline's throughput with synchronous nodes (threaded until
proven cheap, then on the loop: remotemedia.inline), synchronous nodes kept
in threads (``@threaded``, the old path), and asynchronous nodes, each as a
ratio against a plain baseline measured in the same run: 10 bare asyncio
tasks joined by asyncio.Queue, the least any scheduler of this shape can
cost. With Pipecat installed (``pip install 'remotemedia[bench]'``), the same
workload through 10 pass-through Pipecat ``FrameProcessor``s too. Last, a
loop-lag probe: the longest the event loop stalled while a slow sync node
(10 ms a call) ran, against the same probe on an idle loop.

    python benchmarks/bench_pipeline.py [--frames 3000] [--nodes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from remotemedia import AudioFrame, Node, Pipeline
from remotemedia.inline import threaded


class SyncPass(Node):
    def process(self, data):
        return data


class AsyncPass(Node):
    async def process(self, data):
        return data


class ThreadedPass(Node):
    @threaded
    def process(self, data):
        return data


class SlowSync(Node):
    """10 ms of work a call, which must never run on the loop."""

    def process(self, data):
        time.sleep(0.01)
        return data


async def pipecat_fps(inputs: list[AudioFrame], nodes: int) -> float | None:
    """The same frames through ``nodes`` pass-through Pipecat processors, or ``None`` without Pipecat."""
    try:
        from pipecat.frames.frames import EndFrame, InputAudioRawFrame
        from pipecat.pipeline.pipeline import Pipeline as PipecatPipeline
        from pipecat.pipeline.runner import PipelineRunner
        from pipecat.pipeline.task import PipelineTask
        from pipecat.processors.frame_processor import FrameProcessor
    except ImportError:
        return None

    class Pass(FrameProcessor):
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class Count(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                self.count += 1
            await self.push_frame(frame, direction)

    counter = Count()
    task = PipelineTask(PipecatPipeline([*(Pass() for _ in range(nodes)), counter]))
    pcm = (inputs[0].samples[0] * 32767).astype(np.int16).tobytes()
    frames = [InputAudioRawFrame(audio=pcm, sample_rate=inputs[0].sample_rate, num_channels=1) for _ in inputs]
    started = time.perf_counter()
    await task.queue_frames([*frames, EndFrame()])
    await PipelineRunner(handle_sigint=False).run(task)
    assert counter.count == len(inputs), counter.count
    return len(inputs) / (time.perf_counter() - started)


async def max_loop_lag(during) -> float:
    """The longest the loop took to wake a 1 ms timer while ``during`` ran, in seconds."""
    worst = 0.0
    done = False

    async def probe() -> None:
        nonlocal worst
        while not done:
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - asked - 0.001)

    prober = asyncio.create_task(probe())
    try:
        await during
    finally:
        done = True
        await prober
    return worst


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
    threaded_fps = max([await pipeline_fps(inputs, args.nodes, ThreadedPass) for _ in range(3)])
    pipecat = [await pipecat_fps(inputs, args.nodes) for _ in range(3)]

    print(f"{args.frames} frames through {args.nodes} pass-through nodes (best of 3)")
    print(f"  baseline (bare asyncio tasks + queues)   {base:10.0f} frames/s")
    print(f"  pipeline, async nodes                    {async_fps:10.0f} frames/s  ratio {async_fps / base:.2f}")
    print(f"  pipeline, sync nodes                     {sync_fps:10.0f} frames/s  ratio {sync_fps / base:.2f}"
          f"  ({sync_fps / async_fps:.2f}x async nodes)")
    print(f"  pipeline, sync nodes kept in threads     {threaded_fps:10.0f} frames/s  ratio {threaded_fps / base:.2f}")
    if pipecat[0] is not None:
        best = max(pipecat)
        print(f"  Pipecat, async processors                {best:10.0f} frames/s  ratio {best / base:.2f}"
              f"  (sync nodes: {sync_fps / best:.1f}x Pipecat)")
    else:
        print("  Pipecat: not installed (pip install 'remotemedia[bench]' to compare)")

    idle = await max_loop_lag(asyncio.sleep(1.0))
    slow = Pipeline("slow").add_node(SlowSync())
    busy = await max_loop_lag(slow.run_async(inputs[:100]))
    print(f"  loop lag, idle loop                      {idle * 1e3:10.2f} ms")
    print(f"  loop lag while a 10 ms sync node runs    {busy * 1e3:10.2f} ms  "
          f"({slow.last_run_stats[0].inline_calls} of its calls on the loop)")

if __name__ == "__main__":
    asyncio.run(main())
