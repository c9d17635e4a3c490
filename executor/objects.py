"""
One session's remote objects: create, call, stream, release.

Sync code runs on the session's own worker thread, never on the event loop,
and one thread per session keeps each object's state free of races between
its own calls (like a node, an object sees one call at a time). Async
methods are awaited on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import traceback
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from remotemedia.exceptions import ResourceLimitError, SerializationError
from remotemedia.rpc import ErrorCode, calls
from remotemedia.serialization import loads_object

from .worker import Worker

__all__ = ["ObjectTable", "RemoteCallError", "error_body"]

logger = logging.getLogger(__name__)

_DONE = object()
#: Seconds a session's teardown waits for each object's cleanup().
CLEANUP_TIMEOUT = 5.0


class RemoteCallError(Exception):
    """A request the executor refuses (unknown object or method, wrong mode); ``code`` goes to the client."""

    def __init__(self, message: str, code: str = ErrorCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


def error_body(exc: BaseException) -> dict:
    """The ``ERROR`` body for ``exc``: code, type, message, traceback (and the missing module, if any)."""
    if isinstance(exc, RemoteCallError):
        return calls.error_body(exc.code, str(exc))
    cls = type(exc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(exc, ResourceLimitError) and exc.limit in (ErrorCode.CPU, ErrorCode.TIME, ErrorCode.MEMORY):
        # A WASM node's limits: the client raises ResourceLimitError too.
        return calls.error_body(exc.limit, str(exc), name)
    missing = exc.__cause__ if isinstance(exc.__cause__, ModuleNotFoundError) else None
    return calls.error_body(
        ErrorCode.SERIALIZATION if isinstance(exc, SerializationError) else ErrorCode.EXCEPTION,
        str(exc),
        name,
        _user_traceback(exc),
        missing.name if missing is not None else None,
    )


# Frames of the executor's own machinery say nothing to the user: leave them out.
_MACHINERY = (str(Path(__file__).parent), str(Path(asyncio.__file__).parent))


def _user_traceback(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_MACHINERY)]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


class ObjectTable:
    """The objects of one session, by handle."""

    def __init__(self, name: str) -> None:
        self._objects: dict[int, Any] = {}
        self._pending: set[int] = set()  # handles whose create() is under way
        self._worker = Worker(f"session-{name}")

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def held(self) -> int:
        """Objects held or being created: what the per-session object limit counts."""
        return len(self._objects) + len(self._pending)

    @property
    def busy(self) -> bool:
        """The worker thread is running a call (after a timeout: it is stuck in sync code)."""
        return self._worker.busy

    async def _run(self, fn, *args, **kwargs) -> Any:
        if kwargs:
            return await self._worker.run(functools.partial(fn, *args, **kwargs))
        return await self._worker.run(fn, *args)

    async def load(self, data: bytes) -> Any:
        """Unpickle call arguments on the worker thread (a large pickle would stall the loop)."""
        return await self._run(loads_object, data)

    async def create(self, handle: int, data: Any, build: Callable[[Any], Any] = loads_object) -> Any:
        """
        Build an object from ``data`` with ``build`` (by default: unpickle
        it; off the loop: it may load a model) and run its ``initialize()``.
        """
        if handle in self._objects or handle in self._pending:
            raise RemoteCallError(f"object handle {handle} is already in use")
        self._pending.add(handle)  # reserved across the awaits below
        try:
            obj = await self._run(build, data)
            # In the table before initialize(): if the create is cancelled
            # while initialize() runs on the thread, close() still cleans up.
            self._objects[handle] = obj
            initialize = getattr(obj, "initialize", None)
            if callable(initialize):
                try:
                    await self._call_any(initialize, (), {})
                except Exception:
                    del self._objects[handle]  # never initialized: nothing to clean up
                    raise
        finally:
            self._pending.discard(handle)
        logger.debug("object %d created: %s", handle, type(obj).__qualname__)
        return obj

    def method(self, handle: int, name: str) -> Any:
        """The bound method ``name`` of object ``handle``; refuses private names."""
        obj = self._objects.get(handle)
        if obj is None or handle in self._pending:
            raise RemoteCallError(f"no object with handle {handle} in this session (released?)", ErrorCode.NO_OBJECT)
        if not isinstance(name, str) or name.startswith("_"):
            raise RemoteCallError(f"method {name!r} cannot be called remotely (private or not a name)", ErrorCode.NO_METHOD)
        method = getattr(obj, name, None)
        if not callable(method):
            raise RemoteCallError(f"{type(obj).__qualname__} has no method {name!r}", ErrorCode.NO_METHOD)
        return method

    async def call(self, method: Any, args: tuple, kwargs: dict) -> Any:
        """Run a method and return its result; generators are refused (they are streamed)."""
        if inspect.isasyncgenfunction(method) or inspect.isgeneratorfunction(method):
            raise RemoteCallError(
                f"{method.__qualname__} is a generator method: iterate it with `async for item in remote.{method.__name__}(...)`"
            )
        result = await self._call_any(method, args, kwargs)
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise RemoteCallError(f"{method.__qualname__} returned a generator: iterate it with `async for`")
        return result

    async def stream(self, method: Any, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        """Run a generator method, yielding its items; a sync generator advances on the worker thread."""
        if inspect.isasyncgenfunction(method):
            agen = method(*args, **kwargs)
            try:
                async for item in agen:
                    yield item
            finally:
                await agen.aclose()
            return
        result = await self._call_any(method, args, kwargs)
        if inspect.isasyncgen(result):
            try:
                async for item in result:
                    yield item
            finally:
                await result.aclose()
        elif inspect.isgenerator(result):
            try:
                while (item := await self._run(next, result, _DONE)) is not _DONE:
                    yield item
            finally:
                await self._run(result.close)
        else:
            raise RemoteCallError(f"{method.__qualname__} is not a generator: call it with `await`")

    async def _call_any(self, fn: Any, args: tuple, kwargs: dict) -> Any:
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            result = fn(*args, **kwargs)
        else:
            result = await self._run(fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def release(self, handle: int) -> None:
        """Run the object's ``cleanup()`` and forget it."""
        obj = self._objects.pop(handle, None)
        if obj is None:
            raise RemoteCallError(f"no object with handle {handle} in this session", ErrorCode.NO_OBJECT)
        await self._cleanup(handle, obj)

    async def close(self, cleanup_timeout: float = CLEANUP_TIMEOUT) -> None:
        """
        Release every object and stop the thread.

        Cleanup errors are logged, not raised. A sync ``cleanup()`` waits for
        the worker thread, which a stuck call may hold forever: after
        ``cleanup_timeout`` seconds the object is dropped without it.
        """
        while self._objects:
            handle, obj = self._objects.popitem()
            try:
                await asyncio.wait_for(self._cleanup(handle, obj), cleanup_timeout)
            except asyncio.TimeoutError:
                logger.warning(
                    "cleanup() of object %d (%s) did not finish within %g s (a call may be stuck); dropped",
                    handle, type(obj).__qualname__, cleanup_timeout,
                )
            except Exception:
                logger.exception("cleanup() of object %d (%s) failed", handle, type(obj).__qualname__)
        self._worker.stop()

    async def _cleanup(self, handle: int, obj: Any) -> None:
        cleanup = getattr(obj, "cleanup", None)
        if callable(cleanup):
            await self._call_any(cleanup, (), {})
        logger.debug("object %d released: %s", handle, type(obj).__qualname__)
