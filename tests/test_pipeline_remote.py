"""
Remote nodes inside a pipeline, end to end: a real signaling server and a
real executor (process mode: one worker process per session) as
subprocesses on loopback, driven through ``Pipeline`` and
``RemoteObjectExecutionNode``. The classes below live in this test module,
which the executor cannot import: cloudpickle sends them by value.

Media over WebRTC tracks is tested with the transport; here streaming nodes
that carry frames use the data channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from harness import config_for, running_server, wait_until
from media_samples import random_image

from remotemedia import (
    AudioFrame,
    AuthenticationError,
    Node,
    NoExecutorAvailable,
    Pipeline,
    PipelineError,
    RemoteExecutionError,
    RemoteExecutorConfig,
    RemoteObjectExecutionNode,
    SerializationError,
    VideoFrame,
)


class Add(Node):
    """A local or remote process() node."""

    def __init__(self, amount: int, name: str | None = None) -> None:
        super().__init__(name)
        self.amount = amount

    def process(self, data: int) -> int:
        return data + self.amount


class Scale:
    """Not a Node: any object with process() can be wrapped."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    async def process(self, data: int) -> int:
        return data * self.factor


class Tag(Node):
    """A streaming node: yields (tag, frame) per frame, then a final count."""

    is_streaming = True

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    async def stream(self, frames):
        count = 0
        async for frame in frames:
            count += 1
            yield (self.tag, frame)
        yield (self.tag, "end", count)


class Echo(Node):
    """A streaming node that yields each frame unchanged."""

    is_streaming = True

    async def stream(self, frames):
        async for frame in frames:
            yield frame


def here() -> int:
    """The pid of the process this runs in, as the machine sees it (a worker in a PID namespace is told it)."""
    return int(os.environ.get("REMOTEMEDIA_WORKER_PID", os.getpid()))


class Where(Node):
    """Reports where it runs, and leaves markers when initialize() and cleanup() ran there."""

    def __init__(self, marker: str | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.marker = marker
        self.initialized_in: int | None = None

    def initialize(self) -> None:
        self.initialized_in = here()

    def process(self, data):
        return (data, here(), self.initialized_in)

    def cleanup(self) -> None:
        if self.marker:
            Path(self.marker).write_text(f"cleaned up in {here()}")


class AppendPid(Node):
    """Appends the pid of the process it runs in to the list it gets."""

    def process(self, pids: list) -> list:
        return [*pids, here()]


class FailAt(Node):
    """Fails on input ``at``: as a process() node, or as a streaming node."""

    def __init__(self, at: int, streaming: bool = False, marker: str | None = None) -> None:
        super().__init__()
        self.at = at
        self.is_streaming = streaming
        self.marker = marker

    def process(self, data: int) -> int:
        if data == self.at:
            raise ValueError(f"cannot take {data}")
        return data

    async def stream(self, frames):
        async for frame in frames:
            if frame == self.at:
                raise ValueError(f"cannot stream {frame}")
            yield frame

    def cleanup(self) -> None:
        if self.marker:
            Path(self.marker).write_text("cleaned up")


@pytest.fixture(scope="module")
def cluster_executors():
    """One executor, ``exec-p``, shared by the module's tests."""
    return (("--name", "exec-p", "--max-sessions", "8"),)


@pytest.fixture(scope="module")
def cluster(cluster_processes):
    """The shared cluster (tests/conftest.py) as ``(server, executor)``."""
    server, (executor,) = cluster_processes
    return server, executor


async def no_sessions_left(server) -> None:
    """The executor freed every session of the run (the signaling server's count)."""
    await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)


async def test_local_and_remote_process_and_streaming_nodes_run_in_order(cluster):
    server, executor = cluster
    config = config_for(server)
    pipeline = (
        Pipeline("mixed")
        .add_node(Add(1, name="local-add"))
        .add_node(RemoteObjectExecutionNode(Scale(3), config, name="remote-scale"))
        .add_node(Add(-1, name="local-sub"))
        .add_node(RemoteObjectExecutionNode(Tag("t"), config, node_config={"streaming": True, "transport": "datachannel"}))
        .add_node(RemoteObjectExecutionNode(Echo(), config, node_config={"streaming": True}))  # transport "tracks"
    )
    outputs = await pipeline.run_async(range(40))
    assert outputs == [("t", (i + 1) * 3 - 1) for i in range(40)] + [("t", "end", 40)]
    await no_sessions_left(server)


async def test_last_run_stats_say_where_each_node_ran(cluster):
    server, executor = cluster
    config = config_for(server)
    pipeline = (
        Pipeline("stats")
        .add_node(Add(1, name="local-add"))
        .add_node(RemoteObjectExecutionNode(Scale(2), config, name="remote-scale"))
        .add_node(RemoteObjectExecutionNode(Tag("x"), config, name="remote-tag", node_config={"streaming": True}))
    )
    assert pipeline.last_run_stats is None
    await pipeline.run_async(range(10))
    local, scale, tag = pipeline.last_run_stats
    assert (local.name, local.location, local.remote) == ("local-add", "local", False)
    assert (scale.name, scale.location, scale.remote) == ("remote-scale", executor.name, True)
    assert (tag.name, tag.location, tag.remote) == ("remote-tag", executor.name, True)
    assert (local.inputs, local.outputs, local.samples) == (10, 10, 10)
    assert (scale.inputs, scale.outputs, scale.samples) == (10, 10, 10)
    assert (tag.inputs, tag.outputs, tag.samples) == (10, 11, 11)  # the final count is an output too
    assert 0 < scale.mean_latency <= scale.max_latency
    assert f"remote ({executor.name})" in str(scale)


@pytest.mark.parametrize("kind", ["audio-float32", "audio-int16", "video-rgb24", "video-yuv420p"])
async def test_the_datachannel_transport_carries_frames_bit_exact(cluster, kind):
    server, _ = cluster
    rng = np.random.default_rng(7)
    if kind.startswith("audio"):
        dtype = np.float32 if kind.endswith("float32") else np.int16
        frames = [
            AudioFrame(
                (rng.standard_normal((2, 960)) * 1000).astype(dtype), 48000, timestamp=i * 0.02 + 1e-7
            )
            for i in range(30)
        ]
    else:
        fmt = kind.split("-")[1]
        frames = [
            VideoFrame(random_image(fmt, 64, 48, seed=i), fmt, timestamp=i / 30 + 1e-7) for i in range(30)
        ]
    node = RemoteObjectExecutionNode(
        Echo(), config_for(server), node_config={"streaming": True, "transport": "datachannel"}
    )
    outputs = await Pipeline("exact").add_node(node).run_async(frames)
    assert len(outputs) == len(frames)
    for sent, got in zip(frames, outputs):
        assert type(got) is type(sent)
        assert got.timestamp == sent.timestamp
        if isinstance(sent, AudioFrame):
            assert got.sample_rate == sent.sample_rate
            assert got.samples.dtype == sent.samples.dtype
            np.testing.assert_array_equal(got.samples, sent.samples)
        else:
            assert got.format == sent.format
            np.testing.assert_array_equal(got.image, sent.image)


@pytest.mark.parametrize("streaming", [False, True], ids=["process", "stream"])
async def test_a_remote_node_failing_mid_pipeline_names_it_and_everything_is_freed(cluster, tmp_path, streaming):
    server, _ = cluster
    marker = tmp_path / "failed-node.txt"
    node = RemoteObjectExecutionNode(
        FailAt(5, streaming=streaming, marker=str(marker)),
        config_for(server),
        name="remote-fail",
        node_config={"streaming": streaming, "transport": "datachannel"},
    )
    pipeline = Pipeline("failing").add_node(Add(0)).add_node(node).add_node(Add(0))
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async(range(10))
    assert info.value.node_name == "remote-fail"
    assert info.value.node_index == 1
    assert "remote-fail" in str(info.value)
    assert isinstance(info.value.__cause__, RemoteExecutionError)
    assert info.value.__cause__.remote_type == "builtins.ValueError"
    assert marker.read_text() == "cleaned up"  # the remote object's cleanup() ran on the executor
    await no_sessions_left(server)


async def test_remote_initialize_and_cleanup_run_on_the_executor_and_teardown_frees_the_session(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "cleanup.txt"
    where = Where(marker=str(marker))
    pipeline = Pipeline("lifecycle").add_node(RemoteObjectExecutionNode(where, config_for(server)))
    [(data, pid, initialized_in)] = await pipeline.run_async([7])
    assert data == 7
    assert pid != os.getpid() and initialized_in == pid  # initialize() ran there, not here
    assert where.initialized_in is None  # the local object was only uploaded
    assert marker.read_text() == f"cleaned up in {pid}"
    assert pipeline.last_run_stats[0].name == "Where"  # the wrapped object's name
    await no_sessions_left(server)


async def test_remote_nodes_with_equal_configs_share_one_session(cluster):
    server, _ = cluster
    # Equal, not identical: separate config objects with the same fields.
    pipeline = (
        Pipeline("shared")
        .add_node(RemoteObjectExecutionNode(AppendPid(), config_for(server), name="a"))
        .add_node(AppendPid())  # local
        .add_node(RemoteObjectExecutionNode(AppendPid(), config_for(server), name="b"))
        .add_node(RemoteObjectExecutionNode(AppendPid(), config_for(server, timeout=20.0), name="c"))
    )
    outputs, sessions_during_run = [], None
    async with contextlib.aclosing(pipeline.stream([[]])) as stream:
        async for output in stream:
            outputs.append(output)
            sessions_during_run = server.health()["sessions"]
    [[pid_a, local, pid_b, pid_c]] = outputs
    assert local == os.getpid() != pid_a
    assert pid_a == pid_b  # one session, so one worker process, for the equal configs
    assert pid_c != pid_a
    assert sessions_during_run == 2
    await no_sessions_left(server)


async def test_leaving_the_stream_early_frees_the_session_and_cleans_up(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "early.txt"
    node = RemoteObjectExecutionNode(
        FailAt(-1, streaming=True, marker=str(marker)), config_for(server), node_config={"streaming": True}
    )

    async def endless():
        i = 0
        while True:
            yield i
            i += 1

    pipeline = Pipeline("early").add_node(node)
    async with contextlib.aclosing(pipeline.stream(endless())) as outputs:
        async for output in outputs:
            if output == 20:
                break
    assert marker.read_text() == "cleaned up"
    await no_sessions_left(server)


async def test_cancelling_a_run_frees_the_session(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "cancelled.txt"
    reached = asyncio.Event()

    class Gate(Node):
        async def process(self, data):
            reached.set()
            await asyncio.Event().wait()  # never returns: the run is cancelled here

    node = RemoteObjectExecutionNode(FailAt(-1, marker=str(marker)), config_for(server))
    pipeline = Pipeline("cancelled").add_node(node).add_node(Gate())
    run = asyncio.create_task(pipeline.run_async(range(3)))
    await asyncio.wait_for(reached.wait(), 15)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert marker.read_text() == "cleaned up"
    await no_sessions_left(server)


async def test_a_wrong_token_fails_the_run_naming_the_node(cluster):
    server, _ = cluster
    initialized = threading.Event()

    class Local(Node):
        def initialize(self):
            initialized.set()

        def process(self, data):
            return data

    node = RemoteObjectExecutionNode(Scale(2), config_for(server, auth_token="wrong"), name="remote-scale")
    pipeline = Pipeline("refused").add_node(Local()).add_node(node)
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async([1])
    assert info.value.node_name == "remote-scale" and info.value.node_index == 1
    assert "remote-scale" in str(info.value)
    assert isinstance(info.value.__cause__, AuthenticationError)
    assert not initialized.is_set()  # nothing starts before every remote node has its session
    await no_sessions_left(server)


async def test_no_executor_available_fails_the_run_naming_the_node():
    with running_server() as server:
        config = RemoteExecutorConfig(host="127.0.0.1", port=server.port, connect_timeout=10.0)
        node = RemoteObjectExecutionNode(Scale(2), config, name="lonely")
        with pytest.raises(PipelineError) as info:
            await Pipeline("alone").add_node(node).run_async([1])
    assert info.value.node_name == "lonely"
    assert isinstance(info.value.__cause__, NoExecutorAvailable)


async def test_an_object_that_cannot_be_uploaded_fails_in_initialize_naming_the_node(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "uploaded.txt"
    unpicklable = Scale(2)
    unpicklable.lock = threading.Lock()
    pipeline = (
        Pipeline("upload")
        .add_node(RemoteObjectExecutionNode(Where(marker=str(marker)), config_for(server), name="fine"))
        .add_node(RemoteObjectExecutionNode(unpicklable, config_for(server), name="unpicklable"))
    )
    with pytest.raises(PipelineError) as info:
        await pipeline.run_async([1])
    assert info.value.node_name == "unpicklable"
    assert "initialize()" in str(info.value)
    assert isinstance(info.value.__cause__, SerializationError)
    assert marker.read_text().startswith("cleaned up")  # the other node's object was released
    await no_sessions_left(server)
