"""
Media slots over in-memory tracks: one slot's outgoing tracks are read by
another slot, as a peer connection would, with no network and no codec.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from remotemedia import AudioFrame, VideoFrame
from remotemedia.transport.tracks import MediaSlot

from media_samples import audio_frames, sine

pytestmark = pytest.mark.asyncio


def connected_slots() -> tuple[MediaSlot, MediaSlot]:
    sender, receiver = MediaSlot(0), MediaSlot(0)
    for kind, track in sender.tracks.items():
        receiver.listen(kind, track)
    return sender, receiver


async def send_stream(sender: MediaSlot, frames: list, announce, mark) -> None:
    for frame in frames:
        await sender.send(frame, announce)
    await sender.finish_sending(mark)


async def test_a_stream_of_audio_and_video_arrives_whole_and_then_ends():
    sender, receiver = connected_slots()
    received, done = [], asyncio.Event()
    receiver.take(1, received.append, done.set)

    async def announce(announcement):
        receiver.begin_receiving(announcement)

    async def mark(ends):
        receiver.end_receiving(ends)

    audio = audio_frames(sine(16000, 0.3), 16000, 320, start=1.0)
    video = [VideoFrame(np.full((32, 32, 3), 100, np.uint8), "rgb24", 1.0 + k / 10) for k in range(3)]
    try:
        await send_stream(sender, audio + video, announce, mark)
        await asyncio.wait_for(done.wait(), 10)
        got_audio = [f for f in received if isinstance(f, AudioFrame)]
        got_video = [f for f in received if isinstance(f, VideoFrame)]
        assert sum(f.num_samples for f in got_audio) == 4800
        assert got_audio[0].timestamp == 1.0 and got_audio[0].sample_rate == 16000
        assert [f.timestamp for f in got_video] == pytest.approx([1.0, 1.1, 1.2])
        assert not receiver.receiving
    finally:
        sender.close()
        receiver.close()


async def test_frames_that_come_before_their_announcement_are_kept():
    sender, receiver = connected_slots()
    received, done = [], asyncio.Event()
    receiver.take(1, received.append, done.set)
    announcements = []

    async def announce_late(announcement):
        announcements.append(announcement)  # the data channel is slower than the track this time

    async def mark(ends):
        for announcement in announcements:
            receiver.begin_receiving(announcement)
        receiver.end_receiving(ends)

    video = [VideoFrame(np.full((32, 32, 3), 7 * k, np.uint8), "rgb24", k / 30) for k in range(4)]
    try:
        await send_stream(sender, video, announce_late, mark)
        await asyncio.wait_for(done.wait(), 10)
        assert [f.timestamp for f in received] == pytest.approx([k / 30 for k in range(4)])
    finally:
        sender.close()
        receiver.close()


async def test_a_freed_slot_drops_a_half_sent_stream_and_serves_the_next():
    sender, receiver = connected_slots()
    first: list = []
    receiver.take(1, first.append, lambda: None)

    async def announce(announcement):
        receiver.begin_receiving(announcement)

    try:
        for frame in audio_frames(sine(16000, 0.1), 16000, 320):
            await sender.send(frame, announce)
        sender.free()
        receiver.free()  # the call was cancelled on both sides
        second, done = [], asyncio.Event()
        receiver.take(2, second.append, done.set)

        async def mark(ends):
            receiver.end_receiving(ends)

        await send_stream(sender, audio_frames(sine(16000, 0.1), 16000, 320, start=9.0), announce, mark)
        await asyncio.wait_for(done.wait(), 10)
        assert second[0].timestamp == 9.0
        assert sum(f.num_samples for f in second) == 1600
    finally:
        sender.close()
        receiver.close()


async def test_a_stream_without_frames_ends_at_once():
    receiver = MediaSlot(0)
    done = asyncio.Event()
    receiver.take(1, lambda frame: None, done.set)
    receiver.end_receiving({})
    assert done.is_set()
