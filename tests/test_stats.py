"""
Per-node statistics of a run (``pipeline.last_run_stats``), with local nodes.

The latency tests replace the scheduler's clock by one that only the nodes
move, so each sample has an exact expected value and no test depends on how
fast the machine is. Remote nodes' locations are tested end to end in
test_pipeline_remote.py.
"""

from __future__ import annotations

import contextlib
import types

import pytest

from remotemedia import Node, Pipeline, PipelineError
from remotemedia import scheduler
from remotemedia.stats import LOCAL, NodeStats


class Clock:
    """A clock that advances only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(scheduler, "time", types.SimpleNamespace(perf_counter=clock))
    return clock


class Slow(Node):
    """Takes ``seconds`` of the fake clock per input; drops odd inputs."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    async def process(self, data: int) -> int | None:
        self.clock.now += self.seconds
        return None if data % 2 else data


class Twice(Node):
    """Streaming: one second after reading an input, yields it; half a second later, again."""

    is_streaming = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    async def stream(self, frames):
        async for frame in frames:
            self.clock.now += 1.0
            yield frame
            self.clock.now += 0.5
            yield frame


class Ticks(Node):
    """A source: an output every two seconds."""

    is_streaming = True

    def __init__(self, clock: Clock, count: int) -> None:
        super().__init__()
        self.clock, self.count = clock, count

    async def stream(self, frames):
        for i in range(self.count):
            self.clock.now += 2.0
            yield i


def test_process_latency_is_the_duration_of_each_call(clock):
    pipeline = Pipeline("p").add_node(Slow(clock, 0.25))
    assert pipeline.run(range(6)) == [0, 2, 4]
    [stats] = pipeline.last_run_stats
    assert (stats.name, stats.index, stats.location, stats.remote) == ("Slow", 0, LOCAL, False)
    assert (stats.inputs, stats.outputs, stats.samples) == (6, 3, 6)  # None is no output
    assert stats.mean_latency == stats.max_latency == 0.25
    assert stats.total_latency == 1.5


def test_streaming_latency_runs_from_the_input_read_or_the_previous_output(clock):
    pipeline = Pipeline("s").add_node(Twice(clock))
    assert pipeline.run([1, 2]) == [1, 1, 2, 2]
    [stats] = pipeline.last_run_stats
    assert (stats.inputs, stats.outputs, stats.samples) == (2, 4, 4)
    # Per input: 1 s from reading it to the first output, 0.5 s to the second.
    assert stats.total_latency == 3.0
    assert stats.max_latency == 1.0


def test_a_source_latency_is_the_time_between_its_outputs(clock):
    pipeline = Pipeline("t").add_node(Ticks(clock, 3)).add_node(Slow(clock, 0.0))
    assert pipeline.run() == [0, 2]
    source, after = pipeline.last_run_stats
    assert (source.inputs, source.outputs, source.samples) == (0, 3, 3)
    assert source.mean_latency == source.max_latency == 2.0
    assert (after.name, after.index, after.inputs, after.outputs) == ("Slow", 1, 3, 2)


class Id(Node):
    def process(self, data):
        return data


def test_no_stats_before_the_first_run_and_new_ones_for_each_run():
    pipeline = Pipeline("again").add_node(Id())
    assert pipeline.last_run_stats is None
    pipeline.run([1, 2])
    first = pipeline.last_run_stats
    pipeline.run([1])
    assert first[0].inputs == 2
    assert pipeline.last_run_stats[0].inputs == 1


async def test_stats_are_live_while_the_run_goes_on():
    pipeline = Pipeline("live").add_node(Id())
    seen = []
    async with contextlib.aclosing(pipeline.stream(range(3))) as outputs:
        async for _ in outputs:
            seen.append(pipeline.last_run_stats[0].outputs)
    assert seen[0] >= 1 and seen[-1] == 3


def test_a_failed_run_keeps_what_was_counted():
    class FailOn2(Node):
        def process(self, data):
            if data == 2:
                raise ValueError("two")
            return data

    pipeline = Pipeline("failed").add_node(FailOn2())
    with pytest.raises(PipelineError):
        pipeline.run(range(5))
    [stats] = pipeline.last_run_stats
    assert stats.inputs == 3 and stats.outputs == 2 and stats.samples == 2


def test_node_stats_summary_line():
    stats = NodeStats("tts", 1, location="exec-a", remote=True, inputs=4, outputs=4)
    assert stats.mean_latency is None
    assert str(stats) == "tts  remote (exec-a)  4 in  4 out  no latency sample"
    stats.add_latency(0.002)
    stats.add_latency(0.004)
    assert stats.samples == 2 and stats.max_latency == 0.004
    assert str(stats) == "tts  remote (exec-a)  4 in  4 out  mean 3.00 ms  max 4.00 ms"
    assert str(NodeStats("gain", 0)).startswith("gain  local  0 in  0 out")
