"""
:mod:`remotemedia.transport.jitter`: the adaptive audio jitter buffer, fed
RTP packets in the orders a jittery network delivers them (no network, no
clock), against aiortc's own buffer fed the same.
"""

from __future__ import annotations

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from remotemedia.transport import new_peer_connection
from remotemedia.transport.jitter import AdaptiveJitterBuffer

START = 65530  # sequence numbers wrap around during the tests


def packet(index: int) -> RtpPacket:
    p = RtpPacket(sequence_number=(START + index) % 65536, timestamp=(960 * index) % 2**32)
    p._data = bytes([index % 256])  # what the receiver's depayloading leaves for the buffer
    return p


def feed(buffer, order: list[int]) -> tuple[list[int], list[int]]:
    """The packets given, in ``order``; the frames out (by index), and how many packets were in when each came out."""
    out, when = [], []
    for count, index in enumerate(order, 1):
        _, frame = buffer.add(packet(index))
        if frame is not None:
            out.append(frame.data[0])
            when.append(count)
    return out, when


def test_in_order_packets_come_out_one_behind_and_it_never_grows():
    buffer = AdaptiveJitterBuffer()
    out, when = feed(buffer, list(range(100)))
    assert out == list(range(99))  # each frame is out as soon as the next begins
    assert when == list(range(2, 101))
    assert (buffer.prefetch, buffer.late, buffer.skipped) == (1, 0, 0)
    # aiortc's buffer, the same packets: each frame waits for four more.
    _, aiortc_when = feed(JitterBuffer(capacity=16, prefetch=4), list(range(100)))
    assert aiortc_when[0] == 5


def test_a_reordered_packet_is_not_lost_and_the_buffer_grows():
    buffer = AdaptiveJitterBuffer()
    order = list(range(40))
    order[10], order[11] = order[11], order[10]  # 10 comes after 11
    order.remove(30)
    order.insert(order.index(32) + 1, 30)  # 30 comes two packets late
    out, _ = feed(buffer, order)
    assert out == list(range(len(out))) and len(out) >= 36  # all in order, none lost
    assert buffer.late == 2 and buffer.skipped == 0
    assert buffer.prefetch == 3


def test_a_lost_packet_is_given_up_soon_and_the_audio_goes_on():
    buffer = AdaptiveJitterBuffer()
    order = [i for i in range(40) if i != 10]
    out, when = feed(buffer, order)
    assert 10 not in out and out == [i for i in range(len(out) + 1) if i != 10]
    assert buffer.skipped == 1 and buffer.prefetch == 1  # a loss is not lateness
    # Frame 9, before the gap, came out when 5 packets waited behind the gap, 11 one packet later
    # (aiortc's waits until its 16 places are full, and loses 9 too).
    assert when[out.index(9)] - order.index(9) - 1 == 5 and when[out.index(11)] == when[out.index(9)] + 1
    _, aiortc_when = feed(JitterBuffer(capacity=16, prefetch=4), order)
    assert len(aiortc_when) < len(when)


def test_a_packet_later_than_its_wait_is_dropped_and_the_buffer_waits_longer_next_time():
    buffer = AdaptiveJitterBuffer()
    order = [i for i in range(30) if i != 10]
    order.insert(order.index(20), 10)  # 10 comes after 19: given up already
    out, _ = feed(buffer, order)
    assert 10 not in out and sorted(out) == out
    assert buffer.skipped == 1 and buffer.late == 1 and buffer.prefetch == 2
    # Now a packet three late is waited for.
    more = list(range(30, 60))
    more[5], more[8] = more[8], more[5]
    later, _ = feed(buffer, more)
    assert [i for i in later if i >= 30] == list(range(30, 30 + len([i for i in later if i >= 30])))


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="capacity"):
        AdaptiveJitterBuffer(capacity=16, low=1, high=8)


async def test_peer_connections_get_it_on_their_audio_receivers():
    from aiortc.mediastreams import AudioStreamTrack

    offerer, answerer = new_peer_connection(), new_peer_connection()
    try:
        offerer.addTransceiver(AudioStreamTrack(), direction="sendrecv")
        offerer.addTransceiver("video", direction="sendrecv")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        answerer.addTrack(AudioStreamTrack())  # sendrecv both ways: the offerer receives audio too
        await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        for pc in (offerer, answerer):
            buffers = {t.kind: getattr(t.receiver, "_RTCRtpReceiver__jitter_buffer") for t in pc.getTransceivers()}
            assert isinstance(buffers["audio"], AdaptiveJitterBuffer)
            assert not isinstance(buffers["video"], AdaptiveJitterBuffer)
    finally:
        await offerer.close()
        await answerer.close()
