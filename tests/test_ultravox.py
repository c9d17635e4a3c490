"""Tests of remotemedia.nodes.ultravox: the min-duration wrapper's buffering, and UltravoxNode without a GPU."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import types

import cloudpickle
import numpy as np
import pytest

from remotemedia.exceptions import ModelError
from remotemedia.frames import AudioFrame
from remotemedia.models import ModelCache
from remotemedia.node import Node
from remotemedia.nodes import ultravox
from remotemedia.nodes.ultravox import UltravoxMinDurationWrapper, UltravoxNode
from remotemedia.pipeline import Pipeline
from remotemedia.remote import RemoteExecutorConfig, RemoteObjectExecutionNode
from remotemedia.serialization import dumps_object, loads_object

TIMEOUT = 5.0


def utterance(seconds: float, timestamp: float, rate: int = 16000, channels: int = 1, dtype=np.float32) -> AudioFrame:
    """A tone of ``seconds`` at ``timestamp``."""
    n = round(seconds * rate)
    tone = 0.25 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)
    samples = np.tile(tone, (channels, 1))
    if dtype == np.int16:
        samples = np.round(samples * 32767).astype(np.int16)
    return AudioFrame(samples.astype(dtype), rate, timestamp)


async def feed(items):
    for item in items:
        yield item


async def collect(node, items) -> list:
    return await asyncio.wait_for(_collect(node, items), TIMEOUT)


async def _collect(node, items) -> list:
    return [out async for out in node.stream(feed(items))]


async def settle(result):
    """What a pipeline does with a node method's result: await it if it is awaitable."""
    return await result if inspect.isawaitable(result) else result


class Recorder(Node):
    """A light stand-in for UltravoxNode: records what it gets, replies with a string per input."""

    is_streaming = True

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.received: list[AudioFrame] = []
        self.fail_at = fail_at
        self.closed = False
        self.calls: list[str] = []

    def initialize(self) -> None:
        self.calls.append("initialize")

    def cleanup(self) -> None:
        self.calls.append("cleanup")

    async def stream(self, frames):
        try:
            async for frame in frames:
                if len(self.received) == self.fail_at:
                    raise RuntimeError("model exploded")
                self.received.append(frame)
                yield f"reply {len(self.received)}"
        finally:
            self.closed = True


class AsyncLifecycle(Recorder):
    async def initialize(self) -> None:
        self.calls.append("async initialize")

    async def cleanup(self) -> None:
        self.calls.append("async cleanup")


class ProcessOnly:
    """A node with only process()."""

    def __init__(self) -> None:
        self.received: list[AudioFrame] = []

    def process(self, frame: AudioFrame) -> str:
        self.received.append(frame)
        return f"{frame.duration:.1f} s"


def spec_wrapper() -> UltravoxMinDurationWrapper:
    """The construction of the specification (section 4), as written."""
    ultravox_instance = UltravoxNode(
        model_id="fixie-ai/ultravox-v0_5-llama-3_1-8b",
        system_prompt="You are a helpful assistant...",
        buffer_duration_s=10.0,
        name="UltravoxNode",
    )
    return UltravoxMinDurationWrapper(
        ultravox_node=ultravox_instance,
        min_duration_s=1.0,
        sample_rate=16000,
        name="ProtectedUltravox",
    )


# The wrapper


async def test_short_utterances_are_merged_until_min_duration():
    inner = Recorder()
    wrapper = UltravoxMinDurationWrapper(inner, min_duration_s=1.0)
    out = await collect(wrapper, [utterance(0.3, 1.0), utterance(0.4, 2.0), utterance(0.5, 3.0)])
    assert out == ["reply 1"]
    (merged,) = inner.received
    assert merged.num_samples == round(1.2 * 16000)
    assert merged.timestamp == 1.0  # the first held utterance's
    assert (merged.channels, merged.sample_rate, merged.samples.dtype) == (1, 16000, np.float32)


async def test_long_utterance_goes_at_once_and_short_tail_is_dropped(caplog):
    inner = Recorder()
    wrapper = UltravoxMinDurationWrapper(inner, min_duration_s=1.0)
    inputs = [utterance(0.3, 0.0), utterance(0.8, 1.0), utterance(1.5, 5.0), utterance(0.4, 9.0), utterance(0.2, 10.0)]
    with caplog.at_level(logging.DEBUG, logger="remotemedia.nodes.ultravox"):
        out = await collect(wrapper, inputs)
    assert out == ["reply 1", "reply 2"]
    assert [(f.timestamp, f.num_samples) for f in inner.received] == [(0.0, 17600), (5.0, 24000)]
    assert "dropped 0.60 s" in caplog.text


async def test_zero_min_duration_passes_every_utterance_but_empty_ones():
    inner = Recorder()
    empty = AudioFrame(np.zeros((2, 0), np.int16), 48000, 0.5)
    out = await collect(UltravoxMinDurationWrapper(inner, min_duration_s=0), [utterance(0.1, 0.0), empty, utterance(0.2, 1.0)])
    assert out == ["reply 1", "reply 2"]


async def test_48k_stereo_int16_becomes_16k_mono_float32():
    inner = Recorder()
    wrapper = UltravoxMinDurationWrapper(inner, min_duration_s=1.0)
    await collect(wrapper, [utterance(0.6, 3.0, rate=48000, channels=2, dtype=np.int16), utterance(0.6, 4.0, rate=48000, channels=2, dtype=np.int16)])
    (merged,) = inner.received
    assert (merged.channels, merged.sample_rate, merged.samples.dtype) == (1, 16000, np.float32)
    assert abs(merged.duration - 1.2) < 0.002
    assert merged.timestamp == 3.0
    assert 0.1 < np.abs(merged.samples).max() <= 1.0


async def test_other_sample_rate_is_used_for_the_handed_frame():
    inner = Recorder()
    await collect(UltravoxMinDurationWrapper(inner, min_duration_s=0.5, sample_rate=8000), [utterance(0.5, 0.0)])
    assert (inner.received[0].sample_rate, inner.received[0].num_samples) == (8000, 4000)


async def test_process_only_wrapped_node():
    inner = ProcessOnly()
    out = await collect(UltravoxMinDurationWrapper(inner), [utterance(0.5, 0.0), utterance(0.7, 1.0), utterance(2.0, 2.0)])
    assert out == ["1.2 s", "2.0 s"]


async def test_error_in_wrapped_node_propagates_and_cleans_up():
    inner = Recorder(fail_at=1)
    wrapper = UltravoxMinDurationWrapper(inner, name="Guarded")
    with pytest.raises(RuntimeError, match="model exploded"):
        await collect(wrapper, [utterance(1.0, 0.0), utterance(1.0, 1.0), utterance(1.0, 2.0)])
    assert inner.closed
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "Guarded-feed"]


async def test_input_error_reaches_the_caller():
    inner = Recorder()
    with pytest.raises(TypeError, match="takes AudioFrame inputs, not str"):
        await collect(UltravoxMinDurationWrapper(inner), [utterance(1.0, 0.0), "not audio"])
    assert inner.closed


async def test_replies_come_while_input_is_still_open():
    first_reply = asyncio.Event()

    async def live():
        yield utterance(1.0, 0.0)
        await first_reply.wait()  # input stays open until a reply has come out
        yield utterance(1.0, 1.0)

    wrapper = UltravoxMinDurationWrapper(Recorder())
    outputs = []

    async def run():
        async for out in wrapper.stream(live()):
            outputs.append(out)
            first_reply.set()

    await asyncio.wait_for(run(), TIMEOUT)
    assert outputs == ["reply 1", "reply 2"]


async def test_early_close_cancels_the_feeder():
    async def endless():
        t = 0.0
        while True:
            yield utterance(1.0, t)
            t += 1.0

    inner = Recorder()
    wrapper = UltravoxMinDurationWrapper(inner, name="Closed")
    outputs = wrapper.stream(endless())
    assert await asyncio.wait_for(outputs.__anext__(), TIMEOUT) == "reply 1"
    await asyncio.wait_for(outputs.aclose(), TIMEOUT)
    assert inner.closed
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "Closed-feed"]


@pytest.mark.parametrize("node_class", [Recorder, AsyncLifecycle])
async def test_initialize_and_cleanup_reach_the_wrapped_node(node_class):
    inner = node_class()
    wrapper = UltravoxMinDurationWrapper(inner)
    await settle(wrapper.initialize())
    await settle(wrapper.cleanup())
    prefix = "async " if node_class is AsyncLifecycle else ""
    assert inner.calls == [prefix + "initialize", prefix + "cleanup"]


async def test_in_a_pipeline():
    inner = AsyncLifecycle()
    pipeline = Pipeline("voice").add_node(UltravoxMinDurationWrapper(inner))
    out = await asyncio.wait_for(pipeline.run_async([utterance(0.6, 0.0), utterance(0.6, 1.0), utterance(0.3, 2.0)]), TIMEOUT)
    assert out == ["reply 1"]
    assert inner.calls == ["async initialize", "async cleanup"]


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"min_duration_s": -0.1}, ValueError),
        ({"min_duration_s": "1"}, ValueError),
        ({"min_duration_s": True}, ValueError),
        ({"min_duration_s": float("nan")}, ValueError),
        ({"sample_rate": 0}, ValueError),
        ({"sample_rate": 16000.0}, ValueError),
        ({"ultravox_node": object()}, TypeError),
        ({"ultravox_node": Recorder}, TypeError),
    ],
)
def test_wrapper_rejects_bad_arguments(kwargs, error):
    arguments = {"ultravox_node": Recorder(), **kwargs}
    with pytest.raises(error):
        UltravoxMinDurationWrapper(**arguments)


def test_spec_construction_survives_cloudpickle():
    wrapper = spec_wrapper()
    remote_node = RemoteObjectExecutionNode(
        obj_to_execute=wrapper, remote_config=RemoteExecutorConfig(), name="RemoteUltravox", node_config={"streaming": True}
    )
    assert remote_node.is_streaming
    for copy in (cloudpickle.loads(cloudpickle.dumps(wrapper)), loads_object(dumps_object(wrapper))):
        assert (copy.name, copy.min_duration_s, copy.sample_rate) == ("ProtectedUltravox", 1.0, 16000)
        node = copy.ultravox_node
        assert isinstance(node, UltravoxNode)
        assert (node.name, node.model_id, node.system_prompt, node.buffer_duration_s) == (
            "UltravoxNode",
            "fixie-ai/ultravox-v0_5-llama-3_1-8b",
            "You are a helpful assistant...",
            10.0,
        )


# UltravoxNode, without transformers


@pytest.fixture
def no_transformers(monkeypatch):
    """Make sure transformers and torch cannot be imported, whatever is installed."""
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "torch", None)


def test_construction_needs_no_transformers(no_transformers):
    node = spec_wrapper().ultravox_node
    assert (node.device, node.max_new_tokens) == ("auto", 256)


def test_initialize_without_transformers_says_what_to_install(no_transformers):
    node = UltravoxNode()
    with pytest.raises(ModelError, match=r"pip install 'remotemedia\[ultravox\]'") as caught:
        node.initialize()
    assert caught.value.model == ultravox.DEFAULT_MODEL


async def test_stream_before_initialize_says_so():
    with pytest.raises(RuntimeError, match="call initialize"):
        await collect(UltravoxNode(), [utterance(1.0, 0.0)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_id": ""},
        {"model_id": None},
        {"system_prompt": 3},
        {"buffer_duration_s": 0},
        {"buffer_duration_s": -1.0},
        {"buffer_duration_s": "10"},
        {"max_new_tokens": 0},
        {"max_new_tokens": 1.5},
        {"device": "tpu"},
    ],
)
def test_ultravox_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UltravoxNode(**kwargs)


# UltravoxNode against stand-ins for torch and transformers: the calls it makes


class FakePipe:
    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.inputs: list[tuple[dict, dict]] = []

    def __call__(self, inputs: dict, **kwargs) -> str:
        self.inputs.append((inputs, kwargs))
        return self.reply


@pytest.fixture
def fake_hf(monkeypatch):
    """Stand-ins for torch and transformers, and a fresh model cache; returns the loads made."""
    loads: list[dict] = []
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: False, OutOfMemoryError=type("OutOfMemoryError", (RuntimeError,), {}))
    torch.bfloat16, torch.float32 = "bfloat16", "float32"
    transformers = types.ModuleType("transformers")

    def pipeline(**kwargs):
        loads.append(kwargs)
        if kwargs["model"] == "missing/model":
            raise OSError("missing/model is not a local folder and is not a valid model identifier")
        if kwargs["model"] == "needs/peft":
            raise ImportError("This modeling file requires the following packages: peft")
        return FakePipe(" Hello there. ")

    transformers.pipeline = pipeline
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setattr(ultravox, "cache", ModelCache())
    return loads


async def test_generation_gets_the_last_seconds_at_16k(fake_hf):
    node = UltravoxNode(system_prompt="Be brief.", buffer_duration_s=2.0, max_new_tokens=40)
    node.initialize()
    try:
        out = await collect(node, [utterance(3.0, 0.0, rate=48000, channels=2, dtype=np.int16)])
        assert out == ["Hello there."]
        (load,) = fake_hf
        assert (load["model"], load["trust_remote_code"], load["device"]) == (ultravox.DEFAULT_MODEL, True, "cpu")
        ((inputs, kwargs),) = node._model[0].inputs
        assert kwargs == {"max_new_tokens": 40}
        assert inputs["turns"] == [{"role": "system", "content": "Be brief."}]
        assert inputs["sampling_rate"] == 16000
        assert inputs["audio"].dtype == np.float32 and inputs["audio"].shape == (32000,)
    finally:
        node.cleanup()
        node.cleanup()  # twice is harmless


def test_sessions_share_one_model_and_pickles_hold_none(fake_hf):
    first, second = UltravoxNode(), UltravoxNode()
    first.initialize()
    second.initialize()
    try:
        assert len(fake_hf) == 1
        assert first._model is second._model
        copy = cloudpickle.loads(cloudpickle.dumps(first))
        assert copy._model is None and copy._key is None
    finally:
        first.cleanup()
        second.cleanup()
    assert ultravox.cache.info()[0]["users"] == 0


@pytest.mark.parametrize(
    "model_id, message",
    [
        ("missing/model", r"huggingface\.co the first time.*local folder"),
        ("needs/peft", r"pip install 'remotemedia\[ultravox\]'"),
    ],
)
def test_load_failures_are_model_errors(fake_hf, model_id, message):
    node = UltravoxNode(model_id=model_id)
    with pytest.raises(ModelError, match=message) as caught:
        node.initialize()
    assert caught.value.model == model_id
    node.cleanup()  # nothing acquired: nothing to release


async def test_input_error_swallowed_by_the_wrapped_node_still_raises():
    class Swallower(Recorder):
        async def stream(self, frames):
            try:
                async for frame in frames:
                    yield "reply"
            except TypeError:
                return

    with pytest.raises(TypeError, match="takes AudioFrame inputs"):
        await collect(UltravoxMinDurationWrapper(Swallower()), [utterance(1.0, 0.0), 42])
