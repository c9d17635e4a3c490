"""
Duplex streams end to end: in ``async for out in remote.method(inputs)``,
an iterator or async iterable argument is fed to the executor item by item
while the outputs come back, under credit flow control each way.

One signaling server and two executors, one per execution mode (``process``:
a worker process per session; ``inprocess``), shared by the module's tests;
most tests run against both. The classes below live in this test module,
which the executors cannot import: cloudpickle sends them by value.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from harness import TOKEN, mode_config, wait_until

from executor.inputs import INPUT_WINDOW
from remotemedia import RemoteExecutionError, RemoteProxyClient, RemoteTimeoutError
from remotemedia.rpc.calls import STREAM_WINDOW

#: Items a side may be ahead beyond the credit windows: the one item each
#: loop holds while it waits for credit, and the one being handed over.
SLACK = 2


class StreamBroke(Exception):
    """Raised by a remote generator mid-stream (its class travels by value)."""


class SourceBroke(Exception):
    """Raised by the client's own input iterator."""


@dataclass
class Point:
    """A value the codec cannot carry: it travels pickled."""

    x: float
    y: float
    label: str


class Streams:
    """
    Generator methods that take a stream of inputs. Each comes as an
    ``async def`` generator (the loop) and as a sync one (``*_sync``: on the
    session's worker thread).
    """

    def __init__(self, marker: str | None = None, waiting: str | None = None) -> None:
        self.marker = marker
        self.waiting = waiting
        self.produced = 0
        self.consumed_at: list[float] = []

    def _stopped(self) -> None:
        if self.marker:
            Path(self.marker).write_text("stopped")

    def _waiting_for(self, index) -> None:
        # Tells the test which input the generator is about to wait for ("end": none).
        if self.waiting:
            Path(self.waiting).write_text(str(index))

    async def doubled(self, frames):
        async for frame in frames:
            yield frame * 2

    def doubled_sync(self, frames):
        for frame in frames:
            yield frame * 2

    async def echo(self, frames):
        async for frame in frames:
            yield frame

    def echo_sync(self, frames):
        yield from frames

    async def guarded(self, frames, then_forever: bool = False):
        """Echoes the inputs (then ``None`` for ever, if asked); its ``finally`` leaves the marker."""
        try:
            frames = aiter(frames)
            for index in itertools.count():
                self._waiting_for(index)
                try:
                    frame = await anext(frames)
                except StopAsyncIteration:
                    break
                yield frame
            self._waiting_for("end")
            while then_forever:
                yield None
        finally:
            self._stopped()

    def guarded_sync(self, frames, then_forever: bool = False):
        try:
            frames = iter(frames)
            for index in itertools.count():
                self._waiting_for(index)
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                yield frame
            self._waiting_for("end")
            while then_forever:
                yield None
        finally:
            self._stopped()

    async def fail_after(self, frames, n: int):
        async for i, frame in _aenumerate(frames):
            if i == n:
                raise StreamBroke(f"broke at item {n}")
            yield frame

    def fail_after_sync(self, frames, n: int):
        for i, frame in enumerate(frames):
            if i == n:
                raise StreamBroke(f"broke at item {n}")
            yield frame

    async def take(self, frames, n: int):
        taken = 0
        async for frame in frames:
            yield frame
            taken += 1
            if taken == n:
                return

    def take_sync(self, frames, n: int):
        for taken, frame in enumerate(frames, 1):
            yield frame
            if taken == n:
                return

    async def count_slowly(self, frames):
        """Per input, after a pause, how many inputs were consumed so far."""
        consumed = 0
        async for _ in frames:
            consumed += 1
            await asyncio.sleep(0.01)
            yield consumed

    def count_slowly_sync(self, frames):
        consumed = 0
        for _ in frames:
            consumed += 1
            time.sleep(0.01)
            yield consumed

    async def count_silently(self, frames):
        """Consumes every input slowly and yields only the total at the end."""
        async for _ in frames:
            # Taken before this item's credit goes back (that is sent at the next await).
            self.consumed_at.append(time.monotonic())
            await asyncio.sleep(0.01)
        yield len(self.consumed_at)

    async def hang_after(self, frames):
        """Echoes the inputs, then hangs: a stuck remote generator."""
        async for frame in frames:
            yield frame
        await asyncio.Event().wait()
        yield "never"

    async def consumption_times(self) -> list:
        return self.consumed_at

    async def produce(self, count: int):
        for i in range(count):
            self.produced += 1
            yield i

    def produce_sync(self, count: int):
        for i in range(count):
            self.produced += 1
            yield i

    async def produced_so_far(self) -> int:
        return self.produced

    async def weighted(self, frames, weights):
        i = 0
        async for frame in frames:
            yield frame * weights[i % len(weights)]
            i += 1

    async def tagged(self, frames, tag: str):
        async for frame in frames:
            yield (tag, frame)

    def tagged_sync(self, frames, tag: str):
        for frame in frames:
            yield (tag, frame)

    def ping(self) -> str:
        return "pong"


async def _aenumerate(items):
    i = 0
    async for item in items:
        yield i, item
        i += 1


def method(remote, name: str, flavour: str):
    """The ``async def`` generator ``name``, or its sync twin."""
    return getattr(remote, name if flavour == "async" else f"{name}_sync")


async def agen(items):
    """An async generator over ``items``, giving control back to the loop between items."""
    for item in items:
        await asyncio.sleep(0)
        yield item


def source_of(kind: str, items):
    """``items`` as an input stream of the given kind."""
    if kind == "sync-generator":
        return (item for item in items)
    if kind == "async-generator":
        return agen(items)
    assert kind == "iter-list"
    return iter(list(items))


@pytest.fixture(params=["async", "sync"])
def flavour(request) -> str:
    """Whether the remote method is an ``async def`` generator or a sync one."""
    return request.param


def connect(server, mode: str) -> RemoteProxyClient:
    """A client of the executor running in ``mode`` (generous heartbeat: the test machine is loaded)."""
    return RemoteProxyClient(mode_config(server, TOKEN, mode))


# -- order and completeness ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["sync-generator", "async-generator"])
async def test_ten_thousand_items_come_back_in_order(cluster, mode, source):
    n = 10_000
    inputs = source_of(source, range(n))
    async with connect(cluster, mode) as client:
        assert client.executor == f"exec-{mode}"
        remote = await client.create_proxy(Streams())
        assert [out async for out in remote.doubled(inputs)] == [2 * i for i in range(n)]


@pytest.mark.parametrize("source", ["sync-generator", "async-generator", "iter-list"])
async def test_a_sync_generator_method_consumes_streamed_inputs(cluster, mode, source):
    n = 2_000
    inputs = source_of(source, range(n))
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        assert [out async for out in remote.doubled_sync(inputs)] == [2 * i for i in range(n)]


# -- flow control ----------------------------------------------------------------------------


async def test_a_slow_remote_consumer_holds_back_a_fast_producer(cluster, mode, flavour):
    n = 150
    produced = 0

    def producer():
        nonlocal produced
        for i in range(n):
            produced += 1
            yield i

    ahead = []
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        outputs = []
        async for consumed in method(remote, "count_slowly", flavour)(producer()):
            # When output `consumed` arrives, the remote method may have read at
            # most a stream window more inputs, and the producer may be at most
            # an input window ahead of that.
            ahead.append(produced - consumed)
            outputs.append(consumed)
    assert outputs == list(range(1, n + 1))
    assert produced == n
    assert max(ahead) <= INPUT_WINDOW + STREAM_WINDOW + SLACK, ahead


async def test_a_remote_consumer_that_yields_nothing_still_grants_input_credit(cluster, mode):
    # Nothing comes back until the end, so only the input credit can hold the
    # producer back. Both sides stamp their steps with the system-wide
    # monotonic clock (one machine): the stamps order events, nothing is timed.
    n = 120
    pulled_at = []

    def producer():
        for i in range(n):
            pulled_at.append(time.monotonic())
            yield i

    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        assert [out async for out in remote.count_silently(producer())] == [n]
        consumed_at = await remote.consumption_times()
    assert len(consumed_at) == n
    # Item k is pulled only once k - 1 were sent, each under a credit that the
    # remote method granted back after consuming an item.
    ahead = [k - sum(t <= pulled for t in consumed_at) for k, pulled in enumerate(pulled_at, 1)]
    assert max(ahead) <= INPUT_WINDOW + SLACK, ahead


async def test_a_slow_client_consumer_holds_back_a_fast_remote_producer(cluster, mode, flavour):
    n = 100
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        ahead = []
        received = []
        async for item in method(remote, "produce", flavour)(n):
            received.append(item)
            # While this client is still on item k, the executor has credit for
            # the items before it and one window more.
            ahead.append(await remote.produced_so_far() - len(received))
            await asyncio.sleep(0.005)  # a slow consumer
    assert received == list(range(n))
    assert max(ahead) <= STREAM_WINDOW + SLACK, ahead


# -- ending a stream early ---------------------------------------------------------------------


async def _still_usable(remote) -> None:
    # Bounded only to say "does not hang".
    assert await asyncio.wait_for(remote.ping(), 20) == "pong"
    assert [x async for x in remote.doubled(iter([1, 2]))] == [2, 4]


def endless(pulled: list):
    """0, 1, 2... for ever, counting in ``pulled[0]`` how many were taken."""
    i = 0
    while True:
        pulled[0] += 1
        yield i
        i += 1


async def test_breaking_out_of_a_duplex_stream_stops_the_remote_generator(cluster, mode, flavour, tmp_path):
    marker, waiting = tmp_path / "stopped", tmp_path / "waiting"
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams(marker=str(marker), waiting=str(waiting)))
        received = []
        async for item in method(remote, "guarded", flavour)(iter(range(10)), then_forever=True):
            received.append(item)
            if len(received) == 5:
                # Past its inputs, the remote generator can only be stopped by the break.
                await wait_until(lambda: waiting.read_text() == "end", timeout=15)
                break
        assert received == [0, 1, 2, 3, 4]
        await wait_until(marker.exists, timeout=15)
        await _still_usable(remote)


@pytest.mark.parametrize(
    "flavour",
    ["async", "sync"],
)
async def test_breaking_out_while_the_remote_generator_waits_for_input_stops_it(cluster, mode, flavour, tmp_path):
    marker, waiting = tmp_path / "stopped", tmp_path / "waiting"
    source_closed = asyncio.Event()

    async def five_then_nothing():
        try:
            for i in range(5):
                yield i
            await asyncio.Event().wait()  # a live source with nothing more to say
        finally:
            source_closed.set()

    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams(marker=str(marker), waiting=str(waiting)))
        received = []
        async for item in method(remote, "guarded", flavour)(five_then_nothing()):
            received.append(item)
            if len(received) == 5:
                # Once it says so, the remote generator is inside its wait for input #5.
                await wait_until(lambda: waiting.read_text() == "5", timeout=15)
                break
        assert received == [0, 1, 2, 3, 4]
        # The client stops reading its input, and the remote generator is stopped.
        await asyncio.wait_for(source_closed.wait(), 15)
        await wait_until(marker.exists, timeout=10)
        await _still_usable(remote)


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_an_exception_mid_stream_arrives_after_the_items_before_it(cluster, mode, flavour):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        received = []
        with pytest.raises(RemoteExecutionError) as info:
            async for item in method(remote, "fail_after", flavour)(iter(range(100)), 7):
                received.append(item)
        assert received == list(range(7))
        assert info.value.remote_type == f"{__name__}.StreamBroke"
        assert info.value.remote_message == "broke at item 7"
        assert "fail_after" in info.value.remote_traceback
        await _still_usable(remote)


def broken_source(kind: str):
    """0, 1, 2, then ``SourceBroke``: as a generator or as an async generator."""

    def broken():
        yield from range(3)
        raise SourceBroke("the camera fell off")

    async def broken_async():
        for i in range(3):
            yield i
        raise SourceBroke("the camera fell off")

    return broken() if kind == "sync-generator" else broken_async()


@pytest.mark.parametrize("source", ["sync-generator", "async-generator"])
async def test_a_failing_input_iterator_fails_the_clients_loop_with_its_own_exception(cluster, mode, source):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        received = []
        with pytest.raises(SourceBroke, match="^the camera fell off$"):
            async for item in remote.guarded(broken_source(source)):
                received.append(item)
        # The failure is raised here at once: outputs still on their way are not waited for.
        assert received == [0, 1, 2][: len(received)]
        await _still_usable(remote)


def source_breaking_after_first_output(kind: str, seen: list):
    """Counts up until the client has received an output, then raises ``SourceBroke``.

    The failure comes only once the remote generator has yielded, so it has
    surely started (a generator that never started has no ``finally`` to run;
    a source that fails at once can be cancelled before the remote call begins).
    """

    def source():
        i = 0
        while not seen:
            yield i
            i += 1
        raise SourceBroke("the camera fell off")

    async def source_async():
        for item in source():
            yield item

    return source() if kind == "sync-generator" else source_async()


@pytest.mark.parametrize("mode, source", [("process", "sync-generator"), ("inprocess", "async-generator")])
async def test_a_failing_input_iterator_stops_the_remote_generator(cluster, mode, source, tmp_path):
    marker = tmp_path / "stopped"
    seen: list = []
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams(marker=str(marker)))
        with pytest.raises(SourceBroke):
            async for item in remote.guarded(source_breaking_after_first_output(source, seen)):
                seen.append(item)
        assert seen[:1] == [0]
        await wait_until(marker.exists, timeout=10)
        await _still_usable(remote)


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_remote_generator_that_returns_early_ends_the_stream(cluster, mode, flavour):
    pulled = [0]
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        assert [x async for x in method(remote, "take", flavour)(endless(pulled), 3)] == [0, 1, 2]
        # The endless producer was held back by the input credit, not drained.
        assert 3 <= pulled[0] <= 3 + INPUT_WINDOW + SLACK
        await _still_usable(remote)


@pytest.mark.parametrize("source", ["sync-generator", "async-generator", "iter-list"])
async def test_an_empty_input_stream_gives_an_empty_output(cluster, mode, flavour, source):
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        assert [x async for x in method(remote, "doubled", flavour)(source_of(source, []))] == []
        await _still_usable(remote)


# -- what travels ---------------------------------------------------------------------------------


async def test_pickled_values_and_numpy_arrays_travel_through_the_stream(cluster, mode, flavour):
    rng = np.random.default_rng(7)
    items = [
        Point(1.5, -2.0, "a"),
        rng.standard_normal(48_000).astype(np.float32),
        {1, 2, 3},  # a set: not in the codec either
        rng.integers(-(2**15), 2**15, (120, 160, 3), dtype=np.int16),
        np.arange(10, dtype=np.complex128)[::2],  # not contiguous
        rng.standard_normal(600_000),  # about 4.8 MB: chunked
        Point(0.0, 0.0, "b" * 1000),
        np.zeros((0, 3)),
    ]
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())
        back = [x async for x in method(remote, "echo", flavour)(iter(items))]
    assert len(back) == len(items)
    for sent, got in zip(items, back):
        if isinstance(sent, np.ndarray):
            assert got.dtype == sent.dtype and got.shape == sent.shape
            assert got.tobytes() == np.ascontiguousarray(sent).tobytes()
        else:
            assert type(got) is type(sent) and got == sent


# -- misuse -------------------------------------------------------------------------------------------


async def test_streamed_inputs_need_async_for_and_only_one_of_them_streams(cluster):
    pulled = 0

    def counted(n):
        nonlocal pulled
        for i in range(n):
            pulled += 1
            yield i

    async with connect(cluster, "inprocess") as client:
        remote = await client.create_proxy(Streams())
        with pytest.raises(TypeError, match="async for"):
            await remote.doubled(counted(3))
        stray = agen([1])
        with pytest.raises(TypeError, match="async for"):
            await remote.doubled(frames=stray)
        await stray.aclose()
        with pytest.raises(TypeError, match="one input"):
            [x async for x in remote.weighted(counted(3), counted(3))]
        with pytest.raises(TypeError, match="one input"):
            [x async for x in remote.weighted(counted(3), weights=iter([1]))]
        assert pulled == 0  # refused before anything was read
        # Lists and tuples are not streams: they travel whole, next to the streamed input.
        assert [x async for x in remote.weighted(counted(4), [1, 10])] == [0, 10, 2, 30]
        assert [x async for x in remote.weighted(agen([1, 1, 1]), weights=(5, 6, 7))] == [5, 6, 7]
        # The streamed input may be a keyword argument too.
        assert [x async for x in remote.weighted(weights=[3], frames=counted(2))] == [0, 3]
        await _still_usable(remote)


# -- concurrency ----------------------------------------------------------------------------------


async def test_three_duplex_streams_at_once_on_one_session_get_their_own_items(cluster, mode, flavour):
    n = 300
    async with connect(cluster, mode) as client:
        remote = await client.create_proxy(Streams())

        async def run(tag: str, inputs):
            return [x async for x in method(remote, "tagged", flavour)(inputs, tag)]

        results = await asyncio.gather(
            run("a", iter(range(n))),
            run("b", agen(range(1000, 1000 + n))),
            run("c", (-i for i in range(n))),
        )
    assert results[0] == [("a", i) for i in range(n)]
    assert results[1] == [("b", i) for i in range(1000, 1000 + n)]
    assert results[2] == [("c", -i) for i in range(n)]


# -- timeouts ----------------------------------------------------------------------------------


async def test_an_idle_input_source_does_not_time_the_stream_out(cluster, mode):
    # A microphone in a pause: nothing goes in, so nothing comes out, for
    # longer than the timeout; that wait is the caller's, not the executor's.
    config = mode_config(cluster, TOKEN, mode)
    config = type(config)(**{**config.__dict__, "timeout": 1.0})

    async def pausing():
        yield 1
        await asyncio.sleep(2.5)  # the pause under test
        yield 2

    async with RemoteProxyClient(config) as client:
        remote = await client.create_proxy(Streams())
        assert [out async for out in remote.echo(pausing())] == [1, 2]


async def test_a_stream_stuck_after_its_inputs_ended_still_times_out(cluster, mode):
    config = mode_config(cluster, TOKEN, mode)
    config = type(config)(**{**config.__dict__, "timeout": 1.0})
    async with RemoteProxyClient(config) as client:
        remote = await client.create_proxy(Streams())
        seen = []
        with pytest.raises(RemoteTimeoutError, match=r"remote stream hang_after\(\)"):
            async for out in remote.hang_after(agen([1, 2])):
                seen.append(out)
        assert seen == [1, 2]
