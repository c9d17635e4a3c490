"""
Voice loop: microphone-style audio in, speech recognition and speech
synthesis on the executor, a spoken reply out, and the voice-to-voice
latency of every turn.

    mic (a WAV played in real time) -> WhisperNode (remote, its VAD inside)
        -> Reply (local: "You said: ...") -> TTSNode (remote) -> reply.wav

The microphone is an ``AudioFileSource`` that plays a WAV at the pace of
the clock, as a speaker would talk, and its audio goes to the executor on a
WebRTC audio track (Opus). There a ``WhisperNode`` cuts it into utterances
with its ``VADNode`` (an utterance ends after ``--silence-ms`` of silence)
and sends each transcript back on the data channel. The local ``Reply``
node is where a dialogue model goes; here it only repeats what it heard.
The reply text goes to a ``TTSNode`` on the executor, whose audio comes
back on an audio track and is written to ``--output``. Without ``--input``,
two questions are synthesized with a local ``TTSNode``, with a pause
between them, so the loop answers twice.

On a GPU executor, a speech LLM takes the place of Whisper and the reply
node: ``--ultravox MODEL_ID`` runs VADNode -> UltravoxMinDurationWrapper(
UltravoxNode) on the executor (one remote object, so that an utterance
never leaves the executor), whose reply text goes to the same TTSNode.

**Barge-in**: speak over a reply and it stops. The microphone's frames go
through a local VAD (:class:`~remotemedia.nodes.bargein.SpeechStarts`) as
they are played, and a :class:`~remotemedia.nodes.bargein.BargeInPolicy`
decides (:meth:`~remotemedia.nodes.bargein.BargeInPolicy.hear`): at the
VAD's speech start the reply *pauses* here at once (its frames are held);
once the speech has lasted ``min_speech_ms``, or its transcript has words
that are not a backchannel, the reply is *cut*: held and arriving frames of
it are dropped, and :data:`~remotemedia.nodes.bargein.INTERRUPT` goes to
the remote TTS node, which stops synthesizing and answers ``{"type":
"interrupted"}``; speech that ends sooner (a "yeah") lets the reply
*resume*, and a backchannel is not answered. Each barge-in prints how long
after the speech's onset the reply audio stopped. ``--no-barge-in`` turns
it off; ``--input`` with speech over the replies tries it.

Voice-to-voice latency, per turn: from the moment the source played the
end of the user's speech to the arrival, at the end of the pipeline, of
the reply's first audio frame. Where speech ends in the file is found with
WebRTC's VAD (the loop's settings, no padding); when the source played it
is known because the source is paced to the clock (a probe after it notes
when each frame left). Where the reply's audio starts is told by the remote
TTS node itself: before each reply's first frame it yields a mark (on the
data channel) with that frame's stream time, which the track keeps. The
remote nodes also say how long Whisper took on each utterance and the TTS
on each reply's first sentence, so each turn's time splits into the VAD's
wait, the models' work, and what is left: transport.

    python -m remotemedia serve &                   # the embedded server, on localhost:50052
    python examples/voice_loop.py                   # connects to localhost:50052
    python examples/voice_loop.py --serve           # starts the embedded server itself, then stops it
    python examples/voice_loop.py --input question.wav --output answer.wav --host 10.0.0.12
    python examples/voice_loop.py --ultravox fixie-ai/ultravox-v0_5-llama-3_1-8b --host GPU_HOST
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from typing import Any, AsyncIterator, Callable

import numpy as np
from _embedded import add_server_arguments, server_config, run_main

from remotemedia import AudioFrame, Node, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, Transcript
from remotemedia.nodes import AudioFileSource, TTSNode, VADNode, WavWriterNode, WhisperNode
from remotemedia.nodes.bargein import INTERRUPT, BargeInPolicy, SpeechStarts, is_interrupted
from remotemedia.nodes.files import read_audio, write_wav

QUESTIONS = ("What time does the library open tomorrow?", "Can you recommend a good book about space travel?")
#: Seconds of silence before the first question and between questions (long enough for a reply to play).
LEAD_S, PAUSE_S = 0.5, 4.5
#: How the remote nodes run (their remote configs are equal, so they share one session).
STREAMING = {"streaming": True, "transport": "tracks"}


def synthesize_questions(path: str, texts: tuple[str, ...] = QUESTIONS, pause_s: float | tuple = PAUSE_S) -> None:
    """Speak ``texts`` into one WAV with a local TTSNode, ``pause_s`` of silence between them (or one per gap)."""
    tts = TTSNode(deterministic=True)
    tts.initialize()
    try:
        spoken = [tts.synthesize(text) for text in texts]
    finally:
        tts.cleanup()
    rate = spoken[0].sample_rate
    parts = [np.zeros(round(LEAD_S * rate), np.float32)]
    for i, frame in enumerate(spoken):
        parts.append(frame.samples[0])
        if i < len(spoken) - 1:
            pause = pause_s[i] if isinstance(pause_s, tuple) else pause_s
            parts.append(np.zeros(round(pause * rate), np.float32))
    write_wav(path, [AudioFrame(np.concatenate(parts)[np.newaxis, :], rate, 0.0)])


async def speech_ends(path: str, silence_ms: int, trim: bool = True) -> list[float]:
    """
    Where each utterance in an audio file ends, in seconds: the loop's VAD
    without its padding, each utterance then trimmed to its last 10 ms
    within 30 dB of its loudest (WebRTC's VAD goes on calling a few frames
    speech after the voice stops: its hangover, about 100 ms). ``trim=False``
    gives the VAD's own ends.
    """

    async def frames() -> AsyncIterator[AudioFrame]:
        for frame in await asyncio.to_thread(read_audio, path):
            yield frame

    ends = []
    async for segment in VADNode(silence_ms=silence_ms, padding_ms=0).segments(frames()):
        if not trim:
            ends.append(segment.timestamp + segment.duration)
            continue
        size = segment.sample_rate // 100
        windows = segment.samples[0, : len(segment.samples[0]) // size * size].reshape(-1, size)
        level = 10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12)
        last = np.nonzero(level >= level.max() - 30)[0][-1]
        ends.append(segment.timestamp + (last + 1) * size / segment.sample_rate)
    return ends


# -- the turns, and the nodes that time them ---------------------------------------------


@dataclasses.dataclass
class Turn:
    """One exchange: what was heard, what was said back, and when (readings of the conversation's clock)."""

    number: int
    """1 for the first turn."""

    heard: Transcript | None
    """The transcript (``None`` when a speech LLM replied to the audio itself)."""

    reply: str
    """The reply text sent to the TTS node."""

    speech_end: float | None
    """Where the user's speech ended, in seconds into the input (``None``: not found)."""

    spoken_at: float | None
    """When the source played that moment."""

    heard_at: float
    """When the transcript (or the speech LLM's reply) reached the reply node."""

    asr_s: float | None = None
    """Seconds Whisper took on the utterance, on the executor (``None`` with a speech LLM)."""

    ended: str = "silence"
    """How the turn's end was found: ``"silence"`` (the VAD's ``silence_ms``) or ``"sentence"`` (at a pause, on a finished sentence)."""

    audio_from: float | None = None
    """Stream time of the reply's first audio frame, as the TTS node's mark told it."""

    tts_s: float | None = None
    """Seconds the TTS node took from the reply text to its first audio (the first sentence), on the executor."""

    answered_at: float | None = None
    """When the reply's first audio frame reached the end of the pipeline."""

    @property
    def latency(self) -> float | None:
        """Voice to voice: the end of the user's speech to the first reply audio, in seconds."""
        if self.spoken_at is None or self.answered_at is None:
            return None
        return self.answered_at - self.spoken_at


@dataclasses.dataclass
class BargeIn:
    """A reply paused, and maybe cut, by speech over it (readings of the conversation's clock)."""

    reply: int
    """The turn whose reply it was (the last turn when the speech started)."""

    onset_at: float | None
    """
    When the source played the first voiced frame of the speech, or when the reply began playing if
    that was later (``None``: words alone cut it).
    """

    stopped_at: float
    """When the reply's audio stopped here (paused, or cut at once)."""

    cut_at: float | None = None
    """When the reply was cut (``None``: it resumed)."""

    by: str | None = None
    """``"voice"`` or ``"words"``: what cut it."""

    resumed_at: float | None = None
    """When a pause ended with the reply going on."""

    remote_at: float | None = None
    """When the TTS node's ``interrupted`` arrived."""

    last_frame_at: float | None = None
    """When the last frame of the cut reply in flight arrived here (and was dropped)."""

    dropped_s: float = 0.0
    """Seconds of the cut reply's audio dropped here (held while paused, or in flight)."""

    @property
    def reaction_ms(self) -> float:
        """From the speech's onset to the reply's audio stopped, in ms."""
        return (self.stopped_at - self.onset_at) * 1e3 if self.onset_at is not None else 0.0


class Conversation:
    """The turns of one run, and the clock readings that time them (shared by the probe nodes)."""

    def __init__(
        self, speech_ends: list[float], quiet: bool = False, clock: Callable[[], float] = time.perf_counter,
        barge_in: BargeInPolicy | None = None,
    ) -> None:
        self.speech_ends = speech_ends
        self.quiet = quiet
        self.clock = clock
        self.turns: list[Turn] = []
        #: What stops a reply (``None``: nothing does).
        self.policy = barge_in
        #: Every pause and cut of a reply, in order.
        self.barges: list[BargeIn] = []
        self._hearing = SpeechStarts() if barge_in is not None else None
        self._onset: float | None = None  # when the open utterance's first voiced frame was played
        #: INTERRUPTs for the reply node to send on (to the TTS node); control words for the speaker.
        self.to_tts: asyncio.Queue = asyncio.Queue()
        self.to_speaker: asyncio.Queue = asyncio.Queue()
        self._played: list[tuple[float, float, float]] = []  # source frames: (start, end, when)
        self._starts: list[float] = []
        self._arrivals: list[tuple[float, float]] = []  # reply frames: (end, when)
        self._asr_s: float | None = None  # the next transcript's, told before it
        self._ended = "silence"  # how the next transcript's utterance ended, told before it

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def played(self, frame: AudioFrame) -> None:
        self._played.append((frame.timestamp, frame.timestamp + frame.duration, self.clock()))
        self._starts.append(frame.timestamp)

    def played_at(self, t: float) -> float | None:
        """When the source played second ``t`` of its input, or ``None`` if it has not yet."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0 or t > self._played[i][1]:
            return None
        start, _, when = self._played[i]
        return when + (t - start)

    # -- barge-in ----------------------------------------------------------------------

    def listen(self, frame: AudioFrame) -> None:
        """A microphone frame, just played: its voice activity may pause, cut or resume the reply."""
        if self._hearing is None:
            return
        events = self._hearing.feed(frame)
        for event in events:
            if event.kind == "speech" and self._onset is None:
                self._onset = self.played_at(event.time)
            elif event.kind == "end":
                self._onset = None
        onset = self._heard_from(self._onset)
        decision = self.policy.hear(events, self.clock())
        if decision == "pause":
            self.barges.append(BargeIn(len(self.turns), onset, self.clock()))
            self.to_speaker.put_nowait("pause")
        elif decision == "resume" and self.barges:
            barge = self.barges[-1]
            barge.resumed_at = self.clock()
            self.to_speaker.put_nowait("resume")
            self.say(f"barge-in   reply {barge.reply} paused {barge.reaction_ms:.0f} ms after a sound's onset, "
                     f"resumed {(barge.resumed_at - barge.stopped_at) * 1e3:.0f} ms later (shorter than "
                     f"{self.policy.min_speech_ms:.0f} ms of speech)")
        elif decision == "interrupt":
            self.cut("voice", onset)

    def _heard_from(self, onset: float | None) -> float | None:
        """Speech heard over the reply from its onset, or from the reply's start if it began over the speech."""
        started = self.turns[-1].answered_at if self.turns else None
        return max(onset, started) if onset is not None and started is not None else onset

    def cut(self, by: str, onset: float | None = None, tell_tts: bool = True) -> None:
        """Stop the reply playing: drop its audio here and (unless the caller does) tell the TTS node."""
        now = self.clock()
        barge = self.barges[-1] if self.barges and self.barges[-1].cut_at is None and self.barges[-1].resumed_at is None else None
        if barge is None:
            barge = BargeIn(len(self.turns), onset, now)
            self.barges.append(barge)
        barge.cut_at, barge.by = now, by
        self.policy.reply_stopped()
        self.to_speaker.put_nowait(("cut", len(self.turns)))
        if tell_tts:
            self.to_tts.put_nowait(dict(INTERRUPT))
        after = f"{barge.reaction_ms:.0f} ms after the speech's onset" if barge.onset_at is not None else "at once"
        self.say(f"barge-in   reply {barge.reply} cut by {by}: its audio stopped here {after} "
                 f"(cut {(now - barge.stopped_at) * 1e3:.0f} ms after it paused)")

    def cut_confirmed(self, mark: dict) -> None:
        """The TTS node's ``interrupted``: it stopped synthesizing."""
        for barge in reversed(self.barges):
            if barge.cut_at is not None:
                barge.remote_at = self.clock()
                self.say(f"barge-in   reply {mark.get('reply')}: the executor stopped its synthesis "
                         f"{(barge.remote_at - barge.cut_at) * 1e3:.0f} ms after the cut")
                return

    def dropped(self, frame: AudioFrame) -> None:
        """A frame of a cut reply arrived (and was dropped)."""
        if self.barges:
            barge, now = self.barges[-1], self.clock()
            # A jitter buffer hands over a reply's last packet only when the next reply's come:
            # that one is dropped too, but it was not in flight.
            if barge.last_frame_at is None or now - barge.last_frame_at < 0.5:
                barge.last_frame_at = now
            barge.dropped_s += frame.duration

    def heard(self, heard: Transcript | None, reply: str) -> Turn:
        """A new turn: the last end of speech the source has played is what it answers."""
        now = self.clock()
        ends = [(at, end) for end in self.speech_ends if (at := self.played_at(end)) is not None and at <= now]
        spoken_at, speech_end = ends[-1] if ends else (None, None)
        turn = Turn(len(self.turns) + 1, heard, reply, speech_end, spoken_at, now, asr_s=self._asr_s, ended=self._ended)
        self._asr_s, self._ended = None, "silence"
        self.turns.append(turn)
        return turn

    def transcribed(self, mark: dict) -> None:
        """The Whisper node's mark: how long it took on the next transcript's utterance."""
        self._asr_s = mark["asr_s"]
        self._ended = mark.get("ended", "silence")

    def marked(self, mark: dict) -> None:
        """The TTS node's mark: where reply number ``mark["reply"]``'s audio starts, and how long it took."""
        turn = self.turns[mark["reply"] - 1]
        turn.audio_from, turn.tts_s = mark["audio_from"], mark["tts_s"]
        # Data channel and track race: the frame may have come first.
        for end, when in self._arrivals:
            if self._answers(turn, end, when):
                break

    def arrived(self, frame: AudioFrame) -> None:
        end, when = frame.timestamp + frame.duration, self.clock()
        self._arrivals.append((end, when))
        for turn in self.turns:
            self._answers(turn, end, when)

    def _answers(self, turn: Turn, end: float, when: float) -> bool:
        # A frame answers a turn when it holds more than 10 ms of its reply
        # (the codec shifts samples by a few ms, so the previous reply's last
        # frame, which a jitter buffer may hand over only now, may overlap it).
        if turn.answered_at is not None or turn.audio_from is None or end <= turn.audio_from + 0.010:
            return False
        turn.answered_at = when
        if turn.latency is not None:
            heard_after = turn.heard_at - turn.spoken_at
            asr = f", Whisper {turn.asr_s * 1e3:.0f} ms of it" if turn.asr_s is not None else ""
            self.say(
                f"turn {turn.number:<5} voice-to-voice {turn.latency * 1e3:4.0f} ms (speech ended at "
                f"{turn.speech_end:.2f} s; heard {heard_after * 1e3:.0f} ms later{asr}; first reply audio "
                f"{(turn.latency - heard_after) * 1e3:.0f} ms after that, TTS {turn.tts_s * 1e3:.0f} ms of it)"
            )
        else:
            self.say(f"turn {turn.number:<5} reply audio arrived (no end of speech found for it in the input)")
        return True


class Microphone(Node):
    """Notes when each frame left the source (the source is paced to the clock)."""

    def __init__(self, conversation: Conversation) -> None:
        super().__init__("Microphone")
        self.conversation = conversation

    async def process(self, frame: AudioFrame) -> AudioFrame:
        self.conversation.played(frame)
        self.conversation.listen(frame)
        return frame


class Reply(Node):
    """
    What to say back: "You said: ..." for a transcript (a dialogue model
    would go here); a ``str`` (a speech LLM's reply) goes on as it is.
    Words over a playing reply cut it (the policy's words rule); a
    backchannel over it is not answered. Barge-in's INTERRUPTs for the TTS
    node go out here too.
    """

    is_streaming = True

    def __init__(self, conversation: Conversation) -> None:
        super().__init__("Reply")
        self.conversation = conversation

    async def stream(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in _merge(items, self.conversation.to_tts):
            if isinstance(item, dict) and item.get("type") == "interrupt":
                yield item
                continue
            cut, reply = self.answer(item)
            if cut:
                yield dict(INTERRUPT)  # before the reply to the words that cut, which must be spoken
            if reply is not None:
                yield reply

    def answer(self, heard: Transcript | str | dict) -> tuple[bool, str | None]:
        """Whether the words cut the reply playing, and what to say back (``None``: nothing)."""
        conversation = self.conversation
        if isinstance(heard, dict):
            conversation.transcribed(heard)
            return False, None
        transcript = heard if isinstance(heard, Transcript) else None
        policy, now, cut = conversation.policy, conversation.clock(), False
        if transcript is not None and policy is not None and policy.playing(now):
            if policy.transcript(heard.text, now):
                conversation.cut("words", tell_tts=False)
                cut = True
            elif policy.is_backchannel(heard.text):
                conversation.say(f"backchannel [{heard.start:5.2f}-{heard.end:5.2f} s] {heard.text} (not answered)")
                return False, None
        reply = f"You said: {heard.text}" if transcript is not None else heard
        conversation.heard(transcript, reply)
        if transcript is not None:
            conversation.say(f"heard      [{heard.start:5.2f}-{heard.end:5.2f} s] {heard.text}")
        conversation.say(f"reply      {reply}")
        return cut, reply


class Speaker(Node):
    """
    The player: notes when reply audio and the TTS node's marks arrive, and
    does what barge-in says: holds the reply's frames while it is paused,
    plays them on when it resumes, drops them once it is cut (until the
    next reply's first frame).
    """

    is_streaming = True

    def __init__(self, conversation: Conversation) -> None:
        super().__init__("Speaker")
        self.conversation = conversation

    async def stream(self, items: AsyncIterator[Any]) -> AsyncIterator[Any]:
        conversation = self.conversation
        held: list[AudioFrame] = []
        paused = False
        cut_before: float | None = None  # frames before this stream time belong to a cut reply
        cutting = 0  # the reply cut, while the next reply's start is not known yet
        async for item in _merge(items, conversation.to_speaker):
            if item == "pause":
                paused = True
            elif item == "resume":
                paused = False
                for frame in held:
                    yield self._play(frame)
                held.clear()
            elif isinstance(item, tuple) and item[0] == "cut":
                paused, cutting = False, item[1]
                for frame in held:
                    conversation.dropped(frame)
                held.clear()
            elif isinstance(item, AudioFrame):
                if cutting or (cut_before is not None and item.timestamp < cut_before - 0.010):
                    conversation.dropped(item)
                elif paused:
                    held.append(item)
                else:
                    yield self._play(item)
            elif isinstance(item, dict) and item.get("type") == "speaking":
                if cutting and item["reply"] > cutting:
                    cutting, cut_before = 0, item["audio_from"]
                conversation.marked(item)
            elif is_interrupted(item):
                conversation.cut_confirmed(item)
            else:
                yield item

    def _play(self, frame: AudioFrame) -> AudioFrame:
        conversation = self.conversation
        conversation.arrived(frame)
        if conversation.policy is not None:
            conversation.policy.reply_audio(conversation.clock(), frame.duration)
        return frame


_END = object()


async def _merge(items: AsyncIterator[Any], controls: asyncio.Queue) -> AsyncIterator[Any]:
    """``items`` and whatever is put in ``controls`` meanwhile, as they come; ends with ``items``."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in items:
                queue.put_nowait(item)
        finally:
            queue.put_nowait(_END)

    async def relay() -> None:
        while True:
            queue.put_nowait(await controls.get())

    tasks = [asyncio.create_task(pump()), asyncio.create_task(relay())]
    try:
        while (item := await queue.get()) is not _END:
            yield item
        await tasks[0]  # the input's error, if any
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class TimedWhisper(WhisperNode):
    """
    A WhisperNode that yields, before each transcript, a mark ``{"asr_s": s,
    "ended": how}``: the seconds it took, and whether its utterance ended on
    the VAD's ``silence_ms`` or at a pause, on a finished sentence
    (``end_on_sentence``: off by default, see :class:`~remotemedia.nodes.whisper.WhisperNode`).
    """

    def transcribe(self, samples: np.ndarray, start: float = 0.0) -> Transcript | None:
        started = time.perf_counter()
        try:
            return super().transcribe(samples, start)
        finally:
            self.took = time.perf_counter() - started

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for transcript in super().stream(frames):
            yield {"asr_s": self.took, "ended": self.turn_ended}
            yield transcript


class SpokenReplies(Node):
    """
    VADNode -> UltravoxMinDurationWrapper(UltravoxNode) as one object, so
    that it runs on the executor as one remote node: audio in (over a
    track), reply text out, and no utterance ever travels back and forth.
    """

    is_streaming = True

    def __init__(self, vad: VADNode, replier: Any) -> None:
        super().__init__("SpokenReplies")
        self.vad = vad
        self.replier = replier

    def initialize(self) -> Any:
        return self.replier.initialize()

    def cleanup(self) -> Any:
        return self.replier.cleanup()

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[str]:
        async for reply in self.replier.stream(self.vad.segments(frames)):
            yield reply


# -- the loop -----------------------------------------------------------------------------


def build(source: str, output: str, remote: RemoteExecutorConfig, conversation: Conversation, *,
          silence_ms: int = 300, tail_s: float = 1.0, ultravox: str | None = None,
          early_clause: bool = True, end_on_sentence: bool = False) -> Pipeline:
    """The voice loop's pipeline (see the module docstring)."""
    vad = VADNode(silence_ms=silence_ms)
    if ultravox is None:
        whisper = TimedWhisper(vad=vad, end_on_sentence=end_on_sentence)
        listener = RemoteObjectExecutionNode(whisper, remote, name="WhisperRemote", node_config=STREAMING)
    else:
        # Imported only here: a GPU executor's model, and its module is optional.
        from remotemedia.nodes.ultravox import UltravoxMinDurationWrapper, UltravoxNode

        replier = UltravoxMinDurationWrapper(UltravoxNode(model_id=ultravox))
        listener = RemoteObjectExecutionNode(
            SpokenReplies(vad, replier), remote, name="UltravoxRemote", node_config=STREAMING
        )
    return (
        Pipeline("voice_loop")
        .add_node(AudioFileSource(source, realtime=True, tail_s=tail_s))
        .add_node(Microphone(conversation))
        .add_node(listener)
        .add_node(Reply(conversation))
        .add_node(RemoteObjectExecutionNode(TTSNode(marks=True, early_clause=early_clause), remote, name="TTSRemote", node_config=STREAMING))
        .add_node(Speaker(conversation))
        .add_node(WavWriterNode(output))
    )


@dataclasses.dataclass
class LoopRun:
    """What one run of the loop produced."""

    turns: list[Turn]
    """The turns, in order."""

    frames: list[AudioFrame]
    """The reply audio, as it arrived."""

    pipeline: Pipeline
    """The pipeline (``last_run_stats`` tells where each node ran)."""

    elapsed: float
    """Seconds the run took, connecting and loading models included."""

    barges: list[BargeIn] = dataclasses.field(default_factory=list)
    """Replies paused or cut by speech over them."""


async def run_loop(source: str, output: str, remote: RemoteExecutorConfig, *, silence_ms: int = 300,
                   tail_s: float = 1.0, ultravox: str | None = None, quiet: bool = False,
                   barge_in: BargeInPolicy | None = None, early_clause: bool = True,
                   end_on_sentence: bool = False) -> LoopRun:
    """Run the voice loop on the WAV ``source``, writing the spoken replies to ``output``; ``barge_in``: see the module docstring."""
    conversation = Conversation(await speech_ends(source, silence_ms), quiet=quiet, barge_in=barge_in)
    pipeline = build(source, output, remote, conversation, silence_ms=silence_ms, tail_s=tail_s, ultravox=ultravox,
                     early_clause=early_clause, end_on_sentence=end_on_sentence)
    started = time.perf_counter()
    outputs = await pipeline.run_async()
    elapsed = time.perf_counter() - started
    frames = [item for item in outputs if isinstance(item, AudioFrame)]
    return LoopRun(conversation.turns, frames, pipeline, elapsed, conversation.barges)


def summarize(run: LoopRun, output: str) -> None:
    """Print where each node ran, the latencies and the reply audio."""
    for stats in run.pipeline.last_run_stats:
        where = f"remote ({stats.location})" if stats.remote else stats.location
        print(f"node       {stats.name:<18} {where:<28} in {stats.inputs:>4}  out {stats.outputs:>4}")
    latencies = [turn.latency * 1e3 for turn in run.turns if turn.latency is not None]
    if latencies:
        print(
            f"latency    {len(latencies)} turn(s), voice-to-voice median {statistics.median(latencies):.0f} ms, "
            f"max {max(latencies):.0f} ms (end of speech played -> first reply audio here)"
        )
    cut = [barge for barge in run.barges if barge.cut_at is not None and barge.onset_at is not None]
    if cut:
        print(f"barge-in   {len(cut)} cut, {len(run.barges) - len(cut)} resumed; reply audio stopped here "
              f"{statistics.median(b.reaction_ms for b in cut):.0f} ms (median) after the speech's onset")
    seconds = sum(frame.duration for frame in run.frames)
    rate = run.frames[0].sample_rate if run.frames else 0
    print(f"output     {len(run.frames)} frames, {seconds:.2f} s at {rate} Hz -> {output}")
    print(f"total      {run.elapsed:.2f} s, connecting, loading models and real-time playback included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--input", help="a WAV (or any audio) file of speech (default: two questions, synthesized)")
    parser.add_argument("--output", default=None, help="where the replies go (default: ./voice_loop_reply.wav)")
    parser.add_argument("--silence-ms", type=int, default=300,
                        help="silence that ends an utterance, in ms (default: %(default)s)")
    parser.add_argument("--tail", type=float, default=1.0,
                        help="seconds of silence the microphone adds after the file (default: %(default)s)")
    parser.add_argument("--no-barge-in", action="store_true", help="let replies play to their end over speech")
    parser.add_argument("--min-speech-ms", type=float, default=BargeInPolicy.min_speech_ms,
                        help="speech over a reply that cuts it, in ms (default: %(default)s)")
    parser.add_argument("--ultravox", metavar="MODEL_ID", default=None,
                        help="reply with this Ultravox model on the executor instead of Whisper and the echo (a GPU)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        source = args.input
        if source is None:
            source = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "questions.wav")
            synthesize_questions(source)
            print(f"input      {source} (synthesized: {' / '.join(QUESTIONS)})")
        output = args.output or os.path.join(os.getcwd(), "voice_loop_reply.wav")
        config = server_config(args, stack)
        run = asyncio.run(run_loop(source, output, config, silence_ms=args.silence_ms, tail_s=args.tail,
                                   ultravox=args.ultravox,
                                   barge_in=None if args.no_barge_in else BargeInPolicy(min_speech_ms=args.min_speech_ms)))
        summarize(run, output)


if __name__ == "__main__":
    run_main(main)
