"""
Audio and video frames, small value types over numpy arrays, and the
:class:`Transcript` that speech recognizers yield.

Pipelines pass these between nodes; the codec carries them over the wire; and
:meth:`AudioFrame.to_av` / :meth:`VideoFrame.to_av` (with their ``from_av``
counterparts) turn them into PyAV frames, which is what aiortc's media tracks
and FFmpeg's codecs speak.

Timestamps are in seconds, as floats: the unit a Python developer expects.
They become integer ``pts`` with an exact ``time_base`` only at the PyAV
boundary (``1/sample_rate`` for audio, ``1/90000`` for video, as in RTP).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import av
import numpy as np

__all__ = ["AudioFrame", "VideoFrame", "Transcript", "VIDEO_FORMATS", "VIDEO_TIME_BASE"]

#: Time base of video frames at the PyAV boundary: the 90 kHz clock of RTP video.
VIDEO_TIME_BASE = Fraction(1, 90000)

#: Pixel formats a :class:`VideoFrame` may hold, with the number of array
#: dimensions each has (PyAV's ``to_ndarray`` layout).
VIDEO_FORMATS = {
    "rgb24": 3,
    "bgr24": 3,
    "rgba": 3,
    "bgra": 3,
    "gray": 2,
    "yuv420p": 2,
}

_AUDIO_DTYPES = (np.dtype(np.float32), np.dtype(np.int16))
# PyAV sample formats for our (channels, n) arrays, which are planar.
_PLANAR_FORMAT = {np.dtype(np.float32): "fltp", np.dtype(np.int16): "s16p"}
_SAMPLE_FORMAT_DTYPE = {
    "flt": np.float32,
    "fltp": np.float32,
    "s16": np.int16,
    "s16p": np.int16,
}


def _layout_name(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


@dataclasses.dataclass(eq=False, repr=False)
class AudioFrame:
    """
    A block of audio samples.

    Frames compare by identity; compare their fields to compare contents.
    """

    samples: np.ndarray
    """Samples shaped ``(channels, n)``: float32 in [-1, 1], or int16."""

    sample_rate: int
    """Samples per second of one channel, e.g. 48000."""

    timestamp: float = 0.0
    """Presentation time of the first sample, in seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray):
            raise TypeError(
                f"AudioFrame.samples must be a numpy array, "
                f"not {type(self.samples).__name__}"
            )
        if self.samples.ndim != 2:
            raise ValueError(
                f"AudioFrame.samples must be shaped (channels, n); got shape "
                f"{self.samples.shape} (use samples[np.newaxis, :] for mono)"
            )
        if self.samples.dtype not in _AUDIO_DTYPES:
            raise ValueError(
                f"AudioFrame.samples must be float32 or int16, not "
                f"{self.samples.dtype} (convert with samples.astype(np.float32))"
            )
        if self.samples.shape[0] < 1:
            raise ValueError("AudioFrame.samples must have at least one channel")
        if isinstance(self.sample_rate, bool) or not isinstance(
            self.sample_rate, (int, np.integer)
        ):
            raise TypeError(
                f"AudioFrame.sample_rate must be an int, "
                f"not {type(self.sample_rate).__name__}"
            )
        if self.sample_rate <= 0:
            raise ValueError(
                f"AudioFrame.sample_rate must be positive, not {self.sample_rate}"
            )
        self.sample_rate = int(self.sample_rate)
        self.timestamp = float(self.timestamp)

    def __repr__(self) -> str:
        # The shape, not the samples: printing a frame must not dump an array.
        return (
            f"<AudioFrame {self.channels}ch x {self.num_samples} {self.samples.dtype} "
            f"at {self.sample_rate} Hz ({self.duration * 1e3:.1f} ms), t={self.timestamp:.3f} s>"
        )

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        """Number of samples in each channel."""
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.num_samples / self.sample_rate

    def to_av(self) -> av.AudioFrame:
        """
        Convert to a planar :class:`av.AudioFrame` (``fltp`` or ``s16p``).

        ``pts`` counts samples (``time_base = 1/sample_rate``).
        """
        samples = np.ascontiguousarray(self.samples)
        frame = av.AudioFrame.from_ndarray(
            samples,
            format=_PLANAR_FORMAT[samples.dtype],
            layout=_layout_name(self.channels),
        )
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = round(self.timestamp * self.sample_rate)
        return frame

    @classmethod
    def from_av(cls, frame: av.AudioFrame) -> AudioFrame:
        """
        Convert from an :class:`av.AudioFrame` of any sample format.

        ``s16`` formats give int16 samples and ``flt`` formats float32, packed
        or planar alike; any other format is converted to float32 by FFmpeg.
        A frame without ``pts`` gets timestamp 0.
        """
        source = frame
        if frame.format.name not in _SAMPLE_FORMAT_DTYPE:
            converter = av.AudioResampler(
                format="fltp", layout=frame.layout.name, rate=frame.sample_rate
            )
            # A format-only conversion returns exactly one frame.
            (source,) = converter.resample(frame)
        channels = len(source.layout.channels)
        array = source.to_ndarray()
        if not source.format.is_planar:
            # Packed frames come as (1, n * channels), interleaved.
            array = array.reshape(-1, channels).T
        dtype = _SAMPLE_FORMAT_DTYPE[source.format.name]
        samples = np.ascontiguousarray(array, dtype=dtype)
        return cls(
            samples=samples,
            sample_rate=frame.sample_rate,
            timestamp=_seconds(frame.pts, frame.time_base, frame.sample_rate),
        )


@dataclasses.dataclass(eq=False, repr=False)
class VideoFrame:
    """
    One video image.

    Frames compare by identity; compare their fields to compare contents.
    """

    image: np.ndarray
    """
    Pixels as uint8: ``(height, width, 3)`` for ``rgb24``/``bgr24``,
    ``(height, width, 4)`` for ``rgba``/``bgra``, ``(height, width)`` for
    ``gray``, and ``(height * 3 // 2, width)`` for ``yuv420p`` (PyAV's layout).
    """

    format: str = "rgb24"
    """Pixel format, one of :data:`VIDEO_FORMATS`."""

    timestamp: float = 0.0
    """Presentation time in seconds."""

    def __post_init__(self) -> None:
        if not isinstance(self.image, np.ndarray):
            raise TypeError(
                f"VideoFrame.image must be a numpy array, "
                f"not {type(self.image).__name__}"
            )
        if self.format not in VIDEO_FORMATS:
            raise ValueError(
                f"unsupported pixel format {self.format!r}; "
                f"use one of {', '.join(VIDEO_FORMATS)}"
            )
        if self.image.dtype != np.uint8:
            raise ValueError(
                f"VideoFrame.image must be uint8, not {self.image.dtype}"
            )
        ndim = VIDEO_FORMATS[self.format]
        channels = {"rgb24": 3, "bgr24": 3, "rgba": 4, "bgra": 4}.get(self.format)
        if self.image.ndim != ndim or (
            channels is not None and self.image.shape[2] != channels
        ):
            raise ValueError(
                f"a {self.format} image has {ndim} dimensions"
                + (f" with {channels} channels last" if channels else "")
                + f"; got shape {self.image.shape}"
            )
        if self.format == "yuv420p" and (
            self.image.shape[0] % 3 or self.image.shape[1] % 2
        ):
            raise ValueError(
                "a yuv420p image is shaped (height * 3 // 2, width) with even "
                f"height and width; got shape {self.image.shape}"
            )
        self.timestamp = float(self.timestamp)

    def __repr__(self) -> str:
        return f"<VideoFrame {self.width}x{self.height} {self.format}, t={self.timestamp:.3f} s>"

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        rows = int(self.image.shape[0])
        return rows * 2 // 3 if self.format == "yuv420p" else rows

    def to_av(self) -> av.VideoFrame:
        """Convert to an :class:`av.VideoFrame` with ``time_base = 1/90000``."""
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(self.image), format=self.format
        )
        frame.time_base = VIDEO_TIME_BASE
        frame.pts = round(self.timestamp / VIDEO_TIME_BASE)
        return frame

    @classmethod
    def from_av(cls, frame: av.VideoFrame, format: str = "rgb24") -> VideoFrame:
        """
        Convert from an :class:`av.VideoFrame`, converting pixels to ``format``.

        Camera and decoder frames are usually ``yuv420p``; ``format="rgb24"``
        (the default) is what most image code expects.
        """
        if format not in VIDEO_FORMATS:
            raise ValueError(
                f"unsupported pixel format {format!r}; "
                f"use one of {', '.join(VIDEO_FORMATS)}"
            )
        return cls(
            image=frame.to_ndarray(format=format),
            format=format,
            timestamp=_seconds(frame.pts, frame.time_base, 90000),
        )


@dataclasses.dataclass(frozen=True)
class Transcript:
    """
    Text recognized in an audio stream, with where it was said.

    Speech recognizers (:class:`~remotemedia.nodes.WhisperNode`) yield one
    per utterance; text-to-speech nodes take them as they take ``str``.
    Transcripts compare by value; ``str(t)`` is the text.
    """

    text: str
    """What was said, without leading or trailing spaces."""

    start: float = 0.0
    """Time of the utterance's first sample, in seconds on the input's timeline."""

    end: float = 0.0
    """Time just after the utterance's last sample, in seconds on the input's timeline."""

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"Transcript.text must be a str, not {type(self.text).__name__}")
        object.__setattr__(self, "start", float(self.start))
        object.__setattr__(self, "end", float(self.end))
        if self.end < self.start:
            raise ValueError(f"Transcript ends ({self.end}) before it starts ({self.start})")

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return self.end - self.start

    def __str__(self) -> str:
        return self.text


def _seconds(pts: int | None, time_base: Fraction | None, rate: int) -> float:
    if pts is None:
        return 0.0
    if time_base is None:
        time_base = Fraction(1, rate)
    return float(pts * time_base)
