"""
What every RPC connection does the same way, whatever carries its bytes.

:class:`RPCLink` is the part of an
:class:`~remotemedia.transport.connection.RPCConnection` that does not
depend on the wire: the pickle fallback of :meth:`~RPCLink.send`, handing
received payloads to the protocol core, answering pings and timing pongs,
the heartbeat (a ``PING`` every ``heartbeat_interval``; the peer is lost
after ``heartbeat_timeout`` of silence, a large transfer counting as life),
and losing the connection once, with a reason. A lane's connection
(:class:`~remotemedia.transport.RPCChannel` on a data channel,
:class:`~remotemedia.transport.direct.DirectConnection` on TCP) adds how
bytes go out (:meth:`~RPCLink.write`, :meth:`~RPCLink._send_quietly`), how
they come in (it calls :meth:`~RPCLink._received`), and how it closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from ..exceptions import ConnectionLostError, DecodeError, EncodeError
from ..rpc import Kind, Message, RPCProtocol, calls
from ..rpc.protocol import Event
from ..serialization import dumps_object

__all__ = ["RPCLink"]

logger = logging.getLogger(__name__)


def ignore(*_args: Any) -> None:
    """What a closed connection calls instead of its owner's callbacks."""


class RPCLink:
    """
    The wire-independent half of an RPC connection (see the module docstring).

    ``on_event`` is called (synchronously, on the event loop) with every
    event but pings and pongs, which are answered here; ``on_lost`` once,
    with a reason, when the connection is lost; after that :meth:`send`
    raises :exc:`ConnectionLostError`.
    """

    #: How log lines and errors name this kind of connection.
    label = "RPC connection"

    def __init__(
        self,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        *,
        heartbeat_interval: float,
        heartbeat_timeout: float,
    ) -> None:
        self.protocol = protocol
        self._on_event = on_event
        self._on_lost = on_lost
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        #: Why the connection is unusable, once it is (``None`` while it works).
        self.lost: str | None = None
        #: Round-trip time of the last answered ping, in seconds.
        self.rtt: float | None = None
        self._lock = asyncio.Lock()  # held by a message whose chunks wait for room
        self._last_heard = time.monotonic()
        self._heartbeat: asyncio.Task | None = None

    def _start_heartbeat(self, name: str) -> None:
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name=name)

    # -- sending -------------------------------------------------------------------------

    async def send(self, kind: Kind, id: int, body: Any = None, *, pickle_fallback: bool = False) -> None:
        """
        Send one message; waits while the send buffer is full.

        With ``pickle_fallback``, a body the codec cannot carry goes as
        cloudpickle bytes (the peer loads those only once authenticated).
        Raises :exc:`~remotemedia.exceptions.MessageTooLargeError`,
        :exc:`~remotemedia.exceptions.EncodeError` or
        :exc:`ConnectionLostError`.
        """
        self._check()
        try:
            payloads = self.protocol.send(kind, id, body)
        except EncodeError:
            if not pickle_fallback:
                raise
            payloads = self.protocol.send_pickled(kind, id, dumps_object(body))
        await self.write(payloads)

    async def send_pickled(self, kind: Kind, id: int, data: bytes) -> None:
        """Send a message whose body is cloudpickle bytes already."""
        self._check()
        await self.write(self.protocol.send_pickled(kind, id, data))

    async def write(self, payloads: list[bytes]) -> None:
        """Write the payloads of one message back to back (the wire's own)."""
        raise NotImplementedError

    def _send_quietly(self, payloads: list[bytes]) -> None:
        """Send a small control message now if the wire can take it, never raising (the wire's own)."""
        raise NotImplementedError

    def _quiet(self) -> bool:
        """Whether a ping or pong may go out now (a wire may say no behind a long transfer)."""
        return True

    def _check(self) -> None:
        if self.lost is not None:
            raise ConnectionLostError(f"{self.label} lost: {self.lost}")

    # -- receiving -----------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        """One payload from the peer: pings answered, pongs timed, the rest handed up."""
        self._last_heard = time.monotonic()
        try:
            events = self.protocol.receive_data(data)
        except DecodeError as exc:
            self._broken(str(exc))
            return
        for event in events:
            if isinstance(event, Message) and event.kind is Kind.PING:
                if self._quiet():  # behind a long transfer, our chunks say we are alive
                    self._send_quietly(self.protocol.send(Kind.PONG, event.id, calls.ping_body(calls.parse_ping(event.body))))
            elif isinstance(event, Message) and event.kind is Kind.PONG:
                sent = calls.parse_ping(event.body)
                if sent is not None:
                    self.rtt = time.monotonic() - sent
            else:
                self._on_event(event)

    def _broken(self, what: str) -> None:
        logger.warning("%s: the peer broke the protocol (%s); closing", self.label, what)
        self.close(f"the peer broke the protocol: {what}")

    def close(self, reason: str = "closed by this end") -> None:
        raise NotImplementedError

    # -- life ------------------------------------------------------------------------------

    async def _beat(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            silent = time.monotonic() - self._last_heard
            if silent > self.heartbeat_timeout:
                self._lose(f"no message from the peer for {silent:.1f} s (heartbeat_timeout={self.heartbeat_timeout:g} s)")
                return
            seq = (seq + 1) & 0xFFFFFFFF
            if self._quiet():
                self._send_quietly(self.protocol.send(Kind.PING, seq, calls.ping_body(time.monotonic())))

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        # Dropped, not only cancelled: a cancelled task keeps its CancelledError, whose
        # traceback holds the task's frame and so this connection, in a cycle through the task.
        for task in self._stop_tasks():
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.protocol.close()  # a partial message will never complete
        self._lost_now()
        logger.debug("%s: open -> lost (%s)", self.label, reason)
        self._on_lost(reason)

    def _stop_tasks(self) -> list[asyncio.Task | None]:
        """The connection's tasks, forgotten here (the caller cancels them)."""
        heartbeat, self._heartbeat = self._heartbeat, None
        return [heartbeat]

    def _lost_now(self) -> None:
        """What the wire does the moment the connection is lost (wake its waiting senders, say)."""
