"""
The msgpack codec for everything the RPC layer carries.

Supported values: ``None``, ``bool``, ``int`` (-2**63 to 2**64-1), ``float``,
``str``, ``bytes`` (and ``bytearray``/``memoryview``, decoded as ``bytes``),
``list``, ``tuple``, ``dict`` with keys of those types (subclasses such as
``IntEnum`` or ``OrderedDict`` decode as their base type), numpy arrays of any
non-object dtype and shape, numpy scalars (decoded as the same numpy type), and
:class:`~remotemedia.frames.AudioFrame`,
:class:`~remotemedia.frames.VideoFrame` and
:class:`~remotemedia.frames.Transcript`. Anything else raises
:exc:`~remotemedia.exceptions.EncodeError` naming the type. Arbitrary Python
objects travel with cloudpickle instead (:mod:`remotemedia.serialization`),
which is separate and explicit because unpickling runs code.

Wire format (version 1)::

    +---------+----------------------+--------------+---------+--------------------+
    | version | body length (uint32) | msgpack body | padding | array buffer area  |
    | 1 byte  | big-endian           |              | to 8    | raw array bytes    |
    +---------+----------------------+--------------+---------+--------------------+

Array bytes never go through msgpack. The body holds for each array an
extension value ``[dtype descr, shape, offset, nbytes]`` pointing into the
buffer area, like pickle's out-of-band buffers. So encoding copies array bytes
once (into the output), :func:`encode_parts` not at all (it hands back the
arrays' own memory for scatter-gather sends), and :func:`decode` not at all
when the input is writable (a ``bytearray``): decoded arrays are views of it.
Arrays decoded from read-only input (``bytes``) are copied, so that a node
that modifies the frames it receives works remotely as it does locally.

Nesting is bounded: a value may hold at most :data:`MAX_NESTING` levels of
tuples, arrays and frames inside one another (each is a msgpack extension
decoded by a nested ``unpackb``, and msgpack puts a large context on the C
stack for each: about 200 levels crash the interpreter with a segmentation
fault). Lists and dicts nest up to msgpack's own limit inside each level.
Deeper values are refused both ways, with :exc:`EncodeError` or
:exc:`DecodeError`, before the stack is at risk.

This module is sans-I/O: it only turns values into bytes and back.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgpack
import numpy as np

from .exceptions import DecodeError, EncodeError
from .frames import AudioFrame, Transcript, VideoFrame

__all__ = ["encode", "encode_parts", "decode", "FORMAT_VERSION", "MAX_NESTING"]

#: Version byte at the start of every encoded message.
FORMAT_VERSION = 1
#: Most tuples, arrays and frames nested inside one another in one value (see the module docstring).
MAX_NESTING = 32

_HEADER = struct.Struct("!BI")
_ALIGN = 8

# msgpack extension type codes.
_EXT_NDARRAY = 1
_EXT_NPSCALAR = 2
_EXT_AUDIO = 3
_EXT_VIDEO = 4
_EXT_TUPLE = 5
_EXT_TRANSCRIPT = 6

_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, numpy arrays and "
    "scalars, AudioFrame, VideoFrame and Transcript"
)


def _padding(offset: int) -> int:
    return -offset % _ALIGN


class _Encoder:
    """One encoding: collects the out-of-band array buffers as it packs."""

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []
        self.size = 0  # bytes in the buffer area so far, padding included
        self.depth = 0  # nested pack() calls: extension values inside one another

    def pack(self, obj: Any) -> bytes:
        if self.depth >= MAX_NESTING:
            raise EncodeError(
                f"cannot encode a value with more than {MAX_NESTING} tuples, arrays or frames nested "
                f"inside one another; flatten it (lists nest deeper)",
                type_name=type(obj).__qualname__,
            )
        self.depth += 1
        try:
            return self._pack(obj)
        finally:
            self.depth -= 1

    def _pack(self, obj: Any) -> bytes:
        try:
            # strict_types sends subclasses of the built-in types (np.float64 is a
            # float, IntEnum an int, tuple is not a list) through default(), so
            # that numpy scalars and tuples come back as what they were.
            return msgpack.packb(
                obj, default=self.default, use_bin_type=True, strict_types=True
            )
        except EncodeError:
            raise
        except OverflowError as exc:
            raise EncodeError(
                "cannot encode an integer outside the 64-bit range "
                "(-2**63 to 2**64-1); send it as a str or split it",
                type_name="builtins.int",
            ) from exc
        except ValueError as exc:
            # msgpack's other limits: nesting too deep, a str or bin over 4 GiB.
            raise EncodeError(
                f"cannot encode value: {exc}", type_name=type(obj).__qualname__
            ) from exc

    def add_array(self, array: np.ndarray) -> list[Any]:
        if array.dtype.hasobject:
            raise EncodeError(
                f"cannot encode a numpy array of dtype {array.dtype}: arrays "
                f"holding Python objects are not supported; convert it with "
                f".tolist() or to a numeric dtype",
                type_name="numpy.ndarray",
            )
        if not array.flags.c_contiguous:
            # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
            array = array.copy(order="C")
        raw = memoryview(array.reshape(-1).view(np.uint8))
        pad = _padding(self.size)
        if pad:
            self.buffers.append(memoryview(bytes(pad)))
            self.size += pad
        offset = self.size
        self.buffers.append(raw)
        self.size += raw.nbytes
        descr = np.lib.format.dtype_to_descr(array.dtype)
        return [descr, list(array.shape), offset, raw.nbytes]

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return msgpack.ExtType(_EXT_NDARRAY, self.pack(self.add_array(obj)))
        if isinstance(obj, np.generic):
            array = np.asarray(obj)
            return msgpack.ExtType(_EXT_NPSCALAR, self.pack(self.add_array(array)))
        if isinstance(obj, tuple):
            return msgpack.ExtType(_EXT_TUPLE, self.pack(list(obj)))
        for base in (bool, int, float, str, bytes, list, dict):
            if isinstance(obj, base):  # a subclass: IntEnum, OrderedDict...
                return base(obj)
        if isinstance(obj, AudioFrame):
            fields = [obj.samples, obj.sample_rate, obj.timestamp]
            return msgpack.ExtType(_EXT_AUDIO, self.pack(fields))
        if isinstance(obj, VideoFrame):
            fields = [obj.image, obj.format, obj.timestamp]
            return msgpack.ExtType(_EXT_VIDEO, self.pack(fields))
        if isinstance(obj, Transcript):
            fields = [obj.text, obj.start, obj.end]
            return msgpack.ExtType(_EXT_TRANSCRIPT, self.pack(fields))
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise EncodeError(
            f"cannot encode an object of type {name}; supported types are "
            f"{_SUPPORTED}. Send other objects with cloudpickle "
            f"(remotemedia.serialization) or convert them first.",
            type_name=name,
        )


def encode_parts(obj: Any) -> list[memoryview]:
    """
    Encode ``obj`` into a list of buffers whose concatenation is the message.

    The array buffers in the list are the arrays' own memory, not copies: send
    or write them before changing the arrays.
    """
    encoder = _Encoder()
    body = encoder.pack(obj)
    head = _HEADER.pack(FORMAT_VERSION, len(body)) + body
    head += bytes(_padding(len(head)))
    return [memoryview(head), *encoder.buffers]


def encode(obj: Any) -> bytes:
    """Encode ``obj`` into one message; raise :exc:`EncodeError` if it cannot."""
    return b"".join(encode_parts(obj))


class _Decoder:
    """One decoding: resolves array references into the buffer area."""

    def __init__(self, area: memoryview) -> None:
        self.area = area
        self.depth = 0

    def unpack(self, data: bytes | memoryview) -> Any:
        if self.depth >= MAX_NESTING:
            raise DecodeError(f"a value nests more than {MAX_NESTING} tuples, arrays or frames inside one another")
        self.depth += 1
        try:
            return self._unpack(data)
        finally:
            self.depth -= 1

    def _unpack(self, data: bytes | memoryview) -> Any:
        return msgpack.unpackb(
            data,
            ext_hook=self.ext_hook,
            raw=False,
            strict_map_key=False,
        )

    def array(self, data: bytes) -> np.ndarray:
        ref = self.unpack(data)
        if not (isinstance(ref, list) and len(ref) == 4):
            raise DecodeError("malformed array reference")
        descr, shape, offset, nbytes = ref
        dtype = _dtype_from_descr(descr)
        if not (
            isinstance(shape, list)
            and all(isinstance(n, int) and n >= 0 for n in shape)
            and isinstance(offset, int)
            and isinstance(nbytes, int)
            and 0 <= offset <= offset + nbytes <= len(self.area)
        ):
            raise DecodeError("array reference out of bounds")
        count = math.prod(shape)
        if count * dtype.itemsize != nbytes:
            raise DecodeError(
                f"array of shape {tuple(shape)} and dtype {dtype} needs "
                f"{count * dtype.itemsize} bytes, not {nbytes}"
            )
        if nbytes == 0:
            return np.zeros(tuple(shape), dtype=dtype)
        flat = np.frombuffer(self.area[offset : offset + nbytes], dtype=dtype)
        if self.area.readonly:
            # Arrays decoded from a writable message (what the data channel's
            # reassembly hands over) share its memory; from read-only bytes
            # they are copied, so that a node may modify what it receives as
            # it would locally (41 us for a 640x480 RGB frame).
            flat = flat.copy()
        return flat.reshape(tuple(shape))

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == _EXT_NDARRAY:
            return self.array(data)
        if code == _EXT_NPSCALAR:
            array = self.array(data)
            if array.ndim != 0:
                raise DecodeError("numpy scalar must be 0-dimensional")
            return array[()]
        if code == _EXT_TUPLE:
            items = self.unpack(data)
            if not isinstance(items, list):
                raise DecodeError("malformed tuple")
            return tuple(items)
        if code in (_EXT_AUDIO, _EXT_VIDEO, _EXT_TRANSCRIPT):
            fields = self.unpack(data)
            if not (isinstance(fields, list) and len(fields) == 3):
                raise DecodeError("malformed frame")
            cls = {_EXT_AUDIO: AudioFrame, _EXT_VIDEO: VideoFrame, _EXT_TRANSCRIPT: Transcript}[code]
            try:
                return cls(*fields)
            except (TypeError, ValueError) as exc:
                raise DecodeError(f"invalid {cls.__name__}: {exc}") from exc
        raise DecodeError(f"unknown extension type {code}")


def _descr_from_wire(descr: Any) -> Any:
    """Rebuild a structured descr as numpy wants it: a list of tuples."""
    if isinstance(descr, str):
        return descr
    if not isinstance(descr, (list, tuple)):
        raise TypeError(f"descr must be str or list, not {type(descr).__name__}")
    fields = []
    for name, fmt, *shape in descr:
        name = tuple(name) if isinstance(name, (list, tuple)) else name
        fields.append((name, _descr_from_wire(fmt), *(tuple(s) for s in shape)))
    return fields


def _dtype_from_descr(descr: Any) -> np.dtype:
    try:
        dtype = np.lib.format.descr_to_dtype(_descr_from_wire(descr))
    except Exception as exc:
        raise DecodeError(f"invalid array dtype {descr!r}") from exc
    if dtype.hasobject:
        raise DecodeError("arrays of Python objects are refused")
    return dtype


def decode(data: bytes | bytearray | memoryview) -> Any:
    """
    Decode one message made by :func:`encode`.

    Arrays in the result are views of ``data`` when it is writable, copies
    when it is read-only (``bytes``), so they are always writable.
    Raises :exc:`DecodeError` for anything that is not a valid message.
    """
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise DecodeError(f"message too short: {len(view)} bytes")
    version, body_length = _HEADER.unpack_from(view)
    if version != FORMAT_VERSION:
        raise DecodeError(
            f"unsupported codec version {version}; this side speaks "
            f"{FORMAT_VERSION} (upgrade remotemedia on both ends)"
        )
    body_end = _HEADER.size + body_length
    if body_end > len(view):
        raise DecodeError("message truncated: body longer than the message")
    area_start = body_end + _padding(body_end)
    decoder = _Decoder(view[area_start:])
    try:
        return decoder.unpack(view[_HEADER.size : body_end])
    except DecodeError:
        raise
    except Exception as exc:
        # msgpack signals corrupt input with many exception types.
        raise DecodeError(f"corrupt message: {exc}") from exc
