"""
Spoken replies from a speech LLM: :class:`UltravoxNode`, and
:class:`UltravoxMinDurationWrapper`, which keeps too-short utterances from it.

Ultravox (fixie.ai) feeds audio straight into a Llama model, so there is no
transcript in between: one utterance in, one text reply out. It is meant for
a GPU executor (the 8B model needs about 17 GB of GPU memory in bfloat16);
``transformers`` and ``torch`` are imported only when the model loads, so
this module imports, and its nodes pickle, on machines without them.

Speech LLMs hallucinate on very short inputs ("uh", a cough, a click that a
VAD let through): the wrapper holds utterances back until enough speech has
accumulated, then hands it on as one.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import threading
from typing import Any, AsyncIterator, NamedTuple

import numpy as np

from ..aio import in_thread
from ..exceptions import ModelError
from ..frames import AudioFrame
from ..models import cache, check_device, resolve_device
from ..node import Node, ProcessStream, check_node
from ._checks import positive_int
from .audio import _audio
from .vad import MonoInt16

__all__ = ["UltravoxNode", "UltravoxMinDurationWrapper", "DEFAULT_MODEL", "MODEL_SAMPLE_RATE"]

logger = logging.getLogger(__name__)

#: The model :class:`UltravoxNode` uses by default.
DEFAULT_MODEL = "fixie-ai/ultravox-v0_5-llama-3_1-8b"

#: Rate of the audio Ultravox takes (its encoder is Whisper's).
MODEL_SAMPLE_RATE = 16000

_INSTALL = "pip install 'remotemedia[ultravox]'"
_END = object()  # end of the wrapper's internal queue


def _seconds(value: Any) -> bool:
    """Whether ``value`` is a finite number >= 0 (bools are not numbers here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf


def _mono_float(frame: AudioFrame, rate: int) -> np.ndarray:
    """The frame as 1-D float32 mono at ``rate``."""
    if not frame.num_samples:
        return np.zeros(0, np.float32)  # FFmpeg's resampler fails on an empty frame
    if frame.channels == 1 and frame.sample_rate == rate and frame.samples.dtype == np.float32:
        return frame.samples[0]
    # A converter per frame: utterances are not contiguous audio, so no
    # filter history may carry from one to the next.
    converter = MonoInt16(rate)
    samples = np.concatenate([converter.convert(frame), converter.flush()])
    return samples.astype(np.float32) / np.float32(32768.0)


class UltravoxNode(Node):
    """
    Reply to each spoken utterance with text, using an Ultravox model (a streaming node).

    Each input :class:`~remotemedia.frames.AudioFrame` is one utterance, as
    :class:`~remotemedia.nodes.vad.VADNode` yields them in ``"segments"``
    mode (any rate, channels and sample type). It is converted to 16 kHz
    mono float32 and only its last ``buffer_duration_s`` seconds are kept,
    which bounds the compute and memory of one generation. For each
    utterance the node yields the model's reply as a ``str`` (empty replies
    are skipped); ``system_prompt`` is the conversation's system turn and
    ``max_new_tokens`` bounds the reply's length.

    ``initialize()`` loads the model through :data:`remotemedia.models.cache`,
    so sessions on one executor share it; the node's pickled state never
    holds it. ``device="auto"`` takes CUDA when torch sees a GPU.
    Generation runs on a worker thread, off the event loop.
    """

    is_streaming = True

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL,
        system_prompt: str = "You are a helpful assistant. Answer briefly, in plain spoken sentences.",
        buffer_duration_s: float = 10.0,
        max_new_tokens: int = 256,
        device: str = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a Hugging Face model id or a local folder, not {model_id!r}")
        if not isinstance(system_prompt, str):
            raise ValueError(f"system_prompt must be a str, not {type(system_prompt).__name__}")
        if not _seconds(buffer_duration_s) or buffer_duration_s == 0:
            raise ValueError(f"buffer_duration_s must be a positive number of seconds, not {buffer_duration_s!r}")
        #: Hugging Face model id, or a local folder holding the model.
        self.model_id = model_id
        #: The system turn of every conversation.
        self.system_prompt = system_prompt
        #: Seconds of each utterance the model hears: its last ones.
        self.buffer_duration_s = float(buffer_duration_s)
        #: Most tokens in one reply.
        self.max_new_tokens = positive_int("max_new_tokens", max_new_tokens)
        #: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        self.device = check_device(device)
        self._key: tuple[str, str, str] | None = None  # cache key while initialized
        self._model: tuple[Any, threading.Lock] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The model belongs to the process's cache, never to a pickle.
        state = self.__dict__.copy()
        state["_key"] = state["_model"] = None
        return state

    def initialize(self) -> None:
        """Load the model (or share the one already loaded); raises :exc:`ModelError` with what to do."""
        if self._key is not None:
            return
        try:
            torch = importlib.import_module("torch")
            importlib.import_module("transformers")
        except ImportError as exc:
            raise self._not_installed(exc) from exc
        device = resolve_device(self.device, torch.cuda.is_available)
        key = ("ultravox", self.model_id, device)
        self._model = cache.acquire(key, lambda: self._load(device))
        self._key = key

    def cleanup(self) -> None:
        """Give the model back to the cache; safe to call twice."""
        key, self._key, self._model = self._key, None, None
        if key is not None:
            cache.release(key)

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[str]:
        """Yield the model's reply to each utterance in ``frames``."""
        async for data in frames:
            frame = _audio(self, data)
            if self._model is None:
                raise RuntimeError(f"{self.name!r} has no model loaded: call initialize() first (a pipeline does)")
            if not frame.num_samples:
                continue
            reply = await in_thread(self._reply, frame)
            if reply:
                yield reply
            else:
                logger.debug("%s: empty reply to %.2f s of audio, skipped", self.name, frame.duration)

    def _reply(self, frame: AudioFrame) -> str:
        audio = _mono_float(frame, MODEL_SAMPLE_RATE)[-round(self.buffer_duration_s * MODEL_SAMPLE_RATE) :]
        pipe, lock = self._model
        turns = [{"role": "system", "content": self.system_prompt}]
        # Sessions share the pipeline, which is not documented as thread-safe;
        # one generation at a time also bounds the GPU memory they take.
        with lock:
            reply = pipe(
                {"audio": np.ascontiguousarray(audio), "turns": turns, "sampling_rate": MODEL_SAMPLE_RATE},
                max_new_tokens=self.max_new_tokens,
            )
        return str(reply).strip()

    def _not_installed(self, exc: ImportError) -> ModelError:
        return ModelError(
            f"UltravoxNode needs transformers, torch, peft and librosa, and one is not installed here "
            f"({exc}); install them with: {_INSTALL}",
            model=self.model_id,
        )

    def _load(self, device: str) -> tuple[Any, threading.Lock]:
        import torch
        import transformers

        logger.info("loading %s on %s (the first time, it is downloaded from huggingface.co)", self.model_id, device)
        try:
            pipe = transformers.pipeline(
                model=self.model_id,
                trust_remote_code=True,  # Ultravox's model and pipeline code ship with its weights
                device=device,
                # Its weights are bfloat16; float32 would double the memory for nothing.
                torch_dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            )
        except ImportError as exc:  # the model's own code imports peft and librosa
            raise self._not_installed(exc) from exc
        except (OSError, torch.cuda.OutOfMemoryError) as exc:
            raise ModelError(
                f"could not load {self.model_id!r} on {device} ({exc}). Its weights are fetched from "
                f"huggingface.co the first time, which needs network access, and the 8B model needs "
                f"about 17 GB of GPU memory; or pass a local folder holding the model as model_id",
                model=self.model_id,
            ) from exc
        return pipe, threading.Lock()


class UltravoxMinDurationWrapper(Node):
    """
    Hold utterances back until at least ``min_duration_s`` of speech has
    accumulated, then hand it to ``ultravox_node`` as one (a streaming node).

    Inputs are :class:`~remotemedia.frames.AudioFrame` utterances. Held
    audio is converted to mono float32 at ``sample_rate``, joined end to end
    and handed on as one frame stamped with the first held utterance's
    timestamp (the pauses between utterances are not kept). An utterance at
    least ``min_duration_s`` long goes through at once. What the wrapped
    node yields is yielded as it comes, while more input is read. At the
    end of the input, held audio still shorter than ``min_duration_s`` is
    dropped (logged at debug level): too short to be worth a reply.

    ``ultravox_node`` may be any node: a streaming one, or one with only
    ``process()``. ``initialize()`` and ``cleanup()`` are the wrapped node's.
    """

    is_streaming = True

    def __init__(
        self,
        ultravox_node: Any,
        min_duration_s: float = 1.0,
        sample_rate: int = MODEL_SAMPLE_RATE,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        check_node(ultravox_node)
        if not _seconds(min_duration_s):
            raise ValueError(f"min_duration_s must be a number of seconds >= 0, not {min_duration_s!r}")
        #: The node that gets the accumulated audio.
        self.ultravox_node = ultravox_node
        #: Least audio, in seconds, handed on at once.
        self.min_duration_s = float(min_duration_s)
        #: Rate of the audio handed on.
        self.sample_rate = positive_int("sample_rate", sample_rate)

    def initialize(self) -> Any:
        """
        Run the wrapped node's ``initialize()``: a sync one here, on the
        caller's worker thread; an async one's coroutine is returned for the
        caller to await (the pipeline and the executor do).
        """
        method = getattr(self.ultravox_node, "initialize", None)
        return method() if callable(method) else None

    def cleanup(self) -> Any:
        """Run the wrapped node's ``cleanup()``, as :meth:`initialize` runs its ``initialize()``."""
        method = getattr(self.ultravox_node, "cleanup", None)
        return method() if callable(method) else None

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Hand the utterances in ``frames`` on, merged up to ``min_duration_s``; yield what the wrapped node yields."""
        node = self.ultravox_node
        inner = node if getattr(node, "is_streaming", False) else ProcessStream(node)
        # One waiting item: merging the next utterances overlaps a generation,
        # and a slow model still slows the reading of input (backpressure).
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)
        feeder = asyncio.create_task(self._feed(frames, queue), name=f"{self.name}-feed")
        outputs = inner.stream(self._drain(queue)).__aiter__()
        try:
            async for output in outputs:
                yield output
        finally:
            feeder.cancel()
            await asyncio.wait([feeder])
            # Read here, on every path, so that asyncio never reports it as unretrieved.
            error = None if feeder.cancelled() else feeder.exception()
            aclose = getattr(outputs, "aclose", None)
            if aclose is not None:
                await aclose()
        # The wrapped node ended without failing: an input error it did not
        # see (or swallowed) must still not go unnoticed.
        if error is not None:
            raise error

    async def _feed(self, frames: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
        needed = round(self.min_duration_s * self.sample_rate)
        held: list[np.ndarray] = []
        count, start = 0, 0.0
        try:
            async for data in frames:
                frame = _audio(self, data)
                samples = _mono_float(frame, self.sample_rate)
                if not samples.size:
                    continue
                if not held:
                    start = frame.timestamp
                held.append(samples)
                count += samples.size
                if count >= needed:
                    await queue.put(AudioFrame(np.concatenate(held)[np.newaxis, :], self.sample_rate, start))
                    held, count = [], 0
            if held:
                logger.debug(
                    "%s: dropped %.2f s of audio held at the end (under min_duration_s=%g)",
                    self.name, count / self.sample_rate, self.min_duration_s,
                )
            await queue.put(_END)
        except Exception as exc:
            # Raised to the wrapped node where it reads its input, as in a plain chain.
            await queue.put(_Failure(exc))
            raise

    @staticmethod
    async def _drain(queue: asyncio.Queue[Any]) -> AsyncIterator[AudioFrame]:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item


class _Failure(NamedTuple):
    """The feeder failed with ``error``."""

    error: BaseException
