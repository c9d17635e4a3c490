"""
One signaling session seen from either end: the relay of offer, answer,
candidates and bye between a client and its executor.

:class:`SignalingSession` objects come from
:meth:`SignalingClient.pair <remotemedia.signaling.client.SignalingClient.pair>`
(client) and :meth:`~remotemedia.signaling.client.SignalingClient.accept`
(executor); they send through the client connection that made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable

from ..exceptions import (
    AuthenticationError,
    ConnectionLimitError,
    ConnectionLostError,
    NoExecutorAvailable,
    PermissionDeniedError,
    QuotaExceededError,
    RemoteTimeoutError,
    SignalingError,
    TokenExpiredError,
)

if TYPE_CHECKING:
    from .client import SignalingClient

__all__ = ["SignalingSession", "ENDED", "server_error", "wait"]

logger = logging.getLogger(__name__)

_ERRORS = {
    "unauthorized": AuthenticationError,
    "token_expired": TokenExpiredError,
    "wrong_role": PermissionDeniedError,
    "forbidden": PermissionDeniedError,
    "quota_exceeded": QuotaExceededError,
    "no_executor": NoExecutorAvailable,
}
_ERRORS.update(dict.fromkeys(("server_full", "too_many_connections", "idle_timeout"), ConnectionLimitError))
#: Queue marker: the session or the connection is gone.
ENDED = object()


def server_error(message: dict) -> SignalingError:
    """The exception for an ``error`` message from the server."""
    cls = _ERRORS.get(message["code"], SignalingError)
    return cls(f"signaling server: {message['message']}", code=message["code"])


async def wait(awaitable, timeout: float | None, what: str):
    """Await with a timeout that raises :exc:`RemoteTimeoutError` naming ``what``."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        raise RemoteTimeoutError(f"{what}: no answer within {timeout:g} s") from None


class SignalingSession:
    """
    One session's relay through the signaling server, seen from either end.

    The client gets it from :meth:`SignalingClient.pair`, the executor from
    :meth:`SignalingClient.accept`. Messages from the other end arrive in
    order through :meth:`recv` (or :meth:`expect`); ``bye`` ends the session.
    """

    def __init__(self, owner: SignalingClient, message: dict) -> None:
        self._owner = owner
        self._inbox: asyncio.Queue = asyncio.Queue()
        #: Session id, chosen by the server.
        self.id: str = message["session"]
        #: Server-side id of the client end.
        self.client: str = message["client"]
        #: Signed ticket binding the session to both ends (see :mod:`~remotemedia.signaling.ticket`).
        self.ticket: str = message["ticket"]
        #: Name of the executor end.
        self.executor: str | None = message.get("executor", owner.name)
        #: The executor's capabilities (client side only, else empty).
        self.capabilities: dict = message.get("capabilities", {})
        #: What the client asked for (executor side only, else empty).
        self.requirements: dict = message.get("requirements", {})
        #: STUN/TURN servers the signaling server handed out for this session
        #: (``{urls, username, credential}`` dicts; empty when it has none).
        self.ice_servers: list[dict] = message.get("ice_servers", [])
        #: Where the executor takes a direct lane (``HOST:PORT`` each; client side only, empty when it offers none).
        self.direct: list[str] = message.get("direct", [])
        #: Why the session ended, once it has (``None`` while open).
        self.ended: str | None = None

    def __repr__(self) -> str:
        state = "open" if self.ended is None else f"ended: {self.ended}"
        return f"<SignalingSession {self.id} executor={self.executor!r} client={self.client!r} {state}>"

    async def send_offer(self, sdp: str) -> None:
        """Send an SDP offer to the other end."""
        await self._send({"type": "offer", "sdp": sdp})

    async def send_answer(self, sdp: str) -> None:
        """Send an SDP answer to the other end."""
        await self._send({"type": "answer", "sdp": sdp})

    async def send_candidate(self, candidate: dict | None) -> None:
        """Send an ICE candidate (``RTCIceCandidate.toJSON()`` form), or ``None`` for the end of them."""
        await self._send({"type": "candidate", "candidate": candidate})

    async def recv(self, timeout: float | None = None) -> dict:
        """
        The next message from the other end: ``offer``, ``answer``, ``candidate`` or ``bye``.

        ``timeout=None`` waits until a message comes or the session ends (the
        connection's websocket pings notice a dead server within about 40 s).
        After ``bye`` (or once the signaling connection is lost) it raises
        :exc:`ConnectionLostError`. An error the server reports about this
        session raises :exc:`SignalingError`.
        """
        if self.ended is not None and self._inbox.empty():
            raise ConnectionLostError(f"signaling session {self.id} has ended: {self.ended}")
        item = await wait(self._inbox.get(), timeout, f"waiting for signaling session {self.id}")
        if item is ENDED:
            self._inbox.put_nowait(ENDED)  # for any later reader
            raise ConnectionLostError(f"signaling session {self.id} has ended: {self.ended}")
        if item["type"] == "error":
            raise server_error(item)
        return item

    async def expect(self, kind: str, timeout: float | None = 10.0) -> dict:
        """
        Wait for the next message of type ``kind``; candidates that arrive
        first are handed to ``on_candidate`` registered with :meth:`on_candidate`
        (or dropped with a debug log if none is), and ``bye`` raises
        :exc:`ConnectionLostError`.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                message = await self.recv(left)
            except RemoteTimeoutError:
                raise RemoteTimeoutError(
                    f"signaling session {self.id}: no {kind!r} from the other end within {timeout:g} s"
                ) from None
            if message["type"] == kind:
                return message
            if message["type"] == "bye":
                raise ConnectionLostError(
                    f"signaling session {self.id} ended while waiting for {kind!r}: {self.ended}"
                )
            if message["type"] == "candidate" and self._on_candidate is not None:
                self._on_candidate(message["candidate"])
            else:
                logger.debug("session %s: %s skipped while waiting for %s", self.id, message["type"], kind)

    _on_candidate: Callable[[dict | None], Any] | None = None

    def on_candidate(self, callback: Callable[[dict | None], Any] | None) -> None:
        """Have :meth:`expect` pass candidates it skips to ``callback``."""
        self._on_candidate = callback

    async def close(self, reason: str = "") -> None:
        """Send ``bye`` (once) and end the session; safe to call twice."""
        if self.ended is not None:
            return
        self.ended = reason or "closed by this end"
        self._owner._sessions.pop(self.id, None)
        self._inbox.put_nowait(ENDED)
        with contextlib.suppress(ConnectionLostError):
            await self._owner._send({"type": "bye", "session": self.id, "reason": reason})

    async def _send(self, message: dict) -> None:
        if self.ended is not None:
            raise ConnectionLostError(f"signaling session {self.id} has ended: {self.ended}")
        await self._owner._send({**message, "session": self.id})

    def _deliver(self, message: dict) -> None:
        if message["type"] == "bye":
            self.ended = message.get("reason") or "the other end said bye"
        self._inbox.put_nowait(message)
        if self.ended is not None:
            self._inbox.put_nowait(ENDED)
