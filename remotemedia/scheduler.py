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
  run leaves no thread behind; a ``process()`` that has proven cheap runs on
  the loop instead, until a call is not cheap (:mod:`remotemedia.inline`);
- ``cleanup`` runs, in reverse order, for every node whose ``initialize``
  succeeded, whether the run ended well, failed or was cancelled;
- remote nodes (:class:`~remotemedia.remote.RemoteObjectExecutionNode`) get
  their sessions before any ``initialize``: one client per distinct executor
  config, connected concurrently, and closed after the last ``cleanup``,
  failure and cancellation included (:mod:`remotemedia.remote.sessions`). A
  pipeline without remote nodes never imports the remote API; before that,
  each remote node's placement (remote, local, or decided by the run: see
  :mod:`remotemedia.remote.placement`) is settled, and with a session pool
  the sessions are borrowed and given back instead (:mod:`remotemedia.remote.pool`);
- each node's :class:`~remotemedia.stats.NodeStats` (where it ran, items in
  and out, latency) is kept up to date in :attr:`PipelineRun.stats`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import sys
import time
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from .aio import in_thread
from .exceptions import PipelineError
from .inline import InlinePolicy, wants_thread
from .stats import LOCAL, NodeStats

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


def _timed(method: Callable[[Any], Any], item: Any) -> tuple[Any, float]:
    """``method(item)`` and the seconds it took, measured on the thread that ran it."""
    started = time.perf_counter()
    result = method(item)
    return result, time.perf_counter() - started


class PipelineRun:
    """One run of a list of nodes over a source; used through ``Pipeline``."""

    def __init__(
        self,
        name: str,
        nodes: Sequence[Any],
        source: Iterable[Any] | AsyncIterator[Any] | None,
        queue_size: int,
        *,
        placement: str = "remote",
        session_pool: Any = None,
    ) -> None:
        self.name = name
        #: The placement of remote nodes that do not set their own.
        self.placement = placement
        #: The remotemedia.remote.pool.SessionPool that lends sessions, or None (each run opens its own).
        self.session_pool = session_pool
        self.nodes = list(nodes)
        self.source = source
        self.channels = [_Channel(queue_size) for _ in range(len(self.nodes) + 1)]
        self.tasks: list[asyncio.Task[None]] = []
        self.error: PipelineError | None = None
        self.initialized: list[int] = []
        #: One entry per node, in order: where it ran, items, latency.
        self.stats = [
            NodeStats(getattr(node, "name", type(node).__name__), index) for index, node in enumerate(self.nodes)
        ]
        self.sessions: Any = None  # remotemedia.remote.sessions.RunSessions, when there are remote nodes
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
            future = in_thread(method, *args, threads=self.threads)
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

        Remote nodes are connected to their executors first. A failed
        connection or ``initialize()`` is recorded, not raised: no task
        starts, and :meth:`stop` cleans up the nodes that did initialize,
        closes the sessions, then raises it.
        """
        await self._dispatch()
        if self.error is None:
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

    def _remote_nodes(self) -> list[tuple[int, Any]]:
        """The nodes wrapped in ``RemoteObjectExecutionNode``: their sessions are this run's to open."""
        return self._nodes_of("remotemedia.remote.node", "RemoteObjectExecutionNode")

    def _service_nodes(self) -> list[tuple[int, Any]]:
        """The ``RemoteServiceNode``s: each opens its own session in ``stream()``."""
        return self._nodes_of("remotemedia.remote.service", "RemoteServiceNode")

    def _nodes_of(self, module_name: str, class_name: str) -> list[tuple[int, Any]]:
        # The class can only exist if its module was imported: a pipeline of
        # local nodes never pays for importing aiortc.
        module = sys.modules.get(module_name)
        if module is None:
            return []
        cls = getattr(module, class_name)
        return [(index, node) for index, node in enumerate(self.nodes) if isinstance(node, cls)]

    async def _dispatch(self) -> None:
        """Open one session per executor config for the remote nodes, if any."""
        remote = self._remote_nodes()
        if not remote:
            return
        from .remote.sessions import RunSessions, place_nodes

        needing = await place_nodes(remote, self.placement, self._placed)
        self.sessions = RunSessions(self.name, [(index, node) for index, node, _ in needing], self.session_pool)
        try:
            await self.sessions.open()
        except PipelineError as error:
            self.error = error
        for index, node, reason in needing:
            if node.runs_locally:
                continue  # "auto", and no executor could be reached after all
            self.stats[index].remote = True
            self.stats[index].location = node.executor or "not connected"
            if reason is not None and self.error is None:
                node._place("remote", f"remote {node.executor} ({reason})")
            elif not self.stats[index].placement:
                self.stats[index].placement = f"remote {node.executor} (placement='remote')"

    def _placed(self, index: int) -> Callable[[str, str], None]:
        """The callback that records node ``index``'s placement decisions in its stats."""
        stats, node = self.stats[index], self.nodes[index]

        def placed(mode: str, reason: str) -> None:
            stats.placement = reason
            stats.remote = mode != "local"
            stats.location = LOCAL if mode == "local" else (node.executor or "not connected")

        return placed

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
        try:
            await self._cleanup()
        finally:
            for index, node in self._service_nodes():
                if node.executor is not None:  # its own session, opened by its stream()
                    self.stats[index].remote = True
                    self.stats[index].location = node.executor
            if self.sessions is not None:
                for index, node in self._remote_nodes():
                    if node.runs_locally:
                        continue
                    # After a reconnection, the executor that served last.
                    self.stats[index].location = node.executor or self.stats[index].location
                await self.sessions.close()
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
        stats = self.stats[index]
        try:
            if getattr(node, "is_streaming", False):
                await self._stream(node, inbox, outbox, stats)
            else:
                await self._process(node, inbox, outbox, stats)
            await outbox.put(_EOS)
        except _Closed:
            pass
        except Exception as exc:
            self._fail(_node_error(node, index, "", exc))
        finally:
            # Whatever the reason we stop reading, tell the writer above.
            inbox.close()

    async def _process(self, node: Any, inbox: _Channel, outbox: _Channel, stats: NodeStats) -> None:
        process = node.process
        # Decided once per run, not per item: this loop is the hot path.
        on_loop = inspect.iscoroutinefunction(process)
        policy = None if on_loop or wants_thread(process) else InlinePolicy()
        clock = time.perf_counter
        while True:
            item = await inbox.get()
            if item is _EOS:
                return
            stats.inputs += 1
            started = clock()
            if on_loop:
                result = await process(item)
            elif policy is not None and policy.inline:
                # Proven cheap: on the loop, saving two thread wake-ups (remotemedia.inline).
                result = process(item)
                policy.record(clock() - started)
                stats.inline_calls += 1
                if inspect.isawaitable(result):
                    result = await result
            elif policy is not None:
                result, took = await self.call(_timed, process, item)
                policy.record(took)
            else:
                result = await self.call(process, item)
            stats.add_latency(clock() - started)
            if result is not None:
                stats.outputs += 1
                await outbox.put(result)

    async def _stream(self, node: Any, inbox: _Channel, outbox: _Channel, stats: NodeStats) -> None:
        clock = time.perf_counter
        # When the clock of the next output started: the first input read since
        # the previous output, else that output (see remotemedia.stats).
        since_output = clock()
        first_input: float | None = None

        async def inputs() -> AsyncIterator[Any]:
            nonlocal first_input
            while True:
                item = await inbox.get()
                if item is _EOS:
                    return
                stats.inputs += 1
                if first_input is None:
                    first_input = clock()
                yield item

        outputs = node.stream(inputs())
        try:
            async for result in outputs:
                if result is not None:
                    stats.add_latency(clock() - (first_input if first_input is not None else since_output))
                    first_input = None
                    stats.outputs += 1
                    await outbox.put(result)
                    since_output = clock()
        finally:
            aclose = getattr(outputs, "aclose", None)
            if aclose is not None:
                await aclose()
