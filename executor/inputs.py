"""
The input side of a duplex stream: the items a client feeds a streamed call.

The remote method receives an :class:`InputStream` in place of the argument
the client streams. It is an async iterator for ``async def`` generators
and a plain iterator for sync generators, which run on the session's worker
thread and block there (never on the event loop) until the next item
arrives. Flow control is by credit: the client may have ``window`` items in
flight, and each half window the method consumes is granted back, so a slow
method slows the client's producer and neither side buffers more than a
window.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from remotemedia.rpc.calls import INPUT_WINDOW
from remotemedia.rpc.conversation import Window

__all__ = ["InputStream", "InputCancelled", "INPUT_WINDOW"]


_END = object()
_CANCELLED = object()


class InputCancelled(Exception):
    """Raised to a method reading its input stream when the client cancelled the call."""


class InputStream:
    """Items fed by the client, in order, until it signals the end (see the module docstring)."""

    def __init__(self, grant: Callable[[int], None], window: int = INPUT_WINDOW) -> None:
        self._grant = grant
        self._window = Window(window)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._ended = False

    def put(self, item: Any) -> None:
        """An item from the client; ``ValueError`` when the client sent more than its credit."""
        if self._ended:
            raise ValueError("an input arrived after the end of the input stream")
        if not self._window.receive():
            raise ValueError(f"the client sent more than its credit of {self._window.size} inputs")
        self._queue.put_nowait(item)

    def end(self) -> None:
        """The client has no more items (or the call is over): iteration ends after what is queued."""
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_END)

    def cancel(self) -> None:
        """
        The client cancelled the call: the next read raises :exc:`InputCancelled`.

        An async generator is stopped by cancelling its task anyway; a sync
        one may be blocked in ``next()`` on the worker thread, and only this
        wakes it up.
        """
        self._ended = True
        self._queue.put_nowait(_CANCELLED)

    def __aiter__(self) -> InputStream:
        return self

    async def __anext__(self) -> Any:
        item = await self._queue.get()
        if item is _END or item is _CANCELLED:
            self._queue.put_nowait(item)  # stays so for every later read
            if item is _CANCELLED:
                raise InputCancelled("the client cancelled the call")
            raise StopAsyncIteration
        grant = self._window.consume()
        if grant:
            self._grant(grant)
        return item

    def __iter__(self) -> InputStream:
        return self

    def __next__(self) -> Any:
        # Called by a sync generator on the session's worker thread: wait for the loop.
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("a sync generator consumes its input stream on the worker thread, not the loop")
        try:
            return asyncio.run_coroutine_threadsafe(self.__anext__(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def __repr__(self) -> str:
        return f"<InputStream {self._queue.qsize()} queued{' ended' if self._ended else ''}>"
