"""
Audio files in and out: :class:`AudioFileSource` (any format FFmpeg reads),
:class:`WavWriterNode`, and the functions under them, :func:`read_audio`
and :func:`write_wav`.
"""

from __future__ import annotations

import asyncio
import os
import wave
from typing import Any, AsyncIterator, Iterable

import av
import numpy as np

from ..frames import AudioFrame
from ..node import Node

__all__ = ["AudioFileSource", "WavWriterNode", "read_audio", "write_wav"]


def read_audio(path: str | os.PathLike, frame_ms: int = 20) -> list[AudioFrame]:
    """
    Decode an audio file (WAV, FLAC, MP3, Ogg: what FFmpeg reads) into
    float32 frames of ``frame_ms`` at the file's rate and channel count.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no audio file at {os.fspath(path)!r}")
    parts: list[np.ndarray] = []
    rate = 0
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{os.fspath(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.rate
        channels = stream.channels
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(channels, -1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(channels, -1))
    samples = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0), np.float32)
    size = max(1, rate * frame_ms // 1000)
    return [
        AudioFrame(np.ascontiguousarray(samples[:, i : i + size]), rate, i / rate)
        for i in range(0, samples.shape[1], size)
    ]


def write_wav(path: str | os.PathLike, frames: Iterable[AudioFrame]) -> float:
    """
    Write ``frames`` (one rate and channel count) to a 16-bit PCM WAV file,
    one after another; return the seconds written.
    """
    frames = [frame for frame in frames if isinstance(frame, AudioFrame)]
    if not frames:
        raise ValueError("no audio frames to write")
    rate, channels = frames[0].sample_rate, frames[0].channels
    if any((f.sample_rate, f.channels) != (rate, channels) for f in frames):
        raise ValueError("all frames written to one WAV file must share sample rate and channels")
    samples = np.concatenate([f.samples for f in frames], axis=1)
    if samples.dtype != np.int16:
        samples = np.clip(np.rint(samples * 32767.0), -32768, 32767).astype(np.int16)
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(samples.T).tobytes())
    return samples.shape[1] / rate


class AudioFileSource(Node):
    """
    Play an audio file into a pipeline (a source node: it ignores its inputs).

    Yields float32 frames of ``frame_ms`` at the file's rate. With
    ``realtime=True`` it paces itself to the clock, like a microphone, and
    appends ``tail_s`` seconds of silence (a speaker who stops talking):
    voice activity detectors need some to see that speech ended.
    """

    is_streaming = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        frame_ms: int = 20,
        realtime: bool = False,
        tail_s: float = 0.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no audio file at {os.fspath(path)!r}")
        if not tail_s >= 0:
            raise ValueError(f"tail_s must be >= 0, not {tail_s!r}")
        #: The file.
        self.path = os.fspath(path)
        #: Duration of each frame, in milliseconds.
        self.frame_ms = frame_ms
        #: Pace output to the wall clock.
        self.realtime = realtime
        #: Seconds of silence after the file.
        self.tail_s = float(tail_s)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[AudioFrame]:
        audio = await asyncio.to_thread(read_audio, self.path, self.frame_ms)
        if audio and self.tail_s:
            last = audio[-1]
            size = max(1, last.sample_rate * self.frame_ms // 1000)
            end = last.timestamp + last.duration
            for i in range(round(self.tail_s * 1000 / self.frame_ms)):
                silence = np.zeros((last.channels, size), np.float32)
                audio.append(AudioFrame(silence, last.sample_rate, end + i * size / last.sample_rate))
        loop = asyncio.get_running_loop()
        start = loop.time()
        for frame in audio:
            if self.realtime:
                delay = start + frame.timestamp - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield frame


class WavWriterNode(Node):
    """
    Write the audio that passes through to a WAV file, and pass it on.

    The file is written when the stream ends (16-bit PCM, at the first
    frame's rate and channel count); inputs that are not audio pass on
    untouched.
    """

    is_streaming = True

    def __init__(self, path: str | os.PathLike, name: str | None = None) -> None:
        super().__init__(name)
        #: Where the file goes.
        self.path = os.fspath(path)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        audio: list[AudioFrame] = []
        async for frame in frames:
            if isinstance(frame, AudioFrame):
                audio.append(frame)
            yield frame
        if audio:
            await asyncio.to_thread(write_wav, self.path, audio)
