"""
Pipelines whose streaming remote nodes get audio and video frames over
WebRTC media tracks (the default transport), end to end against a real
signaling server and executor.
"""

from __future__ import annotations

import numpy as np
import pytest
from harness import ServeProcess

from remotemedia import AudioFrame, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, VideoFrame
from remotemedia.nodes import GainNode, InvertNode, ToneNode, VideoPatternNode


@pytest.fixture(scope="module")
def config():
    serve = ServeProcess("--max-sessions", "4")
    try:
        yield RemoteExecutorConfig(host="127.0.0.1", port=serve.port, timeout=30.0, heartbeat_timeout=15.0)
    finally:
        serve.stop()


def remote(node, config, **node_config) -> RemoteObjectExecutionNode:
    return RemoteObjectExecutionNode(node, config, node_config={"streaming": True, **node_config})


def peak_hz(frames: list[AudioFrame]) -> float:
    samples = np.concatenate([f.samples[0].astype(np.float64) for f in frames])
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * frames[0].sample_rate / len(samples))


async def test_audio_through_a_remote_node_over_tracks_is_the_processed_signal(config):
    gain = remote(GainNode(-6.0), config)
    pipeline = Pipeline("audio").add_node(ToneNode(440.0, duration_s=1.0, sample_rate=16000)).add_node(gain)
    frames = await pipeline.run_async()
    assert all(isinstance(f, AudioFrame) and f.sample_rate == 16000 and f.channels == 1 for f in frames)
    assert sum(f.num_samples for f in frames) == 16000
    assert frames[0].timestamp == 0.0
    assert peak_hz(frames) == pytest.approx(440, abs=5)
    # Opus keeps the level within a decibel or so: 0.5 at -6 dB is about 0.25.
    peak = max(float(np.abs(f.samples).max()) for f in frames[10:-10])
    assert 0.2 < peak < 0.3
    stats = {s.name: s for s in pipeline.last_run_stats}
    assert stats[gain.name].remote and stats[gain.name].outputs == len(frames)


async def test_video_through_a_remote_effect_over_tracks_carries_the_effect(config):
    pattern = VideoPatternNode(width=160, height=120, fps=30, duration_s=0.5)
    expected = Pipeline("local").add_node(pattern).add_node(InvertNode()).run_async()
    pipeline = Pipeline("video").add_node(VideoPatternNode(width=160, height=120, fps=30, duration_s=0.5))
    pipeline.add_node(remote(InvertNode(), config))
    got, want = await pipeline.run_async(), await expected
    assert len(got) == len(want) == 15
    assert [f.timestamp for f in got] == pytest.approx([f.timestamp for f in want], abs=1e-4)
    for g, w in zip(got, want):
        assert g.format == "rgb24" and g.image.shape == (120, 160, 3)
        # VP8 is lossy: close to the local negative on average, far from the original.
        assert np.abs(g.image.astype(int) - w.image).mean() < 12


async def test_two_remote_streaming_nodes_share_one_connection_with_a_slot_each(config):
    first, second = remote(InvertNode(), config), remote(InvertNode(), config, transport="tracks")
    pipeline = Pipeline("twice").add_node(VideoPatternNode(width=64, height=48, fps=30, duration_s=0.3))
    pipeline.add_node(first).add_node(second)
    original = await Pipeline("original").add_node(VideoPatternNode(width=64, height=48, fps=30, duration_s=0.3)).run_async()
    got = await pipeline.run_async()
    assert len(got) == len(original) == 9
    for g, o in zip(got, original):
        assert np.abs(g.image.astype(int) - o.image).mean() < 16  # inverted twice, through VP8 four times
    stats = {s.name: s for s in pipeline.last_run_stats}
    assert stats[first.name].location == stats[second.name].location


async def test_the_datachannel_transport_keeps_video_exact(config):
    rng = np.random.default_rng(5)
    frames = [VideoFrame(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "rgb24", k * 0.5) for k in range(4)]
    pipeline = Pipeline("exact").add_node(remote(InvertNode(), config, transport="datachannel"))
    got = await pipeline.run_async(frames)
    assert [g.timestamp for g in got] == [f.timestamp for f in frames]
    assert all(np.array_equal(g.image, 255 - f.image) for g, f in zip(got, frames))
