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
import time
from typing import Any, Callable

from ..exceptions import ConnectionLostError
from ..rpc import RPCProtocol
from ..rpc.protocol import Event
from .link import RPCLink, ignore

__all__ = ["RPCChannel"]

#: Above this many queued bytes, senders wait for the ``bufferedamountlow`` event.
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024


class RPCChannel(RPCLink):
    """
    Sends and receives RPC messages on an open ``RTCDataChannel``.

    ``on_event`` is called (synchronously, on the event loop) with every
    :class:`~remotemedia.rpc.Message` or :class:`~remotemedia.rpc.TooLarge`
    except pings and pongs, which are answered here. ``on_lost`` is called
    once, with a reason, when the channel closes, the peer goes silent or
    sends bytes that break the protocol; after that :meth:`send` raises
    :exc:`ConnectionLostError`. Sending, pings and losing are
    :class:`~remotemedia.transport.link.RPCLink`'s; this class adds the
    data channel's backpressure (``bufferedAmount``).
    """

    label = "RPC channel"

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
        super().__init__(protocol, on_event, on_lost, heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout)
        self.channel = channel
        self._low = asyncio.Event()
        channel.bufferedAmountLowThreshold = LOW_WATER
        channel.on("bufferedamountlow", self._low.set)
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._lose("the data channel closed"))
        self._start_heartbeat("rpc-heartbeat")

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
            raise ConnectionLostError(f"{self.label} lost: {self.lost}") from exc

    def _send_quietly(self, payloads: list[bytes]) -> None:
        try:
            self._send_now(payloads[0])
        except ConnectionLostError:
            pass

    def _quiet(self) -> bool:
        # Behind a long transfer (its chunks waiting for room), a ping would only queue.
        return not self._lock.locked()

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
        self._on_event = ignore
        self._on_lost = ignore
        self.protocol.close()

    def _lost_now(self) -> None:
        self._low.set()  # senders waiting for room notice the loss

    def _on_message(self, data: bytes | str) -> None:
        self._last_heard = time.monotonic()
        if self.lost is not None:
            return
        if isinstance(data, str):
            self._broken("a text message on the binary RPC channel")
            return
        self._received(data)
