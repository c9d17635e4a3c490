"""
Discovery: which executors a signaling server offers this client, and how busy they are.

Pairing already picks an executor that matches a node's requirements; this
answers the question before it is asked: which executors, services, models
and GPUs exist, and how much room they have. ::

    from remotemedia import RemoteExecutorConfig, discover

    for executor in await discover(RemoteExecutorConfig(host="gpu-box", auth_token=token)):
        print(executor.name, executor.services, f"{executor.free}/{executor.capacity}")

The signaling server answers an ``executors`` message
(``signaling_server/PROTOCOL.md``) with what the client's credential may use
(a scoped token sees only its executors and services) and never with where
an executor is. ``python -m remotemedia executors --signaling URL`` prints
the same as a table.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from . import validation as check
from .exceptions import RemoteTimeoutError
from .remote.config import RemoteExecutorConfig
from .signaling import SignalingClient

__all__ = ["ExecutorInfo", "discover", "table"]

logger = logging.getLogger(__name__)

#: The columns of :func:`table`: heading, and the cell of one executor.
_COLUMNS = (
    ("NAME", lambda e: e.name),
    ("SERVICES", lambda e: ",".join(e.services) or "-"),
    ("GPU", lambda e: "yes" if e.gpu else "no"),
    ("FREE/CAP", lambda e: f"{e.free}/{e.capacity}"),
    ("LOAD", lambda e: f"{e.load:.2f}"),
    ("VERSION", lambda e: e.version or "-"),
)


@dataclass(frozen=True)
class ExecutorInfo:
    """One executor as the signaling server lists it to a client (no address: pairing finds it)."""

    #: The name it registered under (``RemoteExecutorConfig(requirements={"executor": name})`` asks for it).
    name: str
    #: Named services it offers (those the client's token allows).
    services: tuple[str, ...]
    #: Models it announces; ``()`` when it announces none (today's executors do not).
    models: tuple[str, ...]
    #: Whether it has a GPU.
    gpu: bool
    #: Most sessions it serves at once.
    capacity: int
    #: Sessions it can still take now.
    free: int
    #: The load it last reported (its open sessions over its capacity; 0.0 if never reported).
    load: float
    #: Its remotemedia version (``""`` if it did not say).
    version: str
    #: What clients may send it: ``"python"``, ``"wasm"`` or ``"any"`` (``""`` if it did not say).
    accept: str
    #: Where it runs objects: ``"process"`` or ``"inprocess"`` (``""`` if it did not say).
    mode: str

    @classmethod
    def from_message(cls, item: dict) -> ExecutorInfo:
        """One entry of the server's ``executors`` message (validated by the signaling client)."""
        return cls(**{**item, "services": tuple(item["services"]), "models": tuple(item["models"])})


async def discover(config: RemoteExecutorConfig | None = None, *, timeout: float | None = None) -> list[ExecutorInfo]:
    """
    The executors that the signaling server of ``config`` (default:
    ``RemoteExecutorConfig()``, localhost:50052) offers this client, by name.

    Connects with the config's token and TLS settings (the first of its
    signaling URLs that answers), asks, and closes. ``timeout`` bounds the
    whole exchange (default: the config's ``connect_timeout``).

    Raises :exc:`TypeError` for a ``config`` that is not a
    :class:`RemoteExecutorConfig` and :exc:`ValueError` for a ``timeout``
    that is not a positive number of seconds, before connecting;
    :exc:`~remotemedia.AuthenticationError` for a missing or wrong
    token, :exc:`~remotemedia.SignalingError` when the server cannot be
    reached, and :exc:`~remotemedia.RemoteTimeoutError` when it does not
    answer in time.
    """
    if config is None:
        config = RemoteExecutorConfig()
    if not isinstance(config, RemoteExecutorConfig):
        raise TypeError(
            f"config must be a RemoteExecutorConfig, not {type(config).__name__}; for a URL, pass "
            f"RemoteExecutorConfig(signaling_urls=(url,))"
        )
    if timeout is not None:
        check.positive("timeout", timeout)
    limit = config.connect_timeout if timeout is None else timeout
    ssl_context = config.ssl_context()
    try:
        # One bound for the whole exchange: each of several URLs would otherwise get all of it.
        reply = await asyncio.wait_for(_ask(config, ssl_context, limit), limit)
    except RemoteTimeoutError:
        raise
    except asyncio.TimeoutError:
        raise RemoteTimeoutError(
            f"the signaling server at {' or '.join(config.urls)} did not list executors within {limit:g} s; "
            "is the URL right, and does nothing between here and there drop the connection?"
        ) from None
    executors = [ExecutorInfo.from_message(item) for item in reply["executors"]]
    if reply.get("truncated"):
        logger.warning(
            "the signaling server listed only %d executors: the whole list does not fit one message", len(executors)
        )
    return executors


async def _ask(config: RemoteExecutorConfig, ssl_context, limit: float) -> dict:
    signaling = await SignalingClient.connect_any(config.urls, token=config.token, timeout=limit, ssl_context=ssl_context)
    try:
        return await signaling.executors(timeout=limit)
    finally:
        await signaling.close()


def table(executors: list[ExecutorInfo]) -> str:
    """``executors`` as a plain-text table, one line each under a heading (what the CLI prints)."""
    rows = [[heading for heading, _ in _COLUMNS]]
    rows += [[cell(executor) for _, cell in _COLUMNS] for executor in executors]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)
