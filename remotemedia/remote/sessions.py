"""
The sessions a pipeline run opens for its remote nodes.

Before the first frame, :class:`RunSessions` groups the run's
:class:`RemoteObjectExecutionNode` instances by executor config (equal
configs, one group), opens one :class:`RemoteProxyClient` per group (one
peer connection carrying several objects) and hands each node its client;
the nodes' own ``initialize()`` then upload their objects. At the end,
whatever happened, :meth:`RunSessions.close` closes every client (which
releases any object still alive) and detaches the nodes.

With a :class:`~remotemedia.remote.pool.SessionPool`, the clients are
borrowed from the pool instead of opened, and given back instead of closed:
the pool releases what the run left alive and keeps the session warm for the
next run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable, Sequence

from ..exceptions import PipelineError
from .client import RemoteProxyClient
from .config import RemoteExecutorConfig
from .node import RemoteObjectExecutionNode
from .placement import listing, misconfigured, survey
from .pool import SessionPool

__all__ = ["RunSessions", "place_nodes"]

logger = logging.getLogger(__name__)


class _Group:
    """Remote nodes that share one executor config, and so one client."""

    def __init__(self, config: RemoteExecutorConfig) -> None:
        self.config = config
        self.members: list[tuple[int, RemoteObjectExecutionNode]] = []
        self.client: RemoteProxyClient | None = None

    @property
    def media_tracks(self) -> int:
        """Streams of this group that carry their frames on media tracks."""
        return sum(1 for _, node in self.members if node.is_streaming and node.transport == "tracks")

    def describe(self) -> str:
        return ", ".join(f"#{index} {node.name!r}" for index, node in self.members)


async def place_nodes(
    nodes: Sequence[tuple[int, RemoteObjectExecutionNode]],
    default: str,
    on_placed: Callable[[int], Callable[[str, str], None]],
) -> list[tuple[int, RemoteObjectExecutionNode, str | None]]:
    """
    Decide, before a run, where each remote node runs (see
    :mod:`remotemedia.remote.placement`); ``default`` is the pipeline's
    placement and ``on_placed(index)`` the callback of node ``index``'s
    decisions. Returns the nodes that need a session, each with the reason
    of its remote placement still to be completed with its executor's name
    (``None``: nothing to add).
    """
    needing: list[tuple[int, RemoteObjectExecutionNode, str | None]] = []
    auto: list[tuple[int, RemoteObjectExecutionNode]] = []
    for index, node in nodes:
        placement = node._begin_run(default, on_placed(index))
        if placement == "local":
            node._place("local", "local (placement='local')", log=False)
        elif placement == "auto":
            auto.append((index, node))
        else:
            needing.append((index, node, None))
    # One listing per signaling server and credential (configs differing in requirements share it).
    configs = {dataclasses.replace(node.remote_config, requirements={}) for _, node in auto}
    found = await asyncio.gather(*(listing(config) for config in configs), return_exceptions=True)
    listings = dict(zip(configs, found))
    verdicts = []
    for _, node in auto:
        listed = listings[dataclasses.replace(node.remote_config, requirements={})]
        if isinstance(listed, BaseException):
            if not isinstance(listed, Exception):
                raise listed  # cancellation
            # The server refused the config (misconfigured()): pairing meets the same refusal and fails the run.
            verdicts.append(("remote", None))
        else:
            verdicts.append(await survey(node.remote_config, node.is_streaming, listed))
    for (index, node), (mode, reason) in zip(auto, verdicts):
        if mode == "local":
            node._place("local", reason)
        elif mode == "calibrate":
            node._place("calibrate", f"calibrating on the first inputs ({reason})", log=False)
            needing.append((index, node, None))
        else:
            needing.append((index, node, reason))
    return needing


class RunSessions:
    """
    The clients of one pipeline run, one per distinct executor config.

    ``nodes`` are ``(index, node)`` pairs, ``index`` being the node's position
    in the pipeline (for error messages).
    """

    def __init__(
        self, pipeline: str, nodes: Sequence[tuple[int, RemoteObjectExecutionNode]], pool: SessionPool | None = None
    ) -> None:
        self.pipeline = pipeline
        self.pool = pool
        groups: dict[RemoteExecutorConfig, _Group] = {}
        for index, node in nodes:
            groups.setdefault(node.remote_config, _Group(node.remote_config)).members.append((index, node))
        self.groups = list(groups.values())

    async def open(self) -> None:
        """
        Connect every group's client, concurrently, and attach the nodes to it.

        Raises :exc:`PipelineError` naming the first node of a group that could
        not connect, with the client's error as ``__cause__``; the clients that
        did connect stay to :meth:`close`.
        """
        results = await asyncio.gather(*(self._connect(group) for group in self.groups), return_exceptions=True)
        for group, result in zip(self.groups, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation: not a connection failure
            if isinstance(result, Exception) and not misconfigured(result) and all(node._auto for _, node in group.members):
                # Placed "auto": no executor after all, so here (the survey saw one a moment ago).
                for _, node in group.members:
                    node._place("local", f"local (no executor took the node: {type(result).__name__}: {result})")
                continue
            if isinstance(result, Exception):
                index, node = group.members[0]
                config = group.config
                error = PipelineError(
                    f"node #{index} {node.name!r} could not reach an executor at {config.host}:{config.port} "
                    f"(remote nodes {group.describe()} of pipeline {self.pipeline!r}): "
                    f"{type(result).__name__}: {result}",
                    node_name=node.name,
                    node_index=index,
                )
                raise error from result

    async def _connect(self, group: _Group) -> None:
        if self.pool is not None:
            group.client = await self.pool.acquire(group.config, media_tracks=group.media_tracks)
        else:
            group.client = RemoteProxyClient(group.config, media_tracks=group.media_tracks)
            await group.client.connect()
        for _, node in group.members:
            node._attach(group.client)
        logger.debug(
            "pipeline %r: remote nodes %s on executor %r", self.pipeline, group.describe(), group.client.executor
        )

    async def close(self) -> None:
        """Close (or give back to the pool) every client and detach every node; never raises for a client that fails to close."""
        clients = [group.client for group in self.groups if group.client is not None]
        end = self.pool.give_back if self.pool is not None else RemoteProxyClient.close
        results = await asyncio.gather(*(end(client) for client in clients), return_exceptions=True)
        for client, result in zip(clients, results):
            if isinstance(result, Exception):
                logger.warning("pipeline %r: closing the session with %r failed: %s", self.pipeline, client.executor, result)
        for group in self.groups:
            for _, node in group.members:
                node._end_run()
                node._attach(None)
