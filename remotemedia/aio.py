"""
Small asyncio tools the whole code base shares, each written once:

- :class:`Tasks`: background tasks kept referenced until they end (asyncio
  holds only a weak reference to a task: one nobody keeps may be collected
  mid-flight), and cancelled and awaited at teardown;
- :func:`in_thread`: sync code run off the event loop, in the default
  thread pool or a given one, with the caller's context variables (what
  :func:`asyncio.to_thread` does, but also for a dedicated pool, and as a
  future, so a caller may shield it);
- :class:`Latest`: a queue of one item where a newer item replaces the one
  still waiting ("latest frame wins": real-time video never builds a backlog);
- :class:`Backoff`: the delays between retries, doubling up to a bound, with
  optional jitter (so the executors of a restarted server do not all come
  back at the same instant).

A session's own worker thread (:mod:`executor.worker`) stays apart: it is
there to keep one thread's state (a model, a CUDA context) for a session,
which a pool does not promise.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import random
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable, Generic, Iterator, TypeVar

__all__ = ["Tasks", "in_thread", "Latest", "Backoff"]

T = TypeVar("T")
_EMPTY: Any = object()


class Tasks:
    """
    Background tasks, each referenced until it ends.

    ``spawn`` starts one; :meth:`close` cancels those still running and
    waits for them. A task's exception is retrieved when it ends (it was
    reported where it was raised, or is not worth reporting): asyncio logs
    no "exception was never retrieved" for it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future] = set()

    def spawn(self, coro: Awaitable[Any], name: str | None = None) -> asyncio.Future:
        """Run ``coro`` in a task kept until it ends."""
        task = asyncio.ensure_future(coro)
        if name is not None and isinstance(task, asyncio.Task):
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    def cancel(self) -> None:
        """Cancel every task still running (without waiting)."""
        for task in list(self._tasks):
            task.cancel()

    async def wait(self, timeout: float | None = None) -> None:
        """Wait, at most ``timeout`` seconds, for the running tasks to end by themselves."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def close(self) -> None:
        """Cancel every task still running and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Future]:
        return iter(list(self._tasks))


def in_thread(func: Callable[..., T], /, *args: Any, threads: Executor | None = None) -> asyncio.Future:
    """
    ``func(*args)`` run in a thread of ``threads`` (the loop's default pool
    when ``None``), with the caller's context variables; await the future
    for its result. Cancelling the future does not stop the thread.
    """
    call = functools.partial(contextvars.copy_context().run, func, *args)
    return asyncio.get_running_loop().run_in_executor(threads, call)


class Latest(Generic[T]):
    """
    A queue of one item where :meth:`put` replaces an item still waiting.

    :meth:`get` waits for an item; after :meth:`close` (and once the item
    waiting is taken) it raises :exc:`StopAsyncIteration`, which also ends
    ``async for item in latest``.
    """

    def __init__(self) -> None:
        self._item: Any = _EMPTY
        self._ready = asyncio.Event()
        self.closed = False
        #: Items replaced by a newer one before they were taken.
        self.replaced = 0

    def put(self, item: T) -> None:
        """Offer ``item``; an item still waiting is dropped (nothing happens once closed)."""
        if self.closed:
            return
        if self._item is not _EMPTY:
            self.replaced += 1
        self._item = item
        self._ready.set()

    @property
    def waiting(self) -> bool:
        """Whether an item waits to be taken."""
        return self._item is not _EMPTY

    def close(self) -> None:
        """No more items: :meth:`get` ends once the waiting one is taken; wakes a waiting :meth:`get`."""
        self.closed = True
        self._ready.set()

    async def get(self) -> T:
        """The latest item; :exc:`StopAsyncIteration` once closed and empty."""
        while self._item is _EMPTY:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        item, self._item = self._item, _EMPTY
        return item

    def __aiter__(self) -> Latest[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()


class Backoff:
    """
    Delays between retries: ``first``, then twice the last, at most ``most``
    seconds. With ``jitter`` (0 to 1), each wait is the delay times a random
    factor from ``1 - jitter`` to 1.
    """

    def __init__(self, first: float, most: float, *, jitter: float = 0.0, random: Callable[[], float] = random.random) -> None:
        if not 0 < first <= most:
            raise ValueError(f"backoff needs 0 < first <= most, not first={first!r}, most={most!r}")
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter is a fraction from 0 to 1, not {jitter!r}")
        self.first, self.most, self.jitter = first, most, jitter
        self._random = random
        #: The next delay, before jitter.
        self.delay = first

    def next(self) -> float:
        """The wait before the next attempt (doubling the one after)."""
        wait = self.delay * (1 - self.jitter * self._random())
        self.delay = min(2 * self.delay, self.most)
        return wait

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self.delay = self.first
