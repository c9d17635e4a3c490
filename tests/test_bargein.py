"""
Barge-in (:mod:`remotemedia.nodes.bargein`): the policy fed events and
times (no clock, no network), then :class:`LiveDemoNode` cutting a reply
when speech (Piper-synthesized) or words come in over it.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from speech_samples import SECOND, resample, say

from remotemedia import AudioFrame, Node, Transcript
from remotemedia.nodes import LiveDemoNode
from remotemedia.nodes.bargein import BargeInPolicy
from remotemedia.nodes.vad import VADEvent

# -- the policy -------------------------------------------------------------------------


def speech(time: float, ms: int = 30) -> VADEvent:
    return VADEvent("speech", np.zeros(16 * ms, np.int16), time)


def test_speech_over_a_playing_reply_interrupts_once_it_lasts_min_speech_ms():
    policy = BargeInPolicy(min_speech_ms=90)
    policy.reply_audio(now=0.0, seconds=2.0)
    # Speech is detected with a batch of frames: the VAD's speech start is its end (0.09 s).
    assert not policy.vad([speech(0.0), speech(0.03), speech(0.06)], now=0.1)
    assert not policy.vad([speech(0.09)], now=0.2)  # 30 ms heard
    assert not policy.vad([speech(0.12)], now=0.2)  # 60 ms
    assert policy.vad([speech(0.15)], now=0.2)  # 90 ms: interrupt
    assert not policy.vad([speech(0.18)], now=0.2)  # once per utterance


def test_speech_when_no_reply_plays_does_not_interrupt():
    policy = BargeInPolicy(min_speech_ms=0)
    assert not policy.vad([speech(0.0), speech(0.03)], now=5.0)
    policy.reply_audio(now=5.0, seconds=0.5)
    assert policy.playing(5.4) and not policy.playing(5.6)
    assert not policy.vad([speech(0.06)], now=5.6)


def test_a_new_utterance_may_interrupt_again_after_the_end_of_the_last():
    policy = BargeInPolicy(min_speech_ms=0)
    policy.reply_audio(now=0.0, seconds=10.0)
    assert policy.vad([speech(0.0)], now=1.0)
    assert not policy.vad([speech(0.03), VADEvent("end", None, 0.06)], now=1.0)
    assert policy.vad([speech(1.0)], now=2.0)


def test_words_interrupt_backchannels_do_not():
    policy = BargeInPolicy()
    policy.reply_audio(now=0.0, seconds=3.0)
    for backchannel in ("Mhm.", "Yeah!", "okay", "Uh-huh.", "  right "):
        assert not policy.transcript(backchannel, now=1.0), backchannel
    assert policy.transcript("Stop.", now=1.0)
    assert not policy.transcript("Stop.", now=4.0)  # nothing plays any more
    assert not BargeInPolicy(min_words=3).transcript("no wait", now=0.0)


def test_muted_while_speaking_and_a_cut_reply_stops_playing():
    policy = BargeInPolicy(mute_while_speaking=True)
    assert policy.listening(0.0)
    policy.reply_audio(now=0.0, seconds=1.0)
    assert not policy.listening(0.5)
    policy.reply_stopped()
    assert policy.listening(0.5) and not policy.playing(0.5)


def test_bad_settings_say_what_is_wrong():
    with pytest.raises(ValueError, match="min_words"):
        BargeInPolicy(min_words=0)
    with pytest.raises(ValueError, match="min_speech_ms"):
        BargeInPolicy(min_speech_ms=-1)
    with pytest.raises(TypeError, match="BargeInPolicy"):
        LiveDemoNode(None, barge_in="yes")


# -- LiveDemoNode -----------------------------------------------------------------------


class Hears(Node):
    """A stand-in recognizer: one transcript per text in ``script``, after every 25 audio frames."""

    is_streaming = True

    def __init__(self, *script: str) -> None:
        super().__init__()
        self.script = list(script)

    async def stream(self, frames):
        count = 0
        async for frame in frames:
            count += 1
            if count % 25 == 0 and self.script:
                yield Transcript(self.script.pop(0), 0.0, frame.timestamp)


class LongReply(Node):
    """A stand-in TTS: 5 s of a tone per reply, faster than real time (as Piper is)."""

    is_streaming = True

    async def stream(self, texts):
        async for _ in texts:
            for i in range(250):
                yield AudioFrame(np.full((1, 320), 0.1, np.float32), 16000, i * 0.02)
                await asyncio.sleep(0)


def silence(count: int, start: float = 0.0) -> list[AudioFrame]:
    return [AudioFrame(np.zeros((1, 320), np.float32), 16000, start + i * 0.02) for i in range(count)]


def spoken(text: str, start: float) -> list[AudioFrame]:
    samples, rate = say(text)
    samples = resample(samples, rate, 16000)
    samples = np.pad(samples, (0, -len(samples) % 320))
    return [AudioFrame(samples[i : i + 320][np.newaxis, :], 16000, start + i / 16000) for i in range(0, len(samples), 320)]


async def run(node: LiveDemoNode, frames: list, reply_started: asyncio.Event | None = None) -> list:
    out: list = []

    async def source():
        for frame in frames:
            yield frame
            await asyncio.sleep(0)

    async for item in node.stream(source()):
        out.append(item)
    return out


def split(out: list) -> tuple[list, list]:
    """Audio frames before and after the first ``interrupted``."""
    index = next(i for i, o in enumerate(out) if isinstance(o, dict) and o["type"] == "interrupted")
    return out[:index], out[index + 1 :]


async def test_words_over_a_reply_stop_it_and_are_answered():
    node = LiveDemoNode(None, transcribe=True, talkback=True, whisper=Hears("What time is it?", "Stop talking."),
                        tts=LongReply())
    out = await run(node, silence(60))
    assert {"type": "interrupted", "by": "words"} in out
    before, after = split(out)
    spoken_before = [o for o in before if isinstance(o, AudioFrame)]
    assert 0 < len(spoken_before) < 250  # the first reply was cut short
    # The interrupting words are heard (their transcript, then the cut) and answered: a new reply, spoken.
    assert [o.text for o in before if isinstance(o, Transcript)] == ["What time is it?", "Stop talking."]
    assert {"type": "reply", "text": "You said: Stop talking."} in after
    assert len([o for o in after if isinstance(o, AudioFrame)]) == 250
    assert node.interruptions == 1


async def test_a_backchannel_over_a_reply_does_not_stop_it():
    node = LiveDemoNode(None, transcribe=True, talkback=True, whisper=Hears("What time is it?", "Mhm."),
                        tts=LongReply())
    out = await run(node, silence(60))
    assert not [o for o in out if isinstance(o, dict) and o["type"] == "interrupted"]
    assert len([o for o in out if isinstance(o, AudioFrame)]) == 500  # both replies, whole


async def test_speech_over_a_reply_stops_it_before_any_words_are_recognized():
    # The recognizer answers the first 25 frames; then real speech comes in over the reply.
    node = LiveDemoNode(None, transcribe=False, talkback=True, whisper=Hears("What time is it?"), tts=LongReply(),
                        barge_in=BargeInPolicy(min_speech_ms=200))
    out = await run(node, silence(30) + spoken(SECOND, start=0.6))
    assert {"type": "interrupted", "by": "voice"} in out
    # The consumer learned at the speech's start that the reply stopped (paused), before the cut.
    assert out.index({"type": "paused", "by": "voice"}) < out.index({"type": "interrupted", "by": "voice"})


async def test_muted_while_speaking_nothing_interrupts():
    node = LiveDemoNode(None, transcribe=False, talkback=True, whisper=Hears("What time is it?"), tts=LongReply(),
                        barge_in=BargeInPolicy(min_speech_ms=0, mute_while_speaking=True))
    out = await run(node, silence(30) + spoken(SECOND, start=0.6))
    assert not [o for o in out if isinstance(o, dict) and o["type"] == "interrupted"]


# -- pausing at speech start (the voice loop's policy) ----------------------------------


def test_hear_pauses_at_speech_start_and_cuts_once_speech_lasts():
    policy = BargeInPolicy(min_speech_ms=90)
    policy.reply_audio(now=0.0, seconds=2.0)
    assert policy.hear([speech(0.0), speech(0.03), speech(0.06)], now=0.1) == "pause"
    assert policy.paused and policy.playing(5.0)  # a paused reply has not ended
    assert policy.hear([speech(0.09)], now=0.2) is None
    assert policy.hear([speech(0.15)], now=0.3) == "interrupt"
    assert not policy.paused


def test_hear_resumes_after_speech_too_short_to_cut():
    policy = BargeInPolicy(min_speech_ms=400)
    policy.reply_audio(now=0.0, seconds=1.0)
    assert policy.hear([speech(0.5), speech(0.53), speech(0.56)], now=0.6) == "pause"
    assert policy.hear([speech(0.59), VADEvent("end", None, 0.62)], now=0.9) == "resume"
    # The reply goes on where it paused: 0.4 s of it were left, paused for 0.3 s.
    assert policy.playing(1.25) and not policy.playing(1.35)
    assert policy.is_backchannel("Yeah.") and not policy.is_backchannel("Stop.")


def test_hear_does_nothing_when_no_reply_plays():
    policy = BargeInPolicy(min_speech_ms=0)
    assert policy.hear([speech(0.0), speech(0.03)], now=1.0) is None


async def test_tts_node_stops_at_an_interrupt_and_speaks_what_follows():
    from remotemedia.nodes import TTSNode
    from remotemedia.nodes.bargein import INTERRUPT

    first_frame = asyncio.Event()

    async def texts():
        yield "This is a long reply. It has two sentences, and it goes on for quite a while."
        await first_frame.wait()
        yield INTERRUPT
        yield "Short."

    out = []
    tts = TTSNode(deterministic=True, marks=True)
    try:
        async for item in tts.stream(texts()):
            out.append(item)
            if isinstance(item, AudioFrame):
                first_frame.set()
                await asyncio.sleep(0.01)  # a consumer slower than synthesis: the reply is cut mid-way
    finally:
        tts.cleanup()  # the voice goes back to the process's cache
    marks = [o for o in out if isinstance(o, dict)]
    assert [m["type"] for m in marks] == ["speaking", "interrupted", "speaking"], marks
    assert marks[1]["reply"] == 1 and marks[2]["reply"] == 2
    cut_at = out.index(marks[1])
    first = [o for o in out[:cut_at] if isinstance(o, AudioFrame)]
    second = [o for o in out[cut_at:] if isinstance(o, AudioFrame)]
    whole, rate = say("This is a long reply. It has two sentences, and it goes on for quite a while.")
    assert 0 < sum(f.duration for f in first) < len(whole) / rate - 1.0  # cut well before its end
    assert second and second[0].timestamp == marks[2]["audio_from"] >= marks[1]["audio_until"]
