"""
Live tracks: outgoing media for a session with a person at the other end.

:mod:`~remotemedia.transport.tracks` carries *streams* (every frame, with
their timestamps, between two RemoteMedia ends). A live session (a browser's
camera and microphone, see :mod:`executor.service_session`) wants what a call wants:

- :class:`LiveVideoTrack` sends the newest frame it was given, as soon as
  the encoder asks; a frame not sent yet is replaced by a newer one, so a
  slow consumer never builds a backlog of stale video.
- :class:`LiveAudioTrack` plays the audio it is given, in order, in 20 ms
  packets paced on the clock, and silence when it has none (a continuous
  track, as from a microphone: browsers play it without gaps or clock jumps).
  It can be paused (silence, its audio kept) and cleared (barge-in).
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..aio import Latest
from ..frames import AudioFrame, VideoFrame
from .media import AUDIO_CLOCK, AUDIO_PACKET, VIDEO_CLOCK

__all__ = ["LiveVideoTrack", "LiveAudioTrack"]

_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
_AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)
#: Seconds of a packet.
PACKET_S = AUDIO_PACKET / AUDIO_CLOCK


class LiveVideoTrack(MediaStreamTrack):
    """Sends the latest :class:`VideoFrame` given to :meth:`put` (see the module docstring)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frame: Latest[VideoFrame] = Latest()
        self._start: float | None = None
        self._last_pts = -1
        #: Frames given, frames sent.
        self.given = self.sent = 0

    @property
    def replaced(self) -> int:
        """Frames replaced by a newer one before they were sent."""
        return self._frame.replaced

    def put(self, frame: VideoFrame) -> None:
        """Send ``frame`` next, instead of any frame not sent yet."""
        self.given += 1
        self._frame.put(frame)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            frame = await self._frame.get()
        except StopAsyncIteration:
            raise MediaStreamError from None
        if self.readyState != "live":
            raise MediaStreamError
        out = frame.to_av()
        # RTP time follows the wall clock: frames leave as they are made.
        now = asyncio.get_running_loop().time()
        if self._start is None:
            self._start = now
        pts = max(int((now - self._start) * VIDEO_CLOCK), self._last_pts + 1)
        out.pts, out.time_base, self._last_pts = pts, _VIDEO_TIME_BASE, pts
        self.sent += 1
        return out

    def stop(self) -> None:
        super().stop()
        self._frame.close()


class LiveAudioTrack(MediaStreamTrack):
    """Plays :class:`AudioFrame`s given to :meth:`play`, silence in between (see the module docstring)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._resampler: av.AudioResampler | None = None
        self._pending = np.zeros(0, np.int16)
        self._start: float | None = None
        self._packets = 0
        self._drained = asyncio.Event()
        self._drained.set()
        #: While set, silence is sent and the queued audio waits (barge-in's pause at speech start).
        self.paused = False

    def play(self, frame: AudioFrame) -> None:
        """Queue ``frame`` (any rate, layout and sample type) to play after what is queued."""
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_CLOCK)
        source = frame.to_av()
        source.pts = None  # played in order, whatever its time
        chunks = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(source)]
        if chunks:
            self._pending = np.concatenate([self._pending, *chunks])
            self._drained.clear()

    @property
    def queued(self) -> float:
        """Seconds of audio waiting to be played."""
        return len(self._pending) / AUDIO_CLOCK

    def clear(self) -> None:
        """Drop the audio waiting to be played."""
        self._pending = np.zeros(0, np.int16)
        self._drained.set()

    async def drained(self) -> None:
        """Wait until everything given to :meth:`play` has been sent (or the track stopped)."""
        await self._drained.wait()

    def stop(self) -> None:
        super().stop()
        self._drained.set()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._packets * PACKET_S
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        elif loop.time() - due > 0.2:  # the loop stalled: restart the clock instead of bursting
            self._start, self._packets = loop.time() - self._packets * PACKET_S, self._packets
        if self.paused:
            samples = self._pending[:0]
        else:
            samples = self._pending[:AUDIO_PACKET]
            self._pending = self._pending[AUDIO_PACKET:]
            if not len(self._pending):
                self._drained.set()
        if len(samples) < AUDIO_PACKET:
            samples = np.concatenate([samples, np.zeros(AUDIO_PACKET - len(samples), np.int16)])
        out = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = AUDIO_CLOCK
        out.pts, out.time_base = self._packets * AUDIO_PACKET, _AUDIO_TIME_BASE
        self._packets += 1
        return out
