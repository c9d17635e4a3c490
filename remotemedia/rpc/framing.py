"""
Chunking: one logical message over as many data-channel messages as it needs.

aiortc refuses to send a data-channel message above 256 KiB (64 KiB when the
peer advertises no limit), so a large message is cut into chunks. The channel
is reliable and ordered and a sender writes the chunks of one message
back to back, so chunks need no message id: each data-channel message starts
with one byte that says what it is::

    0x00 | message                        a whole message in one piece
    0x01 | total (uint64) | first part    the first chunk of a message of ``total`` bytes
    0x02 | part                           the next chunk of the current message

:class:`Reassembler` refuses a message whose announced total is above its
limit *before* buffering any of it, skips the rest of its chunks, and reports
the first bytes of the message, so the protocol above can say which call was
refused. Below the limit, its buffer grows with the chunks that really
arrive and is never sized from the announced total: a peer that announces
64 MiB and sends one chunk holds one chunk of the receiver's memory, not
64 MiB (issue 18 measured 10 such sessions pinning 670 MB when the buffer
was preallocated). Growing a ``bytearray`` by appending is amortized O(1),
so a whole message still costs each byte about one copy. This module is
sans-I/O: bytes in, bytes and events out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Union

from ..exceptions import DecodeError

__all__ = ["CHUNK_SIZE", "chunk", "Reassembler", "Refused", "LENGTH", "frame", "read_frame"]

#: Largest data-channel message we send, header included. 64 KiB fits every
#: peer (aiortc assumes 64 KiB when the other side advertises nothing).
CHUNK_SIZE = 65536

#: On a stream socket (the worker's socketpair, the direct lane), each frame is
#: this 4-byte big-endian length, then that many bytes.
LENGTH = struct.Struct("!I")

_WHOLE = 0x00
_FIRST = 0x01
_NEXT = 0x02
_TOTAL = struct.Struct("!Q")
_FIRST_HEADER = 1 + _TOTAL.size


@dataclass(frozen=True)
class Refused:
    """A message was refused because it is above the limit; its chunks were skipped."""

    #: The announced size of the whole message, in bytes.
    size: int
    #: The limit it broke, in bytes.
    limit: int
    #: The first bytes of the message (its header), to tell which call it was.
    head: bytes


def chunk(parts: Iterable[bytes | memoryview], size: int, chunk_size: int = CHUNK_SIZE) -> list[bytes]:
    """
    Cut a message given as ``parts`` (``size`` bytes in all) into data-channel messages.

    Each byte is copied once, into the chunk that carries it.
    """
    if chunk_size <= _FIRST_HEADER:
        raise ValueError(f"chunk_size must be above {_FIRST_HEADER} bytes, not {chunk_size}")
    if size + 1 <= chunk_size:
        return [b"".join((bytes((_WHOLE,)), *parts))]
    out: list[bytes] = []
    current = bytearray(_FIRST_HEADER)
    current[0] = _FIRST
    _TOTAL.pack_into(current, 1, size)
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            room = chunk_size - len(current)
            current += view[:room]
            view = view[room:]
            if len(current) == chunk_size:
                out.append(bytes(current))
                current = bytearray((_NEXT,))
    if len(current) > 1:
        out.append(bytes(current))
    return out


class Reassembler:
    """
    Turns data-channel messages back into whole messages.

    :meth:`feed` returns a whole message as a ``bytearray`` (so arrays decoded
    from it are writable), a :class:`Refused` event, or ``None`` while a
    chunked message is still incomplete. Malformed framing raises
    :exc:`DecodeError`: the stream cannot be trusted after that.
    """

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._buffer: bytearray | None = None
        self._total = 0  # announced size of the message in self._buffer
        self._skipping = 0  # bytes of a refused message still to come

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held now (what the peer has sent of it, never its announced size)."""
        return len(self._buffer) if self._buffer is not None else 0

    def clear(self) -> None:
        """Drop a half-received message (the connection is over)."""
        self._buffer = None
        self._total = self._skipping = 0

    def feed(self, data: bytes) -> Union[bytearray, Refused, None]:
        if not data:
            raise DecodeError("empty data-channel message")
        kind = data[0]
        if kind == _NEXT:
            return self._next(memoryview(data)[1:])
        if self._buffer is not None or self._skipping:
            raise DecodeError("a new message started before the previous one was complete")
        if kind == _WHOLE:
            if len(data) - 1 > self.max_message_size:
                return Refused(len(data) - 1, self.max_message_size, bytes(data[1:17]))
            return bytearray(memoryview(data)[1:])
        if kind != _FIRST or len(data) <= _FIRST_HEADER:
            raise DecodeError(f"bad chunk header {kind:#04x} ({len(data)} bytes)")
        (total,) = _TOTAL.unpack_from(data, 1)
        part = memoryview(data)[_FIRST_HEADER:]
        if len(part) >= total:
            raise DecodeError(f"first chunk holds {len(part)} bytes of a {total}-byte message")
        if total > self.max_message_size:
            self._skipping = total - len(part)
            return Refused(total, self.max_message_size, bytes(part[:16]))
        self._buffer = bytearray(part)
        self._total = total
        return None

    def _next(self, part: memoryview) -> Union[bytearray, None]:
        if self._skipping:
            if len(part) > self._skipping:
                raise DecodeError("chunk runs past the end of its message")
            self._skipping -= len(part)
            return None
        buffer = self._buffer
        if buffer is None:
            raise DecodeError("continuation chunk without a first chunk")
        if len(buffer) + len(part) > self._total:
            raise DecodeError("chunk runs past the end of its message")
        buffer += part
        if len(buffer) < self._total:
            return None
        self._buffer = None
        return buffer


def frame(data: bytes) -> list[bytes]:
    """The pieces to write for one length-prefixed frame on a stream socket."""
    return [LENGTH.pack(len(data)), data]


async def read_frame(reader, limit: int | None = None) -> bytes | None:
    """
    The next frame's bytes from an ``asyncio.StreamReader``, or ``None`` at the end of the stream.

    With ``limit``, a frame announced larger raises :exc:`DecodeError`
    before any of it is read (a peer cannot make us buffer more).
    """
    try:  # asyncio.IncompleteReadError is an EOFError: no asyncio import in this sans-I/O module
        head = await reader.readexactly(LENGTH.size)
        (size,) = LENGTH.unpack(head)
        if limit is not None and size > limit:
            raise DecodeError(f"a frame of {size} bytes is above the limit of {limit} bytes")
        return await reader.readexactly(size)
    except EOFError:
        return None
