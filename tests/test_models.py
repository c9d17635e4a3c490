"""The model cache (one load per key, shared, thread-safe, bounded when idle) and device resolution."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from remotemedia import ModelError
from remotemedia.models import ModelCache, require, resolve_device


class Loader:
    """Counts its loads; the model is a fresh object each time."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        return object()


def test_a_key_is_loaded_once_and_shared():
    cache, load = ModelCache(), Loader()
    first = cache.acquire(("whisper", "tiny.en", "cpu"), load)
    second = cache.acquire(("whisper", "tiny.en", "cpu"), load)
    assert first is second and load.calls == 1
    assert cache.info() == [{"key": repr(("whisper", "tiny.en", "cpu")), "users": 2, "loads": 1}]
    other = cache.acquire(("whisper", "tiny.en", "cuda"), load)
    assert other is not first and load.calls == 2


def test_concurrent_acquirers_wait_for_one_load():
    cache, started, release = ModelCache(), threading.Event(), threading.Event()
    calls = []

    def slow_load():
        calls.append(1)
        started.set()
        assert release.wait(10)
        return object()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.acquire, "key", slow_load)]
        assert started.wait(10)
        futures += [pool.submit(cache.acquire, "key", slow_load) for _ in range(3)]
        release.set()
        models = [f.result(10) for f in futures]
    assert len(calls) == 1 and all(m is models[0] for m in models)
    assert cache.info()[0]["users"] == 4


def test_a_failed_load_reaches_every_waiter_and_is_not_remembered():
    cache = ModelCache()

    def broken():
        raise ModelError("no weights", model="x")

    with pytest.raises(ModelError, match="no weights"):
        cache.acquire("key", broken)
    assert cache.info() == []
    load = Loader()
    cache.acquire("key", load)
    assert load.calls == 1


def test_released_models_stay_loaded_until_too_many_are_idle():
    cache, load = ModelCache(max_idle=1), Loader()
    a = cache.acquire("a", load)
    cache.release("a")
    assert cache.acquire("a", load) is a and load.calls == 1  # idle, then reused
    cache.release("a")
    cache.acquire("b", load)
    cache.release("b")  # two idle, one allowed: "a", the least recently used, goes
    assert [entry["key"] for entry in cache.info()] == ["'b'"]
    cache.acquire("a", load)
    assert load.calls == 3


def test_a_model_in_use_is_never_evicted():
    cache, load = ModelCache(max_idle=0), Loader()
    cache.acquire("a", load)
    cache.acquire("b", load)
    cache.release("b")
    assert [entry["key"] for entry in cache.info()] == ["'a'"]
    cache.clear()
    assert [entry["key"] for entry in cache.info()] == ["'a'"]


def test_releasing_more_than_acquired_is_an_error():
    cache = ModelCache()
    with pytest.raises(ValueError, match="released more often"):
        cache.release("never")


def test_resolve_device():
    assert resolve_device("cpu", lambda: True) == "cpu"
    assert resolve_device("auto", lambda: True) == "cuda"
    assert resolve_device("auto", lambda: False) == "cpu"
    assert resolve_device("cuda", lambda: True) == "cuda"

    def broken_cuda():
        raise RuntimeError("libcudart.so not found")

    assert resolve_device("auto", broken_cuda) == "cpu"
    with pytest.raises(ModelError, match="no CUDA GPU"):
        resolve_device("cuda", lambda: False)
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu", lambda: True)


def test_require_names_the_package_to_install():
    with pytest.raises(ModelError, match=r"pip install some-package") as info:
        require("remotemedia_no_such_module", "some-package", "Testing", model="m")
    assert info.value.model == "m"
    assert isinstance(info.value.__cause__, ImportError)


def test_require_quotes_an_extra_for_the_shell():
    with pytest.raises(ModelError, match=r"pip install 'remotemedia\[ml\]'"):
        require("remotemedia_no_such_module", "remotemedia[ml]", "WhisperNode")
