"""
Built-in audio nodes: resampling, gain and fixed-duration chunking.

They work on :class:`~remotemedia.frames.AudioFrame` and keep timestamps.
Resampling is FFmpeg's (through PyAV's ``AudioResampler``), not hand-written.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import av
import numpy as np

from ..frames import AudioFrame, _layout_name
from ..node import Node
from ._checks import positive_int

__all__ = ["ResampleNode", "GainNode", "ChunkerNode"]


def _audio(node: Node, data: Any) -> AudioFrame:
    if not isinstance(data, AudioFrame):
        raise TypeError(
            f"{type(node).__name__} {node.name!r} takes AudioFrame inputs, "
            f"not {type(data).__name__}"
        )
    return data


class ResampleNode(Node):
    """
    Convert audio to another sample rate and, optionally, channel count.

    Uses FFmpeg's resampler (PyAV ``AudioResampler``), which is stateful: it
    is a streaming node so that the filter's history carries across frames
    and its tail is flushed at end of stream. Output frames keep the input's
    sample type (float32 or int16) and its timeline. Changing the channel
    count uses FFmpeg's standard matrix: stereo to mono is (L + R) / sqrt(2),
    which keeps loudness but can exceed full scale for loud, correlated input.
    """

    is_streaming = True

    def __init__(
        self, sample_rate: int, channels: int | None = None, name: str | None = None
    ) -> None:
        super().__init__(name)
        #: Output sample rate in Hz.
        self.sample_rate = positive_int("sample_rate", sample_rate)
        #: Output channel count; ``None`` keeps the input's.
        self.channels = positive_int("channels", channels, optional=True)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[AudioFrame]:
        resampler: av.AudioResampler | None = None
        async for data in frames:
            frame = _audio(self, data)
            av_frame = frame.to_av()
            if resampler is None:
                # The resampler holds FFmpeg state, so it lives in this run
                # only and never in the node's pickled state.
                resampler = av.AudioResampler(
                    format=av_frame.format.name,
                    layout=_layout_name(self.channels or frame.channels),
                    rate=self.sample_rate,
                )
            for out in resampler.resample(av_frame):
                yield AudioFrame.from_av(out)
        if resampler is not None:
            for out in resampler.resample(None):
                yield AudioFrame.from_av(out)


class GainNode(Node):
    """
    Multiply the signal by a gain given in decibels (``-6.0`` halves it).

    int16 samples are rounded and clipped to their range; float32 samples are
    left unclipped, as audio software does until the final conversion.
    """

    def __init__(self, gain_db: float = 0.0, name: str | None = None) -> None:
        super().__init__(name)
        #: Gain in decibels.
        self.gain_db = float(gain_db)

    @property
    def factor(self) -> float:
        """The linear factor, ``10 ** (gain_db / 20)``."""
        return 10.0 ** (self.gain_db / 20.0)

    def process(self, data: Any) -> AudioFrame:
        frame = _audio(self, data)
        if frame.samples.dtype == np.int16:
            scaled = np.rint(frame.samples.astype(np.float32) * self.factor)
            samples = np.clip(scaled, -32768, 32767).astype(np.int16)
        else:
            samples = frame.samples * np.float32(self.factor)
        return AudioFrame(samples, frame.sample_rate, frame.timestamp)


class ChunkerNode(Node):
    """
    Cut audio into frames of exactly ``duration_s`` seconds.

    Speech models, VADs and codecs want fixed-size frames (10, 20 or 30 ms);
    capture devices and files deliver whatever they like. The last, shorter
    frame is emitted as it is, or padded with silence when ``pad_last`` is
    set. All inputs must share sample rate, channels and sample type (put a
    :class:`ResampleNode` first if they do not).
    """

    is_streaming = True

    def __init__(
        self, duration_s: float = 0.02, pad_last: bool = False, name: str | None = None
    ) -> None:
        super().__init__(name)
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive, not {duration_s!r}")
        #: Duration of each output frame in seconds.
        self.duration_s = float(duration_s)
        #: Pad the last frame with silence to the full duration.
        self.pad_last = pad_last

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[AudioFrame]:
        pending: np.ndarray | None = None
        first: AudioFrame | None = None
        emitted = 0  # samples emitted so far, for the timestamps
        size = 0
        async for data in frames:
            frame = _audio(self, data)
            if first is None:
                first = frame
                size = max(1, round(self.duration_s * frame.sample_rate))
                pending = frame.samples[:, :0]
            elif (frame.sample_rate, frame.channels, frame.samples.dtype) != (
                first.sample_rate,
                first.channels,
                first.samples.dtype,
            ):
                raise ValueError(
                    f"{self.name!r} got {frame.sample_rate} Hz, {frame.channels} "
                    f"channel(s), {frame.samples.dtype} after {first.sample_rate} "
                    f"Hz, {first.channels} channel(s), {first.samples.dtype}; "
                    f"put a ResampleNode before it"
                )
            pending = np.concatenate([pending, frame.samples], axis=1)
            full = pending.shape[1] // size
            for i in range(full):
                chunk = pending[:, i * size : (i + 1) * size]
                yield AudioFrame(
                    np.ascontiguousarray(chunk),
                    first.sample_rate,
                    first.timestamp + emitted / first.sample_rate,
                )
                emitted += size
            pending = pending[:, full * size :]
        if first is not None and pending is not None and pending.shape[1]:
            if self.pad_last:
                pad = np.zeros((pending.shape[0], size - pending.shape[1]), pending.dtype)
                pending = np.concatenate([pending, pad], axis=1)
            yield AudioFrame(
                np.ascontiguousarray(pending),
                first.sample_rate,
                first.timestamp + emitted / first.sample_rate,
            )
