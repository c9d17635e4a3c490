"""
Where the speech nodes get their models: one shared copy per process.

A model is big (tens of MB on a CPU, GBs on a GPU) and slow to load, while
the node objects that use it are small and many: an executor in
``inprocess`` mode runs every session's objects in one process, and each
session brings its own unpickled ``WhisperNode``. So nodes never hold a
model in their own state; their ``initialize()`` asks :data:`cache` for it
by key (which model, on which device, with which options), and the first
caller loads it while later ones, in any session or thread, share it.
``cleanup()`` gives it back. A model no node holds stays loaded for the
next session, until more than :attr:`ModelCache.max_idle` such idle models
pile up, when the least recently used go.

In ``process`` mode each session has its own worker process, so the cache
holds that session's models only; sharing needs ``inprocess`` mode.

:func:`resolve_device` turns ``device="auto"`` into ``"cuda"`` when the
machine has a GPU the model's library can use, and ``"cpu"`` otherwise.
"""

from __future__ import annotations

import collections
import importlib
import logging
import threading
from typing import Any, Callable, Hashable

from .exceptions import ModelError

__all__ = ["DEVICES", "ModelCache", "cache", "check_device", "gpu_available", "require", "resolve_device"]

logger = logging.getLogger(__name__)

#: Devices a node accepts.
DEVICES = ("auto", "cpu", "cuda")


class _Entry:
    __slots__ = ("model", "users", "ready", "error")

    def __init__(self) -> None:
        self.model: Any = None
        self.users = 0
        self.ready = threading.Event()
        self.error: BaseException | None = None


class ModelCache:
    """
    Loaded models by key, shared by every node of the process that asks.

    Thread-safe: nodes initialize on worker threads. Two callers asking for
    the same key at once load it once; the second waits for the first. A
    load that fails is not remembered, so the next caller tries again.
    """

    def __init__(self, max_idle: int = 2) -> None:
        #: How many models no node holds may stay loaded (least recently used go first).
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._idle: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
        self._loads: collections.Counter[Hashable] = collections.Counter()

    def acquire(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """
        The model for ``key``, loaded with ``load()`` if no one has it yet.

        Each call must be matched by one :meth:`release` of the same key.
        ``load()``'s exception propagates to every caller waiting on it.
        """
        with self._lock:
            entry = self._entries.get(key)
            loader = entry is None
            if loader:
                entry = self._entries[key] = _Entry()
            entry.users += 1
            self._idle.pop(key, None)
        if loader:
            try:
                model = load()
            except BaseException as exc:
                with self._lock:
                    entry.error = exc
                    del self._entries[key]
                entry.ready.set()
                raise
            with self._lock:
                entry.model = model
                self._loads[key] += 1
            entry.ready.set()
            logger.info("loaded model %r", key)
            return model
        entry.ready.wait()
        if entry.error is not None:
            raise entry.error
        return entry.model

    def release(self, key: Hashable) -> None:
        """Give back a model from :meth:`acquire`; it stays loaded, idle, for the next user."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.users == 0:
                raise ValueError(f"model {key!r} was released more often than acquired")
            entry.users -= 1
            if entry.users == 0:
                self._idle[key] = None
                self._evict()

    def clear(self) -> None:
        """Drop every model no node holds."""
        with self._lock:
            for key in list(self._idle):
                del self._entries[key]
            self._idle.clear()

    def info(self) -> list[dict[str, Any]]:
        """One dict per loaded model: ``key`` (as ``repr``), ``users`` and ``loads`` (times it was loaded)."""
        with self._lock:
            return [
                {"key": repr(key), "users": entry.users, "loads": self._loads[key]}
                for key, entry in self._entries.items()
                if entry.ready.is_set()
            ]

    def _evict(self) -> None:
        while len(self._idle) > self.max_idle:
            key, _ = self._idle.popitem(last=False)
            del self._entries[key]
            logger.info("unloaded idle model %r", key)


#: The process's cache; the speech nodes use it.
cache = ModelCache()


def require(module: str, package: str, purpose: str, *, model: str = "") -> Any:
    """
    Import ``module``, or raise :exc:`ModelError` saying which package to install.

    ``package`` is what to ``pip install`` (an extra such as
    ``remotemedia[ml]``, or packages separated by spaces); ``purpose`` is
    what needs it, as the message's subject.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        install = f"'{package}'" if "[" in package else package  # brackets are globs to a shell
        raise ModelError(
            f"{purpose} needs the Python module {module!r}, which is not installed here ({exc}); "
            f"install it with: pip install {install}",
            model=model,
        ) from exc


def resolve_device(device: str, has_gpu: Callable[[], bool]) -> str:
    """
    ``"cpu"`` or ``"cuda"`` for ``device`` (``"auto"``, ``"cpu"`` or ``"cuda"``).

    ``has_gpu()`` says whether the model's library sees a GPU; ``"auto"``
    takes it when it does. Asking for ``"cuda"`` where there is none raises
    :exc:`ModelError`.
    """
    check_device(device)
    if device == "cpu":
        return "cpu"
    try:
        gpu = bool(has_gpu())
    except Exception:  # a broken CUDA install: treat as no GPU
        logger.debug("GPU probe failed", exc_info=True)
        gpu = False
    if device == "cuda" and not gpu:
        raise ModelError(
            "device='cuda' was asked for, but no CUDA GPU is usable here; "
            "use device='auto' to fall back to the CPU"
        )
    return "cuda" if gpu else "cpu"


def check_device(device: Any) -> str:
    """Raise :exc:`ValueError` unless ``device`` is one of :data:`DEVICES`."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, not {device!r}")
    return device


def gpu_available() -> bool:
    """
    Whether a model library installed here sees a CUDA GPU: torch (Ultravox,
    Bark), CTranslate2 (Whisper) or ONNX Runtime's CUDA provider (Piper,
    with ``onnxruntime-gpu``). Libraries that are missing count as no.
    """
    probes = (
        ("torch", lambda m: m.cuda.is_available()),
        ("ctranslate2", lambda m: m.get_cuda_device_count() > 0),
        ("onnxruntime", lambda m: "CUDAExecutionProvider" in m.get_available_providers()),
    )
    for module, probe in probes:
        try:
            if probe(importlib.import_module(module)):
                return True
        except Exception:  # not installed, or a broken CUDA install
            logger.debug("GPU probe through %s failed", module, exc_info=True)
    return False
