"""
Pipeline frames on WebRTC media tracks, and back, sans-I/O.

A media track carries one kind of frame (audio or video) continuously, from
one peer connection's start to its end; a *stream* (one streamed call) uses
a stretch of it. Three things do not survive the trip and are carried on the
data channel instead, in the ``MEDIA`` announcement of a stream's first
frame of a kind and in the end mark of the stream:

- the format: Opus delivers 48 kHz stereo ``s16`` whatever was sent, and
  VP8 delivers ``yuv420p``; the receiver converts back to the announced
  sample rate, channel count and sample type, or pixel format and size.
  Audio arrives in 20 ms frames, the track's packets, whatever the frame
  size sent (a stream's frame sizes may vary; its format may not);
- the timestamps: RTP starts at a random origin, and aiortc's receiver
  counts from the first packet it saw. Each side keeps its own *track
  clock* (samples at 48 kHz, or ticks of 90 kHz), which the receiver sees
  again as ``pts``; the announcement pairs the stream's first timestamp with
  its track time, so the receiver maps every frame back to stream time;
- the end: a jitter buffer holds the last packets until later ones push
  them out (aiortc's audio buffer keeps four), so the sender follows a
  stream's last frame with padding, and tells (``end``) where the stream
  stops on its track clock. The receiver drops the padding and anything
  before the stream's start (the tail of an earlier stream).

:class:`Outgoing` turns a stream's frames into av frames for a track;
:class:`Incoming` turns what a track delivers back into frames. Neither
does I/O: :mod:`remotemedia.transport.tracks` moves the frames.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np

from ..frames import VIDEO_FORMATS, AudioFrame, VideoFrame
from ..rpc import calls

__all__ = ["AUDIO_CLOCK", "VIDEO_CLOCK", "KINDS", "kind_of", "describe", "Outgoing", "Incoming"]

#: Track clock of audio: Opus's 48 kHz.
AUDIO_CLOCK = 48000
#: Track clock of video: RTP's 90 kHz.
VIDEO_CLOCK = 90000
#: Kinds of media track, in the order a slot holds them.
KINDS = ("audio", "video")
#: Samples of one Opus packet (20 ms): audio goes to the track in these pieces.
AUDIO_PACKET = 960
#: Silent packets after a stream's last audio (aiortc's jitter buffer holds 4, Opus's resampler one more).
AUDIO_PADDING = 8
#: Repeated frames after a stream's last video frame (the decoder releases a frame when the next begins).
VIDEO_PADDING = 2
#: Track ticks between padding video frames, and before a stream's first frame (30 fps).
VIDEO_PADDING_STEP = VIDEO_CLOCK // 30
#: Track ticks a decoded video frame's time may be off by (FFmpeg's decoder rounds it).
VIDEO_SLACK = VIDEO_CLOCK // 120


def kind_of(item: Any) -> str | None:
    """``"audio"`` or ``"video"`` for a frame that can travel on a track, else ``None``."""
    if isinstance(item, AudioFrame):
        return "audio"
    if isinstance(item, VideoFrame):
        return "video"
    return None


def describe(frame: AudioFrame | VideoFrame) -> dict:
    """The format a receiver restores: what a track does not carry."""
    if isinstance(frame, AudioFrame):
        return {
            "rate": frame.sample_rate,
            "channels": frame.channels,
            "dtype": str(frame.samples.dtype),
        }
    return {"format": frame.format, "width": frame.width, "height": frame.height}


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class Outgoing:
    """
    One side's sending end of one track: frames in, av frames stamped with
    the track clock out (see the module docstring).
    """

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"a track is 'audio' or 'video', not {kind!r}")
        self.kind = kind
        self.clock = AUDIO_CLOCK if kind == "audio" else VIDEO_CLOCK
        #: Track time of the next frame.
        self.pts = 0
        self._start: float | None = None
        self._start_pts = 0
        self._resampler: av.AudioResampler | None = None
        self._last: av.VideoFrame | None = None
        self._format: dict = {}

    @property
    def active(self) -> bool:
        """A stream is being sent (:meth:`begin` was called, :meth:`end` not yet)."""
        return self._start is not None

    def begin(self, frame: AudioFrame | VideoFrame) -> dict:
        """Start a stream with ``frame``; returns its announcement (``kind``, ``format``, ``start``, ``pts``)."""
        if self.active:
            raise RuntimeError(f"an {self.kind} stream is already being sent on this track")
        if self.kind == "video" and self.pts:
            # A gap, so that an earlier stream's last frames never pass for this one's.
            self.pts += VIDEO_PADDING_STEP
        self._start, self._start_pts = frame.timestamp, self.pts
        self._format = describe(frame)
        if self.kind == "audio":
            self._resampler = av.AudioResampler(
                format="s16", layout=_layout(frame.channels), rate=AUDIO_CLOCK, frame_size=AUDIO_PACKET
            )
        return calls.media_announcement(self.kind, describe(frame), frame.timestamp, self.pts)

    def convert(self, frame: AudioFrame | VideoFrame) -> list[av.AudioFrame | av.VideoFrame]:
        """The av frames that carry ``frame`` (audio in 20 ms packets; a remainder waits for the next)."""
        if kind_of(frame) != self.kind:
            raise TypeError(f"an {self.kind} track cannot carry {type(frame).__name__}")
        if not self.active:
            raise RuntimeError("begin() the stream first")
        changed = {k: v for k, v in describe(frame).items() if v != self._format[k]}
        if changed:
            was = {k: self._format[k] for k in changed}
            raise ValueError(
                f"a stream on an {self.kind} track keeps the format of its first frame ({was}), "
                f"but this frame has {changed} (convert first, e.g. with ResampleNode or VideoTransformNode, "
                f"or use node_config={{'transport': 'datachannel'}})"
            )
        if self.kind == "audio":
            if frame.channels > 2:
                raise ValueError(
                    f"an audio track carries mono or stereo, not {frame.channels} channels "
                    f"(mix down first, or use node_config={{'transport': 'datachannel'}})"
                )
            return self._stamp_audio(self._resampler.resample(frame.to_av()))
        return [self._video(frame)]

    def end(self) -> tuple[int, list[av.AudioFrame | av.VideoFrame]]:
        """
        End the stream: returns its end on the track clock, and what to send
        after its last frame: the audio a resampler still held, then padding.

        Send the end mark before the padding, so the receiver knows where
        the stream stops before the padding can reach it.
        """
        if not self.active:
            return self.pts, []
        self._start = None
        if self.kind == "audio":
            frames = self._stamp_audio(self._resampler.resample(None))
            layout = self._resampler.layout.name if self._resampler.layout else "mono"
            self._resampler = None
            end = self.pts
            silence = np.zeros((1, AUDIO_PACKET * (2 if layout == "stereo" else 1)), dtype=np.int16)
            for _ in range(AUDIO_PADDING):
                pad = av.AudioFrame.from_ndarray(silence, format="s16", layout=layout)
                pad.sample_rate = AUDIO_CLOCK
                frames += self._stamp_audio([pad])
            return end, frames
        end = self.pts - 1  # the last frame's time
        padding = []
        if self._last is not None:
            for _ in range(VIDEO_PADDING):
                pad = av.VideoFrame.from_ndarray(self._last.to_ndarray(), format="yuv420p")
                pad.time_base = Fraction(1, VIDEO_CLOCK)
                pad.pts = self.pts + VIDEO_PADDING_STEP - 1
                self.pts = pad.pts + 1
                padding.append(pad)
        self._last = None
        return end, padding

    def _stamp_audio(self, frames: list[av.AudioFrame]) -> list[av.AudioFrame]:
        for frame in frames:
            frame.pts = self.pts
            frame.time_base = Fraction(1, AUDIO_CLOCK)
            self.pts += frame.samples
        return frames

    def _video(self, frame: VideoFrame) -> av.VideoFrame:
        if frame.width % 2 or frame.height % 2:
            raise ValueError(
                f"a video track carries even sizes, not {frame.width}x{frame.height} "
                f"(crop a pixel, or use node_config={{'transport': 'datachannel'}})"
            )
        out = frame.to_av()
        if out.format.name != "yuv420p":
            out = out.reformat(format="yuv420p")
        # Track time follows the stream's timestamps; it must grow, or RTP would merge frames.
        pts = self._start_pts + round((frame.timestamp - self._start) * VIDEO_CLOCK)
        pts = max(pts, self.pts)
        out.pts, out.time_base = pts, Fraction(1, VIDEO_CLOCK)
        self.pts = pts + 1
        self._last = out
        return out


class Incoming:
    """
    One side's receiving end of one track: what it delivers in, the
    stream's frames out, in the announced format and stream time.
    """

    def __init__(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"a track is 'audio' or 'video', not {kind!r}")
        self.kind = kind
        self.clock = AUDIO_CLOCK if kind == "audio" else VIDEO_CLOCK
        self._format: dict | None = None
        self._start = 0.0
        self._start_pts = 0
        self._end: int | None = None
        self._resampler: av.AudioResampler | None = None
        self._emitted = 0  # samples of the stream's rate given out
        self._position = 0  # track time up to which the stream has arrived
        #: The stream's end has been reached (or it never began).
        self.done = True

    @property
    def active(self) -> bool:
        """A stream was announced and its end not reached."""
        return self._format is not None and not self.done

    def begin(self, announcement: dict) -> None:
        """The sender's announcement of a stream (what :meth:`Outgoing.begin` returned)."""
        fmt = announcement.get("format")
        start, pts = announcement.get("start"), announcement.get("pts")
        if not isinstance(fmt, dict) or not isinstance(start, (int, float)) or not isinstance(pts, int):
            raise ValueError(f"malformed media announcement: {announcement!r}")
        if self.kind == "audio":
            rate, channels, dtype = (fmt.get(k) for k in ("rate", "channels", "dtype"))
            if not (isinstance(rate, int) and 1000 <= rate <= 384000 and channels in (1, 2) and dtype in ("float32", "int16")):
                raise ValueError(f"malformed audio format: {fmt!r}")
            self._resampler = av.AudioResampler(
                format="fltp" if dtype == "float32" else "s16p",
                layout=_layout(channels),
                rate=rate,
                frame_size=rate // 50,
            )
        else:
            width, height = fmt.get("width"), fmt.get("height")
            if fmt.get("format") not in VIDEO_FORMATS or not all(
                isinstance(v, int) and 0 < v <= 16384 for v in (width, height)
            ):
                raise ValueError(f"malformed video format: {fmt!r}")
        self._format, self._start, self._start_pts = fmt, float(start), pts
        # Video's position is its last frame's time: none yet.
        self._end, self._emitted, self.done = None, 0, False
        self._position = pts if self.kind == "audio" else pts - VIDEO_SLACK - 1

    def feed(self, frame: av.AudioFrame | av.VideoFrame) -> list[AudioFrame | VideoFrame]:
        """A frame from the track; returns the stream's frames it completes."""
        if not self.active or frame.pts is None:
            return []  # between streams: padding, or the tail of an earlier one
        pts = frame.pts
        if self.kind == "video":
            if pts < self._start_pts - VIDEO_SLACK or (self._end is not None and pts > self._end + VIDEO_SLACK):
                return []
            out = self._video(frame, pts)
            self._position = max(self._position, pts)
            if self._end is not None and pts >= self._end - VIDEO_SLACK:
                self.done = True
            return [out]
        if pts + frame.samples <= self._start_pts:
            return []
        keep_from = max(0, self._start_pts - pts)
        keep_to = frame.samples if self._end is None else min(frame.samples, self._end - pts)
        out: list[AudioFrame | VideoFrame] = []
        if keep_to > keep_from:
            if (keep_from, keep_to) != (0, frame.samples):
                frame = self._slice(frame, keep_from, keep_to)
            out = self._audio(self._resampler.resample(frame))
            self._position = max(self._position, pts + keep_to)
        if self._end is not None and pts + keep_to >= self._end:
            out += self._finish_audio()
        return out

    def end(self, end: int) -> list[AudioFrame | VideoFrame]:
        """The sender's end mark, on the track clock; returns frames it completes (audio a resampler held)."""
        if not self.active:
            return []
        self._end = int(end)
        if self._position >= self._end - (VIDEO_SLACK if self.kind == "video" else 0):
            return self._finish_audio() if self.kind == "audio" else self._stop()
        return []

    def give_up(self) -> list[AudioFrame | VideoFrame]:
        """The end mark will not be reached (packets were lost): end with what arrived."""
        if not self.active:
            return []
        return self._finish_audio() if self.kind == "audio" else self._stop()

    def _stop(self) -> list:
        self.done = True
        return []

    def _finish_audio(self) -> list[AudioFrame | VideoFrame]:
        frames = self._audio(self._resampler.resample(None)) if self._resampler else []
        self._resampler = None
        self.done = True
        return frames

    def _audio(self, frames: list[av.AudioFrame]) -> list[AudioFrame]:
        out = []
        rate = self._format["rate"]
        for frame in frames:
            restored = AudioFrame.from_av(frame)
            restored.timestamp = self._start + self._emitted / rate
            self._emitted += restored.num_samples
            out.append(restored)
        return out

    def _video(self, frame: av.VideoFrame, pts: int) -> VideoFrame:
        fmt = self._format
        if (frame.width, frame.height) != (fmt["width"], fmt["height"]):
            frame = frame.reformat(width=fmt["width"], height=fmt["height"])
        restored = VideoFrame.from_av(frame, fmt["format"])
        restored.timestamp = self._start + (pts - self._start_pts) / VIDEO_CLOCK
        return restored

    @staticmethod
    def _slice(frame: av.AudioFrame, start: int, stop: int) -> av.AudioFrame:
        array = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.is_planar:
            part = array[:, start:stop]
        else:
            part = array[:, start * channels:stop * channels]
        out = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format=frame.format.name, layout=frame.layout.name)
        out.sample_rate = frame.sample_rate
        out.pts, out.time_base = frame.pts + start, frame.time_base
        return out
