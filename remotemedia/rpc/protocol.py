"""
The RPC protocol between a :class:`~remotemedia.remote.RemoteProxyClient` and
an executor, sans-I/O.

Every logical message is a 6-byte header and a body::

    kind (uint8) | flags (uint8) | id (uint32, big-endian) | body

The body is encoded with :mod:`remotemedia.codec` (msgpack with out-of-band
numpy buffers), or, when the ``PICKLED`` flag is set, it is cloudpickle bytes
of a value the codec cannot carry. This module never unpickles: it hands
pickled bodies up as bytes, so the layer above decides whether the peer is
trusted enough (authenticated) to load them. Messages are cut into chunks by
:mod:`remotemedia.rpc.framing`.

What the messages say, their bodies, error codes and flow-control figures
are the call conversation's contract: :mod:`remotemedia.rpc.calls`.

Bodies of :data:`~remotemedia.rpc.compression.THRESHOLD` bytes or more are
LZ4-compressed when that helps (the ``COMPRESSED`` flag); the limits apply
to the uncompressed size, so compression never lets more through. Only the
kinds that carry data (:data:`COMPRESSIBLE`) may be compressed: a compressed
``PING`` or ``HELLO`` is refused, never inflated. A receiver given an
:class:`~remotemedia.rpc.compression.InflateBudget` refuses compressed
bodies beyond it (:class:`Rejected`, code ``rate_limited``) before
inflating them, relayed ones included.

A message whose framing is intact but whose kind is unknown or whose body
does not decode is handed up as :class:`Rejected` (code ``bad_request``),
so the receiver answers that one message and goes on; only broken framing
raises :exc:`DecodeError`, which ends the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Union

from .. import codec
from ..exceptions import DecodeError, MessageTooLargeError
from . import compression
from .calls import PROTOCOL_VERSION, ErrorCode, Kind
from .compression import InflateBudget
from .framing import CHUNK_SIZE, Reassembler, Refused, chunk

__all__ = [
    "Kind",
    "Message",
    "TooLarge",
    "Raw",
    "Rejected",
    "ErrorCode",
    "RPCProtocol",
    "PROTOCOL_VERSION",
    "HEADER_SIZE",
    "COMPRESSIBLE",
    "peek",
]

_HEADER = struct.Struct("!BBI")
#: Bytes of the header in front of every body.
HEADER_SIZE = _HEADER.size
_PICKLED = 0x01
_COMPRESSED = 0x02
_MAX_ID = 2**32 - 1


#: The kinds whose body may be compressed: those that carry data.
COMPRESSIBLE = frozenset({Kind.CREATE, Kind.CALL, Kind.RESULT, Kind.ERROR, Kind.YIELD, Kind.INPUT})


@dataclass(frozen=True)
class Message:
    """One logical message."""

    #: What the message is.
    kind: Kind
    #: The call (or object handle) it belongs to; 0 for HELLO/WELCOME.
    id: int
    #: The decoded body, or cloudpickle bytes when :attr:`pickled` is true.
    body: Any = None
    #: The body is cloudpickle bytes that the receiver must load itself.
    pickled: bool = False


@dataclass(frozen=True)
class TooLarge:
    """The peer sent a message above our ``max_message_size``; it was skipped, not buffered."""

    #: Kind of the refused message, when its header could be read.
    kind: Kind | None
    #: Its id, when its header could be read.
    id: int | None
    #: Its size in bytes.
    size: int
    #: Our limit in bytes.
    limit: int


@dataclass(frozen=True)
class Raw:
    """A whole message handed up undecoded, for a relay (see ``RPCProtocol(relay=...)``)."""

    #: What the message is.
    kind: Kind
    #: The call it belongs to.
    id: int
    #: The whole message, header included, as :meth:`RPCProtocol.decode` takes it.
    data: bytes

    @property
    def pickled(self) -> bool:
        """The body is cloudpickle bytes (read from the header's flags; nothing is decoded)."""
        return len(self.data) >= HEADER_SIZE and bool(self.data[1] & _PICKLED)


@dataclass(frozen=True)
class Rejected:
    """
    A message with intact framing that the receiver refuses to hand up:
    answer it (an ``ERROR`` with :attr:`code`) and go on.
    """

    #: Its kind, when it is a known one.
    kind: Kind | None
    #: Its id.
    id: int
    #: One of :class:`ErrorCode`'s names: ``bad_request`` or ``rate_limited``.
    code: str
    #: What was wrong, to log and to tell the peer.
    reason: str


Event = Union[Message, TooLarge, Raw, Rejected]


def peek(data: bytes) -> tuple[int, int]:
    """The kind (as an int) and id of a whole message, without decoding its body."""
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"message of {len(data)} bytes is shorter than its header")
    kind, _, id = _HEADER.unpack_from(data)
    return kind, id


class RPCProtocol:
    """
    Turns messages into data-channel payloads and back, for one connection.

    ``max_message_size`` bounds what we accept (reassembly refuses anything
    larger without buffering it). :attr:`send_limit` bounds what we send: our
    own limit, lowered to the peer's once the peer tells it (``HELLO`` /
    ``WELCOME``), so an oversized message fails here, before the wire.

    Messages whose kind is in ``relay`` are handed up as :class:`Raw`, their
    body neither decompressed nor decoded: an executor in ``process`` mode
    passes them to the session's worker process, which decodes them.
    ``inflate`` bounds the bytes this end decompresses, relayed bodies
    counted as if they were (the worker will).
    """

    def __init__(
        self,
        max_message_size: int,
        *,
        chunk_size: int = CHUNK_SIZE,
        relay: frozenset = frozenset(),
        compress: bool = True,
        inflate: InflateBudget | None = None,
    ) -> None:
        if max_message_size < HEADER_SIZE:
            raise ValueError(f"max_message_size must be at least {HEADER_SIZE} bytes, not {max_message_size}")
        self.max_message_size = max_message_size
        #: The largest message :meth:`send` will produce, in bytes.
        self.send_limit = max_message_size
        self.chunk_size = chunk_size
        self.relay = frozenset(relay)
        #: Large bodies are LZ4-compressed when that helps (off for a local socket, where it only costs time).
        self.compress = compress
        #: What this end may still decompress (``None``: no bound but ``max_message_size``).
        self.inflate = inflate
        self._reassembler = Reassembler(max_message_size)

    @property
    def pending(self) -> int:
        """Bytes held of a message not yet complete."""
        return self._reassembler.pending

    def close(self) -> None:
        """The connection is over: drop a half-received message now (it may be large)."""
        self._reassembler.clear()

    def peer_limit(self, limit: int) -> None:
        """The peer accepts messages up to ``limit`` bytes: never send more."""
        self.send_limit = max(HEADER_SIZE, min(self.max_message_size, int(limit)))

    def send(self, kind: Kind, id: int, body: Any = None) -> list[bytes]:
        """
        The data-channel payloads for one message whose body the codec carries.

        Raises :exc:`~remotemedia.exceptions.EncodeError` when it does not
        (send it with :meth:`send_pickled` instead) and
        :exc:`MessageTooLargeError` above :attr:`send_limit`.
        """
        return chunk(*self._message(kind, id, 0, codec.encode_parts(body)), self.chunk_size)

    def send_pickled(self, kind: Kind, id: int, data: bytes) -> list[bytes]:
        """The data-channel payloads for a message whose body is cloudpickle bytes."""
        return chunk(*self._message(kind, id, _PICKLED, [data]), self.chunk_size)

    def send_raw(self, data: bytes) -> list[bytes]:
        """The data-channel payloads for a whole message made by :meth:`encode` (a relay's way out)."""
        if len(data) < HEADER_SIZE:
            raise ValueError("a message is at least its header")
        self._check_size(data[0], len(data))
        return chunk([data], len(data), self.chunk_size)

    def encode(self, kind: Kind, id: int, body: Any = None, *, pickled: bool = False) -> bytes:
        """
        One whole message, unchunked (for a stream socket, where
        :meth:`decode` reads it back); ``pickled`` says ``body`` is
        cloudpickle bytes. Raises like :meth:`send`.
        """
        if pickled:
            parts, size = self._message(kind, id, _PICKLED, [body])
        else:
            parts, size = self._message(kind, id, 0, codec.encode_parts(body))
        return b"".join(parts)

    def _message(self, kind: Kind, id: int, flags: int, parts: list) -> tuple[list, int]:
        if not 0 <= id <= _MAX_ID:
            raise ValueError(f"message id {id} is out of range")
        size = HEADER_SIZE + sum(memoryview(p).nbytes for p in parts)
        self._check_size(kind, size)  # the uncompressed size: what the peer will hold
        if self.compress and kind in COMPRESSIBLE and size - HEADER_SIZE >= compression.THRESHOLD:
            packed = compression.compress(b"".join(parts) if len(parts) > 1 else parts[0])
            if packed is not None:
                flags |= _COMPRESSED
                parts = [packed]
                size = HEADER_SIZE + len(packed)
        return [_HEADER.pack(kind, flags, id), *parts], size

    def _check_size(self, kind: int, size: int) -> None:
        if size > self.send_limit:
            name = Kind(kind).name if kind in Kind._value2member_map_ else f"kind {kind}"
            raise MessageTooLargeError(
                f"{name} message of {size} bytes is above the limit of {self.send_limit} bytes "
                f"(max_message_size; the smaller of this side's and the peer's)",
                size=size,
                limit=self.send_limit,
            )

    def receive_data(self, data: bytes) -> list[Event]:
        """
        Feed one data-channel payload; returns the events it completes.

        Raises :exc:`DecodeError` when the peer broke the framing: the
        connection cannot go on after that. A body that does not decode, or
        that may not be inflated, is a :class:`Rejected` event instead.
        """
        item = self._reassembler.feed(data)
        if item is None:
            return []
        if isinstance(item, Refused):
            kind = id = None
            if len(item.head) >= HEADER_SIZE:
                raw_kind, _, id = _HEADER.unpack_from(item.head)
                kind = Kind(raw_kind) if raw_kind in Kind._value2member_map_ else None
            return [TooLarge(kind, id, item.size, item.limit)]
        if self.relay and len(item) >= HEADER_SIZE and item[0] in self.relay:
            raw_kind, flags, id = _HEADER.unpack_from(item)
            refused = self._check_inflate(Kind(raw_kind), flags, id, memoryview(item)[HEADER_SIZE:])
            return [refused or Raw(Kind(raw_kind), id, bytes(item))]
        if len(item) < HEADER_SIZE:
            raise DecodeError(f"message of {len(item)} bytes is shorter than its header")
        try:
            return [self.decode(item)]
        except DecodeError as exc:
            raw_kind, _, id = _HEADER.unpack_from(item)
            kind = Kind(raw_kind) if raw_kind in Kind._value2member_map_ else None
            return [Rejected(kind, id, ErrorCode.BAD_REQUEST, f"a message that does not decode: {exc}")]

    def _check_inflate(self, kind: Kind, flags: int, id: int, body: memoryview) -> Rejected | TooLarge | None:
        """Why a compressed body may not be inflated (``None`` when it may, or is not compressed)."""
        if not flags & _COMPRESSED:
            return None
        if kind not in COMPRESSIBLE:
            return Rejected(kind, id, ErrorCode.BAD_REQUEST, f"a {kind.name} message may not be compressed")
        try:
            size = HEADER_SIZE + compression.compressed_size(body)
        except ValueError as exc:
            return Rejected(kind, id, ErrorCode.BAD_REQUEST, str(exc))
        if size > self.max_message_size:
            return TooLarge(kind, id, size, self.max_message_size)
        if self.inflate is not None and not self.inflate.take(size):
            return Rejected(
                kind,
                id,
                ErrorCode.RATE_LIMITED,
                f"compressed bodies inflating faster than {self.inflate.rate} bytes/s (the receiver's "
                f"inflate rate); this one ({size} bytes) was refused: send less, or less compressible data",
            )
        return None

    def decode(self, data: bytes | bytearray) -> Message | TooLarge | Rejected:
        """
        One whole message (reassembled, or made by :meth:`encode`).

        A compressed body that would be above ``max_message_size`` once
        decompressed gives :class:`TooLarge`, and one that may not be
        inflated (a control kind, over the inflate budget) :class:`Rejected`,
        before it is decompressed. Raises :exc:`DecodeError` for bytes that
        are not a valid message.
        """
        if len(data) < HEADER_SIZE:
            raise DecodeError(f"message of {len(data)} bytes is shorter than its header")
        raw_kind, flags, id = _HEADER.unpack_from(data)
        try:
            kind = Kind(raw_kind)
        except ValueError:
            raise DecodeError(f"unknown message kind {raw_kind}") from None
        body: Any = memoryview(data)[HEADER_SIZE:]
        if flags & _COMPRESSED:
            refused = self._check_inflate(kind, flags, id, body)
            if refused is not None:
                return refused
            try:
                body = compression.decompress(body)
            except ValueError as exc:
                raise DecodeError(str(exc)) from None
        if flags & _PICKLED:
            return Message(kind, id, bytes(body), pickled=True)
        return Message(kind, id, codec.decode(body))
