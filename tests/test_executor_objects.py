"""executor.objects: the ObjectTable of one session (create, method, call, stream, release, close) and error_body."""

from __future__ import annotations

import asyncio
import importlib
import pickle
import sys
import threading

import pytest

import executor.objects
import executor.worker
from executor.objects import ObjectTable, RemoteCallError, error_body
from remotemedia.exceptions import SerializationError
from remotemedia.serialization import dumps_object

# -- helper classes (module level so they pickle) ---------------------------------------------------
#
# dumps_object sends this module's classes by value, so the unpickled objects do
# not share this module's globals: each object records what happened to it in its
# own ``events`` list, which the test reads through the object create() returns.


class Lifecycle:
    """Records initialize() and cleanup() in ``events``."""

    def __init__(self, name: str = "obj") -> None:
        self.name = name
        self.events: list[str] = []

    def initialize(self) -> None:
        self.events.append("initialize")

    def cleanup(self) -> None:
        self.events.append("cleanup")


class Recorder(Lifecycle):
    """Records the thread of initialize() and of its sync calls in ``threads``."""

    label = "not callable"

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name)
        self.threads: list[threading.Thread] = []

    def initialize(self) -> None:
        super().initialize()
        self.threads.append(threading.current_thread())

    def add(self, a, b=0):
        self.threads.append(threading.current_thread())
        return a + b

    def where(self) -> threading.Thread:
        self.threads.append(threading.current_thread())
        return threading.current_thread()

    async def async_where(self) -> threading.Thread:
        return threading.current_thread()

    async def async_add(self, a, b=0):
        return a + b

    def count(self, n):
        yield from range(n)

    async def async_count(self, n):
        for i in range(n):
            yield i

    def thread_per_item(self, n):
        for _ in range(n):
            yield threading.current_thread()

    async def async_thread_per_item(self, n):
        for _ in range(n):
            yield threading.current_thread()

    def make_generator(self, n):
        return (i * 10 for i in range(n))

    def make_async_generator(self, n):
        return self.async_count(n)

    def fail(self, message):
        raise ValueError(message)

    async def async_fail(self, message):
        raise ValueError(message)

    def _x(self):
        return "private"


class AsyncLifecycle(Lifecycle):
    """initialize() and cleanup() are coroutines."""

    async def initialize(self) -> None:
        self.events.append("initialize")

    async def cleanup(self) -> None:
        self.events.append("cleanup")


class FailingCleanup(Lifecycle):
    def cleanup(self) -> None:
        self.events.append("cleanup")
        raise RuntimeError("cleanup went wrong")


class FailingAsyncCleanup(Lifecycle):
    async def cleanup(self) -> None:
        self.events.append("cleanup")
        raise RuntimeError("async cleanup went wrong")


class FailingInitialize:
    def initialize(self) -> None:
        raise RuntimeError("initialize went wrong")


class Plain:
    """No initialize(), no cleanup()."""

    value = 7


class GuardedStream(Lifecycle):
    """Generators whose finally blocks record that they ran."""

    def numbers(self):
        try:
            yield from range(100)
        finally:
            self.events.append("finally")

    async def async_numbers(self):
        try:
            for i in range(100):
                yield i
        finally:
            self.events.append("finally")


def user_function_that_raises(message):
    raise ValueError(message)


class CallsUserFunction:
    def run(self, message):
        user_function_that_raises(message)


@pytest.fixture
async def table():
    table = ObjectTable("test")
    yield table
    await table.close()


# -- create -----------------------------------------------------------------------------------------


async def test_create_unpickles_the_object_and_runs_its_sync_initialize(table):
    obj = await table.create(1, dumps_object(Recorder("a")))
    assert type(obj).__name__ == "Recorder" and obj.name == "a"
    assert obj.events == ["initialize"]
    assert len(table) == 1


async def test_create_runs_sync_initialize_on_the_worker_thread(table):
    obj = await table.create(1, dumps_object(Recorder()))
    assert obj.threads[0] is not threading.current_thread()


async def test_create_awaits_an_async_initialize(table):
    obj = await table.create(1, dumps_object(AsyncLifecycle("b")))
    assert obj.events == ["initialize"]


async def test_create_accepts_an_object_without_initialize(table):
    obj = await table.create(1, dumps_object(Plain()))
    assert obj.value == 7
    assert len(table) == 1


async def test_create_refuses_a_handle_in_use(table):
    first = await table.create(1, dumps_object(Recorder("first")))
    with pytest.raises(RemoteCallError, match="already in use"):
        await table.create(1, dumps_object(Recorder("second")))
    assert table.method(1, "where").__self__ is first
    assert first.events == ["initialize"]


async def test_concurrent_creates_with_one_handle_refuse_the_second(table):
    results = await asyncio.gather(
        table.create(1, dumps_object(Recorder("first"))),
        table.create(1, dumps_object(Recorder("second"))),
        return_exceptions=True,
    )
    await table.close()
    created = [r for r in results if not isinstance(r, BaseException)]
    # Every object that was initialized and stored gets its cleanup(): none is silently dropped.
    assert all(obj.events == ["initialize", "cleanup"] for obj in created)
    assert sum(isinstance(r, RemoteCallError) for r in results) == 1


async def test_create_with_a_failing_initialize_raises_and_stores_nothing(table):
    with pytest.raises(RuntimeError, match="initialize went wrong"):
        await table.create(1, dumps_object(FailingInitialize()))
    assert len(table) == 0
    with pytest.raises(RemoteCallError) as info:
        table.method(1, "anything")
    assert info.value.code == "no_object"


async def test_create_with_corrupt_bytes_raises_serialization_error(table):
    with pytest.raises(SerializationError):
        await table.create(1, b"definitely not a pickle")
    assert len(table) == 0


async def test_create_with_bytes_needing_a_missing_module_raises_serialization_error(table, tmp_path):
    module_name = "rm_test_vanishing_module"
    (tmp_path / f"{module_name}.py").write_text("class Vanishing:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.invalidate_caches()
        module = importlib.import_module(module_name)
        data = pickle.dumps(module.Vanishing())  # by reference: the executor would need the module
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module_name, None)
        importlib.invalidate_caches()

    with pytest.raises(SerializationError) as info:
        await table.create(1, data)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    body = error_body(info.value)
    assert body["code"] == "serialization"
    assert body["module"] == module_name
    assert len(table) == 0


# -- method ------------------------------------------------------------------------------------------


async def test_method_returns_the_bound_method(table):
    obj = await table.create(1, dumps_object(Recorder()))
    method = table.method(1, "add")
    assert method.__self__ is obj and method.__name__ == "add"


async def test_method_refuses_an_unknown_handle(table):
    with pytest.raises(RemoteCallError) as info:
        table.method(99, "add")
    assert info.value.code == "no_object"


@pytest.mark.parametrize("name", ["_x", "__class__", "__init__", "__reduce__", "_"])
async def test_method_refuses_private_names(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError) as info:
        table.method(1, name)
    assert info.value.code == "no_method"


@pytest.mark.parametrize("name", ["missing", "label", "name", "initialized"])
async def test_method_refuses_missing_and_non_callable_attributes(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError) as info:
        table.method(1, name)
    assert info.value.code == "no_method"


@pytest.mark.parametrize("name", [None, 3, b"add"])
async def test_method_refuses_a_name_that_is_not_a_string(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError) as info:
        table.method(1, name)
    assert info.value.code == "no_method"


# -- call ----------------------------------------------------------------------------------------------


async def test_call_runs_a_sync_method_with_args_and_kwargs(table):
    await table.create(1, dumps_object(Recorder()))
    assert await table.call(table.method(1, "add"), (2,), {"b": 3}) == 5


async def test_call_runs_sync_methods_on_the_worker_thread_not_the_loop(table):
    await table.create(1, dumps_object(Recorder()))
    thread = await table.call(table.method(1, "where"), (), {})
    assert thread is not threading.current_thread()


async def test_all_sync_calls_of_one_table_run_on_the_same_thread(table):
    first = await table.create(1, dumps_object(Recorder("one")))
    second = await table.create(2, dumps_object(Recorder("two")))
    await table.call(table.method(1, "where"), (), {})
    await table.call(table.method(2, "add"), (1,), {})
    await asyncio.gather(*(table.call(table.method(h, "where"), (), {}) for h in (1, 2, 1, 2)))
    threads = set(first.threads) | set(second.threads)  # initialize() included
    assert len(threads) == 1
    assert threading.current_thread() not in threads


async def test_two_tables_use_two_threads():
    one, two = ObjectTable("one"), ObjectTable("two")
    try:
        await one.create(1, dumps_object(Recorder()))
        await two.create(1, dumps_object(Recorder()))
        thread_one = await one.call(one.method(1, "where"), (), {})
        thread_two = await two.call(two.method(1, "where"), (), {})
        assert thread_one is not thread_two
    finally:
        await one.close()
        await two.close()


async def test_call_awaits_async_methods_on_the_loop_thread(table):
    await table.create(1, dumps_object(Recorder()))
    assert await table.call(table.method(1, "async_where"), (), {}) is threading.current_thread()
    assert await table.call(table.method(1, "async_add"), (1,), {"b": 2}) == 3


@pytest.mark.parametrize("name", ["count", "async_count"])
async def test_call_refuses_generator_methods_pointing_to_async_for(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError, match="async for"):
        await table.call(table.method(1, name), (3,), {})


@pytest.mark.parametrize("name", ["make_generator", "make_async_generator"])
async def test_call_refuses_a_method_that_returns_a_generator(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError, match="async for"):
        await table.call(table.method(1, name), (3,), {})


@pytest.mark.parametrize("name", ["fail", "async_fail"])
async def test_call_raises_the_methods_exception(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(ValueError, match="boom"):
        await table.call(table.method(1, name), ("boom",), {})


# -- stream ---------------------------------------------------------------------------------------------


async def collect(aiter) -> list:
    return [item async for item in aiter]


async def test_stream_yields_the_items_of_a_sync_generator(table):
    await table.create(1, dumps_object(Recorder()))
    assert await collect(table.stream(table.method(1, "count"), (4,), {})) == [0, 1, 2, 3]


async def test_stream_yields_the_items_of_an_async_generator(table):
    await table.create(1, dumps_object(Recorder()))
    assert await collect(table.stream(table.method(1, "async_count"), (3,), {})) == [0, 1, 2]


async def test_stream_yields_the_items_of_a_generator_returned_by_a_sync_method(table):
    await table.create(1, dumps_object(Recorder()))
    assert await collect(table.stream(table.method(1, "make_generator"), (3,), {})) == [0, 10, 20]


async def test_stream_yields_the_items_of_an_async_generator_returned_by_a_sync_method(table):
    await table.create(1, dumps_object(Recorder()))
    assert await collect(table.stream(table.method(1, "make_async_generator"), (2,), {})) == [0, 1]


async def test_stream_of_an_empty_generator_yields_nothing(table):
    await table.create(1, dumps_object(Recorder()))
    assert await collect(table.stream(table.method(1, "count"), (0,), {})) == []


async def test_stream_advances_a_sync_generator_on_the_worker_thread(table):
    await table.create(1, dumps_object(Recorder()))
    worker = await table.call(table.method(1, "where"), (), {})
    threads = await collect(table.stream(table.method(1, "thread_per_item"), (3,), {}))
    assert threads == [worker, worker, worker]
    assert worker is not threading.current_thread()


async def test_stream_runs_an_async_generator_on_the_loop_thread(table):
    await table.create(1, dumps_object(Recorder()))
    threads = await collect(table.stream(table.method(1, "async_thread_per_item"), (2,), {}))
    assert threads == [threading.current_thread()] * 2


@pytest.mark.parametrize("name", ["add", "async_add"])
async def test_stream_refuses_a_non_generator_pointing_to_await(table, name):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(RemoteCallError, match="await"):
        await collect(table.stream(table.method(1, name), (1,), {}))


@pytest.mark.parametrize("name", ["numbers", "async_numbers"])
async def test_closing_a_stream_early_runs_the_generators_finally_block(table, name):
    obj = await table.create(1, dumps_object(GuardedStream()))
    stream = table.stream(table.method(1, name), (), {})
    assert await stream.__anext__() == 0
    assert obj.events == ["initialize"]
    await stream.aclose()
    assert obj.events == ["initialize", "finally"]


async def test_a_stream_runs_the_finally_block_when_it_ends(table):
    obj = await table.create(1, dumps_object(GuardedStream()))
    items = await collect(table.stream(table.method(1, "numbers"), (), {}))
    assert items == list(range(100))
    assert obj.events == ["initialize", "finally"]


async def test_stream_raises_the_generators_exception(table):
    await table.create(1, dumps_object(Recorder()))
    with pytest.raises(ValueError, match="bad"):
        await collect(table.stream(table.method(1, "fail"), ("bad",), {}))


# -- release and close ------------------------------------------------------------------------------------


async def test_release_runs_sync_cleanup_and_forgets_the_object(table):
    obj = await table.create(1, dumps_object(Recorder("r")))
    await table.release(1)
    assert obj.events == ["initialize", "cleanup"]
    assert len(table) == 0
    with pytest.raises(RemoteCallError) as info:
        table.method(1, "add")
    assert info.value.code == "no_object"


async def test_release_awaits_async_cleanup(table):
    obj = await table.create(1, dumps_object(AsyncLifecycle("a")))
    await table.release(1)
    assert obj.events == ["initialize", "cleanup"]
    assert len(table) == 0


async def test_release_of_an_object_without_cleanup_forgets_it(table):
    await table.create(1, dumps_object(Plain()))
    await table.release(1)
    assert len(table) == 0


async def test_release_of_an_unknown_handle_is_refused(table):
    with pytest.raises(RemoteCallError) as info:
        await table.release(5)
    assert info.value.code == "no_object"


async def test_a_released_handle_can_be_used_again(table):
    await table.create(1, dumps_object(Recorder("old")))
    await table.release(1)
    obj = await table.create(1, dumps_object(Recorder("new")))
    assert table.method(1, "add").__self__ is obj


async def test_close_runs_every_cleanup_even_when_one_raises():
    table = ObjectTable("closing")
    kinds = [Recorder, FailingCleanup, FailingAsyncCleanup, AsyncLifecycle, Recorder]
    objects = [await table.create(handle, dumps_object(kind())) for handle, kind in enumerate(kinds)]
    await table.close()  # does not raise
    assert [obj.events[-1] for obj in objects] == ["cleanup"] * len(kinds)
    assert len(table) == 0


async def test_close_of_an_empty_table_does_not_raise():
    await ObjectTable("empty").close()


async def test_release_raises_the_cleanup_error(table):
    await table.create(1, dumps_object(FailingCleanup("x")))
    with pytest.raises(RuntimeError, match="cleanup went wrong"):
        await table.release(1)
    assert len(table) == 0


# -- error_body --------------------------------------------------------------------------------------------


async def raised_by_call(table, obj, name, *args) -> BaseException:
    await table.create(1, dumps_object(obj))
    try:
        await table.call(table.method(1, name), args, {})
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        return exc
    raise AssertionError("the call did not raise")


async def test_error_body_of_a_value_error_in_a_method(table):
    exc = await raised_by_call(table, CallsUserFunction(), "run", "it broke")
    body = error_body(exc)
    assert body["code"] == "exception"
    assert body["type"] == "builtins.ValueError"
    assert body["message"] == "it broke"
    assert "user_function_that_raises" in body["traceback"]
    assert "ValueError: it broke" in body["traceback"]
    assert "module" not in body


async def test_error_body_traceback_leaves_out_the_executors_frames(table):
    exc = await raised_by_call(table, CallsUserFunction(), "run", "it broke")
    traceback_text = error_body(exc)["traceback"]
    assert executor.objects.__file__ not in traceback_text
    assert executor.worker.__file__ not in traceback_text
    assert asyncio.__file__.rsplit("__init__", 1)[0] not in traceback_text


async def test_error_body_of_an_async_method_names_the_method(table):
    exc = await raised_by_call(table, Recorder(), "async_fail", "async broke")
    body = error_body(exc)
    assert body["code"] == "exception" and body["message"] == "async broke"
    assert "async_fail" in body["traceback"]
    assert executor.objects.__file__ not in body["traceback"]


def test_error_body_of_a_serialization_error_names_the_missing_module():
    try:
        raise SerializationError("cannot deserialize object") from ModuleNotFoundError(
            "No module named 'missing_mod'", name="missing_mod"
        )
    except SerializationError as exc:
        body = error_body(exc)
    assert body["code"] == "serialization"
    assert body["module"] == "missing_mod"
    assert body["type"] == "remotemedia.exceptions.SerializationError"
    assert body["message"] == "cannot deserialize object"


def test_error_body_of_a_serialization_error_without_a_missing_module_has_no_module():
    body = error_body(SerializationError("corrupt"))
    assert body["code"] == "serialization"
    assert "module" not in body


def test_error_body_of_a_remote_call_error_carries_its_code():
    body = error_body(RemoteCallError("no such object", "no_object"))
    assert body == {"code": "no_object", "type": "", "message": "no such object", "traceback": ""}


def test_error_body_of_an_exception_never_raised_has_a_bare_traceback():
    body = error_body(KeyError("k"))
    assert body["code"] == "exception" and body["type"] == "builtins.KeyError"
    assert body["traceback"].startswith("Traceback (most recent call last):")


class _Upload:
    """Stands for a large argument (bytes cannot be weakly referenced)."""


def _refuse(upload: _Upload) -> None:
    raise ValueError("refused")


async def test_a_failed_calls_arguments_are_freed_without_a_garbage_collection():
    # The exception's traceback holds the worker thread's frame; if that frame held the
    # future (which holds the exception), the arguments would wait for the collector.
    import gc
    import weakref

    worker = executor.worker.Worker("refcount")
    gc.collect()
    gc.disable()
    try:
        upload = _Upload()
        alive = weakref.ref(upload)

        async def serve(upload: _Upload) -> None:  # as the dispatcher does: a task that answers the error
            try:
                await worker.run(_refuse, upload)
            except ValueError:
                pass

        await asyncio.create_task(serve(upload))
        del upload
        worker.stop()  # as at a session's end
        worker.thread.join(5)
        assert alive() is None
    finally:
        gc.enable()
