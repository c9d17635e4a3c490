"""AudioFrame and VideoFrame: validation, properties, and conversion to and from PyAV."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from media_samples import random_image
from remotemedia import AudioFrame, VideoFrame
from remotemedia.frames import VIDEO_FORMATS, VIDEO_TIME_BASE


# Helpers -------------------------------------------------------------------


def sine(channels: int, n: int, dtype=np.float32, rate: int = 48000) -> np.ndarray:
    """(channels, n) sines with a different frequency per channel, full-ish scale."""
    t = np.arange(n) / rate
    waves = np.stack([0.8 * np.sin(2 * np.pi * (300 + 200 * c) * t) for c in range(channels)])
    if np.dtype(dtype) == np.int16:
        return np.round(waves * 32767).astype(np.int16)
    return waves.astype(dtype)


def packed_av_frame(samples: np.ndarray, fmt: str, rate: int, pts: int | None = None) -> av.AudioFrame:
    """An av frame in a PACKED format from (channels, n) samples (interleaved as (1, n*channels))."""
    channels = samples.shape[0]
    interleaved = np.ascontiguousarray(samples.T).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(
        interleaved, format=fmt, layout={1: "mono", 2: "stereo"}[channels]
    )
    frame.sample_rate = rate
    if pts is not None:
        frame.pts = pts
        frame.time_base = Fraction(1, rate)
    return frame

# AudioFrame: validation and properties -------------------------------------


@pytest.mark.parametrize(
    ("samples", "error"),
    [
        ([[0.0, 0.1]], TypeError),
        ("not samples", TypeError),
        (None, TypeError),
        (np.zeros(10, np.float32), ValueError),  # 1-D
        (np.zeros((1, 2, 3), np.float32), ValueError),  # 3-D
        (np.zeros((1, 10), np.float64), ValueError),
        (np.zeros((1, 10), np.int32), ValueError),
        (np.zeros((1, 10), np.uint8), ValueError),
        (np.zeros((0, 10), np.float32), ValueError),  # no channel
    ],
    ids=["list", "str", "None", "1-D", "3-D", "float64", "int32", "uint8", "0-channels"],
)
def test_audio_frame_rejects_bad_samples(samples, error):
    with pytest.raises(error):
        AudioFrame(samples, 16000)


@pytest.mark.parametrize(
    ("rate", "error"),
    [
        (0, ValueError),
        (-8000, ValueError),
        (16000.0, TypeError),
        ("16000", TypeError),
        (None, TypeError),
        (True, TypeError),
        (False, TypeError),
    ],
    ids=repr,
)
def test_audio_frame_rejects_bad_sample_rates(rate, error):
    with pytest.raises(error):
        AudioFrame(np.zeros((1, 4), np.float32), rate)


def test_audio_frame_normalizes_numpy_rate_and_timestamp():
    frame = AudioFrame(np.zeros((1, 4), np.int16), np.int32(22050), timestamp=np.float32(0.5))
    assert type(frame.sample_rate) is int and frame.sample_rate == 22050
    assert type(frame.timestamp) is float and frame.timestamp == 0.5
    assert AudioFrame(np.zeros((1, 4), np.int16), 8000, timestamp=3).timestamp == 3.0


@pytest.mark.parametrize(
    ("shape", "rate", "channels", "num_samples", "duration"),
    [
        ((1, 480), 48000, 1, 480, 0.01),
        ((2, 441), 44100, 2, 441, 0.01),
        ((6, 16000), 16000, 6, 16000, 1.0),
        ((1, 0), 8000, 1, 0, 0.0),
    ],
)
def test_audio_frame_properties(shape, rate, channels, num_samples, duration):
    frame = AudioFrame(np.zeros(shape, np.float32), rate)
    assert frame.channels == channels
    assert frame.num_samples == num_samples
    assert frame.duration == pytest.approx(duration)


def test_audio_frames_compare_by_identity():
    samples = np.zeros((1, 4), np.float32)
    a, b = AudioFrame(samples, 8000), AudioFrame(samples, 8000)
    assert a == a and a != b


# AudioFrame <-> PyAV ---------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize(
    ("dtype", "av_format"), [(np.float32, "fltp"), (np.int16, "s16p")], ids=["f32", "s16"]
)
def test_audio_to_av_and_back_is_identical(dtype, av_format, channels):
    samples = sine(channels, 960, dtype)
    frame = AudioFrame(samples, 48000, timestamp=1.25)

    converted = frame.to_av()
    assert converted.format.name == av_format
    assert converted.format.is_planar
    assert converted.layout.name == {1: "mono", 2: "stereo"}[channels]
    assert len(converted.layout.channels) == channels
    assert converted.sample_rate == 48000
    assert converted.samples == 960
    assert converted.pts == 60000  # 1.25 s at 48 kHz
    assert converted.time_base == Fraction(1, 48000)
    np.testing.assert_array_equal(converted.to_ndarray(), samples)

    back = AudioFrame.from_av(converted)
    assert back.samples.dtype == np.dtype(dtype)
    assert back.samples.shape == (channels, 960)
    np.testing.assert_array_equal(back.samples, samples)
    assert back.sample_rate == 48000
    assert back.timestamp == 1.25


def test_audio_to_av_accepts_non_contiguous_samples():
    samples = sine(2, 200)[:, ::2]  # strided view
    assert not samples.flags.c_contiguous
    back = AudioFrame.from_av(AudioFrame(samples, 24000).to_av())
    np.testing.assert_array_equal(back.samples, samples)


def test_audio_to_av_rounds_timestamp_to_the_nearest_sample():
    frame = AudioFrame(np.zeros((1, 10), np.float32), 8000, timestamp=0.10006)
    assert frame.to_av().pts == 800  # 800.48 samples -> 800


@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
@pytest.mark.parametrize(
    ("fmt", "dtype"), [("s16", np.int16), ("flt", np.float32)], ids=["s16", "flt"]
)
def test_audio_from_packed_av_frames_deinterleaves(fmt, dtype, channels):
    samples = sine(channels, 300, dtype)
    frame = packed_av_frame(samples, fmt, 16000, pts=8000)
    assert not frame.format.is_planar
    assert frame.to_ndarray().shape == (1, 300 * channels)

    result = AudioFrame.from_av(frame)
    assert result.samples.dtype == np.dtype(dtype)
    assert result.samples.shape == (channels, 300)
    np.testing.assert_array_equal(result.samples, samples)
    assert result.samples.flags.c_contiguous
    assert result.sample_rate == 16000
    assert result.timestamp == 0.5


def test_audio_from_packed_stereo_keeps_left_and_right_apart():
    left = np.arange(0, 100, dtype=np.int16)
    right = -np.arange(0, 100, dtype=np.int16)
    result = AudioFrame.from_av(packed_av_frame(np.stack([left, right]), "s16", 8000, pts=0))
    np.testing.assert_array_equal(result.samples[0], left)
    np.testing.assert_array_equal(result.samples[1], right)


def test_audio_from_av_s32_converts_to_float32():
    rng = np.random.default_rng(3)
    samples = rng.integers(-(2**31), 2**31, (2, 256), dtype=np.int64).astype(np.int32)
    frame = packed_av_frame(samples, "s32", 8000, pts=4000)
    result = AudioFrame.from_av(frame)
    assert result.samples.dtype == np.float32
    assert result.samples.shape == (2, 256)
    np.testing.assert_allclose(result.samples, samples / 2**31, atol=1e-6)
    assert result.sample_rate == 8000
    assert result.timestamp == 0.5


def test_audio_from_av_planar_double_converts_to_float32():
    samples = np.linspace(-1, 1, 3 * 100).reshape(3, 100)
    frame = av.AudioFrame.from_ndarray(samples, format="dblp", layout="2.1")
    frame.sample_rate = 8000
    frame.pts = 800
    frame.time_base = Fraction(1, 8000)
    result = AudioFrame.from_av(frame)
    assert result.samples.dtype == np.float32
    assert result.channels == 3
    np.testing.assert_allclose(result.samples, samples, atol=1e-6)
    assert result.timestamp == pytest.approx(0.1)


def test_audio_from_av_without_pts_has_timestamp_zero():
    frame = packed_av_frame(sine(1, 50, np.int16), "s16", 8000)
    assert frame.pts is None
    assert AudioFrame.from_av(frame).timestamp == 0.0


def test_audio_from_av_converts_frames_without_time_base():
    samples = np.linspace(-1, 1, 2 * 64).reshape(2, 64)
    frame = packed_av_frame(samples, "dbl", 8000)  # no pts, no time_base
    result = AudioFrame.from_av(frame)
    assert result.samples.dtype == np.float32
    np.testing.assert_allclose(result.samples, samples, atol=1e-6)
    assert result.timestamp == 0.0


# VideoFrame: validation and properties -------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (dict(image=[[0, 1]], format="gray"), TypeError),
        (dict(image=np.zeros((4, 4, 3), np.uint8), format="yuv444p"), ValueError),
        (dict(image=np.zeros((4, 4, 3), np.uint8), format="RGB24"), ValueError),
        (dict(image=np.zeros((4, 4, 3), np.float32), format="rgb24"), ValueError),
        (dict(image=np.zeros((4, 4), np.uint16), format="gray"), ValueError),
        (dict(image=np.zeros((4, 4), np.uint8), format="rgb24"), ValueError),
        (dict(image=np.zeros((4, 4, 4), np.uint8), format="rgb24"), ValueError),
        (dict(image=np.zeros((4, 4, 3), np.uint8), format="rgba"), ValueError),
        (dict(image=np.zeros((4, 4, 3), np.uint8), format="bgra"), ValueError),
        (dict(image=np.zeros((4, 4, 1), np.uint8), format="gray"), ValueError),
        (dict(image=np.zeros((6, 4, 3), np.uint8), format="yuv420p"), ValueError),
        (dict(image=np.zeros((9, 7), np.uint8), format="yuv420p"), ValueError),  # odd width
        (dict(image=np.zeros((10, 8), np.uint8), format="yuv420p"), ValueError),  # rows % 3
    ],
    ids=[
        "list",
        "unknown-format",
        "upper-case",
        "float32",
        "uint16",
        "rgb-2d",
        "rgb-4ch",
        "rgba-3ch",
        "bgra-3ch",
        "gray-3d",
        "yuv-3d",
        "yuv-odd-width",
        "yuv-rows",
    ],
)
def test_video_frame_rejects_bad_images(kwargs, error):
    with pytest.raises(error):
        VideoFrame(**kwargs)


def test_video_frame_defaults_to_rgb24_and_float_timestamp():
    frame = VideoFrame(np.zeros((2, 2, 3), np.uint8), timestamp=2)
    assert frame.format == "rgb24"
    assert type(frame.timestamp) is float and frame.timestamp == 2.0


@pytest.mark.parametrize("fmt", list(VIDEO_FORMATS))
def test_video_frame_width_and_height(fmt):
    frame = VideoFrame(random_image(fmt, width=12, height=8), fmt)
    assert (frame.width, frame.height) == (12, 8)


@pytest.mark.parametrize(("rows", "height"), [(3, 2), (9, 6), (720, 480)])
def test_yuv420p_height_is_two_thirds_of_rows(rows, height):
    frame = VideoFrame(np.zeros((rows, 4), np.uint8), "yuv420p")
    assert (frame.width, frame.height) == (4, height)


# VideoFrame <-> PyAV ---------------------------------------------------------


@pytest.mark.parametrize("fmt", list(VIDEO_FORMATS))
def test_video_to_av_and_back_is_identical(fmt):
    pixels = random_image(fmt)
    frame = VideoFrame(pixels, fmt, timestamp=1 / 3)

    converted = frame.to_av()
    assert converted.format.name == fmt
    assert (converted.width, converted.height) == (16, 10)
    assert converted.time_base == VIDEO_TIME_BASE == Fraction(1, 90000)
    assert converted.pts == 30000

    back = VideoFrame.from_av(converted, format=fmt)
    assert back.format == fmt
    assert back.image.dtype == np.uint8
    np.testing.assert_array_equal(back.image, pixels)
    assert back.timestamp == pytest.approx(1 / 3, abs=1e-9)
    assert (back.width, back.height) == (16, 10)


def test_video_to_av_accepts_non_contiguous_images():
    pixels = random_image("rgb24", width=32, height=20)[::2, ::2]
    assert not pixels.flags.c_contiguous
    back = VideoFrame.from_av(VideoFrame(pixels, "rgb24").to_av())
    np.testing.assert_array_equal(back.image, pixels)


def test_video_from_av_gray_converts_an_rgb_frame():
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, 0:2, 0] = 255  # red
    pixels[:, 2:4, 1] = 255  # green
    pixels[:, 4:6, 2] = 255  # blue
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")

    gray = VideoFrame.from_av(frame, format="gray")
    assert gray.format == "gray"
    assert gray.image.shape == (4, 6) and gray.image.dtype == np.uint8
    red, green, blue = gray.image[0, 0], gray.image[0, 2], gray.image[0, 4]
    assert green > red > blue > 0
    assert (gray.image[:, 0:2] == red).all() and (gray.image[:, 4:6] == blue).all()
    assert gray.timestamp == 0.0  # av frame without pts


def test_video_from_av_defaults_to_rgb24_and_reads_other_time_bases():
    pixels = np.full((4, 6, 3), (10, 200, 30), np.uint8)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    frame.time_base = Fraction(1, 30)
    frame.pts = 45
    result = VideoFrame.from_av(frame)
    assert result.format == "rgb24"
    np.testing.assert_array_equal(result.image, pixels)
    assert result.timestamp == 1.5


def test_video_from_av_converts_rgb_to_bgr():
    pixels = random_image("rgb24")
    result = VideoFrame.from_av(av.VideoFrame.from_ndarray(pixels, format="rgb24"), format="bgr24")
    np.testing.assert_array_equal(result.image, pixels[:, :, ::-1])


def test_video_from_av_rejects_unknown_format():
    frame = av.VideoFrame.from_ndarray(random_image("rgb24"), format="rgb24")
    with pytest.raises(ValueError):
        VideoFrame.from_av(frame, format="yuv444p")


def test_a_frame_prints_its_shape_not_its_samples():
    audio = AudioFrame(np.zeros((2, 960), np.float32), 48000, 1.5)
    assert repr(audio) == "<AudioFrame 2ch x 960 float32 at 48000 Hz (20.0 ms), t=1.500 s>"
    video = VideoFrame(np.zeros((480, 640, 3), np.uint8), "rgb24", 0.25)
    assert repr(video) == "<VideoFrame 640x480 rgb24, t=0.250 s>"
    assert str(VideoFrame(np.zeros((72, 64), np.uint8), "yuv420p")) == "<VideoFrame 64x48 yuv420p, t=0.000 s>"
