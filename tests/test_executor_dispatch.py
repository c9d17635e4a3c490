"""
The executor's request dispatcher and input streams, fed messages directly:
no network, no processes. (End-to-end behaviour is in test_remote_*.py.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import cloudpickle
import pytest

from executor.dispatch import Dispatcher, Limits
from executor.inputs import INPUT_WINDOW, InputStream
from executor.objects import ObjectTable
from remotemedia.rpc import Kind, Message


class Thing:
    def __init__(self) -> None:
        self.calls = 0

    def add(self, a, b):
        self.calls += 1
        return a + b

    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        return "rested"

    def spin(self, seconds):
        time.sleep(seconds)
        return "spun"

    def hog(self):
        raise MemoryError("cannot allocate")

    async def double(self, frames):
        async for frame in frames:
            yield frame * 2

    def plus_one(self, frames):
        for frame in frames:
            yield frame + 1


class Wire:
    """The dispatcher's ``send``: records replies and wakes waiters."""

    def __init__(self) -> None:
        self.sent: list[tuple[Kind, int, object]] = []
        self._changed = asyncio.Event()

    async def send(self, kind: Kind, id: int, body=None) -> None:
        self.sent.append((kind, id, body))
        self._changed.set()

    async def reply(self, id: int, kinds=(Kind.RESULT, Kind.ERROR, Kind.END)) -> tuple[Kind, object]:
        async def find():
            while True:
                for kind, sent_id, body in self.sent:
                    if sent_id == id and kind in kinds:
                        return kind, body
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(find(), 10)

    def items(self, id: int) -> list:
        return [body for kind, sent_id, body in self.sent if sent_id == id and kind is Kind.YIELD]


@pytest.fixture
async def served():
    wire = Wire()
    stuck: list[str] = []
    made = []

    def make(limits: Limits = Limits()) -> Dispatcher:
        dispatcher = Dispatcher(ObjectTable("test"), wire.send, limits, stuck.append)
        made.append(dispatcher)
        return dispatcher

    yield make, wire, stuck
    for dispatcher in made:
        await dispatcher.close()


def create(dispatcher: Dispatcher, handle: int = 1, obj=None) -> None:
    dispatcher.handle(Message(Kind.CREATE, handle, cloudpickle.dumps(obj or Thing()), pickled=True))


def call(dispatcher: Dispatcher, id: int, name: str, *args, credit: int = 0, where=None) -> None:
    dispatcher.handle(Message(Kind.CALL, id, [1, name, list(args), {}, credit, where]))


async def test_create_then_call(served):
    make, wire, _ = served
    d = make()
    create(d)
    assert (await wire.reply(1)) == (Kind.RESULT, {"type": f"{__name__}.Thing"})
    call(d, 2, "add", 2, 3)
    assert await wire.reply(2) == (Kind.RESULT, 5)


async def test_a_malformed_call_body_is_answered_with_an_error(served):
    make, wire, _ = served
    d = make()
    d.handle(Message(Kind.CALL, 5, [1, "add", [1, 2], {}, 0]))  # the protocol-1 shape
    kind, body = await wire.reply(5)
    assert kind is Kind.ERROR and body["code"] == "bad_request"


async def test_the_object_limit_is_enforced_and_released_objects_make_room(served):
    make, wire, _ = served
    d = make(Limits(max_objects=2))
    create(d, 1)
    create(d, 2)
    await wire.reply(1)
    await wire.reply(2)
    create(d, 3)
    kind, body = await wire.reply(3)
    assert kind is Kind.ERROR and body["code"] == "objects" and "--max-objects" in body["message"]
    d.handle(Message(Kind.RELEASE, 4, 2))
    assert await wire.reply(4) == (Kind.RESULT, None)
    create(d, 5)
    assert (await wire.reply(5))[0] is Kind.RESULT


async def test_an_async_call_past_the_timeout_is_cancelled_and_the_session_goes_on(served):
    make, wire, stuck = served
    d = make(Limits(call_timeout=0.2))
    create(d)
    await wire.reply(1)
    call(d, 2, "nap", 30)
    kind, body = await wire.reply(2)
    assert kind is Kind.ERROR and body["code"] == "timeout" and "0.2 s" in body["message"]
    assert stuck == []
    call(d, 3, "add", 1, 1)
    assert await wire.reply(3) == (Kind.RESULT, 2)


async def test_sync_code_past_the_timeout_declares_the_session_stuck_after_answering(served):
    make, wire, stuck = served
    d = make(Limits(call_timeout=0.2))
    create(d)
    await wire.reply(1)
    call(d, 2, "spin", 1.0)
    kind, body = await wire.reply(2)
    assert kind is Kind.ERROR and body["code"] == "timeout" and "cannot be interrupted" in body["message"]
    await asyncio.wait_for(_until(lambda: stuck), 5)
    assert "spin()" in stuck[0]


async def test_out_of_memory_names_the_memory_limit(served):
    make, wire, _ = served
    d = make(Limits(memory_limit=300))
    create(d)
    await wire.reply(1)
    call(d, 2, "hog")
    kind, body = await wire.reply(2)
    assert kind is Kind.ERROR and body["code"] == "memory"
    assert "300 MB" in body["message"] and "--memory-limit" in body["message"]


async def test_without_a_memory_limit_a_memory_error_is_the_objects_own(served):
    make, wire, _ = served
    d = make()
    create(d)
    await wire.reply(1)
    call(d, 2, "hog")
    kind, body = await wire.reply(2)
    assert kind is Kind.ERROR and body["code"] == "exception" and body["type"] == "builtins.MemoryError"


@pytest.mark.parametrize("method, expected", [("double", lambda i: i * 2), ("plus_one", lambda i: i + 1)])
async def test_a_duplex_stream_takes_inputs_sent_right_behind_its_call(served, method, expected):
    make, wire, _ = served
    d = make()
    create(d)
    await wire.reply(1)
    # The inputs arrive before the call's task has even started.
    call(d, 2, method, None, credit=100, where=0)
    for i in range(10):
        d.handle(Message(Kind.INPUT, 2, i))
    d.handle(Message(Kind.INPUT_END, 2))
    assert (await wire.reply(2))[0] is Kind.END
    assert wire.items(2) == [expected(i) for i in range(10)]


async def test_input_credit_is_granted_back_as_the_method_consumes(served):
    make, wire, _ = served
    d = make()
    create(d)
    await wire.reply(1)
    call(d, 2, "double", None, credit=100, where=0)
    for i in range(INPUT_WINDOW):
        d.handle(Message(Kind.INPUT, 2, i))
    await asyncio.wait_for(_until(lambda: len(wire.items(2)) == INPUT_WINDOW), 5)
    granted = sum(body for kind, id, body in wire.sent if kind is Kind.CREDIT and id == 2)
    assert granted == INPUT_WINDOW
    d.handle(Message(Kind.INPUT_END, 2))
    await wire.reply(2)


async def test_inputs_beyond_the_credit_fail_the_call(served):
    make, wire, _ = served
    d = make()
    create(d)
    await wire.reply(1)
    d.handle(Message(Kind.CALL, 2, [1, "double", [None], {}, 1, 0]))
    for i in range(INPUT_WINDOW + 1):  # the method is not consuming yet: one too many
        d.handle(Message(Kind.INPUT, 2, i))
    kind, body = await wire.reply(2, kinds=(Kind.ERROR,))
    assert "credit" in body["message"]


async def test_inputs_for_a_call_that_is_over_are_dropped(served):
    make, wire, _ = served
    d = make()
    d.handle(Message(Kind.INPUT, 77, 1))
    d.handle(Message(Kind.INPUT_END, 77))
    assert wire.sent == []


async def test_an_input_stream_needs_a_streamed_call(served):
    make, wire, _ = served
    d = make()
    create(d)
    await wire.reply(1)
    call(d, 2, "double", None, credit=0, where=0)
    kind, body = await wire.reply(2)
    assert kind is Kind.ERROR and "async for" in body["message"]


# -- InputStream on its own ------------------------------------------------------------


async def test_input_stream_yields_in_order_then_ends_for_good():
    granted = []
    stream = InputStream(granted.append, window=4)
    for i in range(4):
        stream.put(i)
    with pytest.raises(ValueError, match="credit"):
        stream.put(4)
    stream.end()
    assert [x async for x in stream] == [0, 1, 2, 3]
    assert [x async for x in stream] == []
    assert granted == [2, 2]
    with pytest.raises(ValueError):
        stream.put(5)


async def test_input_stream_serves_a_sync_consumer_on_another_thread():
    stream = InputStream(lambda n: None, window=4)
    got: list = []
    consumer = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    consumer.start()
    for i in range(3):
        stream.put(i)
    stream.end()
    await asyncio.wait_for(asyncio.to_thread(consumer.join, 5), 10)
    assert got == [0, 1, 2]
    with pytest.raises(RuntimeError, match="worker thread"):
        next(iter(stream))


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


async def test_cancelling_an_input_stream_wakes_a_sync_consumer_with_input_cancelled():
    from executor.inputs import InputCancelled

    stream = InputStream(lambda n: None, window=4)
    raised: list = []

    def consume():
        try:
            for _ in stream:
                pass
        except InputCancelled as exc:
            raised.append(exc)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    stream.put(1)
    stream.cancel()
    await asyncio.wait_for(asyncio.to_thread(consumer.join, 5), 10)
    assert len(raised) == 1
    with pytest.raises(InputCancelled):
        await stream.__anext__()
