"""
The sans-I/O media core: frames to track frames and back, with formats,
timestamps and stream ends restored (:mod:`remotemedia.transport.media`).

A track is stood in for by what it does to frames: Opus delivers 48 kHz
stereo ``s16`` (an av resampler here), VP8 delivers ``yuv420p``; both keep
the sender's ``pts``.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from remotemedia import AudioFrame, VideoFrame
from remotemedia.transport.media import AUDIO_CLOCK, AUDIO_PACKET, Incoming, Outgoing, describe, kind_of

from media_samples import audio_frames, sine


def over_opus(frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
    """What an audio track delivers for ``frames``: 48 kHz stereo s16, same pts."""
    out = []
    for frame in frames:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_CLOCK)
        for delivered in resampler.resample(frame) + resampler.resample(None):
            delivered.pts, delivered.time_base = frame.pts, frame.time_base
            out.append(delivered)
    return out


def send_audio(out: Outgoing, frames: list[AudioFrame]) -> tuple[dict, list, int, list]:
    announcement = out.begin(frames[0])
    sent = [piece for frame in frames for piece in out.convert(frame)]
    end, tail = out.end()
    return announcement, sent, end, tail


def test_audio_comes_back_in_its_own_rate_and_type_in_20_ms_frames_with_its_timestamps():
    samples = sine(16000, 1.0)
    frames = audio_frames(samples, 16000, 400, start=5.0)  # 25 ms frames
    out, incoming = Outgoing("audio"), Incoming("audio")
    announcement, sent, end, tail = send_audio(out, frames)
    assert announcement["format"] == {"rate": 16000, "channels": 1, "dtype": "float32"}
    assert all(piece.samples == AUDIO_PACKET for piece in sent)  # 20 ms packets, never a burst
    incoming.begin(announcement)
    restored = []
    for piece in over_opus(sent + tail):
        restored += incoming.feed(piece)
        if piece.pts == sent[-1].pts:
            restored += incoming.end(end)  # the end mark arrives before the padding
    assert incoming.done
    assert sum(f.num_samples for f in restored) == samples.shape[1]  # the padding was dropped
    assert {f.sample_rate for f in restored} == {16000}
    assert {f.samples.dtype for f in restored} == {np.dtype(np.float32)}
    assert [f.num_samples for f in restored[:-1]] == [320] * (len(restored) - 1)
    assert [f.timestamp for f in restored[:3]] == pytest.approx([5.0, 5.02, 5.04])
    got = np.concatenate([f.samples for f in restored], axis=1)
    assert np.max(np.abs(got[0, 200:-200] - samples[0, 200:-200])) < 1e-3


def test_stereo_int16_audio_keeps_its_channels_and_type():
    samples = sine(44100, 0.5, channels=2, dtype=np.int16)
    frames = audio_frames(samples, 44100, 441)
    out, incoming = Outgoing("audio"), Incoming("audio")
    announcement, sent, end, tail = send_audio(out, frames)
    incoming.begin(announcement)
    # The tail holds what the resampler kept back, then the padding (which the sender sends after the end mark).
    real, padding = [t for t in tail if t.pts < end], [t for t in tail if t.pts >= end]
    restored = [f for piece in over_opus(sent + real) for f in incoming.feed(piece)]
    restored += incoming.end(end)  # all frames are in: the end completes the stream at once
    assert [f for piece in over_opus(padding) for f in incoming.feed(piece)] == []
    assert incoming.done
    assert {(f.channels, f.sample_rate, f.samples.dtype) for f in restored} == {(2, 44100, np.dtype(np.int16))}
    assert sum(f.num_samples for f in restored) == samples.shape[1]


def test_a_second_stream_skips_what_is_left_of_the_first():
    out, incoming = Outgoing("audio"), Incoming("audio")
    first = send_audio(out, audio_frames(sine(16000, 0.2), 16000, 320))
    second_frames = audio_frames(sine(16000, 0.2, hz=1000), 16000, 320, start=10.0)
    announcement, sent, end, tail = send_audio(out, second_frames)
    assert announcement["pts"] > first[2]  # after the first stream's padding
    incoming.begin(announcement)
    # The first stream's tail still arrives after the second was announced.
    restored = [f for piece in over_opus(first[1] + first[3] + sent) for f in incoming.feed(piece)]
    restored += incoming.end(end)
    restored += [f for piece in over_opus(tail) for f in incoming.feed(piece)]
    assert restored[0].timestamp == 10.0
    assert sum(f.num_samples for f in restored) == 3200


def test_video_comes_back_in_its_pixel_format_size_and_timestamps():
    out, incoming = Outgoing("video"), Incoming("video")
    frames = [VideoFrame(np.full((48, 64, 3), 10 * k, np.uint8), "rgb24", 2.0 + k / 30) for k in range(5)]
    announcement = out.begin(frames[0])
    assert announcement["format"] == {"format": "rgb24", "width": 64, "height": 48}
    sent = [out.convert(f)[0] for f in frames]
    assert [s.format.name for s in sent] == ["yuv420p"] * 5
    end, padding = out.end()
    assert len(padding) == 2 and all(p.pts > end for p in padding)
    incoming.begin(announcement)
    restored = [f for piece in sent[:3] for f in incoming.feed(piece)]
    assert incoming.end(end) == [] and not incoming.done
    restored += [f for piece in sent[3:] + padding for f in incoming.feed(piece)]
    assert incoming.done
    assert len(restored) == 5  # the padding was dropped
    assert [round(f.timestamp, 6) for f in restored] == [round(2.0 + k / 30, 6) for k in range(5)]
    assert all(f.format == "rgb24" and f.image.shape == (48, 64, 3) for f in restored)
    assert [int(f.image.mean()) for f in restored] == pytest.approx([0, 10, 20, 30, 40], abs=2)


def test_video_track_time_always_grows_even_when_timestamps_do_not():
    out = Outgoing("video")
    frames = [VideoFrame(np.zeros((16, 16, 3), np.uint8), "rgb24", 1.0) for _ in range(3)]
    out.begin(frames[0])
    pts = [out.convert(f)[0].pts for f in frames]
    assert pts == sorted(set(pts))  # equal RTP timestamps would merge frames into one


def test_give_up_ends_with_what_arrived():
    out, incoming = Outgoing("audio"), Incoming("audio")
    announcement, sent, end, tail = send_audio(out, audio_frames(sine(16000, 0.2), 16000, 320))
    incoming.begin(announcement)
    restored = [f for piece in over_opus(sent[:5]) for f in incoming.feed(piece)]
    incoming.end(end)
    assert not incoming.done
    restored += incoming.give_up()
    assert incoming.done and sum(f.num_samples for f in restored) == 5 * AUDIO_PACKET // 3


def test_frames_that_a_track_cannot_carry_say_what_to_do():
    audio, video = Outgoing("audio"), Outgoing("video")
    surround = AudioFrame(np.zeros((6, 480), np.float32), 48000)
    audio.begin(surround)
    with pytest.raises(ValueError, match="datachannel"):
        audio.convert(surround)
    odd = VideoFrame(np.zeros((15, 16, 3), np.uint8))
    video.begin(odd)
    with pytest.raises(ValueError, match="even sizes"):
        video.convert(odd)
    with pytest.raises(TypeError, match="video track"):
        video.convert(surround)
    with pytest.raises(ValueError, match="'audio' or 'video'"):
        Outgoing("text")


def test_a_stream_keeps_the_format_of_its_first_frame():
    audio, video = Outgoing("audio"), Outgoing("video")
    audio.begin(AudioFrame(np.zeros((1, 320), np.float32), 16000))
    audio.convert(AudioFrame(np.zeros((1, 160), np.float32), 16000))  # another frame size is fine
    with pytest.raises(ValueError, match=r"first frame \(\{'rate': 16000\}\), but this frame has \{'rate': 24000\}"):
        audio.convert(AudioFrame(np.zeros((1, 480), np.float32), 24000))
    video.begin(VideoFrame(np.zeros((16, 16, 3), np.uint8)))
    with pytest.raises(ValueError, match="VideoTransformNode"):
        video.convert(VideoFrame(np.zeros((32, 16, 3), np.uint8)))


@pytest.mark.parametrize(
    "announcement",
    [
        {},
        {"format": {"rate": 16000}, "start": 0, "pts": 0},
        {"format": {"rate": 16000, "channels": 3, "dtype": "float32"}, "start": 0, "pts": 0},
        {"format": {"rate": 16000, "channels": 1, "dtype": "float64"}, "start": 0, "pts": 0},
        {"format": {"rate": 100, "channels": 1, "dtype": "float32"}, "start": 0, "pts": 0},
        {"format": {"rate": 16000, "channels": 1, "dtype": "float32"}, "start": "0", "pts": 0},
    ],
)
def test_a_malformed_audio_announcement_is_refused(announcement):
    with pytest.raises(ValueError, match="malformed"):
        Incoming("audio").begin(announcement)


def test_a_malformed_video_announcement_is_refused():
    with pytest.raises(ValueError, match="malformed"):
        Incoming("video").begin({"format": {"format": "rgb48", "width": 2, "height": 2}, "start": 0, "pts": 0})
    with pytest.raises(ValueError, match="malformed"):
        Incoming("video").begin({"format": {"format": "rgb24", "width": 0, "height": 2}, "start": 0, "pts": 0})


def test_frames_before_any_announcement_are_ignored():
    frame = av.VideoFrame(16, 16, "yuv420p")
    frame.pts = 0
    assert Incoming("video").feed(frame) == []


def test_kind_and_description():
    audio = AudioFrame(np.zeros((2, 100), np.int16), 8000)
    assert kind_of(audio) == "audio" and kind_of(VideoFrame(np.zeros((2, 2), np.uint8), "gray")) == "video"
    assert kind_of("text") is None and kind_of(np.zeros(3)) is None
    assert describe(audio) == {"rate": 8000, "channels": 2, "dtype": "int16"}
