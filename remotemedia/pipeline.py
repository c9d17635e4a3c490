"""
:class:`Pipeline`: an ordered chain of nodes, and the three ways to run it.

    pipeline = Pipeline("audio").add_node(ResampleNode(16000)).add_node(GainNode(-6))
    outputs = pipeline.run(frames)                 # scripts
    outputs = await pipeline.run_async(frames)     # async code
    async for out in pipeline.stream(frames):      # live, as outputs appear
        ...

Where a node runs is a property of the node instance, never of the pipeline:
the same pipeline runs local nodes and nodes wrapped for remote execution
(:class:`~remotemedia.remote.RemoteObjectExecutionNode`). A wrapped node may
leave the choice to each run (``placement="auto"``, or the pipeline-wide
``Pipeline(placement="auto")``; see :mod:`remotemedia.remote.placement`).
After a run, ``pipeline.last_run_stats`` says where each node ran, why, and
how long it took.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterable, AsyncIterator, Iterable

from .exceptions import PipelineError
from .node import check_node
from .scheduler import PipelineRun
from .stats import NodeStats

__all__ = ["Pipeline", "Source"]

#: What a pipeline reads: an iterable, an async iterable, or ``None`` when the
#: first node produces frames on its own.
Source = Iterable[Any] | AsyncIterable[Any] | None

#: The values of ``placement`` (see remotemedia.remote.placement, which imports them).
PLACEMENTS = ("remote", "auto", "local")

#: Default capacity of the channel between two nodes, in items.
DEFAULT_QUEUE_SIZE = 8


class Pipeline:
    """
    An ordered chain of nodes: each node's outputs are the next node's inputs.

    ``queue_size`` bounds the number of items waiting between two nodes; a
    slow node makes the nodes above it wait instead of growing memory.

    ``placement`` is the placement of the remote nodes that do not set their
    own (``"remote"``, the default, ``"auto"`` or ``"local"``; see
    :class:`~remotemedia.remote.RemoteObjectExecutionNode`).
    ``session_pool`` lends the runs warm executor sessions
    (:class:`~remotemedia.remote.SessionPool`, e.g.
    :func:`~remotemedia.default_pool`); ``None`` (the default) opens each
    run's sessions and closes them at its end. Pooling is opt-in because a
    kept session outlives the run (it holds a slot of the executor); see
    :mod:`remotemedia.remote.pool`.
    """

    def __init__(
        self,
        name: str = "pipeline",
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        placement: str = "remote",
        session_pool: Any = None,
    ) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be a positive int, not {queue_size!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {list(PLACEMENTS)}, not {placement!r}")
        if session_pool is not None and not hasattr(session_pool, "acquire"):
            raise TypeError(f"session_pool must be a SessionPool or None, not {type(session_pool).__name__}")
        #: Placement of the remote nodes that do not set their own.
        self.placement = placement
        #: The :class:`~remotemedia.remote.SessionPool` of the runs, or ``None``.
        self.session_pool = session_pool
        #: Name used in logs, errors and task names.
        self.name = name
        self.queue_size = queue_size
        self._nodes: list[Any] = []
        self._running = False
        #: One :class:`~remotemedia.stats.NodeStats` per node, in order, for the
        #: latest run (live while it runs; ``None`` before the first run): where
        #: the node ran, items in and out, latency per item.
        self.last_run_stats: tuple[NodeStats, ...] | None = None

    @property
    def nodes(self) -> tuple[Any, ...]:
        """The nodes, in order."""
        return tuple(self._nodes)

    def add_node(self, node: Any) -> Pipeline:
        """
        Append ``node`` and return the pipeline, so that calls can chain.

        Raises :exc:`TypeError` if ``node`` is not a node (see
        :class:`~remotemedia.node.Node`) and :exc:`ValueError` if this very
        instance is already in the pipeline.
        """
        check_node(node)
        if any(existing is node for existing in self._nodes):
            raise ValueError(
                f"{node!r} is already in pipeline {self.name!r}; create a second "
                f"instance to run the same processing twice"
            )
        self._nodes.append(node)
        return self

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        names = " -> ".join(getattr(n, "name", type(n).__name__) for n in self._nodes)
        return f"<Pipeline {self.name!r}: {names or 'empty'}>"

    def run(self, source: Source = None) -> list[Any]:
        """
        Run to the end from synchronous code; return the last node's outputs.

        From inside an event loop, use ``await pipeline.run_async()`` instead.
        A failing node raises :exc:`~remotemedia.exceptions.PipelineError`
        chained to its cause and nothing else; Ctrl-C stops every node (remote
        ones included) and raises :exc:`KeyboardInterrupt`.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # not in a loop: run it here, outside this handler (no chained context)
        else:
            raise RuntimeError(
                "Pipeline.run() cannot be called from a running event loop; "
                "use 'await pipeline.run_async()' instead"
            )
        try:
            return asyncio.run(self._run_own_loop(source))
        except KeyboardInterrupt:
            # asyncio.run cancelled the run (its cleanup ran) and re-raises
            # the interrupt chained to that CancelledError: show only the stop.
            raise KeyboardInterrupt(
                f"pipeline {self.name!r} interrupted; its nodes were stopped and cleaned up"
            ) from None

    async def _run_own_loop(self, source: Source) -> list[Any]:
        try:
            return await self.run_async(source)
        finally:
            if self.session_pool is not None:
                # This loop ends with run(): its sessions cannot outlive it.
                await self.session_pool.close()

    async def run_async(self, source: Source = None) -> list[Any]:
        """Run to the end; return the list of the last node's outputs."""
        return [output async for output in self.stream(source)]

    async def stream(self, source: Source = None) -> AsyncIterator[Any]:
        """
        Run, yielding the last node's outputs as they are produced.

        Leaving the ``async for`` early stops the pipeline and cleans every
        node up; wrap the call in :func:`contextlib.aclosing` to have that
        happen at once rather than when the generator is garbage collected.
        Raises :exc:`~remotemedia.exceptions.PipelineError` when a node fails.
        """
        run = self._start_run(source)
        try:
            await run.start()
            async for output in run.outputs():
                yield output
        finally:
            try:
                await run.stop()
            finally:
                self._running = False

    def _start_run(self, source: Source) -> PipelineRun:
        if not self._nodes:
            raise PipelineError(
                f"pipeline {self.name!r} has no nodes; add some with add_node()"
            )
        if isinstance(source, (str, bytes, bytearray, dict)) or not (
            source is None
            or hasattr(source, "__aiter__")
            or hasattr(source, "__iter__")
        ):
            raise TypeError(
                f"a pipeline source must be an iterable or async iterable of "
                f"inputs, not {type(source).__name__}; to send one item, pass [item]"
            )
        first = self._nodes[0]
        if source is None and not getattr(first, "is_streaming", False):
            raise PipelineError(
                f"pipeline {self.name!r} has no source: pass one to run(), or "
                f"start the pipeline with a streaming node that produces frames "
                f"on its own"
            )
        if self._running:
            raise PipelineError(
                f"pipeline {self.name!r} is already running; its nodes cannot run "
                f"twice at once (build a second pipeline with new node instances)"
            )
        self._running = True
        run = PipelineRun(
            self.name, self._nodes, source, self.queue_size, placement=self.placement, session_pool=self.session_pool
        )
        self.last_run_stats = tuple(run.stats)
        return run
