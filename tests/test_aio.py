"""remotemedia.aio: Tasks, in_thread, Latest, Backoff (no network, no sleeps)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from remotemedia.aio import Backoff, Latest, Tasks, in_thread


async def test_tasks_are_kept_until_they_end_and_close_cancels_the_rest():
    tasks = Tasks()
    release = asyncio.Event()

    async def quick():
        return 1

    async def blocked():
        await release.wait()

    done = tasks.spawn(quick(), "quick")
    stuck = tasks.spawn(blocked(), "stuck")
    assert len(tasks) == 2 and stuck.get_name() == "stuck"
    assert await done == 1
    await asyncio.sleep(0)  # the done callback runs
    assert list(tasks) == [stuck]
    await tasks.close()
    assert stuck.cancelled() and len(tasks) == 0


async def test_a_failed_task_is_dropped_and_its_exception_retrieved(caplog):
    tasks = Tasks()

    async def fails():
        raise ValueError("boom")

    task = tasks.spawn(fails())
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)
    assert len(tasks) == 0
    del task  # asyncio would log "exception was never retrieved" here if nobody had
    assert "never retrieved" not in caplog.text


async def test_tasks_wait_lets_quick_ones_finish():
    tasks = Tasks()
    event = asyncio.Event()

    async def waits():
        await event.wait()

    task = tasks.spawn(waits())
    event.set()
    await tasks.wait(5)
    assert task.done() and not task.cancelled()


async def test_in_thread_runs_off_the_loop_with_the_callers_context():
    var = contextvars.ContextVar("var")
    var.set("mine")
    loop_thread = threading.get_ident()
    thread, value = await in_thread(lambda: (threading.get_ident(), var.get()))
    assert thread != loop_thread and value == "mine"


async def test_in_thread_uses_the_pool_it_is_given():
    with ThreadPoolExecutor(1, thread_name_prefix="given") as pool:
        name = await in_thread(lambda: threading.current_thread().name, threads=pool)
    assert name.startswith("given")
    assert await in_thread(pow, 2, 10) == 1024


async def test_latest_keeps_only_the_newest_item():
    latest: Latest[int] = Latest()
    for i in range(5):
        latest.put(i)
    assert latest.waiting and latest.replaced == 4
    assert await latest.get() == 4
    assert not latest.waiting


async def test_latest_get_waits_for_a_put():
    latest: Latest[str] = Latest()
    getting = asyncio.ensure_future(latest.get())
    await asyncio.sleep(0)
    assert not getting.done()
    latest.put("frame")
    assert await getting == "frame"


async def test_latest_close_ends_after_the_waiting_item():
    latest: Latest[int] = Latest()
    latest.put(1)
    latest.close()
    latest.put(2)  # ignored once closed
    assert [item async for item in latest] == [1]
    with pytest.raises(StopAsyncIteration):
        await latest.get()


async def test_latest_close_wakes_a_waiting_get():
    latest: Latest[int] = Latest()
    getting = asyncio.ensure_future(latest.get())
    await asyncio.sleep(0)
    latest.close()
    with pytest.raises(StopAsyncIteration):
        await getting


def test_backoff_doubles_up_to_its_bound():
    backoff = Backoff(0.1, 0.5)
    assert [round(backoff.next(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.delay == 0.1


def test_backoff_jitter_shortens_each_wait_by_at_most_its_fraction():
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(1.0, 8.0, jitter=0.5, random=lambda: next(draws))
    assert [backoff.next() for _ in range(3)] == [1.0, 1.0, 3.0]  # 1*1, 2*0.5, 4*0.75
    assert backoff.delay == 8.0


@pytest.mark.parametrize("first, most, jitter", [(0, 1, 0), (2, 1, 0), (1, 2, 1.5)])
def test_backoff_refuses_nonsense(first, most, jitter):
    with pytest.raises(ValueError):
        Backoff(first, most, jitter=jitter)
