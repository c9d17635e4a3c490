"""
Media slots: the audio and video tracks, each way, that one stream uses.

A connection made for media has a fixed number of *slots*, each an audio
and a video transceiver (``sendrecv``), negotiated in the first offer, so
no frame ever waits for a renegotiation. A streamed call takes a free slot;
its frames go out on the slot's tracks, and the other side's frames come
back on them. :mod:`remotemedia.transport.media` converts the frames and
keeps their timestamps; this module moves them:

- :class:`FrameTrack` is an outgoing track. aiortc's sender asks it for the
  next frame as soon as it sent the last, so it paces itself on the frames'
  own clock (a little ahead, never a burst: aiortc's audio jitter buffer
  holds 16 packets and drops the rest), and its small queue makes a
  producer faster than real time wait.
- :class:`MediaSlot` owns both directions of one slot: it announces and
  sends a stream's frames, and it reads every received track for the whole
  life of the connection (a track nobody reads piles frames up in memory),
  handing the current stream's frames to :attr:`MediaSlot.sink`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable, Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .media import AUDIO_CLOCK, KINDS, VIDEO_CLOCK, Incoming, Outgoing, kind_of

__all__ = ["FrameTrack", "MediaSlot", "MAX_SLOTS", "add_slots", "listen_slots", "answer_slots"]

logger = logging.getLogger(__name__)

#: How far ahead of real time a track may send, in seconds.
LEAD = 0.04
#: Lateness after which a track stops catching up and restarts its clock (the producer paused).
RESYNC = 0.2
#: Frames an outgoing track queues: 200 ms of audio packets, a few video frames.
QUEUE = {"audio": 10, "video": 3}
#: Most media slots one connection may have (the client asks for them, the executor allows them).
MAX_SLOTS = 16
#: Frames kept that arrived before their stream's announcement (the data channel was slower).
EARLY = 16


class FrameTrack(MediaStreamTrack):
    """An outgoing track fed with av frames by :meth:`put`, paced on their ``pts``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._clock = AUDIO_CLOCK if kind == "audio" else VIDEO_CLOCK
        self._queue: asyncio.Queue = asyncio.Queue(QUEUE[kind])
        self._origin: tuple[float, int] | None = None
        #: Counts :meth:`clear` calls: frames queued before the last one are not sent.
        self.generation = 0

    async def put(self, frame: Any) -> None:
        """Queue ``frame``; waits while the queue is full (the track sends in real time)."""
        # Tagged with the generation it was queued in: a put still waiting when clear() ran is void too.
        await self._queue.put((self.generation, frame))

    def clear(self) -> int:
        """Drop the frames queued and not sent yet (and any put waiting now); returns how many were queued."""
        self.generation += 1
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        self._origin = None  # the next frame goes at once, not after the dropped ones' time
        return dropped

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        generation, frame = await self._queue.get()
        while generation != self.generation:
            generation, frame = await self._queue.get()
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._origin is not None:
            due = self._origin[0] + (frame.pts - self._origin[1]) / self._clock
            if now - due > RESYNC or frame.pts < self._origin[1]:
                self._origin = None
        if self._origin is None:
            self._origin = (now, frame.pts)
        due = self._origin[0] + (frame.pts - self._origin[1]) / self._clock - LEAD
        if due > now:
            await asyncio.sleep(due - now)
        return frame


Announce = Callable[[dict], Awaitable[None]]


class MediaSlot:
    """One slot's tracks, both ways (see the module docstring)."""

    def __init__(self, index: int) -> None:
        self.index = index
        #: The outgoing tracks, by kind.
        self.tracks = {kind: FrameTrack(kind) for kind in KINDS}
        self._outgoing = {kind: Outgoing(kind) for kind in KINDS}
        self._incoming = {kind: Incoming(kind) for kind in KINDS}
        self._early = {kind: collections.deque(maxlen=EARLY) for kind in KINDS}
        self._readers: list[asyncio.Task] = []
        self._ending = False
        #: Gets each frame of the current stream that arrives; ``None`` between streams.
        self.sink: Callable[[Any], None] | None = None
        #: Called once the current stream's frames have all arrived, after :meth:`end_receiving`.
        self.on_done: Callable[[], None] | None = None
        #: The call using the slot, or ``None`` while it is free.
        self.owner: int | None = None
        #: Frames the current stream's consumer has not taken yet, and frames dropped for it (the owner keeps count).
        self.waiting = self.dropped = 0

    # -- receiving -----------------------------------------------------------------------

    def listen(self, kind: str, track: MediaStreamTrack) -> None:
        """Read the received ``kind`` track until it ends."""
        self._readers.append(asyncio.create_task(self._read(kind, track), name=f"media-slot-{self.index}-{kind}"))

    async def _read(self, kind: str, track: MediaStreamTrack) -> None:
        incoming = self._incoming[kind]
        try:
            while True:
                frame = await track.recv()
                if incoming.active:
                    self._deliver(incoming.feed(frame))
                else:
                    self._early[kind].append(frame)
        except MediaStreamError:
            pass
        except Exception:  # a frame that does not convert must not stop the reading
            logger.exception("media slot %d: reading the %s track failed", self.index, kind)

    def begin_receiving(self, announcement: dict) -> None:
        """The other side announced a stream of a kind; ``ValueError`` when malformed."""
        kind = announcement.get("kind") if isinstance(announcement, dict) else None
        if kind not in KINDS:
            raise ValueError(f"malformed media announcement: {announcement!r}")
        incoming = self._incoming[kind]
        incoming.begin(announcement)
        early, self._early[kind] = list(self._early[kind]), collections.deque(maxlen=EARLY)
        for frame in early:
            self._deliver(incoming.feed(frame))

    @property
    def receiving(self) -> bool:
        """Frames of the current stream are still expected."""
        return any(incoming.active for incoming in self._incoming.values())

    def end_receiving(self, ends: dict | None) -> None:
        """The other side's end marks (``{kind: track time}``); :attr:`on_done` follows when all arrived."""
        self._ending = True
        for kind, end in (ends or {}).items():
            if kind in KINDS and isinstance(end, int):
                self._deliver(self._incoming[kind].end(end))
        for kind, incoming in self._incoming.items():
            if incoming.active and kind not in (ends or {}):
                self._deliver(incoming.give_up())  # announced, but no end mark: nothing more comes
        self._check_done()

    def give_up(self) -> None:
        """Stop waiting for frames that were lost: end the stream with what arrived."""
        for incoming in self._incoming.values():
            self._deliver(incoming.give_up())
        self._check_done()

    def _deliver(self, frames: list) -> None:
        sink = self.sink
        if sink is not None:
            for frame in frames:
                sink(frame)
        self._check_done()

    def _check_done(self) -> None:
        if self._ending and not self.receiving:
            self._ending = False
            on_done, self.on_done = self.on_done, None
            if on_done is not None:
                on_done()

    # -- sending -------------------------------------------------------------------------

    async def send(self, frame: Any, announce: Announce) -> None:
        """Send one frame of the current stream (its kind's first is announced through ``announce``)."""
        kind = kind_of(frame)
        outgoing = self._outgoing[kind]
        track = self.tracks[kind]
        generation = track.generation
        if not outgoing.active:
            await announce(outgoing.begin(frame))
        if track.generation != generation:
            return  # cut (:meth:`cut`) while it was announced: it is void
        for out in outgoing.convert(frame):
            if track.generation != generation:
                return  # cut while it was being sent: the rest of it is void too
            await track.put(out)

    def cut(self) -> int:
        """
        Drop the outgoing frames still queued on the tracks (and the rest of
        a frame being sent): a reply was cut. The call goes on: its next
        frame begins a new stream on the track, announced with its own
        time, so the receiver keeps every later frame's stream time (and
        drops the cut stream's frames still in flight once it has the
        announcement). Returns how many track frames were dropped.
        """
        dropped = 0
        for kind, track in self.tracks.items():
            dropped += track.clear()
            outgoing = self._outgoing[kind]
            if outgoing.active:
                outgoing.end()  # its tail (held audio, padding) is void with the rest
        return dropped

    async def finish_sending(self, mark: Callable[[dict], Awaitable[None]]) -> None:
        """End the current stream: ``mark(ends)`` tells the other side where it stops, then the padding goes."""
        ends, tails = {}, []
        for kind, outgoing in self._outgoing.items():
            if outgoing.active:
                ends[kind], tail = outgoing.end()
                tails.append((kind, tail))
        await mark(ends)
        for kind, tail in tails:
            for out in tail:
                await self.tracks[kind].put(out)

    # -- the slot ------------------------------------------------------------------------

    def take(self, owner: int, sink: Callable[[Any], None], on_done: Callable[[], None]) -> None:
        """Give the slot to the call ``owner``."""
        self.owner, self.sink, self.on_done = owner, sink, on_done
        self._ending = False

    def free(self) -> None:
        """The call is over: stop delivering, forget half-sent or half-received streams."""
        self.owner = self.sink = self.on_done = None
        self._ending = False
        for outgoing in self._outgoing.values():
            if outgoing.active:
                outgoing.end()  # its tail is dropped: the receiver skips to the next stream's start
        for incoming in self._incoming.values():
            incoming.give_up()

    def close(self) -> None:
        """Stop reading and sending (the connection is closing)."""
        self.free()
        for task in self._readers:
            task.cancel()
        for track in self.tracks.values():
            track.stop()


def add_slots(pc: Any, count: int) -> list[MediaSlot]:
    """The offerer's side: ``count`` slots, each an audio and a video ``sendrecv`` transceiver."""
    slots = [MediaSlot(i) for i in range(count)]
    for slot in slots:
        for kind in KINDS:
            pc.addTransceiver(slot.tracks[kind], direction="sendrecv")
    return slots


def listen_slots(pc: Any, slots: list[MediaSlot]) -> None:
    """Once the remote description is set: read each slot's received tracks."""
    transceivers = [t for t in pc.getTransceivers() if t.kind in KINDS]
    for slot, pair in zip(slots, zip(transceivers[0::2], transceivers[1::2])):
        for transceiver in pair:
            slot.listen(transceiver.kind, transceiver.receiver.track)


def answer_slots(pc: Any, limit: int = MAX_SLOTS) -> list[MediaSlot]:
    """
    The answerer's side, after the offer is set: a slot for each audio and
    video transceiver pair the offer made, with our tracks added to them.
    ``ValueError`` when the offer's media is not such pairs, or more than ``limit``.
    """
    transceivers = [t for t in pc.getTransceivers() if t.kind in KINDS]
    kinds = [t.kind for t in transceivers]
    if kinds != list(KINDS) * (len(kinds) // 2) or len(kinds) % 2:
        raise ValueError(f"the offer's media must be audio and video pairs, not {kinds}")
    if len(kinds) // 2 > limit:
        raise ValueError(f"the offer asks for {len(kinds) // 2} media slots; at most {limit} are allowed")
    slots = [MediaSlot(i) for i in range(len(kinds) // 2)]
    for slot in slots:
        for kind in KINDS:
            pc.addTrack(slot.tracks[kind])
    listen_slots(pc, slots)
    return slots
