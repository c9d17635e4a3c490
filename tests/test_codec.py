"""The msgpack codec: round trips, out-of-band zero-copy arrays, frames, and errors."""

from __future__ import annotations

import math
import random
import struct

import msgpack
import numpy as np
import pytest

from media_samples import random_image
from remotemedia import AudioFrame, DecodeError, EncodeError, Transcript, VideoFrame
from remotemedia.codec import FORMAT_VERSION, MAX_NESTING, decode, encode, encode_parts
from remotemedia.frames import VIDEO_FORMATS


# Helpers -------------------------------------------------------------------


def roundtrip(obj):
    """Encode then decode ``obj``."""
    return decode(encode(obj))


def assert_arrays_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same type, dtype, shape and values (NaN equal to NaN where it can be)."""
    assert isinstance(actual, np.ndarray)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    equal_nan = expected.dtype.kind in "fcmM"  # NaN and NaT
    assert np.array_equal(actual, expected, equal_nan=equal_nan)
    assert actual.tobytes() == expected.tobytes()  # bit for bit


def raw_message(body: object, area: bytes = b"", *, version: int = FORMAT_VERSION) -> bytes:
    """Build a message by hand: header, msgpack ``body``, padding, buffer ``area``."""
    packed = msgpack.packb(body, use_bin_type=True)
    head = struct.pack("!BI", version, len(packed)) + packed
    head += bytes(-len(head) % 8)
    return head + area


def array_ref(descr, shape, offset, nbytes) -> msgpack.ExtType:
    """A hand-made array reference (extension type 1) into the buffer area."""
    return msgpack.ExtType(1, msgpack.packb([descr, shape, offset, nbytes], use_bin_type=True))

# Plain Python values -------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        2**31,
        -(2**63),
        2**63 - 1,
        2**64 - 1,
        0.0,
        -2.5,
        1e308,
        5e-324,
        math.inf,
        -math.inf,
        "",
        "plain ascii",
        "unicodé ✓ 日本語 🎵",
        b"",
        b"\x00\xff binary \x80",
        [],
        [1, "two", 3.0, None, [b"nested"]],
        {},
        {"a": 1, "b": {"c": [1, 2, {"d": None}]}},
        {1: "one", -2: "minus two", 2**40: {3: [True, False]}},
        {b"bytes key": 1, 1.5: "float key", None: "none key", True: "bool key"},
    ],
    ids=repr,
)
def test_python_values_round_trip(value):
    result = roundtrip(value)
    assert result == value
    assert type(result) is type(value)


def test_int_extremes_keep_exact_values():
    for value in (-(2**63), 2**64 - 1, 2**63, -(2**31) - 1):
        result = roundtrip(value)
        assert result == value and type(result) is int


def test_nan_round_trips_as_nan():
    result = roundtrip(math.nan)
    assert isinstance(result, float) and math.isnan(result)


@pytest.mark.parametrize("value", [bytearray(b"abc\x00"), memoryview(b"xyz\x01")], ids=repr)
def test_bytearray_and_memoryview_decode_as_bytes(value):
    result = roundtrip(value)
    assert type(result) is bytes
    assert result == bytes(value)


def test_tuples_decode_as_tuples_recursively():
    value = (1, (2, 3), [4, (5,)])
    assert roundtrip(value) == value
    assert type(roundtrip(())) is tuple
    assert type(roundtrip([()])[0]) is tuple


def test_dict_with_tuple_keys_round_trips():
    assert roundtrip({(1, 2): "pair", (): "empty"}) == {(1, 2): "pair", (): "empty"}


def test_subclasses_of_builtin_types_decode_as_their_base_type():
    import collections
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    result = roundtrip([Level.HIGH, collections.OrderedDict(a=1), True])
    assert result == [3, {"a": 1}, True]
    assert type(result[0]) is int and type(result[1]) is dict and result[2] is True


# numpy arrays --------------------------------------------------------------


def _structured_array() -> np.ndarray:
    """Records with a nested struct, a sub-array, a big-endian and a titled field."""
    dtype = np.dtype(
        [
            ("id", "<u4"),
            ("pos", ">f8", (2,)),
            ("meta", [("flag", "?"), ("code", "S3")]),
            (("A title", "titled"), "<i2"),
        ]
    )
    array = np.zeros(4, dtype=dtype)
    array["id"] = [1, 2, 3, 4]
    array["pos"] = [[0.5, -1.0], [2.0, 3.5], [np.inf, 0.0], [1e-300, 7.0]]
    array["meta"]["flag"] = [True, False, True, False]
    array["meta"]["code"] = [b"abc", b"de", b"", b"xyz"]
    array["titled"] = [-1, 2, -3, 4]
    return array


_DTYPE_ARRAYS = {
    "bool": np.array([True, False, True]),
    "int8": np.array([-128, 0, 127], np.int8),
    "uint8": np.array([0, 200, 255], np.uint8),
    "int16": np.array([-32768, 1, 32767], np.int16),
    "uint16": np.array([0, 65535], np.uint16),
    "int32": np.array([-(2**31), 2**31 - 1], np.int32),
    "uint32": np.array([0, 2**32 - 1], np.uint32),
    "int64": np.array([-(2**63), 2**63 - 1], np.int64),
    "uint64": np.array([0, 2**64 - 1], np.uint64),
    "float16": np.array([0.5, -np.inf, np.nan], np.float16),
    "float32": np.array([1.25, np.nan, -0.0], np.float32),
    "float64": np.array([np.pi, np.inf, np.nan], np.float64),
    "complex64": np.array([1 - 2j, np.nan], np.complex64),
    "complex128": np.array([3 + 4j, -1j], np.complex128),
    "datetime64": np.array(["2024-01-02T03:04:05", "NaT"], "datetime64[s]"),
    "timedelta64": np.array([42, -7], "timedelta64[ms]"),
    "unicode": np.array(["héllo", "wörld", ""], "<U5"),
    "bytes": np.array([b"ab", b"\x00c"], "S2"),
    "big-endian": np.arange(5, dtype=">f4"),
    "structured": _structured_array(),
}


@pytest.mark.parametrize("array", _DTYPE_ARRAYS.values(), ids=_DTYPE_ARRAYS.keys())
def test_arrays_of_every_dtype_round_trip_exactly(array):
    assert_arrays_identical(roundtrip(array), array)


@pytest.mark.parametrize(
    "shape", [(), (0,), (0, 3), (7,), (2, 3, 4), (1, 1, 1, 1, 5)], ids=str
)
def test_arrays_of_every_shape_round_trip(shape):
    array = (np.arange(math.prod(shape), dtype=np.float64) - 3.5).reshape(shape)
    result = roundtrip(array)
    assert_arrays_identical(result, array)
    assert result.ndim == len(shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(40, dtype=np.int32)[::3],
        lambda: np.arange(24, dtype=np.float32).reshape(4, 6).T,
        lambda: np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
        lambda: np.arange(60, dtype=np.uint8).reshape(3, 4, 5)[:, ::-2, 1:4],
    ],
    ids=["step-slice", "transpose", "fortran", "3d-view"],
)
def test_non_contiguous_arrays_round_trip_as_c_contiguous(make):
    array = make()
    result = roundtrip(array)
    assert_arrays_identical(result, array)
    assert result.flags.c_contiguous


def test_arrays_nested_in_containers_round_trip():
    a, b = np.arange(3, dtype=np.int16), np.ones((2, 2), np.float32)
    result = roundtrip({"a": [a, (b, "x")], 1: {"b": b}})
    assert_arrays_identical(result["a"][0], a)
    assert_arrays_identical(result["a"][1][0], b)
    assert_arrays_identical(result[1]["b"], b)


def test_decoded_arrays_are_aligned_for_their_dtype():
    message = bytearray(encode([np.arange(3, dtype=np.uint8), np.arange(5, dtype=np.float64)]))
    result = decode(message)
    assert result[1].flags.aligned


# numpy scalars -------------------------------------------------------------

@pytest.mark.parametrize(
    "scalar",
    [
        np.bool_(True),
        np.int8(-5),
        np.uint8(200),
        np.int16(-300),
        np.uint16(60000),
        np.int32(-(2**31)),
        np.uint32(2**32 - 1),
        np.int64(-(2**63)),
        np.uint64(2**64 - 1),
        np.float16(0.5),
        np.float32(1.25),
        np.complex64(1 - 2j),
        np.complex128(3 + 4j),
        np.datetime64("2024-01-02T03:04:05", "s"),
        np.timedelta64(42, "ms"),
        np.float64(2.5),
        np.str_("numpy str"),
        np.bytes_(b"numpy bytes"),
    ],
    ids=lambda s: f"{type(s).__name__}({s})",
)
def test_numpy_scalars_decode_as_the_same_scalar_type(scalar):
    result = roundtrip(scalar)
    assert type(result) is type(scalar)
    assert result == scalar
    if hasattr(scalar, "dtype"):
        assert result.dtype == scalar.dtype


def test_nan_numpy_scalar_round_trips():
    result = roundtrip(np.float32(np.nan))
    assert type(result) is np.float32 and np.isnan(result)


# Large arrays and zero copy ------------------------------------------------


@pytest.fixture(scope="module")
def big_array() -> np.ndarray:
    """50 MB of float64."""
    return np.arange(50 * 2**20 // 8, dtype=np.float64) * 0.5


def test_50mb_array_round_trips(big_array):
    message = encode(big_array)
    assert len(message) >= big_array.nbytes
    result = decode(message)
    assert_arrays_identical(result, big_array)


def test_decoding_a_bytearray_is_zero_copy_and_writable(big_array):
    buffer = bytearray(encode(big_array))
    result = decode(buffer)
    raw = np.frombuffer(buffer, dtype=np.uint8)
    assert np.shares_memory(result, raw)
    assert result.flags.writeable

    # Changing the buffer's bytes changes the array: it *is* that memory.
    offset = result.ctypes.data - raw.ctypes.data
    index = 123_456
    position = offset + index * 8
    buffer[position : position + 8] = struct.pack("<d", -7.75)
    assert result[index] == -7.75

    # And the other way round.
    result[-1] = 99.0
    assert struct.unpack_from("<d", buffer, offset + (result.size - 1) * 8)[0] == 99.0


def test_decoding_bytes_gives_writable_copies(big_array):
    # A node may modify what it receives, as it would locally; bytes cannot
    # be written, so their arrays are copies.
    message = encode(big_array)
    result = decode(message)
    assert result.flags.writeable
    assert not np.shares_memory(result, np.frombuffer(message, dtype=np.uint8))
    result[0] = 1.0
    assert result[0] == 1.0


def test_decoding_a_memoryview_of_a_bytearray_is_zero_copy():
    array = np.arange(16, dtype=np.int32)
    buffer = bytearray(encode({"x": array}))
    result = decode(memoryview(buffer))["x"]
    assert result.flags.writeable
    assert np.shares_memory(result, np.frombuffer(buffer, dtype=np.uint8))


def test_encode_parts_concatenate_to_encode_and_do_not_copy_arrays():
    array = np.arange(1000, dtype=np.float32)
    other = np.arange(7, dtype=np.uint8)
    value = {"a": array, "b": [other, "x"], "frame": AudioFrame(array[np.newaxis, :], 8000)}
    parts = encode_parts(value)
    assert all(isinstance(p, memoryview) for p in parts)
    assert b"".join(parts) == encode(value)

    sharing = [p for p in parts if np.shares_memory(np.frombuffer(p, np.uint8), array)]
    assert sharing, "the array's bytes were copied instead of handed over"
    assert any(np.shares_memory(np.frombuffer(p, np.uint8), other) for p in parts)

    # Being the array's own memory, a later change shows in the parts.
    array[0] = 123.0
    assert decode(b"".join(parts))["a"][0] == 123.0


def test_encode_parts_of_value_without_arrays_is_one_part():
    parts = encode_parts({"no": ["arrays", 1, 2.0]})
    assert len(parts) == 1
    assert decode(bytes(parts[0])) == {"no": ["arrays", 1, 2.0]}


# Frames --------------------------------------------------------------------


def assert_audio_equal(actual: AudioFrame, expected: AudioFrame) -> None:
    assert isinstance(actual, AudioFrame)
    assert_arrays_identical(actual.samples, expected.samples)
    assert actual.sample_rate == expected.sample_rate
    assert actual.timestamp == expected.timestamp


def assert_video_equal(actual: VideoFrame, expected: VideoFrame) -> None:
    assert isinstance(actual, VideoFrame)
    assert_arrays_identical(actual.image, expected.image)
    assert actual.format == expected.format
    assert actual.timestamp == expected.timestamp


@pytest.mark.parametrize(
    "samples",
    [
        np.linspace(-1, 1, 480, dtype=np.float32)[np.newaxis, :],
        np.arange(-600, 600, dtype=np.int16).reshape(2, 600),
        np.zeros((6, 0), dtype=np.float32),
    ],
    ids=["mono-f32", "stereo-s16", "empty-6ch"],
)
def test_audio_frames_round_trip(samples):
    frame = AudioFrame(samples, 44100, timestamp=12.345678)
    assert_audio_equal(roundtrip(frame), frame)


@pytest.mark.parametrize("fmt", list(VIDEO_FORMATS))
def test_video_frames_of_every_format_round_trip(fmt):
    frame = VideoFrame(random_image(fmt, 8, 6), fmt, timestamp=1 / 3)
    result = roundtrip(frame)
    assert_video_equal(result, frame)
    assert (result.width, result.height) == (8, 6)


def test_frames_nested_in_containers_round_trip():
    audio = AudioFrame(np.ones((1, 10), np.float32) * 0.25, 16000, 0.5)
    video = VideoFrame(random_image("yuv420p", 4, 2), "yuv420p", 2.0)
    result = roundtrip({"batch": [audio, video, {"again": [audio]}], 3: video})
    assert_audio_equal(result["batch"][0], audio)
    assert_video_equal(result["batch"][1], video)
    assert_audio_equal(result["batch"][2]["again"][0], audio)
    assert_video_equal(result[3], video)


def test_frames_decoded_from_a_bytearray_are_views():
    frame = AudioFrame(np.arange(8, dtype=np.int16)[np.newaxis, :], 8000)
    buffer = bytearray(encode(frame))
    result = decode(buffer)
    assert np.shares_memory(result.samples, np.frombuffer(buffer, np.uint8))


# Encode errors -------------------------------------------------------------


class Custom:
    pass


def _function():
    return None


@pytest.mark.parametrize(
    ("value", "type_suffix"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (Custom(), "Custom"),
        (_function, "function"),
        (frozenset(), "frozenset"),
        (1 + 2j, "complex"),
    ],
    ids=["object", "set", "custom-class", "function", "frozenset", "complex"],
)
def test_unsupported_types_raise_encode_error_naming_the_type(value, type_suffix):
    with pytest.raises(EncodeError) as info:
        encode(value)
    error = info.value
    assert isinstance(error, TypeError)
    assert error.type_name is not None and error.type_name.endswith(type_suffix)
    assert error.type_name in str(error)
    # encode_parts refuses the same way
    with pytest.raises(EncodeError):
        encode_parts(value)


def test_unsupported_type_nested_deep_is_still_found():
    with pytest.raises(EncodeError) as info:
        encode({"ok": [1, 2, {"bad": [Custom()]}]})
    assert info.value.type_name.endswith("Custom")


@pytest.mark.parametrize(
    "array",
    [np.array([1, "a", None], dtype=object), np.zeros(2, dtype=[("a", "i4"), ("o", "O")])],
    ids=["object", "struct-with-object"],
)
def test_object_dtype_arrays_raise_encode_error(array):
    with pytest.raises(EncodeError) as info:
        encode([array])
    assert isinstance(info.value, TypeError)
    assert "object" in str(info.value)


@pytest.mark.parametrize("value", [2**64, 2**100, -(2**63) - 1, [1, {"k": 2**64}]], ids=repr)
def test_out_of_range_ints_raise_encode_error(value):
    with pytest.raises(EncodeError):
        encode(value)


def test_too_deep_nesting_raises_encode_error():
    value: list = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(EncodeError):
        encode(value)


# Decode errors -------------------------------------------------------------


def _sample_message() -> bytes:
    """A valid message exercising every extension type and some containers."""
    return encode(
        {
            "array": np.arange(12, dtype=np.float32).reshape(3, 4),
            "text": "héllo",
            7: [1.5, None, True, b"xy", -(2**40)],
            "audio": AudioFrame(np.arange(6, dtype=np.int16).reshape(2, 3), 8000, 0.5),
            "video": VideoFrame(np.full((2, 4), 9, np.uint8), "gray", 1.0),
            "scalar": np.int32(7),
            "record": _structured_array()[:2],
        }
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01", b"\x01\x00\x00\x00", bytearray(), memoryview(b"")],
    ids=["empty", "1-byte", "4-bytes", "empty-bytearray", "empty-memoryview"],
)
def test_too_short_input_raises_decode_error(data):
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_wrong_version_raises_decode_error(version):
    message = bytearray(encode([1, 2, 3]))
    message[0] = version
    with pytest.raises(DecodeError, match="version"):
        decode(bytes(message))
    # The same body with the right version decodes, so the version is what failed.
    message[0] = FORMAT_VERSION
    assert decode(bytes(message)) == [1, 2, 3]


def test_every_truncation_of_a_message_with_arrays_raises_decode_error():
    message = encode([np.arange(10, dtype=np.int64), "tail", np.arange(3, dtype=np.uint8)])
    assert len(message) > 100
    for end in range(len(message)):
        with pytest.raises(DecodeError):
            decode(message[:end])
    decode(message)  # the whole message still decodes


def test_every_truncation_of_a_rich_message_raises_decode_error():
    message = _sample_message()
    for end in range(len(message)):
        with pytest.raises(DecodeError):
            decode(message[:end])


def test_handmade_message_decodes():
    """Sanity check of the helpers used to craft hostile messages below."""
    area = np.arange(4, dtype="<f8").tobytes()
    result = decode(raw_message([array_ref("<f8", [4], 0, 32)], area))
    assert_arrays_identical(result[0], np.arange(4, dtype="<f8"))


@pytest.mark.parametrize(
    "ref",
    [
        ["<f8", [4], 8, 32],  # runs past the end of the area
        ["<f8", [4], 0, 40],  # nbytes larger than the area
        ["<f8", [1], 64, 8],  # offset beyond the area
        ["<f8", [1], -8, 8],  # negative offset
        ["<f8", [-1], 0, 8],  # negative dimension
        ["<f8", [2**62, 4], 0, 32],  # shape far larger than nbytes
        ["<f8", [3], 0, 32],  # nbytes that do not match the shape
        ["<f8", "4", 0, 32],  # shape of the wrong type
        ["<f8", [4], "0", 32],  # offset of the wrong type
        ["<f8", [4], 0],  # too few fields
        "not a list",
    ],
    ids=repr,
)
def test_bad_array_references_raise_decode_error(ref):
    area = np.arange(4, dtype="<f8").tobytes()
    body = [msgpack.ExtType(1, msgpack.packb(ref, use_bin_type=True))]
    with pytest.raises(DecodeError):
        decode(raw_message(body, area))


@pytest.mark.parametrize(
    "descr",
    ["|O", [["a", "<i4"], ["b", "|O"]], "not a dtype", 5, [["a"]]],
    ids=repr,
)
def test_object_and_invalid_dtypes_are_refused(descr):
    area = bytes(64)
    with pytest.raises(DecodeError):
        decode(raw_message([array_ref(descr, [1], 0, 8)], area))


def test_object_dtype_refusal_names_the_reason():
    with pytest.raises(DecodeError, match="object"):
        decode(raw_message([array_ref("|O", [1], 0, 8)], bytes(8)))


@pytest.mark.parametrize(
    "body",
    [
        msgpack.ExtType(99, b""),  # unknown extension
        msgpack.ExtType(2, msgpack.packb(["<f8", [2], 0, 16])),  # "scalar" with shape (2,)
        msgpack.ExtType(3, msgpack.packb([1, 2])),  # audio frame, two fields
        msgpack.ExtType(3, msgpack.packb(["samples", 8000, 0.0])),  # samples not an array
        msgpack.ExtType(4, msgpack.packb([None, "rgb24", 0.0])),  # video image not an array
        msgpack.ExtType(4, b"\xc1"),  # invalid msgpack inside an extension
    ],
    ids=["unknown-ext", "scalar-not-0d", "audio-2-fields", "audio-bad-samples", "video-no-image", "ext-garbage"],
)
def test_malformed_extensions_raise_decode_error(body):
    with pytest.raises(DecodeError):
        decode(raw_message(body, bytes(16)))


def test_invalid_frame_fields_raise_decode_error():
    """A well-formed array in an AudioFrame that AudioFrame itself rejects (float64)."""
    area = np.zeros(4, dtype="<f8").tobytes()
    fields = msgpack.packb([array_ref("<f8", [1, 4], 0, 32), 8000, 0.0], use_bin_type=True)
    with pytest.raises(DecodeError, match="AudioFrame"):
        decode(raw_message(msgpack.ExtType(3, fields), area))


def test_body_length_beyond_message_raises_decode_error():
    message = bytearray(encode("hello"))
    struct.pack_into("!I", message, 1, 10_000)
    with pytest.raises(DecodeError):
        decode(bytes(message))


def test_trailing_garbage_in_body_raises_decode_error():
    packed = msgpack.packb([1, 2]) + b"\x01"
    message = struct.pack("!BI", FORMAT_VERSION, len(packed)) + packed
    with pytest.raises(DecodeError):
        decode(message)


def _decode_or_decode_error(data: bytes) -> bool:
    """Decode ``data``; True if it decoded, False on DecodeError; anything else propagates."""
    try:
        decode(data)
    except DecodeError:
        return False
    return True


def test_fuzz_random_bytes_only_raise_decode_error():
    rng = random.Random(20240229)
    for i in range(2000):
        size = rng.randrange(0, 200)
        data = bytearray(rng.getrandbits(8) for _ in range(size))
        if i % 2 and size >= 5:
            # Half get a valid header so that the body reaches msgpack.
            struct.pack_into("!BI", data, 0, FORMAT_VERSION, rng.randrange(0, size - 4))
        _decode_or_decode_error(bytes(data))


def test_fuzz_single_byte_mutations_only_raise_decode_error():
    rng = random.Random(1234)
    message = _sample_message()
    outcomes = {True: 0, False: 0}
    for _ in range(2000):
        data = bytearray(message)
        data[rng.randrange(len(data))] = rng.randrange(256)
        outcomes[_decode_or_decode_error(bytes(data))] += 1
    # Both outcomes occur: mutations in the array area decode, most in the body do not.
    assert outcomes[True] > 0 and outcomes[False] > 0


def test_fuzz_mutations_of_body_bytes_only_raise_decode_error():
    """Every byte of the header and body, set to a handful of interesting values."""
    message = _sample_message()
    body_end = 5 + struct.unpack_from("!I", message, 1)[0]
    for position in range(body_end):
        for value in (0x00, 0x7F, 0x80, 0xC1, 0xD4, 0xFF):
            data = bytearray(message)
            data[position] = value
            _decode_or_decode_error(bytes(data))


def test_transcripts_round_trip_by_value():
    transcripts = [Transcript("hello there", 1.25, 2.5), Transcript("", 0.0, 0.0)]
    assert decode(encode({"heard": transcripts})) == {"heard": transcripts}


@pytest.mark.parametrize("fields", [[7, 0.0, 1.0], ["text", 2.0, 1.0], ["text", 0.0]])
def test_invalid_transcript_fields_raise_decode_error(fields):
    body = msgpack.ExtType(6, msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(DecodeError):
        decode(raw_message(body, b""))


# -- nesting: msgpack puts a context on the C stack per extension level ---------------------


def _nested_tuple(depth: int):
    value: tuple = ()
    for _ in range(depth - 1):
        value = (value,)
    return value


def test_tuples_nest_up_to_the_limit():
    value = _nested_tuple(MAX_NESTING - 1)
    assert decode(encode(value)) == value


def test_deeper_values_are_refused_when_encoding():
    with pytest.raises(EncodeError, match="nested"):
        encode(_nested_tuple(MAX_NESTING + 5))


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 400, 5000])
def test_absurd_nesting_is_a_decode_error_not_a_crash(depth):
    # Built by hand, as a hostile peer would (about 200 levels used to crash the interpreter).
    inner = msgpack.packb([1])
    for _ in range(depth):
        inner = msgpack.packb([msgpack.ExtType(5, inner)])
    data = struct.pack("!BI", FORMAT_VERSION, len(inner)) + inner
    with pytest.raises(DecodeError, match="nests more than"):
        decode(data)


def test_deep_plain_lists_are_a_decode_error_too():
    body = b"\x91" * 100_000 + b"\xc0"  # a list holding a list... 100,000 deep
    with pytest.raises(DecodeError):
        decode(struct.pack("!BI", FORMAT_VERSION, len(body)) + body)
