"""Built-in nodes (resample, gain, chunker, video transform and effects, tone and video sources), run through real pipelines."""

from __future__ import annotations

import asyncio
import contextlib

import cloudpickle
import numpy as np
import pytest

from remotemedia import AudioFrame, Pipeline, PipelineError, VideoFrame
from remotemedia.nodes import (
    ChunkerNode,
    EdgeNode,
    GainNode,
    InvertNode,
    ResampleNode,
    ToneNode,
    VideoPatternNode,
    VideoTransformNode,
)


# Helpers -------------------------------------------------------------------


def run(*nodes, source=None) -> list:
    """Run ``nodes`` in a fresh pipeline and return its outputs."""
    pipeline = Pipeline("test")
    for node in nodes:
        pipeline.add_node(node)
    return pipeline.run(source)


def concat(frames: list[AudioFrame]) -> np.ndarray:
    """All samples of ``frames``, end to end, shaped (channels, n)."""
    return np.concatenate([f.samples for f in frames], axis=1)


def peak_frequency(signal: np.ndarray, rate: int) -> float:
    """Frequency of the FFT peak of a 1-D signal, in Hz."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


def split_frames(samples: np.ndarray, rate: int, sizes: list[int], start: float = 0.0) -> list[AudioFrame]:
    """Cut (channels, n) samples into frames of the given sizes, timestamped by position."""
    frames, position = [], 0
    for size in sizes:
        chunk = samples[:, position : position + size]
        frames.append(AudioFrame(np.ascontiguousarray(chunk), rate, start + position / rate))
        position += size
    assert position == samples.shape[1]
    return frames


def sine_frames(
    frequency: float,
    rate: int,
    duration: float,
    frame_size: int,
    channels: int = 1,
    dtype=np.float32,
    start: float = 0.0,
) -> list[AudioFrame]:
    """A sine at ``frequency`` (amplitude 0.5) cut into frames of ``frame_size`` samples."""
    n = round(duration * rate)
    wave = 0.5 * np.sin(2 * np.pi * frequency * np.arange(n) / rate)
    samples = np.repeat(wave[np.newaxis, :], channels, axis=0)
    if np.dtype(dtype) == np.int16:
        samples = np.round(samples * 32767).astype(np.int16)
    else:
        samples = samples.astype(np.float32)
    sizes = [frame_size] * (n // frame_size) + ([n % frame_size] if n % frame_size else [])
    return split_frames(samples, rate, sizes, start)


def assert_timestamps_follow_samples(frames: list[AudioFrame], start: float = 0.0) -> None:
    """Each frame's timestamp is ``start`` plus the samples before it, non-decreasing."""
    position = 0
    previous = -np.inf
    for frame in frames:
        assert frame.timestamp >= previous
        assert frame.timestamp == pytest.approx(start + position / frame.sample_rate, abs=1e-9)
        previous = frame.timestamp
        position += frame.num_samples


def rgb_bars(width: int = 90, height: int = 60) -> np.ndarray:
    """An rgb24 image: pure red, green and blue vertical thirds."""
    pixels = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    pixels[:, :third, 0] = 255
    pixels[:, third : 2 * third, 1] = 255
    pixels[:, 2 * third :, 2] = 255
    return pixels


# ResampleNode --------------------------------------------------------------


def test_resample_tone_44100_to_16000_keeps_frequency_and_duration():
    outputs = run(ToneNode(440.0, duration_s=1.0, sample_rate=44100), ResampleNode(16000))
    assert all(isinstance(f, AudioFrame) and f.sample_rate == 16000 for f in outputs)
    samples = concat(outputs)
    assert samples.dtype == np.float32
    assert samples.shape[0] == 1
    assert abs(samples.shape[1] - 16000) <= 4
    assert abs(peak_frequency(samples[0], 16000) - 440.0) <= 2.0
    # The level is kept too (amplitude 0.5, away from the edges).
    assert np.max(np.abs(samples[0, 1000:-1000])) == pytest.approx(0.5, abs=0.02)
    assert_timestamps_follow_samples(outputs)


@pytest.mark.parametrize("dtype", [np.float32, np.int16], ids=["f32", "s16"])
def test_resample_keeps_sample_type_and_timeline(dtype):
    frames = sine_frames(440.0, 44100, 1.0, 441, channels=2, dtype=dtype, start=2.0)
    outputs = run(ResampleNode(16000), source=frames)
    assert all(f.samples.dtype == np.dtype(dtype) for f in outputs)
    samples = concat(outputs)
    assert samples.shape[0] == 2
    assert abs(samples.shape[1] - 16000) <= 4
    assert abs(peak_frequency(samples[1].astype(np.float64), 16000) - 440.0) <= 2.0
    assert outputs[0].timestamp == pytest.approx(2.0)
    assert_timestamps_follow_samples(outputs, start=2.0)


def test_resample_odd_frame_sizes_keeps_duration():
    """1000-sample input frames do not divide evenly into 16 kHz samples."""
    frames = sine_frames(440.0, 44100, 50_000 / 44100, 1000)
    outputs = run(ResampleNode(16000), source=frames)
    expected = 50_000 * 16000 / 44100
    assert abs(concat(outputs).shape[1] - expected) <= 4
    assert_timestamps_follow_samples(outputs)


def test_resample_upsampling_8000_to_48000_keeps_frequency():
    outputs = run(ToneNode(440.0, duration_s=0.5, sample_rate=8000), ResampleNode(48000))
    samples = concat(outputs)
    assert all(f.sample_rate == 48000 for f in outputs)
    assert abs(samples.shape[1] - 24000) <= 4
    assert abs(peak_frequency(samples[0], 48000) - 440.0) <= 2.0
    assert_timestamps_follow_samples(outputs)


def test_resample_downmixes_stereo_to_mono():
    """Left is a 300 Hz tone, right a constant: the mono mix holds both, in one channel."""
    n = 16000
    left = (0.3 * np.sin(2 * np.pi * 300 * np.arange(n) / 16000)).astype(np.float32)
    right = np.full(n, 0.2, np.float32)
    frames = split_frames(np.stack([left, right]), 16000, [320] * 50)
    outputs = run(ResampleNode(16000, channels=1), source=frames)
    samples = concat(outputs)
    assert all(f.channels == 1 for f in outputs)
    assert abs(samples.shape[1] - n) <= 4
    mono = samples[0, 200:-200].astype(np.float64)
    # The right channel's constant appears as an offset, the left's tone as a 300 Hz peak.
    assert mono.mean() > 0.05
    assert abs(peak_frequency(mono - mono.mean(), 16000) - 300.0) <= 2.0
    # And it is the same linear mix (L + R) * k throughout.
    k = (mono.max() - mono.min()) / (2 * 0.3)
    assert mono.mean() == pytest.approx(0.2 * k, rel=0.05)


def test_resample_mono_to_stereo_duplicates_the_channel():
    frames = sine_frames(440.0, 16000, 0.2, 320)
    outputs = run(ResampleNode(16000, channels=2), source=frames)
    samples = concat(outputs)
    assert samples.shape[0] == 2
    np.testing.assert_allclose(samples[0], samples[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sample_rate=0),
        dict(sample_rate=-16000),
        dict(sample_rate=16000.0),
        dict(sample_rate="16000"),
        dict(sample_rate=None),
        dict(sample_rate=16000, channels=0),
        dict(sample_rate=16000, channels=-1),
        dict(sample_rate=16000, channels=1.0),
    ],
    ids=repr,
)
def test_resample_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        ResampleNode(**kwargs)


def test_resample_of_non_audio_input_fails_the_pipeline():
    node = ResampleNode(16000, name="my-resampler")
    with pytest.raises(PipelineError) as info:
        run(node, source=[b"not audio"])
    assert isinstance(info.value.__cause__, TypeError)
    assert info.value.node_name == "my-resampler"
    assert info.value.node_index == 0


def test_resample_of_empty_stream_yields_nothing():
    assert run(ResampleNode(16000), source=[]) == []


# GainNode ------------------------------------------------------------------


def test_gain_minus_6db_halves_float_amplitude():
    samples = np.linspace(-1, 1, 101, dtype=np.float32).reshape(1, -1)
    outputs = run(GainNode(-6.0206), source=[AudioFrame(samples, 16000, 0.75)])
    (frame,) = outputs
    assert frame.samples.dtype == np.float32
    np.testing.assert_allclose(frame.samples, samples * 0.5, rtol=1e-4, atol=1e-7)
    assert frame.sample_rate == 16000 and frame.timestamp == 0.75


def test_gain_float_is_not_clipped():
    samples = np.array([[0.9, -0.9]], np.float32)
    (frame,) = run(GainNode(6.0206), source=[AudioFrame(samples, 8000)])
    np.testing.assert_allclose(frame.samples, [[1.8, -1.8]], rtol=1e-4)


def test_gain_plus_6db_on_int16_clips_and_stays_int16():
    samples = np.array([[32000, -32000, 30000, -20000, 1000, -1000, 0, 16383]], np.int16)
    (frame,) = run(GainNode(6.0206), source=[AudioFrame(samples, 8000, 3.5)])
    assert frame.samples.dtype == np.int16
    np.testing.assert_array_equal(frame.samples, [[32767, -32768, 32767, -32768, 2000, -2000, 0, 32766]])
    assert frame.timestamp == 3.5


def test_gain_applies_to_every_frame_and_keeps_timestamps():
    frames = sine_frames(440.0, 16000, 0.1, 160, channels=2)
    outputs = run(GainNode(-20.0), source=frames)
    assert [f.timestamp for f in outputs] == [f.timestamp for f in frames]
    np.testing.assert_allclose(concat(outputs), concat(frames) * 0.1, rtol=1e-5, atol=1e-8)


def test_gain_factor_and_zero_db():
    assert GainNode(-6.0206).factor == pytest.approx(0.5, rel=1e-5)
    assert GainNode(20).factor == pytest.approx(10.0)
    samples = np.arange(-5, 5, dtype=np.int16).reshape(1, -1)
    (frame,) = run(GainNode(), source=[AudioFrame(samples, 8000)])
    np.testing.assert_array_equal(frame.samples, samples)


def test_gain_of_non_audio_input_fails_the_pipeline():
    with pytest.raises(PipelineError) as info:
        run(GainNode(-3, name="g"), source=[np.zeros((1, 4), np.float32)])
    assert isinstance(info.value.__cause__, TypeError)
    assert info.value.node_name == "g"


# ChunkerNode ---------------------------------------------------------------

_IRREGULAR = [137, 1000, 3, 2500]  # 3640 samples: 11 chunks of 320, then 120


def _irregular_input(start: float = 0.0, dtype=np.float32, channels: int = 1) -> list[AudioFrame]:
    total = sum(_IRREGULAR)
    samples = np.arange(channels * total, dtype=np.float32).reshape(channels, total) / 10_000
    if np.dtype(dtype) == np.int16:
        samples = (samples * 1000).astype(np.int16)
    return split_frames(samples.astype(dtype), 16000, _IRREGULAR, start)


@pytest.mark.parametrize("dtype", [np.float32, np.int16], ids=["f32", "s16"])
@pytest.mark.parametrize("channels", [1, 2], ids=["mono", "stereo"])
def test_chunker_makes_fixed_size_frames_from_irregular_input(dtype, channels):
    frames = _irregular_input(start=5.0, dtype=dtype, channels=channels)
    outputs = run(ChunkerNode(0.02), source=frames)
    sizes = [f.num_samples for f in outputs]
    assert sizes == [320] * 11 + [120]
    assert all(f.channels == channels and f.samples.dtype == np.dtype(dtype) for f in outputs)
    assert all(f.sample_rate == 16000 for f in outputs)
    np.testing.assert_array_equal(concat(outputs), concat(frames))
    assert_timestamps_follow_samples(outputs, start=5.0)


def test_chunker_pad_last_pads_with_zeros():
    frames = _irregular_input()
    outputs = run(ChunkerNode(0.02, pad_last=True), source=frames)
    assert [f.num_samples for f in outputs] == [320] * 12
    joined = concat(outputs)
    original = concat(frames)
    np.testing.assert_array_equal(joined[:, : original.shape[1]], original)
    np.testing.assert_array_equal(joined[:, original.shape[1] :], 0)
    assert outputs[-1].timestamp == pytest.approx(11 * 320 / 16000)


def test_chunker_exact_multiple_has_no_short_last_frame():
    samples = np.ones((1, 960), np.float32)
    outputs = run(ChunkerNode(0.01, pad_last=True), source=split_frames(samples, 16000, [500, 460]))
    assert [f.num_samples for f in outputs] == [160] * 6


def test_chunker_output_frames_do_not_alias_inputs_or_each_other():
    frames = _irregular_input()
    outputs = run(ChunkerNode(0.02), source=frames)
    expected = concat(outputs).copy()
    for frame in frames:
        frame.samples[:] = -1  # the caller reuses its buffers
    np.testing.assert_array_equal(concat(outputs), expected)
    outputs[0].samples[:] = -2
    assert (outputs[1].samples != -2).all()
    assert all(f.samples.flags.c_contiguous for f in outputs)


def test_chunker_rejects_sample_rate_change_mid_stream():
    frames = [
        AudioFrame(np.zeros((1, 400), np.float32), 16000),
        AudioFrame(np.zeros((1, 400), np.float32), 8000, 0.025),
    ]
    with pytest.raises(PipelineError) as info:
        run(ChunkerNode(0.02, name="chunks"), source=frames)
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.node_name == "chunks"


@pytest.mark.parametrize(
    "second",
    [
        AudioFrame(np.zeros((2, 400), np.float32), 16000),  # channels change
        AudioFrame(np.zeros((1, 400), np.int16), 16000),  # sample type change
    ],
    ids=["channels", "dtype"],
)
def test_chunker_rejects_format_change_mid_stream(second):
    with pytest.raises(PipelineError):
        run(ChunkerNode(0.02), source=[AudioFrame(np.zeros((1, 400), np.float32), 16000), second])


@pytest.mark.parametrize("duration", [0, -0.02, float("nan")], ids=repr)
def test_chunker_rejects_non_positive_duration(duration):
    with pytest.raises(ValueError):
        ChunkerNode(duration)


def test_chunker_of_empty_stream_yields_nothing():
    assert run(ChunkerNode(0.02, pad_last=True), source=[]) == []


# VideoTransformNode --------------------------------------------------------


def test_video_gray_conversion_orders_luma_green_red_blue():
    frame = VideoFrame(rgb_bars(), "rgb24", timestamp=0.5)
    (out,) = run(VideoTransformNode(format="gray"), source=[frame])
    assert out.format == "gray"
    assert out.image.ndim == 2 and out.image.dtype == np.uint8
    assert out.image.shape == (60, 90)
    red, green, blue = out.image[30, 15], out.image[30, 45], out.image[30, 75]
    assert green > red > blue
    assert out.timestamp == 0.5


def test_video_resize_changes_shape_and_keeps_colour_blocks_in_place():
    frame = VideoFrame(rgb_bars(90, 60), "rgb24", timestamp=1.25)
    (out,) = run(VideoTransformNode(width=45, height=30), source=[frame])
    assert out.format == "rgb24"
    assert out.image.shape == (30, 45, 3)
    assert (out.width, out.height) == (45, 30)
    # Centres of the thirds keep their colour.
    np.testing.assert_array_equal(out.image[15, 7], [255, 0, 0])
    np.testing.assert_array_equal(out.image[15, 22], [0, 255, 0])
    np.testing.assert_array_equal(out.image[15, 37], [0, 0, 255])
    assert out.timestamp == 1.25


def test_video_resize_keeps_a_gradient_monotonic():
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    (out,) = run(VideoTransformNode(width=128, height=16), source=[VideoFrame(ramp, "gray")])
    assert out.image.shape == (16, 128)
    row = out.image[8].astype(int)
    assert row[0] < 10 and row[-1] > 245
    assert (np.diff(row) >= -1).all()


def test_video_resize_and_convert_together():
    frames = [VideoFrame(rgb_bars(), "rgb24", t / 30) for t in range(3)]
    outputs = run(VideoTransformNode(width=32, height=24, format="yuv420p"), source=frames)
    assert [f.timestamp for f in outputs] == [t / 30 for t in range(3)]
    for out in outputs:
        assert out.format == "yuv420p"
        assert (out.width, out.height) == (32, 24)
        assert out.image.shape == (36, 32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=0),
        dict(height=-1),
        dict(width=1.5),
        dict(height="240"),
        dict(format="yuv444p"),
        dict(format="RGB24"),
    ],
    ids=repr,
)
def test_video_transform_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        VideoTransformNode(**kwargs)


def test_video_transform_of_audio_input_fails_the_pipeline():
    with pytest.raises(PipelineError) as info:
        run(VideoTransformNode(format="gray", name="vt"), source=[AudioFrame(np.zeros((1, 4), np.float32), 8000)])
    assert isinstance(info.value.__cause__, TypeError)
    assert info.value.node_name == "vt"


# ToneNode ------------------------------------------------------------------


def test_tone_produces_the_requested_samples_in_frames():
    node = ToneNode(1000.0, duration_s=0.25, sample_rate=16000, frame_duration_s=0.02, amplitude=0.3, channels=2)
    outputs = run(node)
    assert [f.num_samples for f in outputs] == [320] * 12 + [160]  # 4000 samples
    assert all(f.sample_rate == 16000 and f.channels == 2 for f in outputs)
    assert all(f.samples.dtype == np.float32 for f in outputs)
    samples = concat(outputs)
    np.testing.assert_array_equal(samples[0], samples[1])
    assert np.max(np.abs(samples)) == pytest.approx(0.3, abs=1e-6)
    assert abs(peak_frequency(samples[0], 16000) - 1000.0) <= 2.0
    expected = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(4000) / 16000)
    np.testing.assert_allclose(samples[0], expected, atol=1e-6)
    assert_timestamps_follow_samples(outputs)


def test_tone_zero_duration_produces_nothing():
    assert run(ToneNode(duration_s=0)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sample_rate=0),
        dict(sample_rate=44100.0),
        dict(duration_s=-1),
        dict(frame_duration_s=0),
    ],
    ids=repr,
)
def test_tone_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        ToneNode(**kwargs)


async def test_endless_tone_stops_cleanly_when_the_consumer_leaves():
    pipeline = Pipeline("endless").add_node(ToneNode(440.0, duration_s=None, sample_rate=8000))
    pipeline.add_node(GainNode(-6.0206))
    received = []
    async with contextlib.aclosing(pipeline.stream()) as outputs:
        async for frame in outputs:
            received.append(frame)
            if len(received) == 10:
                break
    assert [f.num_samples for f in received] == [160] * 10
    assert [f.timestamp for f in received] == pytest.approx([i * 0.02 for i in range(10)])
    # Nothing of the run is left behind...
    assert asyncio.all_tasks() == {asyncio.current_task()}
    # ...and the pipeline is free to run again.
    async with contextlib.aclosing(pipeline.stream()) as outputs:
        first = await anext(outputs)
    assert first.timestamp == 0.0


# cloudpickle ---------------------------------------------------------------


def _audio_source() -> list[AudioFrame]:
    return sine_frames(440.0, 16000, 0.1, 300)


_PICKLE_CASES = {
    "ResampleNode": (lambda: ResampleNode(8000, channels=2, name="rs"), _audio_source),
    "GainNode": (lambda: GainNode(-6.0206, name="gain"), _audio_source),
    "ChunkerNode": (lambda: ChunkerNode(0.01, pad_last=True, name="chunk"), _audio_source),
    "VideoTransformNode": (
        lambda: VideoTransformNode(width=30, height=20, format="gray", name="vt"),
        lambda: [VideoFrame(rgb_bars(), "rgb24", 0.1)],
    ),
    "ToneNode": (lambda: ToneNode(440.0, duration_s=0.05, sample_rate=8000, name="tone"), lambda: None),
}


def _payload(frame) -> np.ndarray:
    return frame.samples if isinstance(frame, AudioFrame) else frame.image


@pytest.mark.parametrize("name", list(_PICKLE_CASES))
def test_node_survives_cloudpickle_and_still_works(name):
    make_node, make_source = _PICKLE_CASES[name]
    original = make_node()
    copy = cloudpickle.loads(cloudpickle.dumps(original))
    assert type(copy) is type(original) and copy is not original
    assert vars(copy).keys() == vars(original).keys()
    assert copy.name == original.name

    expected = run(original, source=make_source())
    result = run(copy, source=make_source())
    assert len(result) == len(expected) > 0
    for got, want in zip(result, expected, strict=True):
        assert type(got) is type(want)
        assert got.timestamp == want.timestamp
        np.testing.assert_array_equal(_payload(got), _payload(want))


def test_node_pickled_after_a_run_still_works():
    """State created during a run (the FFmpeg resampler) must not leak into the node."""
    node = ResampleNode(8000)
    first = run(node, source=_audio_source())
    copy = cloudpickle.loads(cloudpickle.dumps(node))
    again = run(copy, source=_audio_source())
    np.testing.assert_array_equal(concat(again), concat(first))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ResampleNode(True),
        lambda: ResampleNode(16000, channels=False),
        lambda: ToneNode(sample_rate=True),
        lambda: ToneNode(channels=0),
        lambda: VideoTransformNode(width=True),
    ],
)
def test_bools_and_non_positive_values_are_not_accepted_as_sizes(make):
    with pytest.raises(ValueError, match="positive int"):
        make()


# Video effects and the pattern source --------------------------------------


def test_invert_makes_a_negative_in_any_supported_format():
    rgb = VideoFrame(np.full((4, 6, 3), 200, np.uint8), "rgb24", 1.5)
    gray = VideoFrame(np.arange(24, dtype=np.uint8).reshape(4, 6), "gray")
    out_rgb, out_gray = run(InvertNode(), source=[rgb, gray])
    assert np.all(out_rgb.image == 55) and out_rgb.timestamp == 1.5
    assert np.array_equal(out_gray.image, 255 - gray.image) and out_gray.format == "gray"


def test_edges_are_bright_on_an_edge_and_dark_on_flat_areas():
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10:] = 255
    (out,) = run(EdgeNode(), source=[VideoFrame(image, "rgb24", 0.25)])
    assert out.image.shape == (20, 20, 3) and out.timestamp == 0.25
    assert out.image[10, 9:11].min() == 255  # both sides of the step
    assert out.image[:, :8].max() == 0 and out.image[:, 12:].max() == 0


def test_effects_say_what_they_take():
    with pytest.raises(PipelineError, match="takes VideoFrame inputs, not str"):
        run(InvertNode(), source=["frame"])
    yuv = VideoFrame(np.zeros((6, 4), np.uint8), "yuv420p")
    with pytest.raises(PipelineError, match=r"VideoTransformNode\(format='rgb24'\)"):
        run(EdgeNode(), source=[yuv])
    with pytest.raises(ValueError, match="gain must be positive"):
        EdgeNode(gain=0)


def test_video_pattern_makes_timed_moving_frames():
    frames = run(VideoPatternNode(width=64, height=48, fps=10, duration_s=0.5))
    assert len(frames) == 5
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(f.format == "rgb24" and f.image.shape == (48, 64, 3) for f in frames)
    assert not np.array_equal(frames[0].image, frames[1].image)  # the bar moved
    with pytest.raises(ValueError, match="fps must be positive"):
        VideoPatternNode(fps=0)

