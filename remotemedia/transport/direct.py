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

The first frame from the client is the *knock* (:func:`knock_body`): the
session's ticket, and whether a peer connection for media follows. It is
JSON of at most :data:`MAX_KNOCK` bytes; the executor's :class:`DirectDoor`
reads nothing more before the ticket matches a session it was told about by
the signaling server (and nothing at all is unpickled on the door's side).
A wrong ticket, an oversized or late knock close the socket; a ticket that
matches is answered with :data:`ADMITTED`, so the client counts the lane as
up only once the executor has taken it (a port that answers but is not the
executor's door is a failure to fall back from, not a lane that breaks later).

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
import hashlib
import ipaddress
import json
import logging
import socket
import ssl
import time
from typing import Any, Callable, Iterable

from ..exceptions import ConnectionLostError, DecodeError, EncodeError, RemoteMediaError, RemoteTimeoutError
from ..rpc import Kind, Message, RPCProtocol, calls
from ..rpc.framing import frame, read_frame
from ..rpc.protocol import Event
from ..serialization import dumps_object
from ..signaling import SignalingSession
from .connection import DataChannelLane, Lane
from .ice import Route
from .peer import watch_bye

__all__ = [
    "ADMITTED",
    "DirectLane",
    "DirectConnection",
    "DirectDoor",
    "Knock",
    "CHUNK_SIZE",
    "MAX_KNOCK",
    "DIAL_TIMEOUT",
    "knock_body",
    "parse_knock",
    "parse_address",
    "dial",
]

logger = logging.getLogger(__name__)

#: Largest RPC chunk on the direct lane: 1 MiB echoes in two frames; memory per frame stays small.
CHUNK_SIZE = 1024 * 1024
#: Largest knock (the first frame, read before the ticket is checked), in bytes.
MAX_KNOCK = 4096
#: Seconds a client gives the direct lane to connect before it takes the data channel.
DIAL_TIMEOUT = 2.0
#: Seconds the door waits for a knock after a TCP connection opens.
KNOCK_TIMEOUT = 5.0
#: Seconds a knock may wait for its session to be set up: the client may hear ``paired`` before the executor
#: has read its ``session`` message.
KNOCK_GRACE = 2.0
#: Above this many bytes in the socket's send buffer, senders wait (``writer.drain()``).
HIGH_WATER = 4 * 1024 * 1024
#: Connections the door holds before their knock is checked; more are closed at once.
MAX_KNOCKING = 64
#: The door's read buffer (asyncio pauses reading at twice this): what an unchecked connection can make it hold.
DOOR_BUFFER = 64 * 1024
#: Seconds a closed connection may still flush before it is aborted.
CLOSE_TIMEOUT = 2.0


class Knock:
    """What the first frame on the direct lane says."""

    __slots__ = ("ticket", "media")

    def __init__(self, ticket: str, media: bool) -> None:
        #: The session's ticket, as the signaling server handed it to both ends.
        self.ticket = ticket
        #: Whether the client opens a peer connection for media tracks too.
        self.media = media


#: The door's answer to a knock it admits (the first frame the executor sends on the lane).
ADMITTED = b'{"admitted":true}'


def knock_body(ticket: str, media: bool) -> bytes:
    """The knock's bytes (JSON: nothing in it is code)."""
    return json.dumps({"ticket": ticket, "media": bool(media)}, separators=(",", ":")).encode()


def parse_knock(data: bytes) -> Knock:
    """The knock in ``data``; :exc:`DecodeError` for anything else."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"the knock is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("ticket"), str) or not isinstance(body.get("media", False), bool):
        raise DecodeError("the knock must be {ticket: str, media: bool}")
    return Knock(body["ticket"], body.get("media", False))


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` too) as ``(host, port)``; :exc:`ValueError` when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"a direct address is HOST:PORT (port 0 for any), not {address!r}")
    return host.strip("[]"), int(port)


def _key(ticket: str) -> bytes:
    # Looked up by a digest, so the dict's string comparison leaks nothing of a ticket.
    return hashlib.sha256(ticket.encode()).digest()


def _loopback(address: Any) -> bool:
    """Whether a socket address is this machine's loopback."""
    try:
        return bool(address) and ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return False


def _ignore(*_args: Any) -> None:
    """What a closed connection calls instead of its owner's callbacks."""


class DirectConnection:
    """
    The RPC over one TCP stream: an :class:`~remotemedia.transport.connection.RPCConnection`.

    Heartbeats as on the data channel (``PING`` every ``heartbeat_interval``,
    lost after ``heartbeat_timeout`` of silence); the end of the stream is a
    loss too. Sends wait while the socket's buffer is above :data:`HIGH_WATER`.
    """

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
        protocol.chunk_size = CHUNK_SIZE
        self.protocol = protocol
        self._reader = reader
        self._writer = writer
        self._on_event = on_event
        self._on_lost = on_lost
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        #: Why the connection is unusable, once it is (``None`` while it works).
        self.lost: str | None = None
        #: Round-trip time of the last answered ping, in seconds.
        self.rtt: float | None = None
        self._lock = asyncio.Lock()
        self._last_heard = time.monotonic()
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
        loop = asyncio.get_running_loop()
        self._reading: asyncio.Task | None = loop.create_task(self._read(), name="rpc-direct-read")
        self._heartbeat: asyncio.Task | None = loop.create_task(self._beat(), name="rpc-direct-heartbeat")

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

    async def send(self, kind: Kind, id: int, body: Any = None, *, pickle_fallback: bool = False) -> None:
        """Send one message (see :meth:`RPCChannel.send <remotemedia.transport.RPCChannel.send>`)."""
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
        """Write the chunks of one message back to back (in one go: chunks of two messages never interleave)."""
        self._check()
        pieces: list[bytes] = []
        for payload in payloads:
            pieces += frame(payload)
        try:
            self._writer.writelines(pieces)
        except (OSError, RuntimeError) as exc:
            self._lose(f"sending failed: {exc}")
            raise ConnectionLostError(f"direct RPC connection lost: {self.lost}") from exc
        if self._writer.transport.get_write_buffer_size() > HIGH_WATER:
            async with self._lock:
                try:
                    await self._writer.drain()
                except (OSError, RuntimeError) as exc:
                    self._lose(f"sending failed: {exc}")
                self._check()

    def _check(self) -> None:
        if self.lost is not None:
            raise ConnectionLostError(f"direct RPC connection lost: {self.lost}")

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (at most ``timeout``) until everything sent has left the send buffer."""
        deadline = time.monotonic() + timeout
        transport = self._writer.transport
        while transport.get_write_buffer_size() > 0 and self.lost is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def close(self, reason: str = "closed by this end") -> None:
        """Stop reading and the heartbeat, close the socket (aborted if it cannot flush in time); safe twice."""
        self._lose(reason)
        self._on_event = _ignore
        self._on_lost = _ignore
        transport = self._writer.transport
        if not transport.is_closing():
            transport.close()
            # A peer that reads nothing must not keep our buffer (and the socket) forever.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        for task in (self._reading, self._heartbeat):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        # Dropped, not only cancelled: a cancelled task's traceback would hold this connection in a cycle.
        self._reading = self._heartbeat = None
        self.protocol.close()
        logger.debug("direct rpc connection %s: open -> lost (%s)", self.peer, reason)
        self._on_lost(reason)

    async def _read(self) -> None:
        limit = CHUNK_SIZE + 16  # a chunk's own header; anything larger is not ours
        try:
            while True:
                data = await read_frame(self._reader, limit)
                if data is None:
                    self._lose("the direct connection closed")
                    return
                self._last_heard = time.monotonic()
                self._receive(data)
                if self.lost is not None:
                    return
        except DecodeError as exc:
            self._broken(str(exc))
        except (OSError, ssl.SSLError) as exc:
            self._lose(f"the direct connection broke: {exc}")

    def _receive(self, data: bytes) -> None:
        try:
            events = self.protocol.receive_data(data)
        except DecodeError as exc:
            self._broken(str(exc))
            return
        for event in events:
            if isinstance(event, Message) and event.kind is Kind.PING:
                self._send_quietly(self.protocol.send(Kind.PONG, event.id, calls.ping_body(calls.parse_ping(event.body))))
            elif isinstance(event, Message) and event.kind is Kind.PONG:
                t = calls.parse_ping(event.body)
                if t is not None:
                    self.rtt = time.monotonic() - t
            else:
                self._on_event(event)

    def _send_quietly(self, payloads: list[bytes]) -> None:
        # Whole messages are written in one go, so a pong may go out even behind a long transfer.
        if self.lost is None:
            try:
                self._writer.writelines([piece for payload in payloads for piece in frame(payload)])
            except (OSError, RuntimeError) as exc:
                self._lose(f"sending failed: {exc}")

    def _broken(self, what: str) -> None:
        logger.warning("direct rpc connection %s: the peer broke the protocol (%s); closing", self.peer, what)
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
            self._send_quietly(self.protocol.send(Kind.PING, seq, calls.ping_body(time.monotonic())))


async def dial(
    addresses: Iterable[str],
    ticket: str,
    *,
    media: bool,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """
    Connect to the first of the executor's announced ``addresses`` that
    answers and knock with ``ticket``; returns the stream and the address.

    Raises :exc:`RemoteTimeoutError` or :exc:`OSError` (the last failure) when none answers in ``timeout`` s.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    failure: BaseException | None = None
    for address in addresses:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            host, port = parse_address(address)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=ssl_context, server_hostname=host if ssl_context is not None else None, limit=4 * CHUNK_SIZE
                ),
                left,
            )
        except asyncio.TimeoutError:
            failure = RemoteTimeoutError(f"the direct lane at {address} did not answer within {timeout:g} s")
            continue
        except (OSError, ValueError, ssl.SSLError) as exc:
            failure = exc
            continue
        writer.writelines(frame(knock_body(ticket, media)))
        try:
            answer = await asyncio.wait_for(read_frame(reader, MAX_KNOCK), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            failure = RemoteTimeoutError(f"the direct lane at {address} did not admit us within {timeout:g} s")
        except (OSError, ssl.SSLError, DecodeError) as exc:
            failure = exc
        else:
            if answer == ADMITTED:
                return reader, writer, address
            failure = ConnectionLostError(f"{address} did not admit this session's ticket: not its executor's direct lane")
        writer.transport.abort()
    if failure is None:
        failure = RemoteTimeoutError(f"no direct address to try within {timeout:g} s")
    raise failure


class DirectDoor:
    """
    The executor's listening socket for direct lanes.

    A session expects its client with :meth:`expect` (by its ticket, from the
    signaling server); a connection whose knock shows that ticket is handed to
    it; any other is closed having had nothing but its knock read.
    """

    def __init__(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, announce: str | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self._announce = announce
        self._server: asyncio.base_events.Server | None = None
        self._waiting: dict[bytes, asyncio.Future] = {}
        self._early: dict[bytes, asyncio.Event] = {}  # knocks waiting for their session (KNOCK_GRACE)
        self._knocks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Listen (raises :exc:`OSError` when the address cannot be bound)."""
        self._server = await asyncio.start_server(
            self._knocked, self.host or None, self.port, ssl=self.ssl_context, limit=DOOR_BUFFER,
            ssl_handshake_timeout=KNOCK_TIMEOUT if self.ssl_context is not None else None,
        )
        logger.info("direct lane listening on %s%s", ", ".join(self.addresses), " (TLS)" if self.ssl_context else "")

    @property
    def addresses(self) -> list[str]:
        """What clients should dial: ``HOST:PORT`` each (the bound port; a wildcard host becomes this host's addresses)."""
        if self._server is None:
            return []
        port = self._server.sockets[0].getsockname()[1]
        if self._announce:
            return [f"{self._announce}:{port}"]
        if self.host not in ("", "0.0.0.0", "::"):
            return [f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"]
        hosts: list[str] = []
        try:
            for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM):
                if info[4][0] not in hosts and not info[4][0].startswith("127."):
                    hosts.append(info[4][0])
        except OSError:
            pass
        return [f"{h}:{port}" for h in hosts[:7]] + [f"127.0.0.1:{port}"]

    def expect(self, ticket: str) -> asyncio.Future:
        """A future that gets ``(reader, writer, Knock)`` when the client with ``ticket`` knocks."""
        future = asyncio.get_running_loop().create_future()
        key = _key(ticket)
        self._waiting[key] = future
        if key in self._early:
            self._early[key].set()
        return future

    def forget(self, ticket: str) -> None:
        """The session ended or took the data channel: a later knock with ``ticket`` is refused."""
        future = self._waiting.pop(_key(ticket), None)
        if future is not None and not future.done():
            future.cancel()

    async def close(self) -> None:
        """Stop listening; knocks being read are dropped."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._knocks):
            task.cancel()
        await asyncio.gather(*self._knocks, return_exceptions=True)
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        self._waiting.clear()

    async def _knocked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._knocks) >= MAX_KNOCKING:
            logger.warning("direct lane: %d connections are knocking already; one more closed", len(self._knocks))
            writer.transport.abort()
            return
        self._knocks.add(task)
        try:
            why = await self._admit(reader, writer)
        except asyncio.CancelledError:
            why = "the executor is closing"
        finally:
            self._knocks.discard(task)
        if why is not None:
            peer = writer.get_extra_info("peername")
            logger.warning("direct lane: refused a connection from %s: %s", peer[0] if peer else "?", why)
            writer.transport.abort()

    async def _admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str | None:
        """Read the knock and hand the stream to its session; why not, when it is refused."""
        try:
            data = await asyncio.wait_for(read_frame(reader, MAX_KNOCK), KNOCK_TIMEOUT)
        except asyncio.TimeoutError:
            return f"no knock within {KNOCK_TIMEOUT:g} s"
        except DecodeError as exc:
            return str(exc)
        except (OSError, ssl.SSLError) as exc:
            return f"the connection broke: {exc}"
        if data is None:
            return "closed before knocking"
        try:
            knock = parse_knock(data)
        except DecodeError as exc:
            return str(exc)
        key = _key(knock.ticket)
        if key not in self._waiting and key not in self._early:
            # Nothing more is read meanwhile; an unknown ticket costs the door this connection for KNOCK_GRACE s.
            self._early[key] = arrived = asyncio.Event()
            try:
                await asyncio.wait_for(arrived.wait(), KNOCK_GRACE)
            except asyncio.TimeoutError:
                pass
            finally:
                self._early.pop(key, None)
        future = self._waiting.pop(key, None)
        if future is None or future.done():
            return "wrong session ticket"
        writer.writelines(frame(ADMITTED))
        future.set_result((reader, writer, knock))
        return None


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
                addresses, session.ticket, media=bool(media_tracks), ssl_context=ssl_context, timeout=min(DIAL_TIMEOUT, timeout)
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
