"""
An audio jitter buffer that starts low and grows only when packets come late.

aiortc's receiver holds every audio packet in ``JitterBuffer(capacity=16,
prefetch=4)``: a packet is handed to the decoder only once four later ones
have arrived, 80 ms each way on a loopback with no jitter at all (an audio
round trip over tracks measured 164 ms, most of it these two buffers). And
a packet that never comes stalls the audio until 16 later ones fill the
buffer (320 ms).

:class:`AdaptiveJitterBuffer` keeps aiortc's interface (``add(packet)``
returns at most one frame) and its reassembly, with two changes:

- it **prefetches** ``low`` packets (one: a frame is complete when the next
  one begins), and grows by one, up to ``high``, each time a packet arrives
  *late*: after a packet that follows it (reordered), or after it was given
  up for lost. On a network that delivers in order it never grows;
- a **missing packet is given up** once ``2 * prefetch + 2`` later packets
  wait behind it (80 ms at the start), instead of when the buffer is full;
  if it still comes, it is dropped, and counted as late so that the buffer
  waits longer next time.

It is sans-I/O (it is fed packets; no clock), and tested by feeding
packets in the order a jittery network delivers them.
:func:`install` puts one on each audio receiver of a peer connection, as
its remote tracks appear (aiortc offers no option for it: this replaces
the receiver's private buffer before any packet arrives).
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.utils import uint16_add, uint16_gt

__all__ = ["AdaptiveJitterBuffer", "install"]

logger = logging.getLogger(__name__)

#: Packets prefetched at the start, and at most; the buffer's capacity (a power of 2, as aiortc's).
LOW, HIGH, CAPACITY = 1, 4, 16
# aiortc's receiver keeps its buffer in this private (name-mangled) attribute.
_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


class AdaptiveJitterBuffer(JitterBuffer):
    """aiortc's audio jitter buffer, prefetching ``low`` packets and growing to ``high`` on late ones."""

    def __init__(self, capacity: int = CAPACITY, low: int = LOW, high: int = HIGH) -> None:
        if not 0 <= low <= high or 2 * high + 2 >= capacity:
            raise ValueError(f"need 0 <= low <= high and 2 * high + 2 < capacity, not {low}, {high}, {capacity}")
        super().__init__(capacity, prefetch=low)
        self.low, self.high = low, high
        #: Packets that arrived late (after a later one, or after they were given up).
        self.late = 0
        #: Packets given up for lost (the audio went on without them).
        self.skipped = 0
        self._highest: int | None = None  # highest sequence number seen

    @property
    def prefetch(self) -> int:
        """Packets held back now."""
        return self._prefetch

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        if self._highest is None or uint16_gt(sequence, self._highest):
            self._highest = sequence
        elif sequence != self._highest:
            self._grow()  # it comes after a packet that follows it
        pli, frame = super().add(packet)
        if frame is None and self._origin is not None:
            gap, behind = self._gap()
            if gap is not None and behind > 2 * self._prefetch + 2:
                # A packet is missing and enough have come after it: go on without it.
                frame = self._before_gap(gap) if gap else self._skip_gap(sequence)
        return pli, frame

    def _grow(self) -> None:
        self.late += 1
        if self._prefetch < self.high:
            self._prefetch += 1
            logger.debug("audio jitter buffer: a packet came late, prefetch %d -> %d", self._prefetch - 1, self._prefetch)

    def _gap(self) -> tuple[int | None, int]:
        """Where the first missing packet is (from the front), and how many packets wait behind it."""
        gap, behind = None, 0
        for count in range(self._capacity):
            present = self._packets[uint16_add(self._origin, count) % self._capacity] is not None
            if gap is None and not present:
                gap = count
            elif gap is not None and present:
                behind += 1
        return gap, behind

    def _before_gap(self, gap: int) -> JitterFrame:
        """The frame at the front, which the missing packet would have told complete (it ends before the gap)."""
        first = self._packets[self._origin % self._capacity]
        packets = []
        for count in range(gap):
            candidate = self._packets[uint16_add(self._origin, count) % self._capacity]
            if candidate.timestamp != first.timestamp:
                break
            packets.append(candidate)
        self.remove(len(packets))
        return JitterFrame(data=b"".join(p._data for p in packets), timestamp=first.timestamp)

    def _skip_gap(self, sequence: int) -> JitterFrame | None:
        while self._packets[self._origin % self._capacity] is None:
            self.remove(1)
            self.skipped += 1
        return self._remove_frame(sequence)


def install(pc: Any) -> None:
    """Give each audio receiver of ``pc`` an :class:`AdaptiveJitterBuffer` as its remote tracks appear."""

    def on_track(_track: Any) -> None:
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            buffer = getattr(receiver, _ATTRIBUTE, None)
            if transceiver.kind == "audio" and type(buffer) is JitterBuffer:
                setattr(receiver, _ATTRIBUTE, AdaptiveJitterBuffer())

    pc.on("track", on_track)
