"""
Audio and video frames of streamed calls on WebRTC media tracks, end to end:
a real signaling server and executors (both execution modes), real aiortc
peer connections, Opus and VP8.

Media tracks are lossy and real time: audio is checked by what survives a
codec (a sine keeps its frequency; counts, rates and timestamps are
restored), video by its effect (inverted brightness).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from harness import TOKEN, mode_config, raw_session, wait_until
from media_samples import audio_frames, sine

from remotemedia import AudioFrame, RemoteExecutionError, RemoteProxyClient, VideoFrame
from remotemedia.rpc import PROTOCOL_VERSION, Kind


class Effects:
    """What the executor runs: it travels by value (cloudpickle)."""

    async def invert(self, frames):
        async for frame in frames:
            if isinstance(frame, VideoFrame):
                yield VideoFrame(255 - frame.image, frame.format, frame.timestamp)
            elif isinstance(frame, AudioFrame):
                yield frame
            else:
                yield {"seen": frame}

    def invert_sync(self, frames):
        for frame in frames:
            yield VideoFrame(255 - frame.image, frame.format, frame.timestamp) if isinstance(frame, VideoFrame) else frame

    async def tone(self, hz: float, seconds: float):
        """An output-only stream: audio made on the executor, with a word about it first."""
        yield f"{hz} Hz"
        t = np.arange(int(24000 * seconds)) / 24000
        wave = (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)[np.newaxis, :]
        for i in range(0, wave.shape[1], 480):
            yield AudioFrame(np.ascontiguousarray(wave[:, i:i + 480]), 24000, i / 24000)

    async def odd(self, frames):
        async for frame in frames:
            yield VideoFrame(frame.image[:-1], frame.format, frame.timestamp)  # one row less: odd height

    async def fail_after(self, frames, n: int):
        count = 0
        async for frame in frames:
            count += 1
            if count > n:
                raise ValueError(f"gave up after {n} frames")
            yield frame


def peak_hz(frames: list[AudioFrame]) -> float:
    samples = np.concatenate([f.samples[0].astype(np.float64) for f in frames])
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * frames[0].sample_rate / len(samples))


def gray_frames(n: int, fps: int = 30, width: int = 160, height: int = 120) -> list[VideoFrame]:
    frames = []
    for k in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, : width // 2] = 200
        image[:, width // 2:] = 40
        frames.append(VideoFrame(image, "rgb24", 3.0 + k / fps))
    return frames


async def items(values):
    for value in values:
        yield value


def connect(server, mode: str, media_tracks: int = 1) -> RemoteProxyClient:
    """A client of the executor running in ``mode``, with ``media_tracks`` track slots."""
    return RemoteProxyClient(mode_config(server, TOKEN, mode), media_tracks=media_tracks)


async def test_audio_over_tracks_keeps_its_frequency_format_and_timestamps(cluster, mode):
    sent = audio_frames(sine(16000, 1.0, hz=440), 16000, 320, start=2.0)
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = [f async for f in remote.invert(items(sent)).over_tracks()]
    assert all(isinstance(f, AudioFrame) for f in got)
    assert {(f.sample_rate, f.channels, f.samples.dtype) for f in got} == {(16000, 1, np.dtype(np.float32))}
    assert sum(f.num_samples for f in got) == 16000  # every sample, none of the padding
    assert got[0].timestamp == 2.0
    assert got[-1].timestamp == pytest.approx(2.0 + (16000 - got[-1].num_samples) / 16000)
    assert peak_hz(got) == pytest.approx(440, abs=5)


@pytest.mark.parametrize("method", ["invert", "invert_sync"])
async def test_video_over_tracks_carries_the_remote_effect(cluster, mode, method):
    sent = gray_frames(20)
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = [f async for f in getattr(remote, method)(items(sent)).over_tracks()]
    assert len(got) == 20
    assert all(f.format == "rgb24" and f.image.shape == (120, 160, 3) for f in got)
    # To RTP's 90 kHz clock (FFmpeg's VP8 decoder may round a frame's time by a tick or two).
    assert [f.timestamp for f in got] == pytest.approx([f.timestamp for f in sent], abs=1e-4)
    # 200 and 40, inverted (VP8 is lossy: within a few levels, away from the edge)
    assert abs(int(np.median(got[-1].image[:, :60])) - 55) <= 8
    assert abs(int(np.median(got[-1].image[:, 100:])) - 215) <= 8


async def test_frames_go_on_tracks_and_everything_else_on_the_data_channel(cluster, mode):
    audio = audio_frames(sine(48000, 0.4, channels=2), 48000, 960)
    video = gray_frames(6)
    mixed = [*audio[:5], "hello", *video, *audio[5:], {"n": 1}]
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = [f async for f in remote.invert(items(mixed)).over_tracks()]
    others = [g for g in got if not isinstance(g, (AudioFrame, VideoFrame))]
    assert others == [{"seen": "hello"}, {"seen": {"n": 1}}]  # in their order, exact
    assert sum(f.num_samples for f in got if isinstance(f, AudioFrame)) == 48000 * 0.4
    assert {f.channels for f in got if isinstance(f, AudioFrame)} == {2}
    assert len([g for g in got if isinstance(g, VideoFrame)]) == 6


async def test_an_output_only_stream_sends_its_audio_on_the_track(cluster, mode):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = [f async for f in remote.tone(1000.0, 0.5).over_tracks()]
    assert got[0] == "1000.0 Hz"
    audio = got[1:]
    assert {f.sample_rate for f in audio} == {24000}
    assert sum(f.num_samples for f in audio) == 12000
    assert peak_hz(audio) == pytest.approx(1000, abs=10)


async def test_a_remote_error_mid_stream_is_raised_and_the_slot_serves_the_next_stream(cluster, mode):
    sent = audio_frames(sine(16000, 0.5), 16000, 320)
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = []
        with pytest.raises(RemoteExecutionError, match="gave up after 10 frames"):
            async for frame in remote.fail_after(items(sent), 10).over_tracks():
                got.append(frame)
        assert len(got) <= 10
        again = [f async for f in remote.invert(items(gray_frames(5))).over_tracks()]
        assert len(again) == 5


async def test_leaving_a_stream_early_frees_its_slot(cluster, mode):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        async for frame in remote.invert(items(gray_frames(60))).over_tracks():
            break
        got = [f async for f in remote.invert(items(gray_frames(4))).over_tracks()]
        assert [f.timestamp for f in got] == pytest.approx([3.0 + k / 30 for k in range(4)], abs=1e-4)


async def test_with_every_slot_taken_frames_go_on_the_data_channel_losslessly(cluster):
    rng = np.random.default_rng(3)
    noise = [VideoFrame(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "rgb24", k * 0.1) for k in range(5)]
    async with connect(cluster, "inprocess", media_tracks=1) as client:
        remote = await client.create_proxy(Effects())
        long_stream = remote.invert(items(gray_frames(90))).over_tracks().__aiter__()
        first = await long_stream.__anext__()  # holds the only slot
        got = [f async for f in remote.invert(items(noise)).over_tracks()]
        await long_stream.aclose()
    assert isinstance(first, VideoFrame)
    assert all(np.array_equal(g.image, 255 - n.image) and g.timestamp == n.timestamp for g, n in zip(got, noise))
    assert len(got) == 5


async def test_without_over_tracks_frames_stay_on_the_data_channel(cluster, mode):
    sent = audio_frames(sine(16000, 0.1), 16000, 160)
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        got = [f async for f in remote.invert(items(sent))]
    assert len(got) == len(sent)
    assert all(np.array_equal(g.samples, s.samples) and g.timestamp == s.timestamp for g, s in zip(got, sent))


async def test_over_tracks_is_for_streams():
    client = RemoteProxyClient(media_tracks=1)
    from remotemedia.remote.proxy import RemoteProxy

    proxy = RemoteProxy(client, 1, Effects(), "Effects")
    with pytest.raises(TypeError, match="over_tracks\\(\\) is for streams"):
        await proxy.invert([]).over_tracks()
    with pytest.raises(ValueError, match="media_tracks"):
        RemoteProxyClient(media_tracks=-1)


async def test_a_media_request_for_a_slot_that_does_not_exist_is_answered_with_an_error(cluster):
    signaling, session, pc, rpc, events, lost = await raw_session(cluster.url, TOKEN, {"executor": "exec-process"})
    try:
        await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
        welcome = await asyncio.wait_for(events.get(), 15)
        assert welcome.kind is Kind.WELCOME
        await rpc.send(Kind.MEDIA, 7, {"slot": 0})
        error = await asyncio.wait_for(events.get(), 15)
        assert (error.kind, error.id) == (Kind.ERROR, 7)
        assert "media slot 0 does not exist" in error.body["message"]
        await rpc.send(Kind.MEDIA, 8, "not a dict")
        error = await asyncio.wait_for(events.get(), 15)
        assert (error.kind, error.id) == (Kind.ERROR, 8) and "plain dict" in error.body["message"]
    finally:
        rpc.close()
        await pc.close()
        await session.close("test over")
        await signaling.close()


async def test_streams_on_two_slots_at_once_each_get_their_own_tracks(cluster, mode):
    # A second transceiver of a kind used to be left on a transport that BUNDLE closed (aiortc #1414).
    async with connect(cluster, mode, media_tracks=2) as client:
        first, second = await client.create_proxy(Effects()), await client.create_proxy(Effects())

        async def run(remote, frames):
            return [f async for f in remote.invert(items(frames)).over_tracks()]

        audio = audio_frames(sine(16000, 0.5, hz=880), 16000, 320)
        video, sound = await asyncio.gather(run(first, gray_frames(10)), run(second, audio))
    assert len(video) == 10 and all(isinstance(f, VideoFrame) for f in video)
    assert sum(f.num_samples for f in sound) == 8000 and peak_hz(sound) == pytest.approx(880, abs=10)


async def test_a_frame_that_no_track_can_carry_is_a_clear_error_on_either_side(cluster, mode):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Effects())
        with pytest.raises(RemoteExecutionError, match="even sizes"):
            [f async for f in remote.odd(items(gray_frames(3))).over_tracks()]
        odd = VideoFrame(np.zeros((15, 16, 3), np.uint8))
        with pytest.raises(ValueError, match="even sizes"):
            [f async for f in remote.invert(items([odd])).over_tracks()]
        assert len([f async for f in remote.invert(items(gray_frames(3))).over_tracks()]) == 3  # still usable


async def test_a_consumer_slower_than_real_time_loses_frames_not_memory(cluster, caplog):
    from remotemedia.rpc.calls import MAX_WAITING_FRAMES

    sent = audio_frames(sine(16000, 2.0), 16000, 320)
    async with connect(cluster, "inprocess") as client:
        remote = await client.create_proxy(Effects())
        stream = remote.invert(items(sent)).over_tracks().__aiter__()
        got = [await stream.__anext__()]
        slot = client._slots[0]
        await wait_until(lambda: slot.dropped > 0, timeout=20)  # the consumer stalls; the track does not
        assert slot.waiting == MAX_WAITING_FRAMES
        got += [frame async for frame in stream]
    assert MAX_WAITING_FRAMES < len(got) < len(sent)
    assert "slower than real time" in caplog.text
