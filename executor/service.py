"""
The executor service: registers with the signaling server and serves each
paired client in an :class:`~executor.session.ExecutorSession`.

Executors dial out to the signaling server, so a GPU host needs no open
inbound TCP port; media and calls then flow peer to peer over WebRTC.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

from remotemedia.signaling import SignalingClient

from .session import DEFAULT_MAX_MESSAGE_SIZE, ExecutorSession, SessionSettings

__all__ = ["ExecutorConfig", "Executor", "default_name"]

logger = logging.getLogger(__name__)


def default_name() -> str:
    """``HOST-PID``: unique per process, and says where the executor runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ExecutorConfig:
    """Settings of one executor (the command line's flags)."""

    #: The signaling server's websocket URL, e.g. ``ws://127.0.0.1:50052/ws``.
    signaling: str
    #: The signaling server's token (``REMOTEMEDIA_TOKEN``); it also signs the tickets checked here.
    token: str | None = None
    #: The name to register under; unique per signaling server.
    name: str = field(default_factory=default_name)
    #: Most sessions served at once (the capacity announced to the server).
    max_sessions: int = 4
    #: Largest message accepted from a client, in bytes.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds between data-channel pings, and of silence before a client counts as gone.
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    #: Seconds for a client's offer, its data channel and its HELLO to arrive.
    connect_timeout: float = 15.0
    #: STUN/TURN servers for the executor's side of each peer connection.
    ice_servers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive integer, not {self.max_sessions!r}")
        if not isinstance(self.max_message_size, int) or self.max_message_size < 1024:
            raise ValueError(f"max_message_size must be at least 1024 bytes, not {self.max_message_size!r}")
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {self.connect_timeout!r}")
        if not self.heartbeat_timeout > self.heartbeat_interval > 0:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval, both positive")


class Executor:
    """
    A running executor. ``await executor.start()`` registers; :meth:`serve`
    accepts sessions until :meth:`close` or until the signaling connection is
    lost (then it raises :exc:`~remotemedia.exceptions.ConnectionLostError`).
    """

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.signaling: SignalingClient | None = None
        self.sessions: dict[str, asyncio.Task] = {}
        self._settings = SessionSettings(
            executor=config.name,
            token=config.token,
            max_message_size=config.max_message_size,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            connect_timeout=config.connect_timeout,
            ice_servers=list(config.ice_servers),
        )

    async def start(self) -> None:
        """Connect to the signaling server and register."""
        self.signaling = await SignalingClient.connect(self.config.signaling, token=self.config.token)
        try:
            await self.signaling.register(
                self.config.name, self.config.max_sessions, {"gpu": _has_gpu(), "services": []}
            )
        except BaseException:
            await self.signaling.close()
            raise
        logger.info("executor %r registered with %s (capacity %d)", self.config.name, self.config.signaling, self.config.max_sessions)

    async def serve(self) -> None:
        """Accept sessions and serve each in its own task, until closed."""
        while True:
            session = await self.signaling.accept()
            logger.info("session %s: paired with client %s", session.id, session.client)
            task = asyncio.create_task(ExecutorSession(session, self._settings).run(), name=f"session-{session.id}")
            self.sessions[session.id] = task
            task.add_done_callback(lambda _t, sid=session.id: self.sessions.pop(sid, None))

    async def close(self) -> None:
        """End every session (their objects' cleanup runs) and leave the signaling server."""
        for task in list(self.sessions.values()):
            task.cancel()
        await asyncio.gather(*self.sessions.values(), return_exceptions=True)
        if self.signaling is not None:
            await self.signaling.close()

    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()


def _has_gpu() -> bool:
    # Announced to the signaling server for ``pair(requirements={"gpu": True})``;
    # torch is optional, so its absence simply means no GPU we can use.
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
