"""
The executor enforces its own capacity (``--max-sessions``) and keeps no
more worker processes than it needs, whatever clients and the signaling
server do: end to end with real processes on loopback, plus a unit test of
the local count.

Worker processes are counted on the machine (``/proc``), as descendants of
the executor under test: other tests may run executors beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from harness import TOKEN, running_cluster, wait_until

from remotemedia import ConnectionLostError, RemoteExecutorConfig, RemoteProxyClient
from remotemedia.exceptions import RemoteMediaError
from remotemedia.signaling import SignalingClient
from remotemedia.transport import RPC_LABEL, make_offer, new_peer_connection

from executor.executor import Executor, ExecutorConfig

pytestmark = pytest.mark.timeout(180)


class Probe:
    """Uploaded code that says where it runs."""

    def pid(self) -> int:
        return int(os.environ.get("REMOTEMEDIA_WORKER_PID", os.getpid()))

    def echo(self, value):
        return value


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def workers_of(executor_pid: int) -> list[int]:
    """The executor's worker processes (the Python ones, not bubblewrap's around them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"executor.sandbox" not in argv or b"bwrap" in argv[0]:
                continue
            pid = int(entry.name)
            while pid > 1:
                pid = _parent(pid)
                if pid == executor_pid:
                    found.append(int(entry.name))
                    break
        except (OSError, ValueError, IndexError):
            continue
    return found


@contextlib.contextmanager
def cluster(*args: str):
    """A server and one executor, ``cap``, started with ``args``: ``(server, executor)``."""
    with running_cluster(TOKEN, ("--name", "cap", *args)) as (server, (executor,)):
        yield server, executor


def connect(server, **overrides) -> RemoteProxyClient:
    settings = {
        "host": "127.0.0.1", "port": server.port, "auth_token": TOKEN, "timeout": 30.0,
        "heartbeat_timeout": 15.0, "requirements": {"executor": "cap"},
    }
    settings.update(overrides)
    return RemoteProxyClient(RemoteExecutorConfig(**settings))


# -- the local count -------------------------------------------------------------------


class _FakeSession:
    """What Executor._serve_session reads of a signaling session, and how it is closed."""

    def __init__(self, id: str) -> None:
        self.id, self.client, self.requirements = id, "client", {}
        self.closed: str | None = None

    async def close(self, reason: str = "") -> None:
        self.closed = reason


async def test_an_offer_beyond_capacity_is_refused_whatever_the_server_says():
    executor = Executor(ExecutorConfig(signaling="ws://127.0.0.1:1/ws", max_sessions=2, mode="inprocess"))
    never = asyncio.get_running_loop().create_future()
    executor.sessions = {"a": asyncio.ensure_future(never), "b": asyncio.ensure_future(never)}
    third = _FakeSession("c")
    executor._serve_session(third)  # the server paired it: it believes a slot is free
    await wait_until(lambda: third.closed is not None, timeout=5)
    assert "at capacity" in third.closed and "c" not in executor.sessions
    never.cancel()
    await executor.close()


# -- end to end ------------------------------------------------------------------------


async def _pair_offer_bye(url: str, rounds: int) -> int:
    """Pair, offer and leave at once, ``rounds`` times; how many pairings the server granted."""
    granted = 0
    signaling = await SignalingClient.connect(url, token=TOKEN)
    try:
        for _ in range(rounds):
            try:
                session = await signaling.pair({"executor": "cap"}, timeout=10)
            except RemoteMediaError:
                await asyncio.sleep(0.05)  # at capacity, as the server sees it: try again
                continue
            granted += 1
            pc = new_peer_connection()
            pc.createDataChannel(RPC_LABEL)
            # The executor may refuse it (at capacity, by its own count) before it answers.
            with contextlib.suppress(RemoteMediaError, ConnectionError, asyncio.TimeoutError):
                await make_offer(pc, session, 5)
            await pc.close()
            await session.close("leaving at once")
    finally:
        await signaling.close()
    return granted


async def test_cycling_pair_offer_bye_never_exceeds_capacity_in_worker_processes():
    with cluster("--max-sessions", "2", "--spare-workers", "1", "--connect-timeout", "60") as (server, executor):
        most = 0
        attacking = asyncio.gather(*(_pair_offer_bye(server.url, 8) for _ in range(3)))
        while not attacking.done():
            most = max(most, len(workers_of(executor.proc.pid)))
            await asyncio.sleep(0.02)
        granted = sum(await attacking)
        assert granted > 2  # the server let the attack through more than capacity allows at once
        assert most <= 2 + 1, f"{most} worker processes for 2 sessions and 1 spare"
        # A bye ends a session still waiting for its data channel at once, not after --connect-timeout 60:
        # the slots come back, and a real client is served.
        async with connect(server) as client:
            assert await (await client.create_proxy(Probe())).echo("served") == "served"
        await wait_until(lambda: server.health()["sessions"] == 0, timeout=30)
        assert executor.alive


async def test_a_bye_while_the_data_channel_is_awaited_frees_the_slot_at_once():
    with cluster("--max-sessions", "1", "--connect-timeout", "120") as (server, executor):
        signaling = await SignalingClient.connect(server.url, token=TOKEN)
        try:
            session = await signaling.pair({"executor": "cap"}, timeout=10)
            pc = new_peer_connection()
            pc.createDataChannel(RPC_LABEL)
            await make_offer(pc, session, 10)
            await pc.close()  # no data channel will open
            await session.close("changed my mind")
        finally:
            await signaling.close()
        # Well before the 120 s connect timeout, the one slot serves someone else.
        await wait_until(lambda: f"session {session.id} ended" in executor.log(), timeout=60)
        async with connect(server) as client:
            assert await (await client.create_proxy(Probe())).echo(1) == 1


async def test_idle_workers_do_not_pile_up_after_bursts():
    with cluster("--max-sessions", "8", "--spare-workers", "1") as (server, executor):

        async def one() -> None:
            async with connect(server) as client:
                await (await client.create_proxy(Probe())).echo(1)

        for burst in range(1, 3):
            await asyncio.gather(*(one() for _ in range(8)))
            # Every session's worker ends with it; only the spare stays.
            await wait_until(lambda: len(workers_of(executor.proc.pid)) <= 1, timeout=60)
            # Until their teardown is over their slots are taken: the executor would refuse the next
            # burst, whatever the server believes.
            await wait_until(lambda: executor.log().count(" ended: ") >= 8 * burst, timeout=60)
        await wait_until(lambda: server.health()["sessions"] == 0, timeout=30)
        assert "Task was destroyed but it is pending" not in executor.log()
        assert "Task exception was never retrieved" not in executor.log()


async def test_a_stopped_worker_is_noticed_its_session_ends_and_its_slot_is_freed():
    with cluster("--max-sessions", "1", "--call-timeout", "2") as (server, executor):
        async with connect(server, reconnect=False) as client:
            remote = await client.create_proxy(Probe())
            worker = await remote.pid()
            os.kill(worker, signal.SIGSTOP)
            with pytest.raises(ConnectionLostError) as info:
                await remote.echo("anyone there?")
            assert "did not answer" in str(info.value)
        await wait_until(lambda: worker not in workers_of(executor.proc.pid), timeout=30)
        await wait_until(lambda: server.health()["sessions"] == 0, timeout=30)
        async with connect(server) as newcomer:  # the only slot is free again
            assert await (await newcomer.create_proxy(Probe())).echo("next") == "next"
