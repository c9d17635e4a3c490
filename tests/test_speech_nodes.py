"""WhisperNode and TTSNode with the real bundled models, locally: text -> speech -> text, formats, errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import cloudpickle
import numpy as np
import pytest

from remotemedia import AudioFrame, ModelError, Node, Pipeline, PipelineError, Transcript
from remotemedia.models import cache
from remotemedia.nodes import AudioFileSource, TTSNode, VADNode, WavWriterNode, WhisperNode
from remotemedia.nodes.files import read_audio, write_wav

from speech_samples import FIRST, SECOND, resample, speech_silence_speech, word_error_rate

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back before the end of the day tomorrow.",
]


def test_text_to_speech_to_text_keeps_the_words():
    for sentence in SENTENCES:
        transcripts = Pipeline().add_node(TTSNode(deterministic=True)).add_node(WhisperNode()).run([sentence])
        heard = " ".join(t.text for t in transcripts)
        assert word_error_rate(sentence, heard) < 0.2, heard


def test_tts_yields_20_ms_float32_frames_on_one_timeline():
    frames = Pipeline().add_node(TTSNode()).run(["One.", Transcript("Two.", 3.0, 4.0), ""])
    assert len(frames) > 20
    assert {(f.sample_rate, f.channels, f.samples.dtype) for f in frames} == {(22050, 1, np.dtype(np.float32))}
    assert all(f.num_samples == 441 for f in frames)
    expected = np.cumsum([0] + [f.num_samples for f in frames[:-1]]) / 22050
    assert np.allclose([f.timestamp for f in frames], expected)
    assert 0.5 < np.abs(np.concatenate([f.samples[0] for f in frames])).max() <= 1.0


def test_tts_speed_changes_the_duration():
    tts = TTSNode(speed=1.5)
    normal = TTSNode()
    try:
        fast = tts.synthesize(SENTENCES[0]).duration
        slow = normal.synthesize(SENTENCES[0]).duration
    finally:
        tts.cleanup()
        normal.cleanup()
    assert fast < slow * 0.8


def test_whisper_hears_two_utterances_at_48_khz_stereo_with_their_times():
    audio, rate, spans = speech_silence_speech(rate=48000)
    stereo = np.stack([audio, audio])
    frames = [AudioFrame(stereo[:, i : i + 960].copy(), rate, 10.0 + i / rate) for i in range(0, stereo.shape[1], 960)]
    transcripts = Pipeline().add_node(WhisperNode()).run(frames)
    assert [word_error_rate(text, t.text) < 0.2 for text, t in zip((FIRST, SECOND), transcripts)] == [True, True]
    assert len(transcripts) == 2
    for transcript, (start, end) in zip(transcripts, spans):
        assert abs(transcript.start - (10.0 + start)) < 0.5
        assert abs(transcript.end - (10.0 + end)) < 0.6


def test_whisper_s_short_window_hears_what_the_30_s_window_hears_with_its_times():
    samples, _, _ = speech_silence_speech(rate=16000, pause_s=0.3)
    short, full = WhisperNode(), WhisperNode(short_window=False)
    try:
        got, want = short.transcribe(samples, start=1.0), full.transcribe(samples, start=1.0)
    finally:
        short.cleanup()
        full.cleanup()
    assert word_error_rate(want.text, got.text) < 0.2, (got.text, want.text)
    assert abs(got.start - want.start) < 0.5 and abs(got.end - want.end) < 0.6


def test_whisper_s_short_window_falls_back_to_30_s_when_it_loops(monkeypatch):
    from remotemedia.nodes import whisper as module

    # A window no longer than the word itself makes Whisper repeat it ("Stop. Stop. Stop. ...").
    monkeypatch.setattr(module, "MIN_WINDOW_S", 0.0)
    monkeypatch.setattr(module, "WINDOW_MARGIN_S", 0.0)
    node = WhisperNode()
    try:
        node.initialize()
        stop = tts_samples("Stop.")
        assert node._short_window(stop) is None  # taken for a loop
        assert word_error_rate("Stop.", node.transcribe(stop).text) == 0
    finally:
        node.cleanup()


def test_what_counts_as_whisper_repeating_itself():
    from remotemedia.nodes.whisper import _loops

    assert _loops("Yeah? Yeah? Yeah? Yeah? Yeah?") and _loops("Stop. Stop. Stop. Stop")
    assert _loops("Hello there. " * 12)  # too compressible
    assert not _loops("Yeah.") and not _loops(FIRST) and not _loops("Can you recommend a good book about space travel?")


async def test_whisper_ends_a_turn_on_a_finished_sentence_before_silence_ms_confirms_it():
    heard = asyncio.Event()
    first, second = tts_samples(FIRST), tts_samples(SECOND)
    first = first[: len(first) - 4800 + 3200]  # 200 ms of silence after it: past pause_ms (90), short of silence_ms (300)
    waited = {}

    def frames(samples: np.ndarray, start: float) -> list[AudioFrame]:
        return [AudioFrame(samples[i : i + 320][np.newaxis, :], 16000, start + i / 16000) for i in range(0, len(samples) - 319, 320)]

    class Talk(Node):
        is_streaming = True

        async def stream(self, _):
            for frame in frames(first, 0.0):
                yield frame
            # The end is not confirmed yet: the transcript comes now, or (without end_on_sentence) never.
            try:
                await asyncio.wait_for(heard.wait(), 60)
                waited["heard"] = True
            except asyncio.TimeoutError:
                waited["heard"] = False
            for frame in frames(second, 10.0):
                yield frame

    class Listen(Node):
        is_streaming = True

        async def stream(self, items):
            async for item in items:
                heard.set()
                yield item

    whisper = WhisperNode(end_on_sentence=True)
    transcripts = await Pipeline().add_node(Talk()).add_node(whisper).add_node(Listen()).run_async()
    assert waited == {"heard": True}
    assert [word_error_rate(text, t.text) < 0.2 for text, t in zip((FIRST, SECOND), transcripts)] == [True, True]
    assert len(transcripts) == 2 and transcripts[1].start > transcripts[0].start  # what came after is its own utterance


def tts_samples(text: str) -> np.ndarray:
    tts = TTSNode(deterministic=True)
    try:
        frame = tts.synthesize(text)
    finally:
        tts.cleanup()
    samples = resample(frame.samples[0], frame.sample_rate, 16000).astype(np.float32)
    return np.concatenate([np.zeros(1600, np.float32), samples, np.zeros(4800, np.float32)])


def test_whisper_yields_nothing_for_silence():
    silence = [AudioFrame(np.zeros((1, 320), np.float32), 16000, i * 0.02) for i in range(100)]
    assert Pipeline().add_node(WhisperNode()).run(silence) == []


def test_audio_file_source_and_wav_writer_round_trip(tmp_path):
    audio, rate, _ = speech_silence_speech(rate=16000, pause_s=0.5)
    written = tmp_path / "in.wav"
    Pipeline().add_node(WavWriterNode(written)).run(
        [AudioFrame(audio[np.newaxis, i : i + 320].copy(), rate, i / rate) for i in range(0, len(audio), 320)]
    )
    back = read_audio(written)
    assert back[0].sample_rate == rate and sum(f.num_samples for f in back) == len(audio)
    assert np.abs(np.concatenate([f.samples[0] for f in back]) - np.clip(audio, -1, 1)).max() < 1e-3
    transcripts = Pipeline().add_node(AudioFileSource(written)).add_node(WhisperNode()).run()
    assert len(transcripts) == 2 and word_error_rate(SECOND, transcripts[1].text) < 0.2


def test_initialized_nodes_pickle_without_their_models():
    whisper, tts = WhisperNode(), TTSNode()
    whisper.initialize()
    tts.initialize()
    try:
        for node in (whisper, tts):
            copy = cloudpickle.loads(cloudpickle.dumps(node))
            assert len(cloudpickle.dumps(node)) < 10_000
            assert copy.model == node.model
    finally:
        whisper.cleanup()
        tts.cleanup()


def test_nodes_in_one_process_share_one_model():
    nodes = [WhisperNode(), WhisperNode(), TTSNode(), TTSNode()]
    for node in nodes:
        node.initialize()
    try:
        assert nodes[0]._model is nodes[1]._model and nodes[2]._voice is nodes[3]._voice
        users = {entry["key"].split(",")[0]: entry["users"] for entry in cache.info() if entry["users"]}
        assert users == {"('whisper'": 2, "('piper'": 2}
    finally:
        for node in nodes:
            node.cleanup()


# -- errors ----------------------------------------------------------------------------------


def test_a_missing_whisper_folder_says_what_to_pass():
    with pytest.raises(ModelError, match="does not exist; pass the folder") as info:
        WhisperNode("/nonexistent/whisper-model").initialize()
    assert info.value.model == "/nonexistent/whisper-model"


def test_a_whisper_model_that_cannot_be_downloaded_says_network_is_needed():
    # In a child process with the hub offline, so that no test ever downloads.
    code = (
        "from remotemedia.nodes import WhisperNode\n"
        "from remotemedia import ModelError\n"
        "try:\n    WhisperNode('base.en').initialize()\n"
        "except ModelError as exc:\n    print('ModelError:', exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "ModelError: cannot load Whisper model 'base.en'" in out.stdout, out.stderr
    assert "needs network access" in out.stdout


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("en_US-lessac-medium", "python -m piper.download_voices en_US-lessac-medium"),
        ("/nonexistent/voice.onnx", "not found"),
        ("bark", "pip install transformers torch"),
    ],
)
def test_a_missing_voice_says_how_to_get_it(model, hint):
    with pytest.raises(ModelError) as info:
        TTSNode(model).initialize()
    assert hint in str(info.value)


def test_a_model_error_in_a_pipeline_names_the_node():
    with pytest.raises(PipelineError) as info:
        Pipeline().add_node(TTSNode("en_US-nobody-low", name="Speaker")).run(["hi"])
    assert info.value.node_name == "Speaker" and isinstance(info.value.__cause__, ModelError)


@pytest.mark.parametrize(
    "build",
    [
        lambda: WhisperNode(beam_size=0),
        lambda: WhisperNode(device="gpu"),
        lambda: WhisperNode(vad=VADNode(sample_rate=8000)),
        lambda: TTSNode(speed=0),
        lambda: TTSNode(frame_ms=0),
        lambda: TTSNode(device="tpu"),
    ],
)
def test_bad_arguments_raise_at_construction(build):
    with pytest.raises(ValueError):
        build()


def test_tts_takes_only_text():
    with pytest.raises(PipelineError) as info:
        Pipeline().add_node(TTSNode()).run([42])
    assert isinstance(info.value.__cause__, TypeError)


def test_speech_resampled_to_16k_matches_the_original_rate_transcript():
    samples, rate, _ = speech_silence_speech(rate=22050, pause_s=0.3)
    whisper = WhisperNode()
    try:
        transcript = whisper.transcribe(resample(samples, rate, 16000), start=1.0)
    finally:
        whisper.cleanup()
    assert transcript.start >= 1.0 and word_error_rate(f"{FIRST} {SECOND}", transcript.text) < 0.2


def test_deterministic_speech_is_the_same_every_time():
    tts = TTSNode(deterministic=True)
    try:
        first, second = (tts.synthesize(SENTENCES[1]).samples for _ in range(2))
    finally:
        tts.cleanup()
    assert np.array_equal(first, second)


def test_audio_file_source_decodes_as_it_plays_and_adds_its_silent_tail(tmp_path):
    path = tmp_path / "odd.wav"
    samples = np.linspace(-0.5, 0.5, 16000 + 123, dtype=np.float32)
    write_wav(path, [AudioFrame(np.stack([samples, -samples]), 16000, 0.0)])
    frames = Pipeline().add_node(AudioFileSource(path, tail_s=0.1)).run()
    assert [f.num_samples for f in frames] == [320] * 50 + [123] + [320] * 5
    assert all(f.channels == 2 and f.samples.dtype == np.float32 for f in frames)
    assert np.allclose([f.timestamp for f in frames], np.cumsum([0] + [f.num_samples for f in frames[:-1]]) / 16000)
    assert not np.any(np.concatenate([f.samples for f in frames[-5:]], axis=1))
    assert np.abs(np.concatenate([f.samples[0] for f in frames[:51]]) - samples).max() < 1e-4


def test_audio_files_that_are_missing_or_not_audio_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio file"):
        AudioFileSource(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="no audio frames"):
        write_wav(tmp_path / "empty.wav", [])


class CountingWhisper(WhisperNode):
    """Records the length of the audio of each transcription (a test-local subclass)."""

    def transcribe(self, samples, start=0.0):
        self.calls = getattr(self, "calls", []) + [len(samples)]
        return super().transcribe(samples, start)


def speech_frames(rate: int = 16000, pause_s: float = 1.5) -> list[AudioFrame]:
    audio, rate, _ = speech_silence_speech(rate=rate, pause_s=pause_s)
    return [AudioFrame(audio[np.newaxis, i : i + 320].copy(), rate, i / rate) for i in range(0, len(audio), 320)]


def test_speculation_transcribes_at_the_pause_and_hears_the_same():
    early, late = CountingWhisper(), CountingWhisper(speculative=False)
    heard_early = Pipeline().add_node(early).run(speech_frames())
    heard_late = Pipeline().add_node(late).run(speech_frames())
    assert [t.text for t in heard_early] == [t.text for t in heard_late]
    assert len(early.calls) == len(late.calls) == 2
    # At the pause the utterance had no trailing padding yet: each speculation heard less.
    assert all(e < l for e, l in zip(early.calls, late.calls))


def test_a_pause_that_speech_breaks_wastes_a_speculation_but_not_the_words():
    # Silence must last 2.5 s to end speech: the 1.5 s pause between the
    # sentences is only a pause, and the utterance goes on after it.
    patient = CountingWhisper(vad=VADNode(silence_ms=2500))
    transcripts = Pipeline().add_node(patient).run(speech_frames())
    assert len(transcripts) == 1
    assert word_error_rate(f"{FIRST} {SECOND}", transcripts[0].text) < 0.2, transcripts
    wasted, used = patient.calls
    assert wasted < used  # the first sentence alone, then both


def test_early_clause_speaks_the_first_clause_on_its_own():
    from remotemedia.nodes.tts import _first_clause

    assert _first_clause("You said: What time is it?") == ("You said:", "What time is it?")
    assert _first_clause("Well, ok, fine.") == ("Well,", "ok, fine.")
    assert _first_clause("No clause here.") == ("No clause here.", "")
    assert _first_clause("Trailing colon:") == ("Trailing colon:", "")
