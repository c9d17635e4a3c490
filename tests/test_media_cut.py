"""
Barge-in on the wire: a remote reply cut by ``{"type": "interrupted"}``
stops sending audio at once (executor/media.py's cut), end to end against a
real signaling server and executor in each execution mode. Counted in
frames, not timed: the machine is shared.
"""

from __future__ import annotations

import asyncio

import numpy as np
from harness import TOKEN, mode_config

from remotemedia import AudioFrame, Node, Pipeline, RemoteObjectExecutionNode
from remotemedia.nodes.bargein import INTERRUPT, is_interrupt
from remotemedia.transport.tracks import QUEUE

#: Reply frames: 20 ms at 48 kHz, one Opus packet each, so frames sent and frames received count alike.
FRAME = 960


def long_replies() -> Node:
    """A stand-in TTS (defined here, so it travels by value): 10 s of tone per text, 4x faster than real time."""

    class LongReplies(Node):
        is_streaming = True

        async def stream(self, texts):
            queue: asyncio.Queue = asyncio.Queue()
            cuts = 0

            async def read():
                nonlocal cuts
                async for text in texts:
                    if is_interrupt(text):
                        cuts += 1
                    queue.put_nowait(text)
                queue.put_nowait(None)

            reader = asyncio.create_task(read())
            emitted = 0
            try:
                while (text := await queue.get()) is not None:
                    if is_interrupt(text):
                        continue
                    generation = cuts
                    yield {"type": "speaking", "audio_from": emitted / 48000}
                    tone = 0.3 * np.sin(np.arange(FRAME) * 2 * np.pi * 440 / 48000).astype(np.float32)
                    for _ in range(500):
                        if cuts != generation:
                            yield {"type": "interrupted", "audio_until": emitted / 48000}
                            break
                        yield AudioFrame(tone[np.newaxis, :], 48000, emitted / 48000)
                        emitted += FRAME
                        await asyncio.sleep(0.005)
                await reader
            finally:
                reader.cancel()

    return LongReplies()


async def test_a_cut_reply_stops_within_the_packets_in_flight_and_the_next_plays(cluster, mode):
    heard = asyncio.Event()  # the first reply is playing
    cut_seen = asyncio.Event()  # the interrupted arrived
    second = asyncio.Event()  # the second reply is playing
    frames: list[tuple[float, bool]] = []  # (stream time, arrived after the INTERRUPT was sent), in arrival order
    marks: list[dict] = []
    sent = {"interrupt": False}

    class Talk(Node):
        is_streaming = True

        async def stream(self, _):
            yield "a long reply"
            await heard.wait()
            sent["interrupt"] = True
            yield dict(INTERRUPT)
            await cut_seen.wait()
            yield "the next reply"
            await second.wait()
            yield dict(INTERRUPT)  # so that the call ends without playing 10 s

    class Listen(Node):
        is_streaming = True

        async def stream(self, items):
            async for item in items:
                if isinstance(item, AudioFrame):
                    frames.append((item.timestamp, sent["interrupt"]))
                    if len(frames) == 50:
                        heard.set()  # a second of the reply arrived: the window and the track queue are full
                    if len(marks) == 3 and item.timestamp >= marks[2]["audio_from"] - 0.01:
                        second.set()
                else:
                    marks.append(item)
                    if item.get("type") == "interrupted":
                        cut_seen.set()
                yield item

    remote = RemoteObjectExecutionNode(long_replies(), mode_config(cluster, TOKEN, mode), node_config={"streaming": True})
    pipeline = Pipeline("cut").add_node(Talk()).add_node(remote).add_node(Listen())
    await asyncio.wait_for(pipeline.run_async(), 60)

    assert [m["type"] for m in marks] == ["speaking", "interrupted", "speaking", "interrupted"], marks
    cut_at, next_from = marks[1]["audio_until"], marks[2]["audio_from"]
    late = [t for t, after in frames if after and t < cut_at]
    # What still played after the INTERRUPT left: the packets already sent (the receiver's jitter
    # buffer, the sender's lead), not the track's queue nor a stream window of frames.
    assert len(late) < QUEUE["audio"], f"{len(late)} frames of the cut reply arrived after the interrupt"
    # The call goes on: the next reply arrives, at its own stream time.
    nexts = [t for t, _ in frames if t >= next_from - 0.01]
    assert nexts and abs(nexts[0] - next_from) < 0.011
