"""
Live media: what a camera-and-microphone session needs.

- :class:`LatestQueue` (:class:`remotemedia.aio.Latest`): a one-place queue where a newer item replaces the
  one waiting. Live video keeps only the latest frame: a frame that waited
  behind a slow effect is worth less than the one just captured.
- :class:`LiveDemoNode`: the browser demo's service. One stream of a
  person's camera and microphone frames in; processed video, transcripts
  and talk-back speech out. Video goes through a :class:`VideoEffectNode`
  (switchable while running); audio through a :class:`WhisperNode`, whose
  transcripts are yielded and, in talk-back mode, answered by a
  :class:`TTSNode` whose speech is yielded as audio frames.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
from typing import Any, AsyncIterator

from ..aio import Latest, in_thread
from ..frames import AudioFrame, Transcript, VideoFrame
from .bargein import INTERRUPTED, PAUSED, RESUMED, BargeInPolicy, SpeechStarts
from .effects import EFFECTS, VideoEffectNode

__all__ = ["LatestQueue", "LiveDemoNode"]

_CLOSED = object()
_DEFAULT: Any = object()
#: Seconds of reply audio yielded ahead of real time (with barge-in): what still plays after a pause.
LEAD = 0.06


#: The "latest wins" queue of video frames waiting for the effect: :class:`remotemedia.aio.Latest`
#: (the one such queue; this name stays for those who imported it from here).
LatestQueue = Latest


async def _drain(queue: asyncio.Queue) -> AsyncIterator[Any]:
    while (item := await queue.get()) is not _CLOSED:
        yield item


class LiveDemoNode:
    """
    Camera and microphone in; effect video, transcripts and talk-back out.

    Options (all switchable while running with :meth:`configure`):

    - ``effect``: one of :data:`~remotemedia.nodes.effects.EFFECTS`, or
      ``None`` to leave video out entirely (video frames are then dropped);
    - ``transcribe``: yield a :class:`~remotemedia.frames.Transcript` per
      utterance heard (by default when it takes audio);
    - ``talkback``: answer each utterance: yield ``{"type": "reply",
      "text": ...}``, then the reply's speech as audio frames.

    ``audio=False`` leaves the microphone out (no models are loaded).
    ``whisper`` and ``tts`` replace the default :class:`WhisperNode` and
    :class:`TTSNode` (given as nodes, built here by default).

    Video that the effect has not taken yet is replaced by newer frames
    (:class:`LatestQueue`); :attr:`dropped` counts those frames. The effect
    runs on a thread of its own, so it never waits behind a transcription
    (which has its own: see :class:`WhisperNode`).

    **Barge-in**: in talk-back, when the person speaks over a reply, as
    ``barge_in`` (a :class:`~remotemedia.nodes.bargein.BargeInPolicy`; ``None``
    for none) decides, the reply's speech stops, the replies not yet spoken
    are dropped, and ``{"type": "interrupted", "by": "voice" | "words"}`` is
    yielded (an executor's service session then drops the reply audio its
    track still holds). With a policy, reply audio is yielded in real time,
    at most :data:`LEAD` seconds ahead, so that it can *pause* as soon as
    the VAD hears speech start (:meth:`~remotemedia.nodes.bargein.BargeInPolicy.hear`),
    and go on if the speech ends short of ``min_speech_ms``: it yields
    ``{"type": "paused", "by": "voice"}`` then (the service session holds the
    audio its track queues, and the page or Python consumer learns at once
    that the bot stopped), and ``{"type": "resumed"}`` or the
    ``interrupted`` after it.
    """

    is_streaming = True
    #: Allowed values of each option.
    choices = {"effect": EFFECTS, "transcribe": (True, False), "talkback": (True, False)}

    def __init__(
        self,
        effect: str | None = "edges",
        transcribe: bool | None = None,
        talkback: bool = False,
        audio: bool = True,
        whisper: Any = None,
        tts: Any = None,
        name: str | None = None,
        barge_in: BargeInPolicy | None = _DEFAULT,
    ) -> None:
        self.name = name or type(self).__name__
        if barge_in is _DEFAULT:
            barge_in = BargeInPolicy()
        if barge_in is not None and not isinstance(barge_in, BargeInPolicy):
            raise TypeError(f"barge_in must be a BargeInPolicy or None, not {type(barge_in).__name__}")
        #: What stops a reply (``None``: nothing does).
        self.barge_in = barge_in
        #: Replies cut by barge-in (this run).
        self.interruptions = 0
        self.video = VideoEffectNode(effect) if effect is not None else None
        self.audio = bool(audio)
        self.transcribe = self.talkback = False
        self._wanted: asyncio.Event | None = None  # a run's "speech is on" signal
        self._speech_loaded = False
        self.configure(transcribe=self.audio if transcribe is None else transcribe, talkback=talkback)
        if self.audio:
            from .tts import TTSNode
            from .whisper import WhisperNode

            # A turn ends on the VAD's silence_ms: ending it on a "finished sentence" cut speakers at their
            # commas (Whisper ends any clip with a full stop), see WhisperNode's end_on_sentence.
            self.whisper = whisper if whisper is not None else WhisperNode()
            self.tts = tts if tts is not None else TTSNode(deterministic=True)
        else:
            self.whisper = self.tts = None
        self._latest: LatestQueue | None = None

    @property
    def takes(self) -> tuple[str, ...]:
        """The kinds of frame it takes (a service is given only those)."""
        return (("audio",) if self.audio else ()) + (("video",) if self.video is not None else ())

    @property
    def dropped(self) -> int:
        """Video frames dropped because the effect was busy with an earlier one (this run)."""
        return self._latest.replaced if self._latest is not None else 0

    def configure(self, effect: str | None = None, transcribe: bool | None = None, talkback: bool | None = None) -> None:
        """Change options while running; ``ValueError`` for a bad value (nothing is changed then)."""
        for option, value in (("transcribe", transcribe), ("talkback", talkback)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{option} must be true or false, not {value!r}")
            if value and not self.audio:
                raise ValueError(f"{option} needs the microphone, which this service does not take")
        if effect is not None:
            if self.video is None:
                raise ValueError("this service takes no video, so it has no effect to set")
            self.video.configure(effect=effect)
        if transcribe is not None:
            self.transcribe = transcribe
        if talkback is not None:
            self.talkback = talkback
        if self._wanted is not None and (self.transcribe or self.talkback):
            self._wanted.set()

    def options(self) -> dict:
        """The options now."""
        options = {"effect": self.video.effect if self.video is not None else None}
        if self.audio:
            options.update(transcribe=self.transcribe, talkback=self.talkback)
        return options

    def initialize(self) -> None:
        # The speech models load now only if speech is on; else when it is first switched on.
        if self.transcribe or self.talkback:
            self._load_speech()

    def _load_speech(self) -> None:
        if self.audio and not self._speech_loaded:
            self.whisper.initialize()
            self.tts.initialize()
            self._speech_loaded = True

    def cleanup(self) -> None:
        if self._speech_loaded:
            self._speech_loaded = False
            self.whisper.cleanup()
            self.tts.cleanup()

    @staticmethod
    def reply_to(heard: str) -> str:
        """What talk-back says to an utterance (override for another answer)."""
        return f"You said: {heard}"

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        out: asyncio.Queue = asyncio.Queue()
        video = self._latest = LatestQueue()
        wanted = self._wanted = asyncio.Event()
        if self.transcribe or self.talkback:
            wanted.set()
        speech: asyncio.Queue = asyncio.Queue()
        replies: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        policy = copy.deepcopy(self.barge_in)  # its state is this run's
        hearing = SpeechStarts() if policy is not None and self.audio else None
        saying: asyncio.Task | None = None  # the reply being spoken
        self.interruptions = 0
        # The effect's own thread: a frame never waits behind a transcription.
        effect_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-effect")

        def interrupt(by: str) -> None:
            nonlocal saying
            while not replies.empty():
                if replies.get_nowait() is _CLOSED:
                    replies.put_nowait(_CLOSED)
                    break
            if saying is not None:
                saying.cancel()
                saying = None
            policy.reply_stopped()
            self.interruptions += 1
            out.put_nowait({"type": INTERRUPTED, "by": by})

        async def route() -> None:
            try:
                async for frame in frames:
                    if isinstance(frame, VideoFrame):
                        if self.video is not None:
                            video.put(frame)
                    elif isinstance(frame, AudioFrame):
                        if not (self.audio and (self.transcribe or self.talkback)):
                            continue
                        now = loop.time()
                        if policy is not None and not policy.listening(now):
                            continue  # muted while the reply plays
                        if hearing is not None and self.talkback:
                            decision = policy.hear(hearing.feed(frame), now)
                            if decision == "interrupt":
                                interrupt("voice")
                            elif decision == "pause":
                                out.put_nowait({"type": PAUSED, "by": "voice"})
                            elif decision == "resume":
                                out.put_nowait({"type": RESUMED})
                        speech.put_nowait(frame)
                    else:
                        raise TypeError(f"{self.name} takes AudioFrame and VideoFrame inputs, not {type(frame).__name__}")
            finally:
                video.close()
                speech.put_nowait(_CLOSED)
                wanted.set()  # so that listen() sees the end

        async def effects() -> None:
            async for frame in video:
                out.put_nowait(await in_thread(self.video.process, frame, threads=effect_thread))

        async def listen() -> None:
            try:
                await wanted.wait()
                if not (self.transcribe or self.talkback):
                    return  # the input ended before speech was ever switched on
                if not self._speech_loaded:
                    await in_thread(self._load_speech)
                async for heard in self.whisper.stream(_drain(speech)):
                    if not isinstance(heard, Transcript) or not heard.text.strip():
                        continue
                    if self.transcribe:
                        out.put_nowait(heard)
                    if self.talkback:
                        if policy is not None and policy.transcript(heard.text, loop.time()):
                            interrupt("words")
                        answer = self.reply_to(heard.text.strip())
                        out.put_nowait({"type": "reply", "text": answer})
                        replies.put_nowait(answer)
            finally:
                replies.put_nowait(_CLOSED)

        async def say(answer: str) -> None:
            async for frame in self.tts.stream(_one(answer)):
                if policy is not None:
                    # Paced: at most LEAD seconds sent ahead, none while paused (speech over the reply).
                    while policy.paused or policy.ahead(loop.time()) > LEAD:
                        await asyncio.sleep(0.01)
                    policy.reply_audio(loop.time(), frame.duration)
                out.put_nowait(frame)

        async def speak() -> None:
            nonlocal saying
            while (answer := await replies.get()) is not _CLOSED:
                saying = task = asyncio.create_task(say(answer))
                try:
                    await asyncio.wait({task})  # cancelled by a barge-in: on to the next reply
                finally:
                    task.cancel()
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()

        branches = [route(), effects()]
        if self.audio:
            branches += [listen(), speak()]
        tasks = [asyncio.create_task(branch) for branch in branches]
        finished = asyncio.create_task(_all(tasks, out))
        try:
            while (item := await out.get()) is not _CLOSED:
                yield item
            await finished  # a branch's exception, if any
        finally:
            for task in [*tasks, finished]:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, finished, return_exceptions=True)
            effect_thread.shutdown(wait=False)

    def __getstate__(self) -> dict:
        # A run's queue and signal stay with the run; the models with the process that loaded them.
        return {**self.__dict__, "_latest": None, "_wanted": None, "_speech_loaded": False}

    def __repr__(self) -> str:
        return f"<LiveDemoNode {self.options()}>"


async def _one(item: Any) -> AsyncIterator[Any]:
    yield item


async def _all(tasks: list[asyncio.Task], out: asyncio.Queue) -> None:
    """Wait for every branch; the first failure cancels the rest. Ends ``out`` either way."""
    try:
        for next_done in asyncio.as_completed(tasks):
            await next_done
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    finally:
        out.put_nowait(_CLOSED)
