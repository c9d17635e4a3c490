"""
Barge-in: when the person starts talking while a reply plays, the reply stops.

:class:`BargeInPolicy` decides what counts as an interruption. It is fed the
voice activity of the microphone (:class:`~remotemedia.nodes.vad.VADEvent`),
the transcripts of what was heard, and the reply audio as it is sent; it
answers whether the reply must stop now. Two ways to interrupt:

- **by voice**: speech has gone on for ``min_speech_ms`` since the VAD's
  speech start, while a reply plays. Short sounds (a cough, "mhm") are
  shorter than that.
- **by words**: a transcript of at least ``min_words`` words arrives while a
  reply plays, and it is not a backchannel ("yeah", "mhm", "okay"...): a
  short "stop" interrupts once it is recognized.

With ``mute_while_speaking=True`` the microphone is not listened to while a
reply plays (no barge-in, no echo of the reply heard as speech).

**Pausing at speech start** (:meth:`BargeInPolicy.hear`, used by the voice
loop): waiting ``min_speech_ms`` before the reply stops is what keeps a
backchannel from cutting it, but it is also most of the reaction time
(0.4 s of 0.62 s measured). So the reply *pauses* as soon as the VAD says
speech started (about 0.1 s after the voice's onset), is *cut* once the
speech lasts ``min_speech_ms`` or its words are not a backchannel, and
*resumes* where it paused when the utterance ends short of that. The
person hears the bot stop at once either way; a "yeah" costs the reply a
pause of about half a second, not its end.

A reply is cut on the far side by sending :data:`INTERRUPT` into a
:class:`~remotemedia.nodes.tts.TTSNode`'s input: it stops synthesizing,
drops the texts it has not spoken, and yields ``{"type": "interrupted",
...}`` (:data:`INTERRUPTED`: the executor then drops the reply's audio
still queued for its track). :class:`SpeechStarts` is a microphone's own VAD for all this (no
padding: only when speech starts and how long it goes on matter).

Whether a reply "plays" is known from its audio: a reply's frames are played
in real time from when they are sent, so it plays until the sum of their
durations has passed. Sans-I/O: times are passed in (seconds, any clock).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..rpc.calls import INTERRUPTED, PAUSED, RESUMED, is_interrupted

__all__ = ["BACKCHANNELS", "INTERRUPT", "INTERRUPTED", "PAUSED", "RESUMED", "BargeInPolicy", "SpeechStarts", "is_interrupt", "is_interrupted"]

#: Words people say to show they are listening, which must not stop a reply.
BACKCHANNELS = frozenset(
    {"mhm", "m-h-m", "mm", "mmm", "hmm", "hm", "mm-hmm", "mm hmm", "uh-huh", "uh huh", "yeah", "yep", "yes", "ok",
     "okay", "right", "sure", "i see", "oh", "ah"}
)

#: An input that cuts a :class:`~remotemedia.nodes.tts.TTSNode`'s reply (a dict: it crosses any wire).
INTERRUPT = {"type": "interrupt"}


def is_interrupt(item: Any) -> bool:
    """Whether ``item`` is :data:`INTERRUPT`."""
    return isinstance(item, dict) and item.get("type") == "interrupt"


@dataclasses.dataclass
class BargeInPolicy:
    """What stops a reply (see the module docstring); one per session."""

    min_speech_ms: float = 400.0
    """Speech this long (after the VAD's speech start) interrupts a playing reply."""

    min_words: int = 1
    """A transcript with at least this many words (not a backchannel) interrupts a playing reply."""

    backchannels: frozenset = BACKCHANNELS
    """Utterances (lowercase, without punctuation) that never interrupt."""

    mute_while_speaking: bool = False
    """Do not listen to the microphone while a reply plays."""

    sample_rate: int = 16000
    """Rate of the samples in the VAD events."""

    def __post_init__(self) -> None:
        if not self.min_speech_ms >= 0:
            raise ValueError(f"min_speech_ms must be >= 0, not {self.min_speech_ms!r}")
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or self.min_words < 1:
            raise ValueError(f"min_words must be a positive int, not {self.min_words!r}")
        self._playing_until = 0.0
        self._speech_from: float | None = None  # audio time of the VAD's speech start
        self._fired = False  # this utterance already interrupted
        self._paused_at: float | None = None  # the reply is held since (hear())

    # -- the reply ---------------------------------------------------------------

    def reply_audio(self, now: float, seconds: float) -> None:
        """``seconds`` of reply audio were sent at ``now``: they play after what is playing."""
        self._playing_until = max(now, self._playing_until) + seconds

    def reply_stopped(self) -> None:
        """The reply was cut (its queued audio dropped)."""
        self._playing_until = 0.0
        self._paused_at = None

    def ahead(self, now: float) -> float:
        """Seconds of reply audio sent and not yet played at ``now``."""
        return max(0.0, self._playing_until - now)

    def playing(self, now: float) -> bool:
        """Whether a reply is playing at ``now`` (a paused one counts: it has not ended)."""
        return self._paused_at is not None or now < self._playing_until

    @property
    def paused(self) -> bool:
        """Whether the reply is held (paused by :meth:`hear`)."""
        return self._paused_at is not None

    def listening(self, now: float) -> bool:
        """Whether the microphone is listened to at ``now``."""
        return not (self.mute_while_speaking and self.playing(now))

    # -- what was heard ----------------------------------------------------------

    def vad(self, events: list, now: float) -> bool:
        """
        The :class:`~remotemedia.nodes.vad.VADEvent`s of one
        :meth:`~remotemedia.nodes.vad.SpeechSegmenter.feed` (16 kHz, or
        :attr:`sample_rate`); ``True``: interrupt now.
        """
        interrupt = False
        for index, event in enumerate(events):
            if event.kind == "end":
                self._speech_from, self._fired = None, False
                continue
            if event.kind != "speech" or event.samples is None:
                continue
            if self._speech_from is None:
                # Speech is detected with a batch of frames (the voiced run and
                # the padding before it): the batch's end is the speech start.
                batch = []
                for later in events[index:]:
                    if later.kind == "end":
                        break
                    if later.kind == "speech" and later.samples is not None:
                        batch.append(later)
                self._speech_from = self._end_of(batch[-1])
            heard_ms = (self._end_of(event) - self._speech_from) * 1000
            if not self._fired and self.playing(now) and heard_ms >= self.min_speech_ms:
                self._fired = interrupt = True
        return interrupt

    def hear(self, events: list, now: float) -> str | None:
        """
        Like :meth:`vad`, pausing first (see the module docstring):
        ``"pause"`` when speech starts over a playing reply, ``"interrupt"``
        once it has lasted ``min_speech_ms``, ``"resume"`` when it ended
        short of that; else ``None``. Only the last decision of the batch
        is returned (a batch that pauses and cuts answers ``"interrupt"``).
        """
        if self.vad(events, now):
            self._paused_at = None
            return "interrupt"
        if self._paused_at is not None:
            if self._speech_from is not None:
                return None  # still speaking, not long enough yet
            # Ended short of min_speech_ms: the reply goes on where it paused.
            self._playing_until = max(self._playing_until, self._paused_at) + (now - self._paused_at)
            self._paused_at = None
            return "resume"
        if self._speech_from is not None and not self._fired and self.playing(now):
            self._paused_at = now
            return "pause"
        return None

    def is_backchannel(self, text: str) -> bool:
        """Whether ``text`` is a backchannel (or has fewer than ``min_words`` words): it never interrupts."""
        words = re.sub(r"[^\w\s'-]", " ", text.lower()).split()
        return len(words) < self.min_words or " ".join(words) in self.backchannels

    def _end_of(self, event: Any) -> float:
        return event.time + len(event.samples) / self.sample_rate

    def transcript(self, text: str, now: float) -> bool:
        """A transcript of what was heard; ``True``: interrupt now (before answering it)."""
        if not self.playing(now) or self.is_backchannel(text):
            return False
        self._paused_at = None
        return True


class SpeechStarts:
    """A microphone's voice activity for barge-in: its own VAD, fed audio frames as they are heard."""

    def __init__(self, start_ms: int = 90, silence_ms: int = 300) -> None:
        from .vad import MonoInt16, SpeechSegmenter

        self._converter = MonoInt16(16000)
        # No pause events and no padding: only when speech starts and how long it goes on.
        self._segmenter = SpeechSegmenter(16000, frame_ms=30, start_ms=start_ms, silence_ms=silence_ms, padding_ms=0,
                                          pause_ms=silence_ms)

    def feed(self, frame: Any) -> list:
        """The :class:`~remotemedia.nodes.vad.VADEvent`\\ s one :class:`~remotemedia.frames.AudioFrame` decided."""
        return self._segmenter.feed(self._converter.convert(frame), frame.timestamp)
