"""
The RPC core over one aiortc data channel: send-side backpressure, receive
dispatch, and heartbeats.

aiortc has no receive-side flow control and notices a dead peer only after
25-36 s (consent checks), so :class:`RPCChannel` pings every
``heartbeat_interval`` and declares the peer lost when nothing at all has
arrived for ``heartbeat_timeout``. Both ends run one, so each side's pings
keep the other side's timer fresh, and a large transfer counts as life too.
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

__all__ = ["RPCChannel"]

logger = logging.getLogger(__name__)

#: Above this many queued bytes, senders wait for the ``bufferedamountlow`` event.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024


def _ignore(*_args: Any) -> None:
    """What a closed channel calls instead of its owner's callbacks."""


class RPCChannel:
    """
    Sends and receives RPC messages on an open ``RTCDataChannel``.

    ``on_event`` is called (synchronously, on the event loop) with every
    :class:`~remotemedia.rpc.Message` or :class:`~remotemedia.rpc.TooLarge`
    except pings and pongs, which are answered here. ``on_lost`` is called
    once, with a reason, when the channel closes, the peer goes silent or
    sends bytes that break the protocol; after that :meth:`send` raises
    :exc:`ConnectionLostError`.
    """

    def __init__(
        self,
        channel: Any,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
    ) -> None:
        self.channel = channel
        self.protocol = protocol
        self._on_event = on_event
        self._on_lost = on_lost
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        #: Why the channel is unusable, once it is (``None`` while it works).
        self.lost: str | None = None
        self._lock = asyncio.Lock()
        self._low = asyncio.Event()
        self._last_heard = time.monotonic()
        #: Round-trip time of the last answered ping, in seconds.
        self.rtt: float | None = None
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self._low.set)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._lose("the data channel closed"))
        self._heartbeat: asyncio.Task | None = asyncio.get_running_loop().create_task(self._beat(), name="rpc-heartbeat")

    async def send(self, kind: Kind, id: int, body: Any = None, *, pickle_fallback: bool = False) -> None:
        """
        Send one message; waits while the channel's send buffer is full.

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
        """Write the payloads of one message back to back (chunks of one message never interleave)."""
        channel = self.channel
        if len(payloads) == 1 and not self._lock.locked() and channel.bufferedAmount <= HIGH_WATER:
            self._send_now(payloads[0])  # the common case: no task switch
            return
        async with self._lock:
            for payload in payloads:
                while channel.bufferedAmount > HIGH_WATER:
                    self._check()
                    self._low.clear()
                    # Wake up now and then to notice a lost channel.
                    try:
                        await asyncio.wait_for(self._low.wait(), self.heartbeat_interval)
                    except asyncio.TimeoutError:
                        pass
                self._send_now(payload)

    def _send_now(self, payload: bytes) -> None:
        self._check()
        try:
            self.channel.send(payload)
        except Exception as exc:  # aiortc raises InvalidStateError once closed
            self._lose(f"sending failed: {exc}")
            raise ConnectionLostError(f"RPC channel lost: {self.lost}") from exc

    def _check(self) -> None:
        if self.lost is not None:
            raise ConnectionLostError(f"RPC channel lost: {self.lost}")

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout``) until everything sent has left the send buffer: before closing on purpose."""
        deadline = time.monotonic() + timeout
        while self.channel.bufferedAmount > 0 and self.lost is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def close(self, reason: str = "closed by this end") -> None:
        """
        Stop the heartbeat, close the data channel and let go of everything
        this channel holds; safe to call twice.

        The channel's listeners, the callbacks and a half-received message
        are dropped here, not left to the garbage collector: the callbacks
        are usually bound methods of the owner that holds this channel, a
        reference cycle that would keep the owner (and a partial upload of
        up to ``max_message_size``) alive until the next full collection.
        """
        self._lose(reason)
        self.channel.close()
        self.channel.remove_all_listeners()
        self._on_event = _ignore
        self._on_lost = _ignore
        self.protocol.close()

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        # Dropped, not only cancelled: a cancelled task keeps its CancelledError, whose
        # traceback holds _beat's frame and so this channel, in a cycle through the task.
        heartbeat, self._heartbeat = self._heartbeat, None
        heartbeat.cancel()
        self.protocol.close()  # a partial message will never complete
        self._low.set()
        logger.debug("rpc channel: open -> lost (%s)", reason)
        self._on_lost(reason)

    def _on_message(self, data: bytes | str) -> None:
        self._last_heard = time.monotonic()
        if self.lost is not None:
            return
        if isinstance(data, str):
            self._broken("a text message on the binary RPC channel")
            return
        try:
            events = self.protocol.receive_data(data)
        except DecodeError as exc:
            self._broken(str(exc))
            return
        for event in events:
            if isinstance(event, Message) and event.kind is Kind.PING:
                self._reply_pong(event)
            elif isinstance(event, Message) and event.kind is Kind.PONG:
                sent = calls.parse_ping(event.body)
                if sent is not None:
                    self.rtt = time.monotonic() - sent
            else:
                self._on_event(event)

    def _reply_pong(self, ping: Message) -> None:
        if not self._lock.locked():  # behind a long transfer, our chunks say we are alive
            self._send_quietly(self.protocol.send(Kind.PONG, ping.id, calls.ping_body(calls.parse_ping(ping.body))))

    def _send_quietly(self, payloads: list[bytes]) -> None:
        try:
            self._send_now(payloads[0])
        except ConnectionLostError:
            pass

    def _broken(self, what: str) -> None:
        logger.warning("rpc channel: the peer broke the protocol (%s); closing", what)
        self.close(f"the peer broke the protocol: {what}")

    async def _beat(self) -> None:
        seq = 0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            silent = time.monotonic() - self._last_heard
            if silent > self.heartbeat_timeout:
                self._lose(f"no message from the peer for {silent:.1f} s (heartbeat_timeout={self.heartbeat_timeout:g} s)")
                return
            seq = (seq + 1) & 0xFFFFFFFF
            if not self._lock.locked():
                self._send_quietly(self.protocol.send(Kind.PING, seq, calls.ping_body(time.monotonic())))
