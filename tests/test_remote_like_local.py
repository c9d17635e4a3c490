"""
A node behaves the same wherever it runs: remote nodes may modify the frames
they receive, remote tracebacks name the user's own file and line, and the
usual mistakes (a plain ``for`` over a remote call, a list where a stream is
expected) get a hint. Real signaling server and executors, in both modes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from harness import TOKEN, mode_config

from remotemedia import AudioFrame, Pipeline, RemoteExecutionError, RemoteObjectExecutionNode, RemoteProxyClient, VideoFrame
from remotemedia.nodes import VideoPatternNode


class Brighten:
    """Writes into the frames it receives, as an effect written for local frames does."""

    def process(self, frame):
        if isinstance(frame, VideoFrame):
            frame.image[:2] = 255  # in place
        else:
            frame.samples *= 0.5
        return frame

    async def stream(self, frames):
        async for frame in frames:
            yield self.process(frame)

    def fail(self, value):
        return self.check(value)

    def check(self, value):
        if value < 0:
            raise ValueError(f"value {value} is negative")
        return value

    async def each(self, items):
        async for item in items:
            yield item


async def test_a_remote_node_may_modify_the_frames_it_receives(cluster, mode):
    video = VideoFrame(np.full((48, 64, 3), 10, np.uint8), "rgb24", 0.5)
    audio = AudioFrame(np.full((1, 960), 0.8, np.float32), 48000)
    async with RemoteProxyClient(mode_config(cluster, TOKEN, mode)) as client:
        remote = await client.create_proxy(Brighten())
        out = await remote.process(video)
        assert (out.image[:2] == 255).all() and (out.image[2:] == 10).all()
        assert (video.image == 10).all()  # the caller's frame is its own
        assert np.allclose((await remote.process(audio)).samples, 0.4)

        async def frames():
            yield VideoFrame(np.full((48, 64, 3), 10, np.uint8), "rgb24", 0.0)

        streamed = [frame async for frame in remote.stream(frames())]
        assert len(streamed) == 1 and (streamed[0].image[:2] == 255).all()


async def test_a_remote_node_on_video_tracks_may_modify_its_frames(cluster, mode):
    node = RemoteObjectExecutionNode(Brighten(), mode_config(cluster, TOKEN, mode), node_config={"streaming": True})
    pipeline = Pipeline("tracks").add_node(VideoPatternNode(64, 48, fps=30, duration_s=0.3)).add_node(node)
    frames = await pipeline.run_async()
    assert frames and all(frame.image[:2].mean() > 200 for frame in frames)  # VP8 keeps a white band white


async def test_a_remote_traceback_names_this_file_and_its_lines(cluster, mode):
    async with RemoteProxyClient(mode_config(cluster, TOKEN, mode)) as client:
        remote = await client.create_proxy(Brighten())
        with pytest.raises(RemoteExecutionError) as info:
            await remote.fail(-1)
    text = info.value.remote_traceback
    assert "<dynamic-code>" not in text
    assert f'File "{__file__}"' in text
    assert "return self.check(value)" in text
    assert 'raise ValueError(f"value {value} is negative")' in text


async def test_the_usual_mistakes_get_a_hint(cluster):
    async with RemoteProxyClient(mode_config(cluster, TOKEN, "inprocess")) as client:
        remote = await client.create_proxy(Brighten())
        with pytest.raises(TypeError, match="async for out in remote.each"):
            for _ in remote.each([1, 2]):
                pass
        with pytest.raises(RemoteExecutionError, match=r"iter\(items\)"):
            async for _ in remote.each([1, 2]):
                pass
        assert [item async for item in remote.each(iter([1, 2]))] == [1, 2]


class Sleeper:
    async def nap(self, seconds: float) -> str:
        import asyncio

        await asyncio.sleep(seconds)
        return "napped"

    async def cleanup(self) -> None:
        import asyncio

        await asyncio.sleep(2)  # close() waits for it: the nap times out meanwhile


async def test_a_call_timing_out_while_the_client_closes_logs_nothing(cluster, caplog):
    import asyncio
    import gc

    from remotemedia import RemoteTimeoutError

    config = dataclasses.replace(mode_config(cluster, TOKEN, "inprocess"), timeout=1.0)
    client = RemoteProxyClient(config)
    await client.__aenter__()
    remote = await client.create_proxy(Sleeper())
    call = asyncio.ensure_future(remote.nap(30))
    await asyncio.sleep(0)  # the call is sent
    closing = asyncio.ensure_future(client.close())
    results = await asyncio.gather(call, closing, return_exceptions=True)
    assert isinstance(results[0], RemoteTimeoutError), results
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
