"""
The executor's door for direct lanes (:mod:`remotemedia.transport.direct`)
and the client's dial: the *knock* that opens a direct lane, and its answer.

The first frame from the client (a 4-byte length and the bytes, as on the
lane itself) is the knock (:func:`knock_body`): the session's ticket, and
whether a peer connection for media follows. It is JSON of at most
:data:`MAX_KNOCK` bytes; the :class:`DirectDoor` reads nothing more before
the ticket matches a session the signaling server told this executor about
(and nothing at all is unpickled on the door's side). A wrong ticket, an
oversized or late knock close the socket; at most :data:`MAX_KNOCKING`
connections wait for their check, each holding at most about
2 x :data:`DOOR_BUFFER` bytes. A ticket that matches is answered with
:data:`ADMITTED`, so the client counts the lane as up only once the executor
has taken it: a port that answers but is not the executor's door is a
failure to fall back from, not a lane that breaks later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import ssl
from typing import Iterable

from ..exceptions import ConnectionLostError, DecodeError, RemoteTimeoutError
from ..rpc.framing import frame, read_frame

__all__ = [
    "DirectDoor",
    "Knock",
    "ADMITTED",
    "MAX_KNOCK",
    "DIAL_TIMEOUT",
    "knock_body",
    "parse_knock",
    "parse_address",
    "dial",
]

logger = logging.getLogger(__name__)

#: Largest knock (the first frame, read before the ticket is checked), in bytes.
MAX_KNOCK = 4096
#: Seconds a client gives the direct lane to connect and be admitted before it takes the data channel.
DIAL_TIMEOUT = 2.0
#: Seconds the door waits for a knock after a TCP connection opens.
KNOCK_TIMEOUT = 5.0
#: Seconds a knock may wait for its session to be set up: the client may hear ``paired`` before the executor
#: has read its ``session`` message.
KNOCK_GRACE = 2.0
#: Connections the door holds before their knock is checked; more are closed at once.
MAX_KNOCKING = 64
#: The door's read buffer (asyncio pauses reading at twice this): what an unchecked connection can make it hold.
DOOR_BUFFER = 64 * 1024


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


async def dial(
    addresses: Iterable[str],
    ticket: str,
    *,
    media: bool,
    ssl_context: ssl.SSLContext | None,
    timeout: float,
    limit: int = 1 << 22,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """
    Connect to the first of the executor's announced ``addresses`` that
    admits ``ticket``; returns the stream (its reader buffering ``limit``
    bytes) and the address.

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
                    host, port, ssl=ssl_context, server_hostname=host if ssl_context is not None else None, limit=limit
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
