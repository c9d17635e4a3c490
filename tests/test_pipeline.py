"""Scheduler semantics of Pipeline: order, backpressure, errors, cancellation, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, AsyncIterator

import pytest

from remotemedia import Node, Pipeline, PipelineError


# Nodes used by the tests ---------------------------------------------------


class Add(Node):
    """Synchronous node: runs in a worker thread."""

    def __init__(self, amount: int, name: str | None = None) -> None:
        super().__init__(name)
        self.amount = amount

    def process(self, data: int) -> int:
        return data + self.amount


class AsyncDouble(Node):
    """Asynchronous node: runs on the event loop."""

    async def process(self, data: int) -> int:
        await asyncio.sleep(0)
        return data * 2


class DropOdd(Node):
    def process(self, data: int) -> int | None:
        return None if data % 2 else data


class Repeat(Node):
    """Streaming node: yields each input twice, then a final marker after end of stream."""

    is_streaming = True

    async def stream(self, frames: AsyncIterator[int]) -> AsyncIterator[Any]:
        async for frame in frames:
            yield frame
            yield frame
        yield "end"


class Counter(Node):
    """Source node: produces 0..count-1 on its own, or forever."""

    is_streaming = True

    def __init__(self, count: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.count = count
        self.produced = 0

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[int]:
        while self.count is None or self.produced < self.count:
            self.produced += 1
            yield self.produced - 1
            await asyncio.sleep(0)


class Take(Node):
    """Streaming node that stops reading after ``n`` inputs."""

    is_streaming = True

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    async def stream(self, frames: AsyncIterator[int]) -> AsyncIterator[int]:
        async for frame in frames:
            yield frame
            self.n -= 1
            if self.n == 0:
                return


class Recorder(Node):
    """Records its lifecycle into a shared list; can fail at any step."""

    def __init__(self, name: str, log: list[str], fail_in: str | None = None,
                 fail_at: int | None = None) -> None:
        super().__init__(name)
        self.log = log
        self.fail_in = fail_in
        self.fail_at = fail_at

    def initialize(self) -> None:
        self.log.append(f"{self.name}.initialize")
        if self.fail_in == "initialize":
            raise RuntimeError("cannot load model")

    def process(self, data: int) -> int:
        self.log.append(f"{self.name}.process({data})")
        if self.fail_in == "process" and data == self.fail_at:
            raise ValueError(f"bad input {data}")
        return data

    def cleanup(self) -> None:
        self.log.append(f"{self.name}.cleanup")
        if self.fail_in == "cleanup":
            raise OSError("device busy")


async def agen(items):
    for item in items:
        yield item
        await asyncio.sleep(0)


def pending_tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# Order and data flow ---------------------------------------------------------


def test_add_node_chains_and_keeps_order():
    first, second = Add(1), AsyncDouble()
    pipeline = Pipeline("p")
    assert pipeline.add_node(first) is pipeline
    pipeline.add_node(second)
    assert pipeline.nodes == (first, second)
    assert len(pipeline) == 2


def test_run_keeps_order_through_sync_async_and_streaming_nodes():
    pipeline = (
        Pipeline("mixed")
        .add_node(Add(1))
        .add_node(AsyncDouble())
        .add_node(Add(-2))
        .add_node(Repeat())
    )
    expected = []
    for i in range(300):
        expected += [2 * (i + 1) - 2] * 2
    assert pipeline.run(range(300)) == expected + ["end"]


def test_process_returning_none_drops_the_input():
    assert Pipeline().add_node(DropOdd()).run(range(10)) == [0, 2, 4, 6, 8]


async def test_run_async_accepts_async_iterables():
    pipeline = Pipeline().add_node(Add(10))
    assert await pipeline.run_async(agen([1, 2, 3])) == [11, 12, 13]


async def test_first_streaming_node_can_be_the_source():
    pipeline = Pipeline().add_node(Counter(5)).add_node(Add(100))
    assert await pipeline.run_async() == [100, 101, 102, 103, 104]


async def test_end_of_stream_reaches_every_node():
    # Each Repeat emits "end" only once its input has ended; all three must appear.
    pipeline = Pipeline().add_node(Repeat()).add_node(Repeat()).add_node(Repeat())
    out = await pipeline.run_async([7])
    assert out.count(7) == 8
    assert out.count("end") == 7  # 1 + 2 + 4: every "end" is repeated downstream


async def test_stream_yields_outputs_while_the_source_is_still_producing():
    got_first = asyncio.Event()

    async def source():
        yield 1
        # The source only continues once the consumer has seen the first output.
        await asyncio.wait_for(got_first.wait(), 10)
        yield 2

    outputs = []
    async with contextlib.aclosing(Pipeline().add_node(Add(0)).stream(source())) as stream:
        async for out in stream:
            outputs.append(out)
            got_first.set()
    assert outputs == [1, 2]


def test_duck_typed_objects_are_nodes():
    class Upper:
        def process(self, text: str) -> str:
            return text.upper()

    assert Pipeline().add_node(Upper()).run(["a", "b"]) == ["A", "B"]


async def test_a_pipeline_can_run_again_but_not_twice_at_once():
    pipeline = Pipeline("again").add_node(Add(1))
    assert await pipeline.run_async([1]) == [2]
    assert await pipeline.run_async([2]) == [3]

    started, release = asyncio.Event(), asyncio.Event()

    async def slow_source():
        started.set()
        await asyncio.wait_for(release.wait(), 10)
        yield 1

    first = asyncio.ensure_future(pipeline.run_async(slow_source()))
    await asyncio.wait_for(started.wait(), 10)
    with pytest.raises(PipelineError, match="already running"):
        await pipeline.run_async([1])
    release.set()
    assert await asyncio.wait_for(first, 10) == [2]


# Bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("thing", [42, "text", object(), lambda x: x])
def test_adding_something_that_is_not_a_node_raises_type_error(thing):
    with pytest.raises(TypeError, match=r"process\(data\)"):
        Pipeline().add_node(thing)


def test_adding_a_node_class_instead_of_an_instance_says_so():
    with pytest.raises(TypeError, match=r"Add\(\)"):
        Pipeline().add_node(Add)


def test_node_subclass_without_process_is_refused():
    class Empty(Node):
        pass

    with pytest.raises(TypeError, match="not a node"):
        Pipeline().add_node(Empty())


def test_streaming_node_with_coroutine_stream_is_refused():
    class Wrong(Node):
        is_streaming = True

        async def stream(self, frames):
            return frames

    with pytest.raises(TypeError, match="async generator"):
        Pipeline().add_node(Wrong())


def test_streaming_node_with_sync_generator_stream_is_refused():
    class Wrong(Node):
        is_streaming = True

        def stream(self, frames):
            yield from frames

    with pytest.raises(TypeError, match="async generator"):
        Pipeline().add_node(Wrong())


def test_same_instance_twice_is_refused():
    node = Add(1)
    pipeline = Pipeline().add_node(node)
    with pytest.raises(ValueError, match="already in pipeline"):
        pipeline.add_node(node)


def test_running_an_empty_pipeline_raises_pipeline_error():
    with pytest.raises(PipelineError, match="no nodes"):
        Pipeline("empty").run([1])


def test_no_source_and_no_source_node_raises_pipeline_error():
    with pytest.raises(PipelineError, match="no source"):
        Pipeline().add_node(Add(1)).run()


@pytest.mark.parametrize("source", ["abc", b"abc", 5, {"a": 1}])
def test_bad_sources_raise_type_error(source):
    with pytest.raises(TypeError, match=r"\[item\]"):
        Pipeline().add_node(Add(1)).run(source)


async def test_run_inside_an_event_loop_points_to_run_async():
    with pytest.raises(RuntimeError, match="run_async"):
        Pipeline().add_node(Add(1)).run([1])


# Errors ----------------------------------------------------------------------------


class FailingSync(Node):
    def process(self, data):
        if data == 3:
            raise ValueError("bad frame 3")
        return data


class FailingAsync(Node):
    async def process(self, data):
        if data == 3:
            raise ValueError("bad frame 3")
        return data


class FailingStream(Node):
    is_streaming = True

    async def stream(self, frames):
        async for data in frames:
            if data == 3:
                raise ValueError("bad frame 3")
            yield data


@pytest.mark.parametrize("failing", [FailingSync, FailingAsync, FailingStream])
async def test_node_exception_surfaces_as_pipeline_error_naming_the_node(failing):
    before = threading.active_count()
    pipeline = Pipeline("errors").add_node(Add(0)).add_node(failing(name="Broken")).add_node(Add(0))
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async(range(1000))
    error = info.value
    assert error.node_name == "Broken"
    assert error.node_index == 1
    assert "Broken" in str(error) and "bad frame 3" in str(error)
    assert isinstance(error.__cause__, ValueError)
    # Nothing is left behind: no task, no worker thread.
    assert pending_tasks() == set()
    assert threading.active_count() == before


async def test_failing_source_raises_pipeline_error_with_cause():
    async def source():
        yield 1
        raise ConnectionError("camera unplugged")

    with pytest.raises(PipelineError, match="source") as info:
        await Pipeline().add_node(Add(0)).run_async(source())
    assert isinstance(info.value.__cause__, ConnectionError)
    assert info.value.node_name is None


async def test_initialize_runs_before_the_first_frame_and_cleanup_after_the_last():
    log: list[str] = []
    pipeline = Pipeline().add_node(Recorder("a", log)).add_node(Recorder("b", log))
    await pipeline.run_async([1, 2])
    inits = {"a.initialize", "b.initialize"}
    assert set(log[:2]) == inits
    assert log[-2:] == ["b.cleanup", "a.cleanup"]
    assert sorted(log[2:-2]) == ["a.process(1)", "a.process(2)", "b.process(1)", "b.process(2)"]


async def test_cleanup_runs_for_every_node_when_one_fails():
    log: list[str] = []
    pipeline = (
        Pipeline()
        .add_node(Recorder("a", log))
        .add_node(Recorder("b", log, fail_in="process", fail_at=2))
        .add_node(Recorder("c", log))
    )
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async(range(100))
    assert info.value.node_name == "b"
    assert [e for e in log if e.endswith("cleanup")] == ["c.cleanup", "b.cleanup", "a.cleanup"]


async def test_failed_initialize_stops_before_any_frame_and_cleans_up_the_others():
    log: list[str] = []
    pipeline = (
        Pipeline()
        .add_node(Recorder("a", log))
        .add_node(Recorder("model", log, fail_in="initialize"))
        .add_node(Recorder("c", log))
    )
    with pytest.raises(PipelineError, match="initialize") as info:
        await pipeline.run_async([1, 2, 3])
    assert info.value.node_name == "model"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not any("process" in e for e in log)
    # A node whose initialize() failed is not cleaned up (as with __exit__ after a failed __enter__).
    assert sorted(e for e in log if e.endswith("cleanup")) == ["a.cleanup", "c.cleanup"]


async def test_failed_initialize_wins_over_a_failing_cleanup():
    log: list[str] = []
    pipeline = (
        Pipeline()
        .add_node(Recorder("a", log, fail_in="cleanup"))
        .add_node(Recorder("model", log, fail_in="initialize"))
    )
    with pytest.raises(PipelineError, match="initialize") as info:
        await pipeline.run_async([1])
    assert info.value.node_name == "model"
    assert "a.cleanup" in log


async def test_failing_cleanup_is_reported_after_a_successful_run():
    log: list[str] = []
    pipeline = Pipeline().add_node(Recorder("a", log)).add_node(Recorder("b", log, fail_in="cleanup"))
    with pytest.raises(PipelineError, match="cleanup") as info:
        await pipeline.run_async([1])
    assert info.value.node_name == "b"
    assert isinstance(info.value.__cause__, OSError)
    assert "a.cleanup" in log  # the others still ran


async def test_first_error_wins_over_a_later_cleanup_error():
    log: list[str] = []
    pipeline = Pipeline().add_node(Recorder("a", log, fail_in="cleanup")).add_node(
        Recorder("b", log, fail_in="process", fail_at=1)
    )
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async([1])
    assert info.value.node_name == "b"


# Cancellation and early stop -----------------------------------------------------------


async def test_cancelling_a_run_stops_every_task_and_runs_cleanup():
    log: list[str] = []
    seen = asyncio.Event()

    class Signal(Node):
        async def process(self, data):
            seen.set()
            return data

    before = threading.active_count()
    pipeline = Pipeline().add_node(Counter()).add_node(Recorder("r", log)).add_node(Signal())
    task = asyncio.ensure_future(pipeline.run_async())
    await asyncio.wait_for(seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log[-1] == "r.cleanup"
    assert pending_tasks() == set()
    assert threading.active_count() == before


async def test_leaving_stream_early_stops_an_endless_source():
    counter = Counter()
    log: list[str] = []
    pipeline = Pipeline().add_node(counter).add_node(Recorder("r", log))
    async with contextlib.aclosing(pipeline.stream()) as stream:
        async for out in stream:
            if out == 20:
                break
    assert log[-1] == "r.cleanup"
    assert pending_tasks() == set()  # nothing keeps producing after the run
    # The source ran ahead by at most what the channels hold (3 of 8 items).
    assert counter.produced <= 21 + 3 * 8 + 3


async def test_a_streaming_node_that_stops_reading_stops_the_nodes_above_it():
    counter = Counter()  # endless
    out = await Pipeline().add_node(counter).add_node(Add(0)).add_node(Take(5)).run_async()
    assert out == [0, 1, 2, 3, 4]
    # The close travelled up: the source stopped within a few channel capacities.
    assert counter.produced < 5 + 3 * 8 + 10


# Backpressure and threads ------------------------------------------------------------------


async def test_a_slow_node_bounds_the_items_in_flight():
    queue_size = 4
    produced = consumed = 0
    max_in_flight = 0

    def source():
        nonlocal produced, max_in_flight
        while True:
            produced += 1
            max_in_flight = max(max_in_flight, produced - consumed)
            yield produced

    class Slow(Node):
        async def process(self, data):
            for _ in range(20):  # much slower than the source: yields the loop 20 times
                await asyncio.sleep(0)
            return data

    pipeline = Pipeline("slow", queue_size=queue_size).add_node(Add(0)).add_node(Slow())
    async with contextlib.aclosing(pipeline.stream(source())) as stream:
        async for _ in stream:
            consumed += 1
            if consumed == 200:
                break
    # 3 channels of queue_size, plus one item in the hands of the feeder and of each node.
    bound = 3 * queue_size + 3
    assert max_in_flight <= bound
    assert produced <= 200 + bound


async def test_sync_process_runs_off_the_event_loop():
    loop = asyncio.get_running_loop()
    loop_thread = threading.current_thread()

    class Blocking(Node):
        def process(self, data):
            # Only succeeds if the event loop is free while this method blocks.
            answered = threading.Event()
            loop.call_soon_threadsafe(answered.set)
            assert answered.wait(10), "the event loop was blocked by process()"
            return threading.current_thread()

    class OnLoop(Node):
        async def process(self, data):
            return threading.current_thread()

    threads = await Pipeline().add_node(Blocking()).run_async([1, 2])
    assert all(t is not loop_thread for t in threads)
    assert await Pipeline().add_node(OnLoop()).run_async([1]) == [loop_thread]


async def test_async_initialize_and_cleanup_are_awaited():
    log: list[str] = []

    class AsyncLifecycle(Node):
        async def initialize(self):
            await asyncio.sleep(0)
            log.append("initialize")

        def process(self, data):
            return data

        async def cleanup(self):
            await asyncio.sleep(0)
            log.append("cleanup")

    await Pipeline().add_node(AsyncLifecycle()).run_async([1])
    assert log == ["initialize", "cleanup"]


async def test_cancelling_during_initialize_cleans_up_the_nodes_that_initialized():
    log: list[str] = []
    ready, loading = asyncio.Event(), asyncio.Event()

    class Quick(Node):
        async def initialize(self):
            log.append("quick.initialize")
            ready.set()

        def process(self, data):
            return data

        async def cleanup(self):
            log.append("quick.cleanup")

    class SlowModel(Node):
        async def initialize(self):
            loading.set()
            await asyncio.Event().wait()  # never finishes loading

        def process(self, data):
            return data

        def cleanup(self):
            log.append("slow.cleanup")

    pipeline = Pipeline().add_node(Quick()).add_node(SlowModel())
    task = asyncio.ensure_future(pipeline.run_async([1]))
    await asyncio.wait_for(asyncio.gather(ready.wait(), loading.wait()), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["quick.initialize", "quick.cleanup"]
    assert pending_tasks() == set()


async def test_a_sync_initialize_that_completes_after_cancellation_is_cleaned_up():
    log: list[str] = []
    loop = asyncio.get_running_loop()
    loading, release = asyncio.Event(), threading.Event()

    class BlockingLoad(Node):
        def initialize(self):
            loop.call_soon_threadsafe(loading.set)
            assert release.wait(10)
            log.append("initialize")

        def process(self, data):
            return data

        def cleanup(self):
            log.append("cleanup")

    task = asyncio.ensure_future(Pipeline().add_node(BlockingLoad()).run_async([1]))
    await asyncio.wait_for(loading.wait(), 10)
    task.cancel()
    release.set()  # the thread finishes loading after the run was cancelled
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert log == ["initialize", "cleanup"]
