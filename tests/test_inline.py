"""
Synchronous nodes that have proven cheap run on the event loop
(:mod:`remotemedia.inline`): the policy fed durations (no clock, no sleeps),
and pipelines whose nodes report which thread ran each call.
"""

from __future__ import annotations

import threading
import time

import pytest

from remotemedia import Node, Pipeline, PipelineError
from remotemedia.inline import MAX_PROOF, PROOF_CALLS, InlinePolicy, threaded

# -- the policy, fed durations ----------------------------------------------------------


def test_a_method_goes_inline_after_its_proof_of_cheap_calls():
    policy = InlinePolicy(budget=0.001, proof=4)
    for _ in range(3):
        policy.record(0.0001)
        assert not policy.inline
    policy.record(0.0001)
    assert policy.inline


def test_a_slow_call_breaks_the_streak():
    policy = InlinePolicy(budget=0.001, proof=4)
    for took in (0.0001, 0.0001, 0.0001, 0.01, 0.0001, 0.0001, 0.0001):
        policy.record(took)
    assert not policy.inline
    policy.record(0.0001)
    assert policy.inline


def test_one_slow_inline_call_sends_it_back_and_doubles_the_proof():
    policy = InlinePolicy(budget=0.001, proof=2)
    policy.record(0.0001)
    policy.record(0.0001)
    assert policy.inline
    policy.record(0.05)
    assert not policy.inline and policy.demotions == 1 and policy.proof == 4
    for _ in range(3):
        policy.record(0.0001)
    assert not policy.inline
    policy.record(0.0001)
    assert policy.inline


def test_the_proof_is_capped():
    policy = InlinePolicy(budget=0.001, proof=PROOF_CALLS)
    for _ in range(20):
        policy.inline = True
        policy.record(1.0)
    assert policy.proof == MAX_PROOF


# -- in a pipeline: which thread ran each call -----------------------------------------


class Where(Node):
    """Records the thread of each call; slow (a blocking wait) from call ``slow_from`` on."""

    def __init__(self, slow_from: int | None = None, name: str = "Where") -> None:
        super().__init__(name)
        self.slow_from = slow_from
        self.threads: list[int] = []

    def process(self, data):
        if self.slow_from is not None and len(self.threads) >= self.slow_from:
            time.sleep(0.01)  # the node's own work turning slow, not the test waiting
        self.threads.append(threading.get_ident())
        return data


def on_loop(node: Where, loop_thread: int) -> list[bool]:
    return [ident == loop_thread for ident in node.threads]


async def test_a_cheap_sync_node_ends_up_on_the_loop_and_in_order():
    node = Where()
    pipeline = Pipeline("cheap").add_node(node)
    loop_thread = threading.get_ident()
    outputs = await pipeline.run_async(range(2000))
    assert outputs == list(range(2000))
    placed = on_loop(node, loop_thread)
    assert not any(placed[:PROOF_CALLS])  # it starts in a thread, where it is timed
    assert any(placed)  # and moves to the loop once proven cheap
    (stats,) = pipeline.last_run_stats
    assert stats.inline_calls == sum(placed) and stats.inputs == 2000


async def test_a_node_that_turns_slow_goes_back_to_a_thread():
    node = Where(slow_from=400)
    pipeline = Pipeline("turns").add_node(node)
    loop_thread = threading.get_ident()
    await pipeline.run_async(range(450))
    placed = on_loop(node, loop_thread)
    assert any(placed[:400])
    # At most one slow call ran on the loop: the one that showed it is slow.
    assert sum(placed[400:]) <= 1
    assert not any(placed[402:])


async def test_a_blocking_node_never_runs_on_the_loop():
    node = Where(slow_from=0)
    await Pipeline("blocking").add_node(node).run_async(range(60))
    assert not any(on_loop(node, threading.get_ident()))


async def test_a_method_marked_threaded_never_runs_on_the_loop():
    class Marked(Where):
        @threaded
        def process(self, data):
            self.threads.append(threading.get_ident())
            return data

    node = Marked()
    await Pipeline("marked").add_node(node).run_async(range(500))
    assert not any(on_loop(node, threading.get_ident()))


async def test_an_inline_node_fails_like_a_threaded_one_and_is_cleaned_up():
    class Fails(Node):
        def __init__(self) -> None:
            super().__init__("Fails")
            self.calls = 0
            self.cleaned = False

        def process(self, data):
            self.calls += 1
            if data == 1500:
                raise ValueError("bad item")
            return data

        def cleanup(self):
            self.cleaned = True

    node = Fails()
    with pytest.raises(PipelineError, match="'Fails' failed.*bad item") as info:
        await Pipeline("fails").add_node(Where()).add_node(node).run_async(range(3000))
    assert info.value.node_index == 1 and isinstance(info.value.__cause__, ValueError)
    assert node.cleaned and node.calls == 1501
