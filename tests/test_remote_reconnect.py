"""
Client reconnection end to end: a real signaling server and real executors
as subprocesses on loopback, some of which the tests kill (SIGKILL) or
freeze (SIGSTOP) under a live session. Every test starts its own server and
executors, since it breaks them. The classes below live in this test
module, which the executors cannot import: cloudpickle sends them by value.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from pathlib import Path

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, ExecutorProcess, ServerProcess, client_config, wait_until

from remotemedia import ConnectionLostError, RemoteExecutorConfig, RemoteProxyClient


# Quick to notice a lost executor, yet patient enough for a loaded 2-core machine.
HEARTBEAT = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}

pytestmark = pytest.mark.timeout(150)


class Counter:
    """State that changes with every call, and methods that stream slowly."""

    def __init__(self, start: int = 0) -> None:
        self.count = start

    def increment(self) -> int:
        self.count += 1
        return self.count

    def echo(self, value):
        return value

    async def nap(self, seconds: float, started: str | None = None) -> str:
        if started:
            Path(started).write_text("napping")  # tells the test the call is running
        await asyncio.sleep(seconds)
        return "napped"

    async def ticks(self, n: int, pause: float = 0.0):
        for i in range(n):
            await asyncio.sleep(pause)  # slow enough to still run when the test kills the executor
            yield i

    async def doubled(self, inputs):
        async for item in inputs:
            yield 2 * item

    async def passed(self, inputs):
        async for item in inputs:
            yield item


async def paced(n: int, pause: float):
    """Inputs for a duplex stream, produced slowly."""
    for i in range(n):
        yield i
        await asyncio.sleep(pause)


@contextlib.contextmanager
def processes(executors: int, *server_args: str, executor_args: tuple = ()):
    """A signaling server and ``executors`` executors registered with it in order, all stopped at the end."""
    server = ServerProcess("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, *server_args)
    started: list[ExecutorProcess] = []
    try:
        for i in range(executors):
            started.append(ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", f"exec-{i}", *executor_args))
        yield server, started
    finally:
        for executor in started:
            with contextlib.suppress(ProcessLookupError):
                executor.proc.send_signal(signal.SIGCONT)  # a frozen one cannot stop otherwise
            executor.stop()
        server.stop()


def config_for(server: ServerProcess, **overrides) -> RemoteExecutorConfig:
    return client_config(server, TOKEN, **{"timeout": 20.0, **HEARTBEAT, **overrides})


def serving(client: RemoteProxyClient, executors: list[ExecutorProcess]) -> tuple[ExecutorProcess, list[ExecutorProcess]]:
    """The executor serving ``client``, and the others."""
    (current,) = [e for e in executors if e.name == client.executor]
    return current, [e for e in executors if e is not current]


def pairings(server: ServerProcess) -> int:
    """How many times the signaling server paired a client with an executor, from ``/metrics``."""
    _, _, text = server.get("/metrics")
    (line,) = [line for line in text.splitlines() if line.split(" ")[0].endswith("_pairings_total")]
    return int(float(line.split()[-1]))


async def stream_until_lost(stream, kill, after: int) -> tuple[list, ConnectionLostError]:
    """Consume ``stream``, calling ``kill()`` once ``after`` items arrived; it must end in ConnectionLostError."""
    received = []
    with pytest.raises(ConnectionLostError) as info:
        async for item in stream:
            received.append(item)
            if len(received) == after:
                kill()
    assert len(received) >= after
    return received, info.value


STREAMS = {
    "generator": lambda remote: remote.ticks(10_000, 0.02),
    "duplex": lambda remote: remote.doubled(paced(10_000, 0.02)),
}


async def test_a_media_stream_fails_with_its_executor_and_the_new_connection_has_its_slots():
    import numpy as np

    from remotemedia import VideoFrame

    async def paced_frames(n: int):
        for k in range(n):  # the track paces them at 30 fps
            yield VideoFrame(np.full((48, 64, 3), 90, np.uint8), "rgb24", k / 30)

    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server), media_tracks=1) as client:
            remote = await client.create_proxy(Counter())
            victim, (survivor,) = serving(client, executors)
            received, error = await stream_until_lost(remote.passed(paced_frames(10_000)).over_tracks(), victim.kill, after=5)
            assert all(isinstance(frame, VideoFrame) for frame in received)
            assert await asyncio.wait_for(remote.echo("again"), 30) == "again"
            assert client.executor == survivor.name
            # The new peer connection was negotiated with its own media slot.
            got = [frame async for frame in remote.passed(paced_frames(5)).over_tracks()]
            assert len(got) == 5 and all(abs(frame.image.mean() - 90) < 8 for frame in got)


@pytest.mark.parametrize("kind", sorted(STREAMS))
async def test_a_killed_executor_fails_the_stream_and_the_proxy_goes_on_with_the_survivor(kind):
    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server)) as client:
            remote = await client.create_proxy(Counter())
            victim, (survivor,) = serving(client, executors)
            received, error = await stream_until_lost(STREAMS[kind](remote), victim.kill, after=5)
            step = 2 if kind == "duplex" else 1
            assert received == list(range(0, step * len(received), step))  # in order, none lost before the kill
            assert "reconnecting" in str(error)

            assert await asyncio.wait_for(remote.echo("again"), 30) == "again"
            assert client.executor == survivor.name
            assert client.reconnects == 1
            if kind == "duplex":
                assert [x async for x in remote.doubled(paced(40, 0))] == [2 * i for i in range(40)]
            else:
                assert [x async for x in remote.ticks(40)] == list(range(40))  # more than one credit window
            assert "paired with client" in survivor.log()


async def test_without_reconnect_a_lost_session_stays_closed_and_nothing_pairs_again():
    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server, reconnect=False)) as client:
            remote = await client.create_proxy(Counter())
            victim, (survivor,) = serving(client, executors)
            assert pairings(server) == 1
            _, error = await stream_until_lost(remote.ticks(10_000, 0.02), victim.kill, after=5)
            assert "reconnecting" not in str(error)

            for call in (lambda: remote.echo(1), lambda: client.create_proxy(Counter())):
                with pytest.raises(ConnectionLostError) as info:
                    await asyncio.wait_for(call(), 10)
                assert "is closed" in str(info.value)
            with pytest.raises(ConnectionLostError):
                [x async for x in remote.ticks(3)]
            assert client.reconnects == 0
            assert client.executor == victim.name
            # The server dropped the victim's session and paired nobody with the survivor.
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
            assert pairings(server) == 1
            assert "paired with client" not in survivor.log()


async def test_objects_are_recreated_in_the_state_they_were_uploaded_in():
    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server)) as client:
            local = Counter(start=10)
            remote = await client.create_proxy(local)
            other = await client.create_proxy(Counter(start=100))
            assert [await remote.increment() for _ in range(3)] == [11, 12, 13]
            assert await other.increment() == 101
            victim, _ = serving(client, executors)
            victim.kill()
            await wait_until(lambda: client.reconnects == 1, timeout=30)
            # Documented: the remote state is the state at upload, not the one before the loss.
            assert await remote.increment() == 11
            assert await other.increment() == 101
            assert await remote.increment() == 12
            assert local.count == 10  # the local object never ran anything


async def test_a_call_made_while_reconnecting_waits_for_it_and_succeeds(tmp_path):
    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server)) as client:
            remote = await client.create_proxy(Counter(start=5))
            victim, (survivor,) = serving(client, executors)
            started = tmp_path / "started"
            in_flight = asyncio.ensure_future(remote.nap(3600, started=str(started)))
            await wait_until(started.exists, timeout=10)
            victim.kill()
            # The call in flight fails as soon as the client notices the loss...
            with pytest.raises(ConnectionLostError) as info:
                await asyncio.wait_for(in_flight, 30)
            assert "reconnecting" in str(info.value)
            # ...and one made right then, before the reconnection is done, waits for it.
            assert client.reconnects == 0
            assert await asyncio.wait_for(remote.increment(), 30) == 6
            assert client.reconnects == 1
            assert client.executor == survivor.name


async def test_a_call_made_right_after_the_kill_either_fails_as_in_flight_or_waits():
    with processes(2) as (server, executors):
        async with RemoteProxyClient(config_for(server)) as client:
            remote = await client.create_proxy(Counter(start=5))
            victim, (survivor,) = serving(client, executors)
            victim.kill()
            # Sent before the client noticed the loss, the call was in flight: it fails, and the
            # next one waits for the reconnection. Sent after, it waits itself. Neither hangs.
            try:
                first = await asyncio.wait_for(remote.increment(), 30)
            except ConnectionLostError as exc:
                assert "reconnecting" in str(exc)
                first = await asyncio.wait_for(remote.increment(), 30)
            assert first == 6
            assert client.reconnects == 1
            assert client.executor == survivor.name


async def test_reconnecting_with_no_executor_left_gives_up_in_bounded_time():
    with processes(1) as (server, (only,)):
        config = config_for(server, connect_timeout=3.0)
        client = RemoteProxyClient(config)
        await client.connect()
        try:
            remote = await client.create_proxy(Counter())
            assert await remote.increment() == 1
            only.kill()
            await wait_until(lambda: server.health()["executors"] == 0, timeout=10)
            # The budget is max(connect_timeout, 2 * heartbeat_timeout) = 6 s: well within 30.
            for _ in range(2):
                with pytest.raises(ConnectionLostError) as info:
                    await asyncio.wait_for(remote.increment(), 30)
                if "reconnecting failed" in str(info.value):
                    break  # the first call may have been in flight when the loss was noticed
            assert "reconnecting failed" in str(info.value)
            assert "no executor" in str(info.value)
            with pytest.raises(ConnectionLostError) as info:
                await asyncio.wait_for(client.create_proxy(Counter()), 30)
            assert "reconnecting failed" in str(info.value)
            assert client.reconnects == 0
        finally:
            await asyncio.wait_for(client.close(), 20)
        await asyncio.wait_for(client.close(), 20)  # twice is fine


# The signaling server hears from its executors rarely here (every 60 s, dropping them
# after 180 s of silence): it cannot notice a frozen one during a test, and every
# executor's reported load stays the 0 it registered with.
DEAF_SERVER = ("--heartbeat-interval", "60", "--heartbeat-timeout", "180")


async def eventually_served(remote):
    """Call ``remote.increment()`` until it succeeds; a lost session may reconnect, a closed one never does."""
    while True:
        try:
            return await remote.increment()
        except ConnectionLostError as exc:
            if "reconnecting failed" in str(exc):
                raise
            await asyncio.sleep(0.2)  # the loss or a failed attempt: try again


async def test_a_frozen_executor_is_replaced_by_the_healthy_one_the_server_offers():
    # SIGSTOP keeps the frozen executor's sockets open: only the data channel's heartbeat notices.
    with processes(1, *DEAF_SERVER, executor_args=("--max-sessions", "2")) as (server, (frozen,)):
        async with RemoteProxyClient(config_for(server, connect_timeout=5.0)) as client:
            remote = await client.create_proxy(Counter(start=1))
            assert client.executor == frozen.name
            # More free capacity than the frozen one: the server's choice for the reconnection.
            healthy = ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "healthy", "--max-sessions", "8")
            try:
                frozen.proc.send_signal(signal.SIGSTOP)
                assert await asyncio.wait_for(eventually_served(remote), 60) == 2
                assert client.executor == healthy.name
                assert client.reconnects == 1
            finally:
                healthy.stop()


async def test_a_frozen_executor_is_replaced_even_when_the_server_offers_it_again():
    with processes(2, *DEAF_SERVER) as (server, executors):
        async with RemoteProxyClient(config_for(server, connect_timeout=5.0)) as client:
            remote = await client.create_proxy(Counter(start=1))
            frozen, (healthy,) = serving(client, executors)
            frozen.proc.send_signal(signal.SIGSTOP)
            # Retrying the frozen one is allowed; giving up while a healthy one is there is not.
            assert await asyncio.wait_for(eventually_served(remote), 60) == 2
            assert client.executor == healthy.name


@contextlib.contextmanager
def exceptions_reported():
    """The contexts the event loop's exception handler receives meanwhile (tasks failing unseen...)."""
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield reported
    finally:
        loop.set_exception_handler(previous)


async def lose_the_only_executor(how: str, executor: ExecutorProcess, remote, tmp_path) -> None:
    """Kill or freeze ``executor`` under a call, and return once the client is reconnecting."""
    started = tmp_path / "started"
    in_flight = asyncio.ensure_future(remote.nap(3600, started=str(started)))
    await wait_until(started.exists, timeout=10)
    if how == "killed":
        executor.kill()
    else:
        executor.proc.send_signal(signal.SIGSTOP)
    with pytest.raises(ConnectionLostError) as info:
        await asyncio.wait_for(in_flight, 30)
    assert "reconnecting" in str(info.value)


@pytest.mark.parametrize("how", ["killed", "frozen"])
async def test_closing_during_a_reconnection_returns_promptly_and_leaves_nothing_behind(how, tmp_path):
    # Killed: no executor is left, the reconnection retries pairing. Frozen: the server pairs
    # the client with it again, and the reconnection waits for its answer.
    with processes(1, *DEAF_SERVER) as (server, (only,)), exceptions_reported() as reported:
        before = asyncio.all_tasks()
        # A budget far longer than the test, so that the reconnection is under way when close() comes.
        client = RemoteProxyClient(config_for(server, connect_timeout=120.0))
        await client.connect()
        remote = await client.create_proxy(Counter())
        await lose_the_only_executor(how, only, remote, tmp_path)
        if how == "frozen":
            await wait_until(lambda: pairings(server) == 2, timeout=30)
        await asyncio.wait_for(client.close(), 20)
        assert client.reconnects == 0
        with pytest.raises(ConnectionLostError) as info:
            await remote.increment()
        assert "is closed" in str(info.value)
        # The client's own tasks end, none with an error nobody sees.
        left = asyncio.all_tasks() - before - {asyncio.current_task()}
        if left:
            done, pending = await asyncio.wait(left, timeout=10)
            assert not pending, pending
            assert [t for t in done if not t.cancelled() and t.exception() is not None] == []
        # The session the reconnection had opened is closed on the server.
        await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
        gc.collect()
        await asyncio.sleep(0)  # let the loop report what the collection found
        assert reported == []


async def test_a_call_waiting_for_the_reconnection_is_told_when_the_client_closes(tmp_path):
    with processes(1) as (server, (only,)):
        client = RemoteProxyClient(config_for(server, connect_timeout=120.0))
        await client.connect()
        try:
            remote = await client.create_proxy(Counter())
            await lose_the_only_executor("killed", only, remote, tmp_path)
            waiting = asyncio.ensure_future(remote.increment())
            # The task runs up to its wait for the reconnection before close() starts (FIFO scheduling).
            closing = asyncio.ensure_future(client.close())
            await asyncio.wait_for(closing, 20)
            await asyncio.wait({waiting}, timeout=10)
            assert waiting.done()
            assert not waiting.cancelled(), "the call was cancelled, though nobody cancelled it"
            assert isinstance(waiting.exception(), ConnectionLostError)
        finally:
            await client.close()
