"""
WASM nodes on executors, end to end (a real signaling server and executors
in process mode, as subprocesses on loopback), and the ``--accept`` policy:
an executor started with ``--accept wasm`` runs WASM nodes, which travel as
data, and refuses every pickle, unloaded (a pickle that would create a file
leaves no file). The dispatcher's own refusal, which is what the worker
process runs, is tested without the network at the end.
"""

from __future__ import annotations

import asyncio
import pathlib

import cloudpickle
import numpy as np
import pytest
from harness import TOKEN, client_config

from executor.dispatch import Dispatcher, Limits
from executor.objects import ObjectTable
from remotemedia import (
    AudioFrame,
    Pipeline,
    RemoteExecutionError,
    RemoteObjectExecutionNode,
    RemoteProxyClient,
    ResourceLimitError,
    VideoFrame,
)
from remotemedia.nodes import InvertNode, ToneNode, VideoPatternNode, WasmNode
from remotemedia.rpc import Kind, Message
from remotemedia.wasm import example, lowpass


class Touch:
    """Unpickling this creates the file ``path``: the proof that a pickle was loaded."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))

    def process(self, data):
        return data


@pytest.fixture(scope="module")
def cluster_executors():
    # With a memory cap: wasmtime's address-space reservations must not count against it.
    wasm_only = ("--name", "wasm-only", "--accept", "wasm", "--mode", "process", "--max-sessions", "8", "--memory-limit", "400")
    python_only = ("--name", "python-only", "--mode", "process", "--max-sessions", "8")
    return wasm_only, python_only


def config(server, executor: str = "wasm-only"):
    return client_config(server, TOKEN, timeout=30.0, heartbeat_timeout=15.0, requirements={"executor": executor})


def remote(node, server, **node_config) -> RemoteObjectExecutionNode:
    return RemoteObjectExecutionNode(node, config(server), node_config={"streaming": True, **node_config})


def audio_frames(count: int, seed: int = 0) -> list[AudioFrame]:
    rng = np.random.default_rng(seed)
    return [AudioFrame((rng.random((2, 960), dtype=np.float32) - 0.5).astype(np.float32), 48000, i * 0.02) for i in range(count)]


async def test_a_stateful_wasm_node_over_the_data_channel_is_bit_exact(cluster):
    frames = audio_frames(6)
    settings = {"config": lowpass(2000, 48000)}
    local = await Pipeline("local").add_node(WasmNode(example("biquad"), **settings)).run_async(frames)
    pipeline = Pipeline("remote").add_node(remote(WasmNode(example("biquad"), **settings), cluster, transport="datachannel"))
    got = await pipeline.run_async(frames)
    assert len(got) == len(local) == 6
    for g, w in zip(got, local):
        assert np.array_equal(g.samples, w.samples) and g.timestamp == w.timestamp


async def test_wasm_nodes_over_media_tracks(cluster):
    tone = Pipeline("audio").add_node(ToneNode(440.0, duration_s=1.0, sample_rate=48000))
    tone.add_node(remote(WasmNode(example("gain"), config={"gain": 0.5}), cluster))
    frames = await tone.run_async()
    assert sum(f.num_samples for f in frames) == 48000
    # Opus keeps the level within a decibel or so: a 0.5 tone at gain 0.5 peaks near 0.25.
    peak = max(float(np.abs(f.samples).max()) for f in frames[10:-10])
    assert 0.2 < peak < 0.3

    pattern = dict(width=160, height=120, fps=30, duration_s=0.5)
    want = await Pipeline("local").add_node(VideoPatternNode(**pattern)).add_node(InvertNode()).run_async()
    video = Pipeline("video").add_node(VideoPatternNode(**pattern)).add_node(remote(WasmNode(example("invert")), cluster))
    got = await video.run_async()
    assert len(got) == len(want) == 15
    for g, w in zip(got, want):
        assert g.image.shape == (120, 160, 3)
        assert np.abs(g.image.astype(int) - w.image).mean() < 12  # VP8 is lossy


async def test_create_proxy_sends_a_wasm_node_as_data_and_limits_come_back_as_errors(cluster):
    async with RemoteProxyClient(config(cluster)) as client:
        gain = await client.create_proxy(WasmNode(example("gain"), config={"gain": 0.25}))
        frame = audio_frames(1)[0]
        out = await gain.process(frame)
        assert np.array_equal(out.samples, frame.samples * np.float32(0.25))
        image = VideoFrame(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
        invert = await client.create_proxy(WasmNode(example("invert")))
        assert np.array_equal((await invert.process(image)).image, 255 - image.image)

        spin = await client.create_proxy(WasmNode('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 64) (func (export "process") (param i32 i32 i32 i32) (result i32) (loop (br 0)) i32.const 0))', fuel=10_000_000))
        with pytest.raises(ResourceLimitError, match="fuel budget") as info:
            await spin.process(b"x")
        assert info.value.limit == "cpu"
        trap = await client.create_proxy(WasmNode('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 64) (func (export "process") (param i32 i32 i32 i32) (result i32) unreachable))'))
        with pytest.raises(RemoteExecutionError, match=r"trapped \(unreachable") as info:
            await trap.process(b"x")
        assert info.value.remote_type.endswith("WasmError")
        # The session goes on after both.
        assert np.array_equal((await gain.process(frame)).samples, out.samples)


async def test_a_wasm_only_executor_refuses_pickles_without_loading_them(cluster, tmp_path):
    created = tmp_path / "created-by-unpickling"
    async with RemoteProxyClient(config(cluster)) as client:
        with pytest.raises(RemoteExecutionError, match="--accept wasm.*a pickled Python object is refused") as info:
            await client.create_proxy(Touch(created))
        assert info.value.remote_type == "not_accepted"
        # A pickled argument of a call on a WASM node is refused the same way.
        invert = await client.create_proxy(WasmNode(example("invert")))
        with pytest.raises(RemoteExecutionError, match="a call with pickled arguments .* is refused"):
            await invert.process(Touch(created))
        assert await invert.process(b"\x00") == b"\xff"  # the session goes on
    assert not created.exists()


async def test_a_python_only_executor_refuses_wasm_nodes(cluster):
    async with RemoteProxyClient(config(cluster, "python-only")) as client:
        with pytest.raises(RemoteExecutionError, match="takes only Python objects.*--accept any"):
            await client.create_proxy(WasmNode(example("gain")))


# -- the dispatcher (what the worker process runs), no network ---------------------------


async def test_the_dispatcher_of_a_wasm_only_session_loads_no_pickle(tmp_path):
    created = tmp_path / "created"
    sent: list = []
    done = asyncio.Event()

    async def send(kind, id, body=None):
        sent.append((kind, id, body))
        done.set()

    # The worker process gets its limits as a dict: "accept" survives the trip, and a missing one is the strictest.
    limits = Limits.from_dict(Limits(accept="wasm").to_dict())
    assert limits.accept == "wasm" and Limits.from_dict({}).accept == "wasm"
    dispatcher = Dispatcher(ObjectTable("t"), send, limits, lambda why: None)
    try:
        for kind in (Kind.CREATE, Kind.CALL, Kind.INPUT):
            done.clear()
            dispatcher.handle(Message(kind, 7, cloudpickle.dumps(Touch(created)), pickled=True))
            await asyncio.wait_for(done.wait(), 10)
            assert sent[-1][0] is Kind.ERROR and sent[-1][2]["code"] == "not_accepted"
        assert not created.exists()
    finally:
        await dispatcher.close()


async def test_the_executor_keeps_a_wasm_calls_time_limit_under_its_call_timeout():
    sent: list = []
    done = asyncio.Event()

    async def send(kind, id, body=None):
        sent.append((kind, id, body))
        done.set()

    from remotemedia.wasm.spec import create_body

    table = ObjectTable("t")
    dispatcher = Dispatcher(table, send, Limits(call_timeout=2.0, accept="wasm"), lambda why: None)
    try:
        spin = WasmNode('(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 64) (func (export "process") (param i32 i32 i32 i32) (result i32) (loop (br 0)) i32.const 0))', fuel=10**18, time_limit=60)
        dispatcher.handle(Message(Kind.CREATE, 1, create_body(spin.spec)))
        await asyncio.wait_for(done.wait(), 10)
        assert sent[-1][0] is Kind.RESULT, sent[-1]
        # Not run: which of two deadlines fires first is up to the machine's load.
        assert table.method(1, "process").__self__.spec.time_limit == pytest.approx(1.8)
    finally:
        await dispatcher.close()


def test_a_relayed_message_says_whether_it_is_pickled_without_being_decoded():
    # What the executor's session looks at before it relays a request to the worker process.
    from remotemedia.rpc import Raw, RPCProtocol

    sender, relay = RPCProtocol(1 << 20), RPCProtocol(1 << 20, relay=frozenset({Kind.CREATE}))
    events = []
    for payload in sender.send_pickled(Kind.CREATE, 1, cloudpickle.dumps(Touch(pathlib.Path("never")))):
        events += relay.receive_data(payload)
    for payload in sender.send(Kind.CREATE, 2, {"wasm": {}}):
        events += relay.receive_data(payload)
    assert [type(e) for e in events] == [Raw, Raw]
    assert [e.pickled for e in events] == [True, False]


def test_accept_takes_three_values_and_the_embedded_server_takes_both():
    from executor.__main__ import parse_args
    from executor.executor import ExecutorConfig
    from remotemedia.__main__ import parse_args as parse_serve

    assert parse_args([]).accept == "python"
    assert parse_args(["--accept", "wasm"]).accept == "wasm"
    assert parse_serve(["serve"]).accept == "any"
    with pytest.raises(ValueError, match="accept must be one of python, wasm, any"):
        ExecutorConfig(signaling="ws://x/ws", accept="everything")
