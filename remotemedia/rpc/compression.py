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
"""

from __future__ import annotations

import struct

import lz4.block

__all__ = ["THRESHOLD", "compress", "compressed_size", "decompress"]

#: Bodies smaller than this are never compressed: the per-message cost dominates.
THRESHOLD = 16 * 1024

_SIZE = struct.Struct("<I")  # how lz4.block stores the original size


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
