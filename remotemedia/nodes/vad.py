"""
Voice activity detection: :class:`SpeechSegmenter` (the sans-I/O core) and
:class:`VADNode` (the streaming node around it).

The classifier is WebRTC's VAD (the ``webrtcvad-wheels`` package), not
Silero's ONNX model. Why: it decides each 10, 20 or 30 ms frame on its own,
in microseconds, at 8, 16, 32 or 48 kHz, so it sits on a live 20 ms audio
stream with no windowing of its own, adds no latency beyond the frame, and
its decisions are deterministic (tests can pin them). Silero is more robust
to loud non-speech noise, but it wants 32 ms windows at 16 kHz, carries a
recurrent state and costs an ONNX call per window. Speech versus pauses,
which is what segmenting for a recognizer or a voice loop needs, WebRTC's
VAD does well; what it lets through, Whisper's own decoding tolerates.

A frame decision alone flickers, so the segmenter smooths it the usual way:
speech starts after ``start_ms`` of consecutive voiced frames, ends after
``silence_ms`` of unvoiced ones, and keeps ``padding_ms`` of audio on each
side so that soft word onsets and endings are not cut. After ``pause_ms``
of silence in an utterance it says that speech may have ended (a
``"pause"`` event), so that a recognizer can start early and have its
answer by the time ``silence_ms`` confirms the end.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, AsyncIterator, Iterator

import av
import numpy as np

from ..frames import AudioFrame, _layout_name
from ..models import require
from ..node import Node

__all__ = ["MonoInt16", "SpeechSegmenter", "VADEvent", "VADNode", "VAD_RATES", "iter_events"]

#: Sample rates WebRTC's VAD works at.
VAD_RATES = (8000, 16000, 32000, 48000)

_MODES = ("segments", "filter", "mark")


@dataclasses.dataclass
class VADEvent:
    """One step of a segmenter's output, in time order."""

    kind: str
    """
    ``"speech"`` or ``"silence"`` (a frame of audio); ``"end"`` (an
    utterance ended); ``"pause"`` (an open utterance has been silent for
    ``pause_ms``: it may have ended, and a recognizer can start on what it
    has); or ``"resume"`` (after a pause, speech went on: the utterance did
    not end there). After a pause comes a resume or an end.
    """

    samples: np.ndarray | None
    """The frame's int16 mono samples; ``None`` for the other kinds."""

    time: float
    """Time of the frame's first sample; for the others, of the end of the speech so far; in seconds."""


class SpeechSegmenter:
    """
    Cut int16 mono audio into speech and silence, frame by frame.

    Feed it samples with :meth:`feed`, in any amounts; it returns
    :class:`VADEvent`s in time order. Every input sample comes out exactly
    once, in a ``"speech"`` or a ``"silence"`` frame, and each utterance is
    followed by an ``"end"``. Decisions wait for evidence: a frame is
    labelled when its label can no longer change, at most ``start_ms`` (at
    the start of speech) or ``silence_ms`` (in a pause) after it arrived.
    ``pause_ms`` into a pause, a ``"pause"`` event says that the utterance
    may have ended, and a ``"resume"`` or its ``"end"`` follows (none of
    them when ``pause_ms >= silence_ms``). :meth:`flush`
    labels what is left at the end of the stream.

    Sans-I/O: no event loop, no clock; time is the first timestamp plus the
    samples fed since.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        aggressiveness: int = 2,
        frame_ms: int = 30,
        start_ms: int = 90,
        silence_ms: int = 300,
        padding_ms: int = 150,
        pause_ms: int = 90,
        max_segment_s: float = 30.0,
    ) -> None:
        if sample_rate not in VAD_RATES:
            raise ValueError(f"sample_rate must be one of {VAD_RATES}, not {sample_rate!r}")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, not {aggressiveness!r}")
        if frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, not {frame_ms!r}")
        for label, value in (
            ("start_ms", start_ms), ("silence_ms", silence_ms), ("padding_ms", padding_ms), ("pause_ms", pause_ms)
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{label} must be a number of milliseconds >= 0, not {value!r}")
        if not max_segment_s > 0:
            raise ValueError(f"max_segment_s must be positive, not {max_segment_s!r}")
        self.sample_rate = sample_rate
        self.frame_size = sample_rate * frame_ms // 1000
        self._aggressiveness = aggressiveness
        self._vad: Any = None  # created at the first frame: checking options needs no webrtcvad
        self._start_frames = max(1, round(start_ms / frame_ms))
        self._silence_frames = max(1, round(silence_ms / frame_ms))
        self._padding_frames = round(padding_ms / frame_ms)
        # A pause as long as the silence that ends speech is no news: no event.
        self._pause_frames = max(1, round(pause_ms / frame_ms)) if pause_ms < silence_ms else 0
        self._max_frames = max(1, round(max_segment_s * 1000 / frame_ms))
        self._buffer = np.zeros(0, np.int16)  # samples short of a whole frame
        self._time: float | None = None  # time of the buffer's first sample
        self._pending: collections.deque[tuple[np.ndarray, float, bool]] = collections.deque()
        self._run = 0  # consecutive voiced (in silence) or unvoiced (in speech) frames at the end of _pending
        self._in_speech = False
        self._segment_frames = 0
        self._time_after_speech = 0.0

    @property
    def in_speech(self) -> bool:
        """Whether an utterance is open (started and not yet ended)."""
        return self._in_speech

    def feed(self, samples: np.ndarray, timestamp: float | None = None) -> list[VADEvent]:
        """
        Add int16 mono samples; return the events they decided.

        ``timestamp`` (seconds) anchors the first call's samples; later
        calls continue the timeline and ignore it.
        """
        samples = np.asarray(samples)
        if samples.dtype != np.int16 or samples.ndim != 1:
            raise ValueError(f"SpeechSegmenter takes 1-D int16 samples, not {samples.dtype} shaped {samples.shape}")
        if self._time is None:
            self._time = float(timestamp or 0.0)
        self._buffer = np.concatenate([self._buffer, samples])
        events: list[VADEvent] = []
        size = self.frame_size
        while len(self._buffer) >= size:
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            voiced = self.classify(frame)
            self._step(frame, self._time, voiced, events)
            self._time += size / self.sample_rate
        return events

    def classify(self, frame: np.ndarray) -> bool:
        """
        Whether one frame (``frame_size`` int16 samples) is voiced: WebRTC's
        VAD. Override it to segment with another classifier.
        """
        if self._vad is None:
            webrtcvad = require("webrtcvad", "webrtcvad-wheels", "voice activity detection")
            self._vad = webrtcvad.Vad(self._aggressiveness)
        return self._vad.is_speech(frame.tobytes(), self.sample_rate)

    def flush(self) -> list[VADEvent]:
        """End of stream: label everything still held, and end an open utterance."""
        events: list[VADEvent] = []
        if len(self._buffer):
            # Too short for the classifier: it goes with whatever surrounds it.
            self._pending.append((self._buffer, self._time or 0.0, self._in_speech))
            self._time = (self._time or 0.0) + len(self._buffer) / self.sample_rate
            self._buffer = np.zeros(0, np.int16)
        if self._in_speech:
            self._end(events, keep=self._padding_frames if self._run else len(self._pending))
        events.extend(self._silence(frame, time) for frame, time, _ in self._pending)
        self._pending.clear()
        self._run = 0
        return events

    def _step(self, frame: np.ndarray, time: float, voiced: bool, events: list[VADEvent]) -> None:
        self._pending.append((frame, time, voiced))
        if not self._in_speech:
            self._run = self._run + 1 if voiced else 0
            if self._run >= self._start_frames:
                # Speech: the voiced run plus up to padding_frames before it.
                keep = self._run + self._padding_frames
                while len(self._pending) > keep:
                    events.append(self._silence(*self._pending.popleft()[:2]))
                self._in_speech = True
                self._segment_frames = 0
                self._run = 0
                self._emit_speech(events)
            else:
                while len(self._pending) > self._run + self._padding_frames:
                    events.append(self._silence(*self._pending.popleft()[:2]))
            return
        if voiced:
            if self._pause_frames and self._run >= self._pause_frames:
                events.append(VADEvent("resume", None, time))
            self._run = 0
            self._emit_speech(events)
        else:
            self._run += 1
            if self._run == self._pause_frames:
                events.append(VADEvent("pause", None, self._time_after_speech))
            if self._run >= self._silence_frames:
                self._end(events, keep=self._padding_frames)
                # The rest of the pause may pad the next utterance's start.
                self._run = 0
                while len(self._pending) > self._padding_frames:
                    events.append(self._silence(*self._pending.popleft()[:2]))
        if self._in_speech and self._segment_frames >= self._max_frames:
            # Whisper's window is 30 s: a longer utterance is cut, and goes on.
            self._emit_speech(events)
            events.append(VADEvent("end", None, self._time_after_speech))
            self._segment_frames = 0

    def _emit_speech(self, events: list[VADEvent]) -> None:
        for frame, time, _ in self._pending:
            events.append(VADEvent("speech", frame, time))
            self._segment_frames += 1
            self._time_after_speech = time + len(frame) / self.sample_rate
        self._pending.clear()

    def _end(self, events: list[VADEvent], keep: int) -> None:
        held = list(self._pending)
        self._pending.clear()
        self._pending.extend(held[:keep])
        self._emit_speech(events)
        self._pending.extend(held[keep:])
        events.append(VADEvent("end", None, self._time_after_speech))
        self._in_speech = False

    @staticmethod
    def _silence(frame: np.ndarray, time: float) -> VADEvent:
        return VADEvent("silence", frame, time)


class VADNode(Node):
    """
    Find speech in an audio stream (a streaming node).

    Takes :class:`~remotemedia.frames.AudioFrame` inputs at any rate, channel
    count and sample type; resamples them (FFmpeg's resampler) to mono at
    ``sample_rate`` and classifies them with WebRTC's VAD (see
    :class:`SpeechSegmenter` for ``aggressiveness``, ``frame_ms``,
    ``start_ms``, ``silence_ms``, ``padding_ms``, ``pause_ms`` and
    ``max_segment_s``).
    What it yields depends on ``mode``:

    - ``"segments"`` (the default): one float32 mono frame per utterance,
      stamped with the utterance's start: what a recognizer wants;
    - ``"filter"``: the speech frames only (``frame_ms`` each), as soon as
      they are known to be speech; silence is dropped;
    - ``"mark"``: every frame, as a ``(frame, is_speech)`` tuple.

    Timestamps are on the input's timeline.
    """

    is_streaming = True

    def __init__(
        self,
        mode: str = "segments",
        *,
        sample_rate: int = 16000,
        aggressiveness: int = 2,
        frame_ms: int = 30,
        start_ms: int = 90,
        silence_ms: int = 300,
        padding_ms: int = 150,
        pause_ms: int = 90,
        max_segment_s: float = 30.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, not {mode!r}")
        #: ``"segments"``, ``"filter"`` or ``"mark"``.
        self.mode = mode
        #: Rate of the audio classified and yielded.
        self.sample_rate = sample_rate
        self._options = dict(
            aggressiveness=aggressiveness,
            frame_ms=frame_ms,
            start_ms=start_ms,
            silence_ms=silence_ms,
            padding_ms=padding_ms,
            pause_ms=pause_ms,
            max_segment_s=max_segment_s,
        )
        self.segmenter()  # check the options now, not at the first frame

    def segmenter(self) -> SpeechSegmenter:
        """A new :class:`SpeechSegmenter` with this node's settings."""
        return SpeechSegmenter(self.sample_rate, **self._options)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        if self.mode == "segments":
            async for segment in self.segments(frames):
                yield segment
            return
        async for event in self.events(frames):
            if event.samples is None:  # an end, a pause, a resume
                continue
            frame = AudioFrame(_to_float(event.samples)[np.newaxis, :], self.sample_rate, event.time)
            if self.mode == "mark":
                yield frame, event.kind == "speech"
            elif event.kind == "speech":
                yield frame

    async def segments(self, frames: AsyncIterator[Any]) -> AsyncIterator[AudioFrame]:
        """Yield one float32 mono frame per utterance in ``frames`` (the ``"segments"`` mode)."""
        parts: list[np.ndarray] = []
        start = 0.0
        async for event in self.events(frames):
            if event.kind == "speech":
                if not parts:
                    start = event.time
                parts.append(event.samples)
            elif event.kind == "end" and parts:
                yield AudioFrame(_to_float(np.concatenate(parts))[np.newaxis, :], self.sample_rate, start)
                parts = []

    async def events(self, frames: AsyncIterator[Any]) -> AsyncIterator[VADEvent]:
        """Yield the segmenter's :class:`VADEvent`s for ``frames``."""
        segmenter = self.segmenter()
        converter = MonoInt16(self.sample_rate)
        async for data in frames:
            if not isinstance(data, AudioFrame):
                raise TypeError(f"{type(self).__name__} {self.name!r} takes AudioFrame inputs, not {type(data).__name__}")
            for event in segmenter.feed(converter.convert(data), data.timestamp):
                yield event
        for event in segmenter.feed(converter.flush()) + segmenter.flush():
            yield event


class MonoInt16:
    """
    Convert :class:`AudioFrame`s of any format to 1-D int16 mono at one rate
    (FFmpeg's resampler, which keeps its filter state across frames).
    """

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler: av.AudioResampler | None = None
        self._source: tuple[int, int, np.dtype] | None = None

    def convert(self, frame: AudioFrame) -> np.ndarray:
        """The frame's samples, converted; the resampler may hold a few back."""
        source = (frame.sample_rate, frame.channels, frame.samples.dtype)
        if self._source is None:
            self._source = source
            if source == (self.sample_rate, 1, np.dtype(np.int16)):
                return frame.samples[0]
            self._resampler = av.AudioResampler(format="s16", layout=_layout_name(1), rate=self.sample_rate)
        elif source != self._source:
            raise ValueError(
                f"audio changed from {self._source[0]} Hz, {self._source[1]} channel(s), "
                f"{self._source[2]} to {source[0]} Hz, {source[1]} channel(s), {source[2]} mid-stream"
            )
        if self._resampler is None:
            return frame.samples[0]
        return self._join(self._resampler.resample(frame.to_av()))

    def flush(self) -> np.ndarray:
        """What the resampler held back, at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, np.int16)
        return self._join(self._resampler.resample(None))

    @staticmethod
    def _join(frames: list[av.AudioFrame]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.int16)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


def _to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / np.float32(32768.0)


def iter_events(segmenter: SpeechSegmenter, chunks: Iterator[np.ndarray]) -> Iterator[VADEvent]:
    """Run ``segmenter`` over ``chunks`` of int16 samples and flush it (for offline use and tests)."""
    for chunk in chunks:
        yield from segmenter.feed(chunk)
    yield from segmenter.flush()
