"""
The specification's pipeline examples (sections 4 and 7) run as written,
against the embedded server (``python -m remotemedia serve``) on a free port.

Only the host and port differ from the specification's text. The models
(Whisper, TTS, Ultravox) are a later issue: the classes below are light
stand-ins with the specification's constructor signatures, defined here, so
that cloudpickle sends them to the executor by value.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from harness import ServeProcess, wait_until

from remotemedia import AudioFrame, Node
from remotemedia import Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode  # section 7's import
from remotemedia.nodes import ToneNode

TRANSCRIPT = ["hello there", "how are you today", "goodbye"]


class WhisperNode(Node):
    """Stands in for local speech recognition: a source of transcribed utterances."""

    is_streaming = True

    def __init__(self, model: str, name: str | None = None) -> None:
        super().__init__(name)
        self.model = model

    async def stream(self, frames):
        for text in TRANSCRIPT:
            yield text


class TTSNode(Node):
    """Stands in for speech synthesis: 50 ms of 24 kHz audio per character."""

    SAMPLE_RATE = 24000

    def __init__(self, model: str, name: str | None = None) -> None:
        super().__init__(name)
        self.model = model
        self.spoken = 0.0

    def process(self, text: str) -> AudioFrame:
        n = len(text) * self.SAMPLE_RATE // 20
        samples = (0.1 * np.sin(np.arange(n) * 2 * np.pi * 220 / self.SAMPLE_RATE)).astype(np.float32)
        frame = AudioFrame(samples[None, :], self.SAMPLE_RATE, timestamp=self.spoken)
        self.spoken += frame.duration
        return frame


class UltravoxNode(Node):
    """Stands in for a speech-to-text LLM: answers each audio segment it gets."""

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


class UltravoxMinDurationWrapper(Node):
    """
    Stands in for the min-duration guard: gathers audio into segments of at
    least ``min_duration_s`` for the wrapped node, and drops a shorter tail.
    """

    is_streaming = True

    def __init__(self, ultravox_node: UltravoxNode, min_duration_s: float, sample_rate: int, name: str | None = None) -> None:
        super().__init__(name)
        self.ultravox_node = ultravox_node
        self.min_duration_s = min_duration_s
        self.sample_rate = sample_rate

    def initialize(self) -> None:
        self.ultravox_node.initialize()

    async def _segments(self, frames):
        pending: list[AudioFrame] = []
        async for frame in frames:
            pending.append(frame)
            if sum(f.samples.shape[1] for f in pending) >= self.min_duration_s * frame.sample_rate:
                yield AudioFrame(np.concatenate([f.samples for f in pending], axis=1), frame.sample_rate)
                pending = []

    async def stream(self, frames):
        async for answer in self.ultravox_node.stream(self._segments(frames)):
            yield answer

    def cleanup(self) -> None:
        self.ultravox_node.cleanup()


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


def test_section_4_a_wrapped_node_instance_runs_remotely_as_a_stream(serve):
    pipeline = Pipeline("ultravox")
    pipeline.add_node(ToneNode(frequency=440, duration_s=2.5, sample_rate=16000))  # the microphone

    # Section 4, as written (but for the server's address).
    remote_config = RemoteExecutorConfig(host="127.0.0.1", port=serve.port, ssl_enabled=False)

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

    answers = pipeline.run()
    # 2.5 s of audio: two segments of at least 1 s; the 0.5 s tail is too short.
    assert answers == ["UltravoxNode heard 1.0 s"] * 2
    tone, remote = pipeline.last_run_stats
    assert (tone.location, remote.name, remote.location) == ("local", "RemoteUltravox", serve.executor)
    assert remote.outputs == 2
    no_sessions_left(serve)


def test_section_7_the_hybrid_pipeline_runs_asr_locally_and_tts_remotely(serve):
    # Section 7, as written (but for the server's address).
    remote = RemoteExecutorConfig(host="127.0.0.1", port=serve.port)

    # A local ASR node
    asr = WhisperNode(model="tiny.en")

    # Remote TTS node
    remote_tts = RemoteObjectExecutionNode(
        obj_to_execute=TTSNode(model="bark"),
        remote_config=remote,
        name="TTSRemote"
    )

    pipeline = Pipeline("speech_chain")
    pipeline.add_node(asr)
    pipeline.add_node(remote_tts)
    outputs = pipeline.run()
    # End of section 7.

    assert len(outputs) == len(TRANSCRIPT)
    spoken = 0.0
    for text, frame in zip(TRANSCRIPT, outputs):
        assert isinstance(frame, AudioFrame) and frame.sample_rate == TTSNode.SAMPLE_RATE
        assert frame.samples.shape == (1, len(text) * TTSNode.SAMPLE_RATE // 20)
        assert frame.timestamp == spoken  # the remote object keeps its state across calls
        spoken += frame.duration
    asr_stats, tts_stats = pipeline.last_run_stats
    assert (asr_stats.name, asr_stats.location) == ("WhisperNode", "local")
    assert (tts_stats.name, tts_stats.location, tts_stats.outputs) == ("TTSRemote", serve.executor, 3)
    no_sessions_left(serve)
