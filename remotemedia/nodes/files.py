"""
Audio files in and out: :class:`AudioFileSource` (any format FFmpeg reads),
:class:`WavWriterNode`, and the functions under them, :func:`iter_audio`,
:func:`read_audio` and :func:`write_wav`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import wave
from typing import Any, AsyncIterator, Iterable, Iterator

import av
import numpy as np

from ..aio import in_thread
from ..frames import AudioFrame
from ..node import Node

__all__ = ["AudioFileSource", "WavWriterNode", "iter_audio", "read_audio", "write_wav"]


def iter_audio(path: str | os.PathLike, frame_ms: int = 20) -> Iterator[AudioFrame]:
    """
    Decode an audio file (WAV, FLAC, MP3, Ogg: what FFmpeg reads) as it is
    read, into float32 frames of ``frame_ms`` at the file's rate and channel
    count (the last one shorter), timestamped from 0.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no audio file at {os.fspath(path)!r}")
    with av.open(os.fspath(path)) as container:
        if not container.streams.audio:
            raise ValueError(f"{os.fspath(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        rate, channels = stream.rate, stream.channels
        size = max(1, rate * frame_ms // 1000)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
        pending = np.zeros((channels, 0), np.float32)
        emitted = 0
        decoded = itertools.chain.from_iterable(resampler.resample(f) for f in container.decode(stream))
        for out in itertools.chain(decoded, resampler.resample(None)):
            pending = np.concatenate([pending, out.to_ndarray().reshape(channels, -1)], axis=1)
            while pending.shape[1] >= size:
                yield AudioFrame(np.ascontiguousarray(pending[:, :size]), rate, emitted / rate)
                pending, emitted = pending[:, size:], emitted + size
        if pending.shape[1]:
            yield AudioFrame(np.ascontiguousarray(pending), rate, emitted / rate)


def read_audio(path: str | os.PathLike, frame_ms: int = 20) -> list[AudioFrame]:
    """All of :func:`iter_audio` at once."""
    return list(iter_audio(path, frame_ms))


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

    Yields float32 frames of ``frame_ms`` at the file's rate, decoded as
    they are played, then ``tail_s`` seconds of silence (a speaker who
    stops talking: voice activity detectors need some to see that speech
    ended). With ``realtime=True`` it paces itself to the clock, like a
    microphone.
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
        # Decoded as it plays, on a worker thread: an hour-long file never sits in memory.
        audio = iter_audio(self.path, self.frame_ms)
        loop = asyncio.get_running_loop()
        start = loop.time()
        last: AudioFrame | None = None
        try:
            while (frame := await in_thread(next, audio, None)) is not None:
                await self._pace(loop, start, frame)
                yield frame
                last = frame
        finally:
            audio.close()  # the file, when the pipeline stops early
        if last is None or not self.tail_s:
            return
        size = max(1, last.sample_rate * self.frame_ms // 1000)
        end = last.timestamp + last.duration
        for i in range(round(self.tail_s * 1000 / self.frame_ms)):
            silence = AudioFrame(np.zeros((last.channels, size), np.float32), last.sample_rate, end + i * size / last.sample_rate)
            await self._pace(loop, start, silence)
            yield silence

    async def _pace(self, loop: asyncio.AbstractEventLoop, start: float, frame: AudioFrame) -> None:
        if self.realtime:
            delay = start + frame.timestamp - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)


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
            await in_thread(write_wav, self.path, audio)
