"""
:class:`remotemedia.SessionPool`, end to end: a real signaling server and
executors (one per execution mode) as subprocesses; the signaling server's
count of open sessions (``/healthz``) says whether a run opened a new one.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, config_for, mode_config, running_cluster, running_executor, wait_until

from remotemedia import Node, Pipeline, PipelineError, RemoteExecutionError, RemoteObjectExecutionNode, SessionPool
from remotemedia import default_pool


def here() -> int:
    """The pid of the process this runs in, as the machine sees it (a worker in a PID namespace is told it)."""
    return int(os.environ.get("REMOTEMEDIA_WORKER_PID", os.getpid()))


class Count(Node):
    """Stateful: numbers its inputs, and says where it ran; leaves a marker when cleaned up."""

    def __init__(self, marker: str | None = None) -> None:
        super().__init__()
        self.seen = 0
        self.marker = marker

    def process(self, data):
        self.seen += 1
        if data == "fail":
            raise ValueError("cannot take 'fail'")
        return (data, self.seen)

    def cleanup(self) -> None:
        if self.marker:
            Path(self.marker).write_text(f"cleaned up after {self.seen}")


class Pid(Node):
    def process(self, data):
        return here()


class Repeat(Node):
    """Yields each frame many times."""

    is_streaming = True

    async def stream(self, frames):
        async for frame in frames:
            for _ in range(1000):
                yield frame


class SlowCleanup(Node):
    def process(self, data):
        return data

    def cleanup(self) -> None:
        import time

        time.sleep(1.0)  # keeps the release in flight while the test borrows


def sessions(server) -> int:
    return server.health()["sessions"]


def pipeline_of(server, mode, pool, marker=None) -> Pipeline:
    node = RemoteObjectExecutionNode(Count(marker), mode_config(server, TOKEN, mode), name="count")
    return Pipeline("pooled", session_pool=pool).add_node(node)


async def test_a_pooled_second_run_reuses_the_session_and_gives_identical_outputs(cluster, mode, tmp_path):
    marker = tmp_path / "cleanup.txt"
    pool = SessionPool()
    pipeline = pipeline_of(cluster, mode, pool, str(marker))
    try:
        first = await pipeline.run_async(["a", "b", "c"])
        # The run's object was released (its cleanup() ran there); the session stays open.
        assert marker.read_text() == "cleaned up after 3"
        assert sessions(cluster) == 1 and len(pool) == 1
        marker.unlink()
        second = await pipeline.run_async(["a", "b", "c"])
        assert second == first == [("a", 1), ("b", 2), ("c", 3)]  # a fresh object, not the first run's
        assert marker.read_text() == "cleaned up after 3"
        assert sessions(cluster) == 1  # no new session on the executor
        assert (pool.opened, pool.reused) == (1, 1)
        assert pipeline.last_run_stats[0].location == f"exec-{mode}"
    finally:
        await pool.close()
    await wait_until(lambda: sessions(cluster) == 0, timeout=10)


async def test_a_failing_run_on_a_pooled_session_fails_as_on_a_fresh_one_and_the_session_is_lent_again(cluster, tmp_path):
    marker = tmp_path / "cleanup.txt"
    async with SessionPool() as pool:
        pipeline = pipeline_of(cluster, "inprocess", pool, str(marker))
        unpooled = pipeline_of(cluster, "inprocess", None)
        errors = []
        for run in (unpooled, pipeline):
            with pytest.raises(PipelineError) as info:
                await run.run_async(["a", "fail", "b"])
            errors.append(info.value)
        assert str(errors[0]) == str(errors[1])
        assert isinstance(errors[1].__cause__, RemoteExecutionError)
        assert marker.read_text() == "cleaned up after 2"  # cleanup ran
        assert await pipeline.run_async(["x"]) == [("x", 1)]
        assert (pool.opened, pool.reused) == (1, 1)
    await wait_until(lambda: sessions(cluster) == 0, timeout=10)


async def test_a_session_is_never_lent_to_two_borrowers_at_once_unless_shared(cluster):
    config = config_for(cluster)
    async with SessionPool() as pool:
        async with pool.session(config) as one, pool.session(config) as two:
            assert one is not two
        async with pool.session(config, shared=True) as one, pool.session(config, shared=True) as two:
            assert one is two
        assert len(pool) == 2 and pool.opened == 2


async def test_user_loans_release_their_objects_and_keep_the_session(cluster, tmp_path):
    marker = tmp_path / "cleanup.txt"
    config = config_for(cluster)
    async with SessionPool() as pool:
        async with pool.session(config) as client:
            proxy = await client.create_proxy(Count(str(marker)))
            assert await proxy.process("a") == ("a", 1)
        assert marker.read_text() == "cleaned up after 1"
        async with pool.session(config) as again:
            assert again is client and again.usable


async def test_a_session_being_given_back_is_not_lent_meanwhile(cluster):
    config = config_for(cluster)
    async with SessionPool() as pool:
        client = await pool.acquire(config)
        await client.create_proxy(SlowCleanup())
        giving = asyncio.ensure_future(pool.give_back(client))
        await asyncio.sleep(0)  # give_back now waits for the executor's cleanup()
        assert not giving.done()
        other = await pool.acquire(config)
        assert other is not client
        await giving
        await pool.give_back(other)
        assert len(pool) == 2


async def test_a_stream_left_with_break_does_not_cost_the_session(cluster):
    config = config_for(cluster)
    async with SessionPool() as pool:
        async with pool.session(config) as client:
            proxy = await client.create_proxy(Repeat())
            async for frame in proxy.stream(iter([7])):
                assert frame == 7
                break
        async with pool.session(config) as again:
            assert again is client
            proxy = await again.create_proxy(Count())
            assert await proxy.process("a") == ("a", 1)


async def test_a_session_that_comes_back_closed_or_busy_is_not_lent_again(cluster):
    config = config_for(cluster)
    async with SessionPool() as pool:
        async with pool.session(config) as client:
            await client.close()  # as if its connection were lost
        assert len(pool) == 0
        async with pool.session(config) as fresh:
            assert fresh is not client and fresh.usable


async def test_an_idle_session_whose_executor_died_is_dropped_and_replaced():
    with running_cluster(TOKEN, ("--name", "exec-first", "--mode", "inprocess")) as (server, (first,)):
        config = config_for(server, reconnect=False, heartbeat_interval=0.5, heartbeat_timeout=2.0)
        pipeline = Pipeline("health").add_node(RemoteObjectExecutionNode(Pid(), config))
        async with SessionPool() as pool:
            pipeline.session_pool = pool
            async with pool.session(config) as kept:
                assert kept.executor == "exec-first"
            with running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "exec-second"):
                first.kill()
                await wait_until(lambda: not kept.usable, timeout=15)  # its heartbeat noticed
                await pipeline.run_async([1])
                assert pipeline.last_run_stats[0].location == "exec-second"
                assert pool.opened == 2 and pool.reused == 0 and len(pool) == 1  # the dead one was dropped


async def test_the_pool_keeps_at_most_max_sessions(cluster):
    config = config_for(cluster)
    async with SessionPool(max_sessions=1) as pool:
        one = await pool.acquire(config)
        two = await pool.acquire(config)  # full, none idle: lent, but not kept
        assert len(pool) == 1
        await pool.give_back(two)
        assert not two.usable  # closed
        await pool.give_back(one)
        assert len(pool) == 1
        other = await pool.acquire(config_for(cluster, timeout=20.0))  # another config: the idle one makes room
        assert len(pool) == 1 and not one.usable
        await pool.give_back(other)


async def test_idle_sessions_are_closed_after_the_ttl(cluster):
    pool = SessionPool(idle_ttl=0.3)
    pipeline = Pipeline("ttl", session_pool=pool).add_node(RemoteObjectExecutionNode(Pid(), config_for(cluster)))
    await pipeline.run_async([1])
    await wait_until(lambda: len(pool) == 0, timeout=10)
    await wait_until(lambda: sessions(cluster) == 0, timeout=10)


def test_sessions_never_cross_event_loops(cluster):
    pool = SessionPool()
    pipeline = Pipeline("loops", session_pool=pool).add_node(RemoteObjectExecutionNode(Pid(), config_for(cluster)))
    # run() owns its loop: it closes that loop's sessions when it returns.
    pipeline.run([1])
    pipeline.run([1])
    assert len(pool) == 0 and pool.opened == 2
    # A loop that ends without closing the pool: the next loop gets a session of its own.
    asyncio.run(pipeline.run_async([1]))
    assert len(pool) == 1
    asyncio.run(pipeline.run_async([1]))
    assert pool.opened == 4 and pool.reused == 0
    asyncio.run(pool.close())
    assert len(pool) == 0  # the dead loop's session was forgotten, the live one closed


def test_pipelines_pool_only_when_told_to():
    assert Pipeline("p").session_pool is None
    assert default_pool() is default_pool()
    with pytest.raises(ValueError, match="max_sessions"):
        SessionPool(max_sessions=0)
    with pytest.raises(TypeError, match="session_pool"):
        Pipeline("p", session_pool=object())
