"""
examples/voice_loop.py: the loop run as a user runs it (a real process with
the embedded server), and its latency bookkeeping fed by hand.
"""

from __future__ import annotations

import re
import sys
import wave

import numpy as np
import pytest
from test_examples import ROOT, run

sys.path.insert(0, str(ROOT / "examples"))

import voice_loop  # noqa: E402

from remotemedia import AudioFrame, RemoteExecutorConfig, Transcript  # noqa: E402

#: Words of each synthesized question (voice_loop.QUESTIONS) that the transcript must hold.
SPOKEN = ({"time", "library", "open", "tomorrow"}, {"recommend", "book", "space", "travel"})


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_voice_loop_answers_each_question_with_speech(tmp_path):
    output = tmp_path / "reply.wav"
    result = run([sys.executable, str(ROOT / "examples" / "voice_loop.py"), "--serve", "--output", str(output)])
    lines = result.stdout.splitlines()

    def starting(word: str) -> list[str]:
        return [line for line in lines if line.split(maxsplit=1)[:1] == [word]]

    heard = [line.split("] ", 1)[1] for line in starting("heard")]
    assert len(heard) == 2, result.stdout
    for transcript, spoken in zip(heard, SPOKEN):
        assert spoken <= words(transcript), (transcript, result.stdout)
    replies = [line.split(maxsplit=1)[1] for line in starting("reply")]
    assert replies == [f"You said: {text}" for text in heard], result.stdout
    turns = starting("turn")
    assert [line.split()[1] for line in turns] == ["1", "2"], result.stdout
    assert all(re.search(r"voice-to-voice +\d+ ms", line) for line in turns), result.stdout
    nodes = {line.split()[1]: line for line in starting("node")}
    assert "remote (embedded-" in nodes["WhisperRemote"] and "remote (embedded-" in nodes["TTSRemote"]
    with wave.open(str(output)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (22050, 1)
        seconds = wav.getnframes() / wav.getframerate()
    # Two replies of "You said: " and a short question: a few seconds each.
    assert 3.0 < seconds < 15.0, seconds
    assert f"{seconds:.2f} s at 22050 Hz -> {output}" in result.stdout


#: A long question (a long reply), words over its reply, then a backchannel over the reply to those words.
BARGE = (
    "Please tell me everything you know about the history of the old city library and all of its many books.",
    "Stop please, tell me instead about the long journey of the first rockets into space, and about the brave "
    "people who flew them to the moon and back.",
    "Yeah.",
)
#: Seconds from the end of each to the start of the next: a reply comes 1-4 s after the end of
#: speech (on a loaded machine) and echoes it (6 s and 9 s of speech), so each falls in a reply.
BARGE_PAUSES = (4.0, 5.0)


def test_speech_over_a_reply_cuts_it_and_is_answered_and_a_backchannel_does_not(tmp_path):
    source = tmp_path / "barge.wav"
    voice_loop.synthesize_questions(str(source), BARGE, pause_s=BARGE_PAUSES)
    result = run([sys.executable, str(ROOT / "examples" / "voice_loop.py"), "--serve", "--input", str(source),
                  "--output", str(tmp_path / "reply.wav")])
    lines = result.stdout.splitlines()
    cuts = [line for line in lines if line.startswith("barge-in   reply") and " cut by " in line]
    assert len(cuts) == 1 and cuts[0].startswith("barge-in   reply 1 cut by"), result.stdout
    assert re.search(r"audio stopped here \d+ ms after the speech's onset", cuts[0]), result.stdout
    # The interrupting words are heard and answered.
    heard = [line.split("] ", 1)[1] for line in lines if line.startswith("heard ")]
    assert len(heard) == 2 and {"rockets", "space", "moon"} <= words(heard[1]), result.stdout
    assert f"reply      You said: {heard[1]}" in lines, result.stdout
    # The backchannel over the second reply pauses it at most, and is not answered.
    assert any(line.startswith("backchannel") and "yeah" in line.lower() for line in lines), result.stdout
    assert not any(line.startswith("barge-in   reply 2 cut") for line in lines), result.stdout


class Clock:
    """A clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_turn_is_timed_from_the_last_end_of_speech_played_to_its_reply_s_first_frame():
    clock = Clock()
    conversation = voice_loop.Conversation(speech_ends=[0.05, 0.15], quiet=True, clock=clock)
    frame = np.zeros((1, 320), np.float32)
    for i in range(10):  # the source plays 0.2 s in 20 ms frames, from wall time 100
        clock.now = 100 + i * 0.02
        conversation.played(AudioFrame(frame, 16000, i * 0.02))
    clock.now = 100.6
    turn = conversation.heard(Transcript("hello", 0.1, 0.15), "You said: hello")
    assert (turn.speech_end, turn.spoken_at) == (0.15, pytest.approx(100.15))  # the last end played
    # The reply starts at stream time 1.0; the previous reply's last frame
    # (0.98-1.00), which a jitter buffer held, comes first, with it.
    conversation.marked({"reply": 1, "audio_from": 1.0, "tts_s": 0.1})
    clock.now = 101.0
    conversation.arrived(AudioFrame(frame, 16000, 0.98))
    assert turn.answered_at is None
    clock.now = 101.01
    conversation.arrived(AudioFrame(frame, 16000, 1.0))
    assert turn.latency == pytest.approx(101.01 - 100.15)
    conversation.arrived(AudioFrame(frame, 16000, 1.02))
    assert turn.answered_at == 101.01


def test_a_mark_that_comes_after_its_first_frame_still_times_the_turn():
    clock = Clock()
    conversation = voice_loop.Conversation(speech_ends=[0.01], quiet=True, clock=clock)
    conversation.played(AudioFrame(np.zeros((1, 320), np.float32), 16000, 0.0))
    clock.now = 1.0
    turn = conversation.heard(None, "a reply from a speech LLM")
    clock.now = 2.0
    conversation.arrived(AudioFrame(np.zeros((1, 441), np.float32), 22050, 0.0))
    assert turn.answered_at is None  # which reply it starts is not known yet
    clock.now = 2.5
    conversation.marked({"reply": 1, "audio_from": 0.0, "tts_s": 0.1})
    assert turn.latency == pytest.approx(2.0 - 0.01)


def test_the_ultravox_loop_builds_without_loading_its_model(tmp_path):
    source = tmp_path / "silence.wav"
    voice_loop.write_wav(source, [AudioFrame(np.zeros((1, 1600), np.float32), 16000, 0.0)])
    config = RemoteExecutorConfig(host="127.0.0.1", port=1)
    conversation = voice_loop.Conversation([], quiet=True)
    pipeline = voice_loop.build(str(source), str(tmp_path / "out.wav"), config, conversation, ultravox="some/model")
    assert "UltravoxRemote" in repr(pipeline) and "TTSRemote" in repr(pipeline)
