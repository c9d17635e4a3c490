"""Built-in source nodes: a sine tone and a moving video pattern, for demos, tests and measurements."""

from __future__ import annotations

import asyncio
import math
from typing import Any, AsyncIterator

import numpy as np

from ..frames import AudioFrame, VideoFrame
from ..node import Node
from ._checks import positive_int

__all__ = ["ToneNode", "VideoPatternNode"]


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


class VideoPatternNode(Node):
    """
    Produce rgb24 :class:`~remotemedia.frames.VideoFrame` s of a moving
    pattern: a color gradient with a bright bar that sweeps across, so that
    motion, color and brightness all show. A source node, like
    :class:`ToneNode`: ``realtime=True`` paces it like a camera.
    """

    is_streaming = True

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        duration_s: float | None = 1.0,
        realtime: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        positive_int("width", width)
        positive_int("height", height)
        if not fps > 0:
            raise ValueError(f"fps must be positive, not {fps!r}")
        if duration_s is not None and duration_s < 0:
            raise ValueError(f"duration_s must be >= 0 or None, not {duration_s!r}")
        #: Frame size in pixels.
        self.width, self.height = width, height
        #: Frames per second.
        self.fps = float(fps)
        #: Total duration in seconds, or ``None`` for an endless pattern.
        self.duration_s = duration_s
        #: Pace output to the wall clock.
        self.realtime = realtime

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[VideoFrame]:
        total = None if self.duration_s is None else round(self.duration_s * self.fps)
        x = np.linspace(0, 255, self.width, dtype=np.float32)
        y = np.linspace(0, 255, self.height, dtype=np.float32)
        base = np.empty((self.height, self.width, 3), np.uint8)
        base[:, :, 0] = x[np.newaxis, :]
        base[:, :, 1] = y[:, np.newaxis]
        base[:, :, 2] = 128
        bar = max(1, self.width // 16)
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while total is None or index < total:
            image = base.copy()
            left = (index * bar // 2) % self.width
            image[:, left:left + bar] = 255
            yield VideoFrame(image, "rgb24", index / self.fps)
            index += 1
            if self.realtime:
                delay = start + index / self.fps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
