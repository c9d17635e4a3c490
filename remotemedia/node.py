"""
The :class:`Node` base class: the unit of work of a pipeline.

A node is a plain Python object. It may run in the local pipeline or, wrapped
for remote execution, on an executor far away, so it must survive cloudpickle:
keep event loops, locks, loggers, models and open handles out of its pickled
state, and create them in :meth:`Node.initialize`, which runs where the node
runs.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterator

from .aio import in_thread

__all__ = ["Node", "check_node", "ProcessStream"]


class Node:
    """
    Base class for pipeline nodes.

    Override :meth:`process` to turn one input into one output, or set
    ``is_streaming = True`` and override :meth:`stream` to turn a stream of
    inputs into a stream of outputs (resampling, chunking, speech
    segmentation: anything that keeps state across inputs or yields more or
    fewer outputs than it receives).

    Every method may be written sync or async. Synchronous methods run in a
    worker thread, off the event loop, so CPU-heavy code (numpy, inference)
    never stalls other nodes or network I/O; ``async def`` methods run on the
    event loop, which suits I/O and very cheap work.
    """

    #: ``True`` for nodes that implement :meth:`stream` instead of :meth:`process`.
    is_streaming: bool = False

    def __init__(self, name: str | None = None) -> None:
        #: Name used in logs and errors; defaults to the class name.
        self.name: str = name or type(self).__name__

    def initialize(self) -> Any:
        """
        Prepare the node before the first input: load models, open devices.

        Runs where the node runs (locally, or on the executor for a remote
        node), once per pipeline run, before any input arrives.
        """

    def process(self, data: Any) -> Any:
        """
        Process one input and return one output, or ``None`` for no output.

        Streaming nodes implement :meth:`stream` instead.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement process(data), or set "
            f"is_streaming = True and implement stream(frames)"
        )

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """
        Consume an async iterator of inputs and yield outputs (streaming nodes).

        Write it as an async generator: ``async for frame in frames: ...
        yield out``. A source node, which produces frames on its own, may
        ignore ``frames`` (it is empty when the pipeline has no source).
        """
        raise NotImplementedError(
            f"{type(self).__name__} sets is_streaming = True and must implement "
            f"stream(frames) as an async generator"
        )
        yield  # pragma: no cover - makes this an async generator

    def cleanup(self) -> Any:
        """Release what :meth:`initialize` acquired; runs after the last input, failure included."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def check_node(node: Any) -> None:
    """
    Raise :exc:`TypeError` unless ``node`` can run in a pipeline.

    Subclassing :class:`Node` is not required: any object with a ``process``
    method, or with ``is_streaming = True`` and a ``stream`` method, is a node.
    """
    if isinstance(node, type):
        raise TypeError(
            f"add_node() needs a node instance, not the class {node.__name__}; "
            f"did you mean {node.__name__}()?"
        )
    streaming = bool(getattr(node, "is_streaming", False))
    method = "stream" if streaming else "process"
    impl = getattr(type(node), method, None)
    base = getattr(Node, method)
    if not callable(getattr(node, method, None)) or impl is base:
        raise TypeError(
            f"{type(node).__name__} object is not a node: a node needs a "
            f"process(data) method, or is_streaming = True and a stream(frames) "
            f"async generator (subclass remotemedia.Node to get the rest)"
        )
    if streaming and (
        inspect.iscoroutinefunction(node.stream) or inspect.isgeneratorfunction(node.stream)
    ):
        # A plain function returning an async iterator is allowed; a coroutine
        # or a sync generator is the usual mistake and would fail at run time.
        raise TypeError(
            f"{type(node).__name__}.stream must be an async generator "
            f"(use 'yield' inside 'async def stream(self, frames)')"
        )


class ProcessStream:
    """
    A streaming node made of a node that has only ``process()``: each input
    goes through its ``process()``, in order (a sync one on a worker
    thread); ``None`` results are skipped. ``initialize()`` and
    ``cleanup()`` are the wrapped node's.

    A remote streaming node uses it to run a plain ``process()`` node over
    a duplex stream (frames on media tracks) instead of one call per input.
    """

    is_streaming = True

    def __init__(self, node: Any) -> None:
        if not callable(getattr(node, "process", None)):
            raise TypeError(f"{type(node).__name__} object has no process(data) method to stream through")
        #: The wrapped node.
        self.node = node
        #: The wrapped node's name.
        self.name: str = getattr(node, "name", None) or type(node).__name__

    def initialize(self) -> Any:
        method = getattr(self.node, "initialize", None)
        return method() if callable(method) else None

    def cleanup(self) -> Any:
        method = getattr(self.node, "cleanup", None)
        return method() if callable(method) else None

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        process = self.node.process
        on_loop = inspect.iscoroutinefunction(process)
        async for frame in frames:
            result = await process(frame) if on_loop else await in_thread(process, frame)
            if result is not None:
                yield result

    def __repr__(self) -> str:
        return f"<ProcessStream of {self.node!r}>"

