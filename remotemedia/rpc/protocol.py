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

The conversation, client (C) and executor (E)::

    C: HELLO   {ticket, max_message_size, version}     E: WELCOME {executor, max_message_size}
    C: CREATE  id, {object: cloudpickle bytes}         E: RESULT  id, {type: qualified name}
    C: CALL    id, [handle, method, args, kwargs]      E: RESULT  id, value
                                                       E: ERROR   id, {code, type, message, traceback}
    C: CALL    id, ... (a generator method)            E: YIELD   id, item ... END id
    C: CREDIT  id, n   (n more items may come)         C: CANCEL  id  (stop the call or generator)
    C: RELEASE id, handle (cleanup runs)               E: RESULT  id, None
    either: PING id, t                                 the other: PONG id, t

Ids are the client's call ids; ``CREATE``'s id becomes the object's handle.
A ``RESULT`` or ``ERROR`` ends a call; ``END`` or ``ERROR`` ends a stream.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, Union

from .. import codec
from ..exceptions import DecodeError, MessageTooLargeError
from .framing import CHUNK_SIZE, Reassembler, Refused, chunk

__all__ = ["Kind", "Message", "TooLarge", "RPCProtocol", "PROTOCOL_VERSION", "HEADER_SIZE"]

#: Version sent in ``HELLO``; an executor refuses a client that speaks another.
PROTOCOL_VERSION = 1

_HEADER = struct.Struct("!BBI")
#: Bytes of the header in front of every body.
HEADER_SIZE = _HEADER.size
_PICKLED = 0x01
_MAX_ID = 2**32 - 1


class Kind(enum.IntEnum):
    """Message kinds (see the module docstring for who sends which)."""

    HELLO = 1
    WELCOME = 2
    CREATE = 3
    CALL = 4
    RESULT = 5
    ERROR = 6
    YIELD = 7
    END = 8
    CANCEL = 9
    CREDIT = 10
    RELEASE = 11
    PING = 12
    PONG = 13


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


Event = Union[Message, TooLarge]


class RPCProtocol:
    """
    Turns messages into data-channel payloads and back, for one connection.

    ``max_message_size`` bounds what we accept (reassembly refuses anything
    larger without buffering it). :attr:`send_limit` bounds what we send: our
    own limit, lowered to the peer's once the peer tells it (``HELLO`` /
    ``WELCOME``), so an oversized message fails here, before the wire.
    """

    def __init__(self, max_message_size: int, *, chunk_size: int = CHUNK_SIZE) -> None:
        if max_message_size < HEADER_SIZE:
            raise ValueError(f"max_message_size must be at least {HEADER_SIZE} bytes, not {max_message_size}")
        self.max_message_size = max_message_size
        #: The largest message :meth:`send` will produce, in bytes.
        self.send_limit = max_message_size
        self.chunk_size = chunk_size
        self._reassembler = Reassembler(max_message_size)

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
        parts = codec.encode_parts(body)
        return self._frame(kind, id, 0, parts)

    def send_pickled(self, kind: Kind, id: int, data: bytes) -> list[bytes]:
        """The data-channel payloads for a message whose body is cloudpickle bytes."""
        return self._frame(kind, id, _PICKLED, [data])

    def _frame(self, kind: Kind, id: int, flags: int, parts: list) -> list[bytes]:
        if not 0 <= id <= _MAX_ID:
            raise ValueError(f"message id {id} is out of range")
        size = HEADER_SIZE + sum(memoryview(p).nbytes for p in parts)
        if size > self.send_limit:
            raise MessageTooLargeError(
                f"{Kind(kind).name} message of {size} bytes is above the limit of {self.send_limit} bytes "
                f"(max_message_size; the smaller of this side's and the peer's)",
                size=size,
                limit=self.send_limit,
            )
        return chunk([_HEADER.pack(kind, flags, id), *parts], size, self.chunk_size)

    def receive_data(self, data: bytes) -> list[Event]:
        """
        Feed one data-channel payload; returns the events it completes.

        Raises :exc:`DecodeError` when the peer broke the framing or sent a
        body that does not decode: the connection cannot go on after that.
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
        return [self._decode(item)]

    @staticmethod
    def _decode(data: bytearray) -> Message:
        if len(data) < HEADER_SIZE:
            raise DecodeError(f"message of {len(data)} bytes is shorter than its header")
        raw_kind, flags, id = _HEADER.unpack_from(data)
        try:
            kind = Kind(raw_kind)
        except ValueError:
            raise DecodeError(f"unknown message kind {raw_kind}") from None
        body = memoryview(data)[HEADER_SIZE:]
        if flags & _PICKLED:
            return Message(kind, id, bytes(body), pickled=True)
        return Message(kind, id, codec.decode(body))
