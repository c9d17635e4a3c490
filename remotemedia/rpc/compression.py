"""
Compression of large message bodies, sans-I/O.

LZ4 (block format, the size stored in front) because the wire it saves is
slow and the codec is not: a data channel moves 3-26 MB/s on loopback
(pure-Python SCTP; DESIGN.md and benchmarks/bench_streaming.py measured the
ends of that range), while LZ4 compresses at 0.6-9 GB/s and decompresses at
1-3 GB/s here, and gives up on incompressible data at about 1 GB/s (0.2 ms
per MiB). zlib
at level 1 saves about 10% more on audio but runs at 40-130 MB/s, which
would cost more than it saves on loopback.

A body is compressed only when it is at least :data:`THRESHOLD` bytes and
the result saves at least a sixteenth of it; otherwise it goes as it was,
so incompressible payloads (random floats, encoded video) pay one fast
failed attempt and never a decompression.

A receiver bounds what it inflates with an :class:`InflateBudget`: LZ4
turns 247 KB on the wire into 60 MiB, so without one a peer sending eight
such bodies a second spends half a core of its receiver on decompression,
and every other session on that receiver waits behind it (issue 18
measured a neighbour's p50 latency go from 2.2 ms to 105 ms). The budget
is checked against the size stored in front of a body, before any of it
is inflated.
"""

from __future__ import annotations

import struct
import time
from typing import Callable

import lz4.block

__all__ = ["THRESHOLD", "DEFAULT_INFLATE_RATE", "InflateBudget", "compress", "compressed_size", "decompress"]

#: Bodies smaller than this are never compressed: the per-message cost dominates.
THRESHOLD = 16 * 1024

_SIZE = struct.Struct("<I")  # how lz4.block stores the original size

#: Bytes per second one connection may inflate by default (64 MiB/s: LZ4
#: does that in 20-60 ms of one core here, so a session at its budget costs
#: the others a few percent of a core at most).
DEFAULT_INFLATE_RATE = 64 * 1024 * 1024


class InflateBudget:
    """
    How many decompressed bytes one connection may still produce: a token
    bucket that refills at ``rate`` bytes per second up to ``burst`` bytes
    (by default one second's worth, but never less than ``largest``, so
    that one message of the largest size the receiver accepts always fits
    into a full bucket).

    Sans-I/O: ``clock`` is called for the time (tests pass their own).
    """

    def __init__(
        self, rate: int = DEFAULT_INFLATE_RATE, *, largest: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError(f"an inflate rate is a positive number of bytes per second, not {rate!r}")
        #: Bytes per second the bucket refills.
        self.rate = rate
        #: Most bytes the bucket holds.
        self.burst = max(rate, largest)
        self._clock = clock
        self._tokens = float(self.burst)
        self._at = clock()
        #: Bodies refused so far, and refused since the last one that was let through.
        self.refused = self.refused_in_a_row = 0

    def take(self, size: int) -> bool:
        """Whether a body that inflates to ``size`` bytes may be inflated now (it is then counted)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if size > self._tokens:
            self.refused += 1
            self.refused_in_a_row += 1
            return False
        self._tokens -= size
        self.refused_in_a_row = 0
        return True


def compress(data: bytes | bytearray | memoryview) -> bytes | None:
    """LZ4 of ``data`` when that helps (see the module docstring), else ``None``."""
    size = memoryview(data).nbytes
    if size < THRESHOLD or size > 0x7E000000:  # LZ4's own input limit
        return None
    packed = lz4.block.compress(data, store_size=True)
    return packed if len(packed) <= size - size // 16 else None


def compressed_size(data: bytes | bytearray | memoryview) -> int:
    """The original size stored in front of ``data``: check it before :func:`decompress`."""
    if memoryview(data).nbytes < _SIZE.size:
        raise ValueError("a compressed body is shorter than its size field")
    return _SIZE.unpack_from(data)[0]


def decompress(data: bytes | bytearray | memoryview) -> bytes:
    """The original bytes; ``ValueError`` when ``data`` is not a valid LZ4 block."""
    try:
        return lz4.block.decompress(data)
    except lz4.block.LZ4BlockError as exc:
        raise ValueError(f"a compressed body does not decompress: {exc}") from None
