"""
Speech nodes on a real executor: TTS whose audio comes back over a WebRTC
audio track and is understood by a local Whisper; models shared by the
sessions of an ``inprocess`` executor; model errors reaching the client.
"""

from __future__ import annotations

import pytest
from harness import ServeProcess

from remotemedia import (
    Pipeline,
    RemoteExecutionError,
    RemoteExecutorConfig,
    RemoteObjectExecutionNode,
    RemoteProxyClient,
    Transcript,
)
from remotemedia.nodes import TTSNode, WhisperNode

from speech_samples import word_error_rate

SENTENCE = "Remote media speaks this sentence on the executor."


@pytest.fixture(scope="module", params=["process", "inprocess"])
def mode(request):
    return request.param


@pytest.fixture(scope="module")
def config(mode):
    serve = ServeProcess("--mode", mode, "--max-sessions", "4")
    try:
        yield RemoteExecutorConfig(host="127.0.0.1", port=serve.port, timeout=30.0, heartbeat_timeout=15.0)
    finally:
        serve.stop()


class CacheProbe:
    """Sent to the executor: reports its process's model cache."""

    def info(self) -> list[dict]:
        from remotemedia.models import cache

        return cache.info()


async def test_remote_tts_over_an_audio_track_is_heard_by_a_local_whisper(config):
    tts = RemoteObjectExecutionNode(TTSNode(deterministic=True), config, name="TTSRemote", node_config={"streaming": True})
    pipeline = Pipeline("remote-tts").add_node(tts)
    frames = await pipeline.run_async([Transcript(SENTENCE, 0.0, 2.0)])
    assert {(f.sample_rate, f.channels) for f in frames} == {(22050, 1)}  # restored after Opus at 48 kHz
    assert sum(f.duration for f in frames) > 1.5
    heard = await Pipeline("asr").add_node(WhisperNode()).run_async(frames)
    assert word_error_rate(SENTENCE, " ".join(t.text for t in heard)) < 0.2, heard
    stats = {s.name: s for s in pipeline.last_run_stats}
    assert stats["TTSRemote"].remote and stats["TTSRemote"].outputs == len(frames)


async def test_the_speech_chain_runs_with_whisper_local_and_tts_remote(config):
    local = await Pipeline("say").add_node(TTSNode(deterministic=True)).run_async([SENTENCE])
    pipeline = Pipeline("speech_chain")
    pipeline.add_node(WhisperNode(model="tiny.en"))
    pipeline.add_node(RemoteObjectExecutionNode(obj_to_execute=TTSNode(deterministic=True), remote_config=config, name="TTSRemote"))
    pipeline.add_node(WhisperNode())
    heard = await pipeline.run_async(local)
    assert word_error_rate(SENTENCE, " ".join(t.text for t in heard)) < 0.2, heard


async def test_sessions_of_an_inprocess_executor_share_one_loaded_voice(config, mode):
    async with RemoteProxyClient(config) as a, RemoteProxyClient(config) as b:
        voices = [await a.create_proxy(TTSNode()), await b.create_proxy(TTSNode())]
        probe = await a.create_proxy(CacheProbe())
        piper = [entry for entry in await probe.info() if entry["key"].startswith("('piper'")]
        spoken = [await voice.synthesize("Shared.") for voice in voices]
    assert all(frame.duration > 0.3 for frame in spoken)
    if mode == "process":
        assert [entry["users"] for entry in piper] == [1]  # each session's worker loads its own
    else:
        assert [(entry["users"], entry["loads"]) for entry in piper] == [(2, 1)]


async def test_a_missing_voice_on_the_executor_raises_its_model_error_here(config):
    async with RemoteProxyClient(config) as client:
        with pytest.raises(RemoteExecutionError) as info:
            await client.create_proxy(TTSNode("en_US-nobody-low"))
    assert info.value.remote_type.endswith("ModelError")
    assert "piper.download_voices en_US-nobody-low" in str(info.value)
