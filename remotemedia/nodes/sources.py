"""Built-in source node: a sine tone, for demos, tests and measurements."""

from __future__ import annotations

import asyncio
import math
from typing import Any, AsyncIterator

import numpy as np

from ..frames import AudioFrame
from ..node import Node
from ._checks import positive_int

__all__ = ["ToneNode"]


class ToneNode(Node):
    """
    Produce a sine tone as float32 :class:`~remotemedia.frames.AudioFrame` s.

    A source node: it starts a pipeline and ignores its inputs. With
    ``duration_s=None`` it never ends (stop it by leaving ``pipeline.stream``).
    With ``realtime=True`` it paces itself to the clock, like a microphone;
    otherwise it produces as fast as the pipeline consumes.
    """

    is_streaming = True

    def __init__(
        self,
        frequency: float = 440.0,
        duration_s: float | None = 1.0,
        sample_rate: int = 48000,
        frame_duration_s: float = 0.02,
        amplitude: float = 0.5,
        channels: int = 1,
        realtime: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        positive_int("sample_rate", sample_rate)
        positive_int("channels", channels)
        if duration_s is not None and duration_s < 0:
            raise ValueError(f"duration_s must be >= 0 or None, not {duration_s!r}")
        if not frame_duration_s > 0:
            raise ValueError(f"frame_duration_s must be positive, not {frame_duration_s!r}")
        #: Tone frequency in Hz.
        self.frequency = float(frequency)
        #: Total duration in seconds, or ``None`` for an endless tone.
        self.duration_s = duration_s
        #: Sample rate of the frames, in Hz.
        self.sample_rate = sample_rate
        #: Duration of each frame, in seconds.
        self.frame_duration_s = float(frame_duration_s)
        #: Peak amplitude, 1.0 being full scale.
        self.amplitude = float(amplitude)
        #: Number of (identical) channels.
        self.channels = channels
        #: Pace output to the wall clock.
        self.realtime = realtime

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[AudioFrame]:
        size = max(1, round(self.frame_duration_s * self.sample_rate))
        total = None if self.duration_s is None else round(self.duration_s * self.sample_rate)
        loop = asyncio.get_running_loop()
        start = loop.time()
        position = 0
        while total is None or position < total:
            n = size if total is None else min(size, total - position)
            t = np.arange(position, position + n) / self.sample_rate
            wave = (self.amplitude * np.sin(2 * math.pi * self.frequency * t)).astype(np.float32)
            yield AudioFrame(
                np.repeat(wave[np.newaxis, :], self.channels, axis=0),
                self.sample_rate,
                position / self.sample_rate,
            )
            position += n
            if self.realtime:
                delay = start + position / self.sample_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
