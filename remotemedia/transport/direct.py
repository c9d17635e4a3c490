"""
The direct lane: the RPC over a plain TCP stream (TLS with ``wss://``
signaling) from the client straight to the executor, when the executor
offers one and the client can reach it.

Why: aiortc's SCTP data channel is pure Python and CPU-bound (3-11 MB/s on
loopback), while a TCP stream moves hundreds of MB/s. Media still goes on
WebRTC tracks; only the RPC (calls, results, arrays) moves here.

Wire: every frame is a 4-byte big-endian length and one payload
(:func:`remotemedia.rpc.framing.frame`, as on the worker's socket). The
payloads are the RPC core's own chunks (:meth:`RPCProtocol.send`), only
larger (:data:`CHUNK_SIZE`), so ``max_message_size``, relayed bodies,
inflate budgets and refusals behave exactly as on the data channel, and a
large message is reassembled chunk by chunk, bounded by the receiver's limit.

The first frame from the client is the *knock*, the session's ticket, which
the executor's door checks before it reads anything else, and answers when
it admits the lane (:mod:`remotemedia.transport.door`).

Which lane wins (the client decides, the executor follows):

- a client with no media tracks dials the direct address first (at most
  :data:`DIAL_TIMEOUT` s; a closed port fails at once) and opens a peer
  connection only if that fails: no ICE at all on the fast path;
- a client with media tracks dials while ICE runs (the peer connection is
  needed for the tracks anyway) and runs the RPC on the direct lane if it came
  up, else on the data channel;
- the executor takes the RPC from the first of the two that speaks: the knock
  on its door, or a first message on the data channel.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from typing import Any, Callable

from ..exceptions import ConnectionLostError, DecodeError, RemoteMediaError
from ..rpc import RPCProtocol
from ..rpc.framing import frame, read_frame
from ..rpc.protocol import Event
from ..signaling import SignalingSession
from .connection import DataChannelLane, Lane
from .door import DIAL_TIMEOUT, dial
from .ice import Route
from .link import RPCLink, ignore
from .peer import watch_bye

__all__ = ["DirectLane", "DirectConnection", "CHUNK_SIZE"]

logger = logging.getLogger(__name__)

#: Largest RPC chunk on the direct lane: 1 MiB echoes in two frames; memory per frame stays small.
CHUNK_SIZE = 1024 * 1024
#: Above this many bytes in the socket's send buffer, senders wait (``writer.drain()``).
HIGH_WATER = 4 * 1024 * 1024
#: Seconds a closed connection may still flush before it is aborted.
CLOSE_TIMEOUT = 2.0


def _loopback(address: Any) -> bool:
    """Whether a socket address is this machine's loopback."""
    try:
        return bool(address) and ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return False


class DirectConnection(RPCLink):
    """
    The RPC over one TCP stream: an :class:`~remotemedia.transport.connection.RPCConnection`.

    Heartbeats as on the data channel (:class:`~remotemedia.transport.link.RPCLink`:
    ``PING`` every ``heartbeat_interval``, lost after ``heartbeat_timeout`` of
    silence); the end of the stream is a loss too. Sends wait while the
    socket's buffer is above :data:`HIGH_WATER`.
    """

    label = "direct RPC connection"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
    ) -> None:
        super().__init__(protocol, on_event, on_lost, heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout)
        protocol.chunk_size = CHUNK_SIZE
        self._reader = reader
        self._writer = writer
        if _loopback(writer.get_extra_info("peername")):
            # On one machine compression only costs time: LZ4 takes ~1.3 ms per MiB of incompressible
            # floats each way, a quarter of a 1 MiB echo's round trip (measured; a LAN keeps it).
            protocol.compress = False
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a 64-byte call must not wait for Nagle
            except OSError:
                pass
        self._reading: asyncio.Task | None = asyncio.get_running_loop().create_task(self._read(), name="rpc-direct-read")
        self._start_heartbeat("rpc-direct-heartbeat")

    @property
    def peer(self) -> str:
        """The other end's address, ``HOST:PORT``."""
        return self._address("peername")

    @property
    def local(self) -> str:
        """This end's address, ``HOST:PORT``."""
        return self._address("sockname")

    def _address(self, which: str) -> str:
        name = self._writer.get_extra_info(which)
        return f"{name[0]}:{name[1]}" if name else "?"

    async def write(self, payloads: list[bytes]) -> None:
        """Write the chunks of one message back to back (in one go: chunks of two messages never interleave)."""
        self._check()
        pieces: list[bytes] = []
        for payload in payloads:
            pieces += frame(payload)
        try:
            self._writer.writelines(pieces)
        except (OSError, RuntimeError) as exc:
            self._lose(f"sending failed: {exc}")
            raise ConnectionLostError(f"{self.label} lost: {self.lost}") from exc
        if self._writer.transport.get_write_buffer_size() > HIGH_WATER:
            async with self._lock:
                try:
                    await self._writer.drain()
                except (OSError, RuntimeError) as exc:
                    self._lose(f"sending failed: {exc}")
                self._check()

    def _send_quietly(self, payloads: list[bytes]) -> None:
        # Whole messages are written in one go, so a pong may go out even behind a long transfer.
        if self.lost is None:
            try:
                self._writer.writelines([piece for payload in payloads for piece in frame(payload)])
            except (OSError, RuntimeError) as exc:
                self._lose(f"sending failed: {exc}")

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout``) until everything sent has left the send buffer."""
        deadline = time.monotonic() + timeout
        transport = self._writer.transport
        while transport.get_write_buffer_size() > 0 and self.lost is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def close(self, reason: str = "closed by this end") -> None:
        """Stop reading and the heartbeat, close the socket (aborted if it cannot flush in time); safe twice."""
        self._lose(reason)
        self._on_event = ignore
        self._on_lost = ignore
        transport = self._writer.transport
        if not transport.is_closing():
            transport.close()
            # A peer that reads nothing must not keep our buffer (and the socket) forever.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def _stop_tasks(self) -> list[asyncio.Task | None]:
        reading, self._reading = self._reading, None
        return [reading, *super()._stop_tasks()]

    async def _read(self) -> None:
        limit = CHUNK_SIZE + 16  # a chunk's own header; anything larger is not ours
        try:
            while True:
                data = await read_frame(self._reader, limit)
                if data is None:
                    self._lose("the direct connection closed")
                    return
                self._received(data)
                if self.lost is not None:
                    return
        except DecodeError as exc:
            self._broken(str(exc))
        except (OSError, ssl.SSLError) as exc:
            self._lose(f"the direct connection broke: {exc}")


def _twin(protocol: RPCProtocol) -> RPCProtocol:
    """A protocol like ``protocol`` for the other lane: two connections never share a reassembler."""
    return RPCProtocol(protocol.max_message_size, relay=protocol.relay, compress=protocol.compress, inflate=protocol.inflate)


async def _drop(task: asyncio.Task | None) -> None:
    """Stop a data-channel set-up that lost the race, closing its lane if it had made one."""
    if task is None:
        return
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if isinstance(results[0], Lane):
        await results[0].close("the direct lane took the RPC")


class _Switch:
    """
    The executor's data-channel events before the client has chosen its lane.

    The first message on the data channel chooses it (the client sends its
    ``HELLO`` there only when it has no direct lane); it and what follows are
    held until the session has the lane (:meth:`open_soon`). Once the direct
    lane is chosen, the data channel carries only media, and anything on it is dropped.
    """

    def __init__(self, target: Callable[[Event], None]) -> None:
        self._target = target
        self._held: list[Event] = []
        self._state = "waiting"
        #: Done when the data channel's first message came.
        self.spoke: asyncio.Future = asyncio.get_running_loop().create_future()

    def event(self, event: Event) -> None:
        if self._state == "open":
            self._target(event)
        elif self._state != "muted":
            self._held.append(event)
            if not self.spoke.done():
                self.spoke.set_result(None)

    def mute(self) -> None:
        self._state = "muted"
        self._held.clear()

    def open_soon(self) -> None:
        # call_soon: the session stores the lane in the step that gets it back, before these run.
        self._state = "held"
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        held, self._held = self._held, []
        self._state = "open"
        for event in held:
            self._target(event)


class DirectLane(Lane):
    """
    The RPC over a :class:`DirectConnection`; media slots (if any) on a
    peer connection opened alongside (its data channel idles, heartbeating).
    """

    #: Which lane this is (``client.lane``).
    name = "direct"

    def __init__(self, rpc: DirectConnection, companion: DataChannelLane | None, watcher: asyncio.Task | None) -> None:
        self.rpc = rpc
        self.companion = companion
        self.slots = companion.slots if companion is not None else []
        self._watcher = watcher

    @property
    def route(self) -> Route | None:
        """The peer connection's route when media came along, else the TCP connection's (kind ``direct``)."""
        if self.companion is not None:
            return self.companion.route
        return Route("direct", f"tcp {self.rpc.local}", f"tcp {self.rpc.peer}")

    async def close(self, reason: str = "closed by this end") -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self.rpc.close(reason)
        companion, self.companion = self.companion, None
        if companion is not None:
            await companion.close(reason)

    @classmethod
    async def connect(
        cls,
        session: SignalingSession,
        *,
        required: bool,
        addresses: list[str],
        ssl_context: ssl.SSLContext | None,
        media_tracks: int,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        on_bye: Callable[[str], None],
        heartbeat_interval: float,
        heartbeat_timeout: float,
        timeout: float,
        what: str,
        **channel: Any,
    ) -> Lane:
        """
        The client's side: the direct lane if it connects within
        :data:`DIAL_TIMEOUT` s, else (unless ``required``) the data channel.
        ``channel``: :meth:`DataChannelLane.connect`'s own arguments.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        beats = {"heartbeat_interval": heartbeat_interval, "heartbeat_timeout": heartbeat_timeout}

        def data_channel(protocol: RPCProtocol) -> Any:
            return DataChannelLane.connect(
                session, media_tracks=media_tracks, protocol=protocol, on_event=on_event, on_lost=on_lost, on_bye=on_bye,
                timeout=max(0.1, deadline - loop.time()), what=what, **beats, **channel,
            )

        # With media tracks the peer connection is needed anyway: ICE runs while we dial.
        companion = asyncio.create_task(data_channel(_twin(protocol)), name="rpc-companion") if media_tracks else None
        try:
            reader, writer, address = await dial(
                addresses, session.ticket, media=bool(media_tracks), ssl_context=ssl_context, timeout=min(DIAL_TIMEOUT, timeout),
                limit=4 * CHUNK_SIZE,
            )
        except (RemoteMediaError, OSError, ssl.SSLError) as exc:
            if required:
                await _drop(companion)
                raise ConnectionLostError(
                    f"{what}: the direct lane ({', '.join(addresses)}) is unreachable ({exc}); open that TCP port "
                    "to this client, or use lane='auto' to fall back to the data channel"
                ) from exc
            logger.info("direct lane to %s unreachable (%s): the RPC takes the data channel", ", ".join(addresses), exc)
            return await (companion if companion is not None else data_channel(protocol))
        except BaseException:
            await _drop(companion)
            raise
        try:
            lane = await companion if companion is not None else None
        except BaseException:
            writer.transport.abort()
            raise
        rpc = DirectConnection(reader, writer, protocol, on_event, on_lost, **beats)
        # Without a peer connection, the signaling session is what says the executor left.
        watcher = None if lane is not None else asyncio.create_task(watch_bye(session, on_bye), name="rpc-signaling-watch")
        logger.debug("direct lane to %s open", address)
        return cls(rpc, lane, watcher)

    @classmethod
    async def accept(
        cls,
        session: SignalingSession,
        *,
        direct: asyncio.Future,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        on_bye: Callable[[str], None],
        heartbeat_interval: float,
        heartbeat_timeout: float,
        timeout: float,
        ended: asyncio.Event,
        **channel: Any,
    ) -> Lane | None:
        """
        The executor's side: whichever lane the client speaks on first (the
        knock on the door, ``direct``, or a message on the data channel).
        ``None`` when ``ended`` comes first; :exc:`asyncio.TimeoutError` when neither speaks in time.
        """
        loop = asyncio.get_running_loop()
        beats = {"heartbeat_interval": heartbeat_interval, "heartbeat_timeout": heartbeat_timeout}
        switch = _Switch(on_event)
        offered = asyncio.create_task(
            DataChannelLane.accept(
                session, protocol=_twin(protocol), on_event=switch.event, on_lost=on_lost, on_bye=on_bye,
                timeout=timeout, ended=ended, **beats, **channel,
            ),
            name=f"rpc-channel-{session.id}",
        )
        stopped = asyncio.ensure_future(ended.wait())
        waiting = {direct, switch.spoke, offered, stopped}
        deadline = loop.time() + 2 * timeout  # the offer, then the channel: timeout each, as on the data channel alone
        try:
            while not (direct.done() or switch.spoke.done() or ended.is_set()):
                done, _ = await asyncio.wait(waiting, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise asyncio.TimeoutError()
                if offered in done:
                    waiting.discard(offered)
                    if offered.result() is None and not direct.done():  # ended (or raises: no offer, no channel)
                        direct.cancel()
                        return None
        except BaseException:
            direct.cancel()
            await _drop(offered)
            raise
        finally:
            stopped.cancel()
        knocked = direct.done() and not direct.cancelled()
        if not knocked and not switch.spoke.done():  # ended first, or the door closed (the executor stops)
            direct.cancel()
            await _drop(offered)
            return None
        if not knocked:
            direct.cancel()  # a knock from now on is refused
            switch.open_soon()
            return await offered  # it spoke: it is open
        reader, writer, knock = direct.result()
        switch.mute()
        lane = None
        try:
            if knock.media:
                lane = await offered
                if lane is None:  # the session ended meanwhile
                    writer.transport.abort()
                    return None
            else:
                await _drop(offered)
        except BaseException:
            writer.transport.abort()
            raise
        rpc = DirectConnection(reader, writer, protocol, on_event, on_lost, **beats)
        watcher = None if lane is not None else asyncio.create_task(watch_bye(session, on_bye), name=f"rpc-signaling-watch-{session.id}")
        logger.info("session %s: direct lane from %s", session.id, rpc.peer)
        return cls(rpc, lane, watcher)
