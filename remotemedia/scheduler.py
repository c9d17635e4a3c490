"""
The asyncio scheduler behind :class:`~remotemedia.pipeline.Pipeline`.

One run of a pipeline is one :class:`PipelineRun`:

- every node's ``initialize`` runs (concurrently, so models load in parallel)
  before the first input is read;
- one task per node, plus one feeding the source, connected by bounded
  channels: a slow node fills its inbox and blocks the node above it, so
  memory stays bounded and the slowest node sets the pace (backpressure);
- end of stream flows down the channels; when a node stops reading early (a
  streaming node that returns, or the consumer leaving), its inbox closes and
  the close flows up, so an endless source stops too;
- the first exception in any node cancels every other task and surfaces as
  :exc:`~remotemedia.exceptions.PipelineError` naming the node, with the
  original exception as ``__cause__``;
- synchronous node methods run in a thread pool owned by the run, so CPU-heavy
  code never blocks the event loop, and the pool is shut down at the end so a
  run leaves no thread behind;
- ``cleanup`` runs, in reverse order, for every node whose ``initialize``
  succeeded, whether the run ended well, failed or was cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from .exceptions import PipelineError

__all__ = ["PipelineRun"]

logger = logging.getLogger(__name__)


class _End:
    """Markers that travel through channels after the last item."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_EOS = _End("end of stream")
_FAILED = _End("pipeline failed")


class _Closed(Exception):
    """Raised by :meth:`_Channel.put` once the reader has gone."""


class _Channel:
    """
    Bounded FIFO between two tasks.

    End of stream travels down as the ``_EOS`` item; :meth:`close` (the reader
    is gone) travels up, making the writer's next :meth:`put` raise
    :class:`_Closed`.
    """

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.closed = False

    async def put(self, item: Any) -> None:
        if self.closed:
            raise _Closed
        await self._queue.put(item)
        if self.closed:  # closed while we waited for room
            raise _Closed

    async def get(self) -> Any:
        return await self._queue.get()

    def close(self) -> None:
        self.closed = True
        # Dropping what is queued wakes a writer blocked on a full channel.
        while not self._queue.empty():
            self._queue.get_nowait()

    def fail(self) -> None:
        """Close and leave only ``_FAILED`` for the reader."""
        self.close()
        self._queue.put_nowait(_FAILED)


def _describe(node: Any, index: int) -> str:
    return f"node #{index} {getattr(node, 'name', type(node).__name__)!r}"


def _node_error(node: Any, index: int, where: str, exc: BaseException) -> PipelineError:
    """The PipelineError for ``exc`` raised by ``node`` in ``where``, chained to it."""
    error = PipelineError(
        f"{_describe(node, index)} failed{where}: {type(exc).__name__}: {exc}",
        node_name=getattr(node, "name", None),
        node_index=index,
    )
    error.__cause__ = exc
    return error


class PipelineRun:
    """One run of a list of nodes over a source; used through ``Pipeline``."""

    def __init__(
        self,
        name: str,
        nodes: Sequence[Any],
        source: Iterable[Any] | AsyncIterator[Any] | None,
        queue_size: int,
    ) -> None:
        self.name = name
        self.nodes = list(nodes)
        self.source = source
        self.channels = [_Channel(queue_size) for _ in range(len(self.nodes) + 1)]
        self.tasks: list[asyncio.Task[None]] = []
        self.error: PipelineError | None = None
        self.initialized: list[int] = []
        self.threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.nodes) + 1,
            thread_name_prefix=f"remotemedia-{name}",
        )

    # Calling node code

    async def call(
        self,
        method: Callable[..., Any],
        *args: Any,
        on_return: Callable[[], None] | None = None,
    ) -> Any:
        """
        Await an async method on the loop; run a sync one in a worker thread.

        ``on_return`` is called when the method returns without raising, even
        if this call was cancelled meanwhile (a thread runs to its end anyway).
        """
        if inspect.iscoroutinefunction(method):
            result = await method(*args)
        else:
            future = asyncio.get_running_loop().run_in_executor(
                self.threads, method, *args
            )
            try:
                result = await asyncio.shield(future)
            except asyncio.CancelledError:
                # A thread cannot be interrupted. Wait for it, so that cleanup()
                # never runs while process() is still running on another thread.
                await asyncio.wait([future])
                if not future.cancelled() and future.exception() is None and on_return:
                    on_return()
                raise
            if inspect.isawaitable(result):
                result = await result
        if on_return is not None:
            on_return()
        return result

    # Lifecycle

    async def start(self) -> None:
        """
        Initialize every node, then start the tasks.

        A failed ``initialize()`` is recorded, not raised: no task starts, and
        :meth:`stop` cleans up the nodes that did initialize, then raises it.
        """
        await self._initialize()
        if self.error is not None:
            self.channels[-1].fail()
            return
        self.tasks.append(
            asyncio.create_task(self._feed(), name=f"remotemedia:{self.name}:source")
        )
        for index, node in enumerate(self.nodes):
            self.tasks.append(
                asyncio.create_task(
                    self._run_node(index, node),
                    name=f"remotemedia:{self.name}:{getattr(node, 'name', index)}",
                )
            )

    async def _initialize(self) -> None:
        async def init(index: int, node: Any) -> None:
            method = getattr(node, "initialize", None)
            if method is None:
                self.initialized.append(index)
            else:
                await self.call(method, on_return=lambda: self.initialized.append(index))

        results = await asyncio.gather(
            *(init(i, n) for i, n in enumerate(self.nodes)), return_exceptions=True
        )
        for index, result in enumerate(results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation, KeyboardInterrupt: not a node failure
            if isinstance(result, Exception) and self.error is None:
                self.error = _node_error(
                    self.nodes[index], index, " in initialize()", result
                )

    async def outputs(self) -> AsyncIterator[Any]:
        """Yield the outputs of the last node until end of stream."""
        channel = self.channels[-1]
        while True:
            item = await channel.get()
            if item is _EOS or item is _FAILED:
                return
            yield item

    async def stop(self) -> None:
        """
        End the run: stop the tasks, clean every node up, free the threads.

        Raises the :exc:`PipelineError` of the node that failed, if any, or of
        a ``cleanup()`` that failed.
        """
        self.channels[-1].close()
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks)
        await self._cleanup()
        if self.error is not None:
            raise self.error

    async def _cleanup(self) -> None:
        for index in sorted(self.initialized, reverse=True):
            node = self.nodes[index]
            method = getattr(node, "cleanup", None)
            if method is None:
                continue
            try:
                await self.call(method)
            except Exception as exc:
                logger.exception("%s failed in cleanup()", _describe(node, index))
                if self.error is None:
                    self.error = _node_error(node, index, " in cleanup()", exc)
        self.initialized.clear()
        # Every call has returned by now, so the idle workers exit at once.
        self.threads.shutdown(wait=True)

    def _fail(self, error: PipelineError) -> None:
        """Record the first failure and stop everything else."""
        if self.error is not None:
            return
        self.error = error
        logger.debug("pipeline %r: %s", self.name, error)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.channels[-1].fail()

    # Tasks

    async def _feed(self) -> None:
        out = self.channels[0]
        try:
            if self.source is not None:
                if hasattr(self.source, "__aiter__"):
                    async for item in self.source:  # type: ignore[union-attr]
                        await out.put(item)
                else:
                    for item in self.source:  # type: ignore[union-attr]
                        await out.put(item)
            await out.put(_EOS)
        except _Closed:
            pass
        except Exception as exc:
            error = PipelineError(
                f"pipeline {self.name!r}: the source raised {type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            self._fail(error)

    async def _run_node(self, index: int, node: Any) -> None:
        inbox, outbox = self.channels[index], self.channels[index + 1]
        try:
            if getattr(node, "is_streaming", False):
                await self._stream(node, inbox, outbox)
            else:
                await self._process(node, inbox, outbox)
            await outbox.put(_EOS)
        except _Closed:
            pass
        except Exception as exc:
            self._fail(_node_error(node, index, "", exc))
        finally:
            # Whatever the reason we stop reading, tell the writer above.
            inbox.close()

    async def _process(self, node: Any, inbox: _Channel, outbox: _Channel) -> None:
        process = node.process
        # Decided once per run, not per item: this loop is the hot path.
        on_loop = inspect.iscoroutinefunction(process)
        while True:
            item = await inbox.get()
            if item is _EOS:
                return
            if on_loop:
                result = await process(item)
            else:
                result = await self.call(process, item)
            if result is not None:
                await outbox.put(result)

    async def _stream(self, node: Any, inbox: _Channel, outbox: _Channel) -> None:
        async def inputs() -> AsyncIterator[Any]:
            while True:
                item = await inbox.get()
                if item is _EOS:
                    return
                yield item

        outputs = node.stream(inputs())
        try:
            async for result in outputs:
                if result is not None:
                    await outbox.put(result)
        finally:
            aclose = getattr(outputs, "aclose", None)
            if aclose is not None:
                await aclose()
