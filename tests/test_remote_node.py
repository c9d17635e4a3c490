"""RemoteObjectExecutionNode on its own: construction, validation, and grouping by config (no network)."""

from __future__ import annotations

import subprocess
import sys

import cloudpickle
import pytest

from remotemedia import Node, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode
from remotemedia.node import ProcessStream
from remotemedia.remote.sessions import RunSessions

CONFIG = RemoteExecutorConfig(host="127.0.0.1", port=50052)


class Processor(Node):
    def process(self, data):
        return data


class Streamer(Node):
    is_streaming = True

    async def stream(self, frames):
        async for frame in frames:
            yield frame


class Both:
    name = "both-object"

    def process(self, data):
        return data

    async def stream(self, frames):
        async for frame in frames:
            yield frame


class OnlyStream:
    async def stream(self, frames):
        async for frame in frames:
            yield frame


def test_defaults_follow_the_wrapped_object():
    node = RemoteObjectExecutionNode(Processor(name="p"), CONFIG)
    assert (node.name, node.is_streaming, node.transport) == ("p", False, "tracks")
    assert RemoteObjectExecutionNode(Streamer(), CONFIG).is_streaming  # its own is_streaming
    assert RemoteObjectExecutionNode(Both(), CONFIG).name == "both-object"
    assert RemoteObjectExecutionNode(OnlyStream(), CONFIG, node_config={"streaming": True}).name == "OnlyStream"
    assert RemoteObjectExecutionNode(Processor(), CONFIG, name="given").name == "given"
    assert node.executor is None
    assert "Processor" in repr(node) and "127.0.0.1:50052" in repr(node)


def test_streaming_from_node_config_or_set_afterwards_as_the_specification_does():
    configured = RemoteObjectExecutionNode(
        obj_to_execute=Both(), remote_config=CONFIG, name="RemoteBoth", node_config={"streaming": True}
    )
    assert configured.is_streaming
    later = RemoteObjectExecutionNode(Both(), CONFIG)
    assert not later.is_streaming
    later.is_streaming = True
    assert later.is_streaming
    # Either way it is a valid pipeline node.
    Pipeline().add_node(configured).add_node(later)


def test_datachannel_transport():
    node = RemoteObjectExecutionNode(Streamer(), CONFIG, node_config={"streaming": True, "transport": "datachannel"})
    assert node.transport == "datachannel"


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((object(), CONFIG), TypeError, "neither process(data) nor stream(frames)"),
        ((Processor, CONFIG), TypeError, "instance, not the class"),
        ((Processor(), {"host": "x"}), TypeError, "RemoteExecutorConfig, not dict"),
        ((Processor(), CONFIG, None, {"stream": True}), TypeError, "unknown node_config keys ['stream']"),
        ((Processor(), CONFIG, None, ["streaming"]), TypeError, "node_config must be a dict"),
        ((Processor(), CONFIG, None, {"streaming": "yes"}), TypeError, "must be True or False"),
        ((OnlyStream(), CONFIG), TypeError, "node_config={'streaming': True}"),
        ((Streamer(), CONFIG, None, {"transport": "udp"}), ValueError, "['tracks', 'datachannel']"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args, error, words):
    with pytest.raises(error) as info:
        RemoteObjectExecutionNode(*args)
    assert words in str(info.value)


def test_setting_is_streaming_checks_the_wrapped_object():
    node = RemoteObjectExecutionNode(OnlyStream(), CONFIG, node_config={"streaming": True})
    with pytest.raises(TypeError, match="no process"):
        node.is_streaming = False
    assert node.is_streaming


def test_a_streaming_node_over_a_process_only_object_uploads_a_stream_of_its_process():
    processor = Processor()
    node = RemoteObjectExecutionNode(processor, CONFIG)
    assert node._uploaded() is processor
    node.is_streaming = True
    uploaded = node._uploaded()
    assert isinstance(uploaded, ProcessStream) and uploaded.node is processor
    assert cloudpickle.loads(cloudpickle.dumps(uploaded)).is_streaming


async def test_process_stream_runs_each_input_through_process_and_skips_none():
    class Halves:
        def __init__(self):
            self.initialized = self.cleaned = False

        def initialize(self):
            self.initialized = True

        def process(self, x):
            return None if x % 2 else x // 2

        async def cleanup(self):
            self.cleaned = True

    async def numbers():
        for x in range(6):
            yield x

    stream = ProcessStream(Halves())
    stream.initialize()
    outputs = [y async for y in stream.stream(numbers())]
    await stream.cleanup()
    assert outputs == [0, 1, 2]
    assert stream.node.initialized and stream.node.cleaned
    with pytest.raises(TypeError, match="no process"):
        ProcessStream(object())


def test_a_remote_node_cannot_be_wrapped_again():
    node = RemoteObjectExecutionNode(Processor(), CONFIG)
    with pytest.raises(TypeError, match="remote already"):
        RemoteObjectExecutionNode(node, CONFIG)


async def test_outside_a_pipeline_run_it_says_where_it_runs():
    node = RemoteObjectExecutionNode(Processor(), CONFIG)
    with pytest.raises(RuntimeError, match="inside a pipeline run"):
        await node.process(1)
    with pytest.raises(RuntimeError, match="inside a pipeline run"):
        await node.initialize()
    await node.cleanup()  # nothing to release: fine


def test_equal_configs_form_one_group_and_count_their_media_streams():
    other = RemoteExecutorConfig(host="127.0.0.1", port=50053)
    a = RemoteObjectExecutionNode(Streamer(), CONFIG, node_config={"streaming": True})
    b = RemoteObjectExecutionNode(Streamer(), RemoteExecutorConfig(host="127.0.0.1", port=50052))
    c = RemoteObjectExecutionNode(Streamer(), CONFIG, node_config={"transport": "datachannel"})
    d = RemoteObjectExecutionNode(Processor(), CONFIG)
    e = RemoteObjectExecutionNode(Processor(), other)
    sessions = RunSessions("p", list(enumerate([a, b, c, d, e])))
    assert [[node for _, node in g.members] for g in sessions.groups] == [[a, b, c, d], [e]]
    # Streaming nodes whose transport is 'tracks': a and b (c uses the data channel, d processes).
    assert [g.media_tracks for g in sessions.groups] == [2, 0]


def test_a_local_pipeline_never_imports_the_remote_api():
    code = (
        "import sys\n"
        "from remotemedia import Pipeline\n"
        "from remotemedia.nodes import GainNode, ToneNode\n"
        "Pipeline().add_node(ToneNode(440, 0.1)).add_node(GainNode(-6)).run()\n"
        "print(sorted(m for m in ('aiortc', 'remotemedia.remote') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
