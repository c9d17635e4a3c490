"""
The specification's pipeline examples (sections 4 and 7) run as written,
with the real nodes, against the embedded server (``python -m remotemedia
serve``) on a free port. Only the host and port differ from the
specification's text.

This machine has no GPU and no ``transformers``: Ultravox and Bark cannot
load here, so the examples as written must fail with a ``ModelError`` that
says what to install. Then each runs through: section 4 with the real
wrapper around a light Ultravox stand-in (defined here, so cloudpickle sends
it by value), section 7 with the bundled Piper voice instead of Bark.
"""

from __future__ import annotations

import asyncio

import pytest
from harness import ServeProcess, wait_until

from remotemedia import Node, PipelineError, RemoteExecutionError
from remotemedia import Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode  # section 7's import
from remotemedia.nodes import (
    TTSNode,
    ToneNode,
    UltravoxMinDurationWrapper,
    UltravoxNode,
    WhisperNode,
)

from speech_samples import word_error_rate

SPOKEN = "Hello there, how are you today?"


class LightUltravox(Node):
    """Stands in for UltravoxNode where no GPU is: answers each utterance it gets."""

    is_streaming = True

    def __init__(self, model_id: str, system_prompt: str, buffer_duration_s: float, name: str | None = None) -> None:
        super().__init__(name)
        self.model_id = model_id
        self.system_prompt = system_prompt
        self.buffer_duration_s = buffer_duration_s

    async def stream(self, segments):
        async for segment in segments:
            seconds = min(segment.duration, self.buffer_duration_s)
            yield f"{self.name} heard {seconds:.1f} s"


@pytest.fixture(scope="module")
def serve():
    """The embedded server: a signaling server and one executor in one process."""
    server = ServeProcess()
    try:
        yield server
    finally:
        server.stop()


def no_sessions_left(server) -> None:
    asyncio.run(wait_until(lambda: server.health()["sessions"] == 0, timeout=10))


def section_4(pipeline: Pipeline, port: int, UltravoxNode=UltravoxNode) -> None:
    # Section 4, as written (but for the server's address).
    remote_config = RemoteExecutorConfig(host="127.0.0.1", port=port, ssl_enabled=False)

    ultravox_instance = UltravoxNode(
        model_id="fixie-ai/ultravox-v0_5-llama-3_1-8b",
        system_prompt="You are a helpful assistant...",
        buffer_duration_s=10.0,
        name="UltravoxNode"
    )

    protected_ultravox = UltravoxMinDurationWrapper(
        ultravox_node=ultravox_instance,
        min_duration_s=1.0,
        sample_rate=16000,
        name="ProtectedUltravox"
    )

    remote_node = RemoteObjectExecutionNode(
        obj_to_execute=protected_ultravox,
        remote_config=remote_config,
        name="RemoteUltravox",
        node_config={'streaming': True}
    )

    remote_node.is_streaming = True
    pipeline.add_node(remote_node)
    # End of section 4.


def test_section_4_as_written_says_what_the_executor_needs_for_ultravox(serve):
    pipeline = Pipeline("ultravox")
    pipeline.add_node(ToneNode(frequency=440, duration_s=0.5, sample_rate=16000))
    section_4(pipeline, serve.port)
    with pytest.raises(PipelineError) as info:
        pipeline.run()
    assert info.value.node_name == "RemoteUltravox"
    cause = info.value.__cause__
    assert isinstance(cause, RemoteExecutionError) and cause.remote_type.endswith("ModelError")
    assert "pip install 'remotemedia[ultravox]'" in str(cause)
    no_sessions_left(serve)


def test_section_4_a_wrapped_node_instance_runs_remotely_as_a_stream(serve):
    pipeline = Pipeline("ultravox")
    pipeline.add_node(ToneNode(frequency=440, duration_s=2.5, sample_rate=16000))  # the microphone
    section_4(pipeline, serve.port, UltravoxNode=LightUltravox)
    answers = pipeline.run()
    # 2.5 s of audio: two segments of at least 1 s; the 0.5 s tail is too short.
    assert answers == ["UltravoxNode heard 1.0 s"] * 2
    tone, remote = pipeline.last_run_stats
    assert (tone.location, remote.name, remote.location) == ("local", "RemoteUltravox", serve.executor)
    assert remote.outputs == 2
    no_sessions_left(serve)


def section_7(port: int, model: str = "bark") -> Pipeline:
    # Section 7, as written (but for the server's address, and the voice's name).
    remote = RemoteExecutorConfig(host="127.0.0.1", port=port)

    # A local ASR node
    asr = WhisperNode(model="tiny.en")

    # Remote TTS node
    remote_tts = RemoteObjectExecutionNode(
        obj_to_execute=TTSNode(model=model),
        remote_config=remote,
        name="TTSRemote"
    )

    pipeline = Pipeline("speech_chain")
    pipeline.add_node(asr)
    pipeline.add_node(remote_tts)
    return pipeline
    # End of section 7 (but for pipeline.run(), below).


def test_section_7_as_written_says_what_the_executor_needs_for_bark(serve):
    with pytest.raises(PipelineError) as info:
        section_7(serve.port).run()
    assert info.value.node_name == "TTSRemote"
    assert "pip install transformers torch" in str(info.value.__cause__)
    no_sessions_left(serve)


def test_section_7_the_hybrid_pipeline_runs_asr_locally_and_tts_remotely(serve):
    speech = Pipeline("microphone").add_node(TTSNode(deterministic=True)).run([SPOKEN])
    pipeline = section_7(serve.port, model="piper")
    outputs = pipeline.run(speech)
    assert sum(frame.duration for frame in outputs) > 1.0
    heard = Pipeline("check").add_node(WhisperNode()).run(outputs)
    assert word_error_rate(SPOKEN, " ".join(t.text for t in heard)) < 0.2, heard
    asr_stats, tts_stats = pipeline.last_run_stats
    assert (asr_stats.name, asr_stats.location, asr_stats.outputs) == ("WhisperNode", "local", 1)
    assert (tts_stats.name, tts_stats.location, tts_stats.outputs) == ("TTSRemote", serve.executor, len(outputs))
    no_sessions_left(serve)
