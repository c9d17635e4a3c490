"""
The executor's execution modes and limits, end to end: a real signaling
server and real executors (``--mode``, ``--call-timeout``, ``--max-objects``,
``--memory-limit``) as subprocesses on loopback, driven through the public
API. :class:`Probe` lives in this module, which the executors cannot import:
cloudpickle sends it by value, so ``os.getpid()`` in its methods tells where
they ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import harness
from harness import EXECUTOR_TOKEN, ROOT, TOKEN, running_executor, running_server, wait_until

from remotemedia import (
    ConnectionLostError,
    RemoteExecutorConfig,
    RemoteProxyClient,
    RemoteTimeoutError,
    ResourceLimitError,
)
from remotemedia.rpc import PROTOCOL_VERSION, Kind
from remotemedia.serialization import dumps_object

# Every test starts processes and waits for sessions to end: generous, the machine is shared.
pytestmark = pytest.mark.timeout(180)


class Probe:
    """Methods that say where they run, crash, eat memory, sleep, spin and clean up."""

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker

    def pid(self) -> int:
        # In a PID namespace of its own a worker's os.getpid() is small; the executor tells it the machine's.
        return int(os.environ.get("REMOTEMEDIA_WORKER_PID", os.getpid()))

    def echo(self, value):
        return value

    def exit(self, status: int) -> None:
        os._exit(status)

    def segfault(self) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    def allocate(self, nbytes: int) -> int:
        return int(np.ones(nbytes, dtype=np.uint8).sum())

    async def nap(self, seconds: float, stopped: str | None = None) -> str:
        try:
            await asyncio.sleep(seconds)
        finally:
            if stopped:
                Path(stopped).write_text("the nap ended")  # runs when the call is cancelled, too
        return "napped"

    def spin(self) -> None:
        while True:
            pass

    def sleep(self, seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    def cleanup(self) -> None:
        if self.marker:
            Path(self.marker).write_text(str(self.pid()))


def pid_exists(pid: int) -> bool:
    """Whether process ``pid`` exists (once reaped, its ``/proc`` entry is gone)."""
    return Path(f"/proc/{pid}").exists()


def parent_of(pid: int) -> int:
    """The parent's pid, from ``/proc/PID/stat`` (the command may hold spaces: split after it)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def ancestors(pid: int) -> list[int]:
    """``pid``'s parent, its parent, and so on up to init."""
    found = []
    while pid > 1:
        pid = parent_of(pid)
        found.append(pid)
    return found


# One executor per set of flags, shared by the module's tests: each test's
# sessions are its own, and a session that breaks must not harm the executor.
EXECUTORS = {
    "process": ["--mode", "process"],
    "inprocess": ["--mode", "inprocess"],
    "timeout-process": ["--mode", "process", "--call-timeout", "1"],
    "timeout-inprocess": ["--mode", "inprocess", "--call-timeout", "1"],
    "limits": ["--mode", "process", "--memory-limit", "300", "--max-objects", "2"],
}


@pytest.fixture(scope="module")
def server():
    """The signaling server shared by the module's executors."""
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def executors(server):
    """Executors started on first use, by name (a key of ``EXECUTORS``); all stopped at the end."""
    started = {}
    with contextlib.ExitStack() as stack:

        def get(name: str):
            if name not in started:
                started[name] = stack.enter_context(
                    running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", name, "--max-sessions", "8", *EXECUTORS[name])
                )
            return started[name]

        yield get


async def raw_session(server, executor):
    """Pair with ``executor`` and open the rpc channel by hand (see harness.raw_session)."""
    return await harness.raw_session(server.url, TOKEN, {"executor": executor.name}, heartbeat_timeout=15)


def connect(server, executor, **overrides) -> RemoteProxyClient:
    """A client paired with ``executor`` (a generous heartbeat: the test machine is loaded)."""
    settings = {
        "host": "127.0.0.1",
        "port": server.port,
        "auth_token": TOKEN,
        "timeout": 30.0,
        "heartbeat_timeout": 15.0,
        "requirements": {"executor": executor.name},
    }
    settings.update(overrides)
    return RemoteProxyClient(RemoteExecutorConfig(**settings))


# -- where objects run ----------------------------------------------------------------


async def test_process_mode_runs_each_session_in_a_worker_process_of_its_own(server, executors):
    executor = executors("process")
    async with connect(server, executor) as one, connect(server, executor) as two:
        first = await (await one.create_proxy(Probe())).pid()
        second = await (await two.create_proxy(Probe())).pid()
        assert first != executor.proc.pid and second != executor.proc.pid
        assert first != second
        # Descendants of the executor (through bubblewrap, where it confines them), not processes of their own making.
        assert executor.proc.pid in ancestors(first) and executor.proc.pid in ancestors(second)
        # A session's objects share its worker.
        assert await (await one.create_proxy(Probe())).pid() == first


async def test_inprocess_mode_runs_every_session_in_the_executor(server, executors):
    executor = executors("inprocess")
    async with connect(server, executor) as one, connect(server, executor) as two:
        assert await (await one.create_proxy(Probe())).pid() == executor.proc.pid
        assert await (await two.create_proxy(Probe())).pid() == executor.proc.pid


# -- crashes ---------------------------------------------------------------------------


CRASHES = pytest.mark.parametrize(
    "method, args, why",
    [("exit", (7,), "worker process ended with status 7"), ("segfault", (), "worker process was killed by SIGSEGV")],
    ids=["os._exit", "SIGSEGV"],
)


@CRASHES
async def test_a_crash_in_process_mode_ends_only_its_own_session(server, executors, method, args, why):
    executor = executors("process")
    logged = len(executor.log())
    async with connect(server, executor) as bystander:
        other = await bystander.create_proxy(Probe())
        other_pid = await other.pid()
        async with connect(server, executor, reconnect=False) as victim:
            remote = await victim.create_proxy(Probe())
            victim_pid = await remote.pid()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(getattr(remote, method)(*args), 20)
            with pytest.raises(ConnectionLostError):
                await remote.echo(1)
        await wait_until(lambda: not pid_exists(victim_pid), timeout=10)
        # The other session was connected all along, and still runs in the same worker.
        assert await other.echo("still here") == "still here"
        assert await other.pid() == other_pid
    assert executor.alive
    async with connect(server, executor) as newcomer:
        assert await (await newcomer.create_proxy(Probe())).echo("new") == "new"
    assert why in executor.log()[logged:]  # the executor knows why the session ended


@CRASHES
async def test_the_client_is_told_that_the_worker_process_crashed(server, executors, method, args, why):
    executor = executors("process")
    async with connect(server, executor, reconnect=False) as client:
        remote = await client.create_proxy(Probe())
        with pytest.raises(ConnectionLostError) as info:
            await asyncio.wait_for(getattr(remote, method)(*args), 20)
        assert why in str(info.value)


# -- memory ----------------------------------------------------------------------------


async def test_running_out_of_the_memory_limit_fails_the_call_and_the_session_goes_on(server, executors):
    executor = executors("limits")
    async with connect(server, executor) as bystander, connect(server, executor) as client:
        other = await bystander.create_proxy(Probe())
        remote = await client.create_proxy(Probe())
        with pytest.raises(ResourceLimitError) as info:
            await remote.allocate(600 * 2**20)
        assert info.value.limit == "memory"
        assert "300 MB" in str(info.value) and "--memory-limit" in str(info.value)
        # The failed allocation took nothing with it: a smaller one fits.
        assert await remote.allocate(50 * 2**20) == 50 * 2**20
        assert await remote.echo("after") == "after"
        assert await other.allocate(2**20) == 2**20


# -- call timeouts ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["process", "inprocess"])
async def test_an_async_call_past_the_call_timeout_is_stopped_and_the_session_goes_on(server, executors, mode, tmp_path):
    executor = executors(f"timeout-{mode}")
    stopped = tmp_path / "stopped"
    async with connect(server, executor, timeout=60.0) as client:
        remote = await client.create_proxy(Probe())
        # Left alone, the nap would return after 5 s, long before the client's 60 s.
        with pytest.raises(RemoteTimeoutError):
            await remote.nap(5, stopped=str(stopped))
        await wait_until(stopped.exists, timeout=10)  # the nap's finally: ran, on the executor
        assert await remote.echo("next") == "next"


def session_ended(executor, since: int, why: str) -> bool:
    """Whether the executor logged, after offset ``since`` of its log, that a session ended for ``why``."""
    return any(" ended: " in line and why in line for line in executor.log()[since:].splitlines())


STUCK = pytest.mark.parametrize(
    "mode, method, args", [("process", "spin", ()), ("inprocess", "sleep", (30,))], ids=["process-spin", "inprocess-sleep"]
)


@STUCK
async def test_sync_code_past_the_call_timeout_ends_only_its_own_session(server, executors, mode, method, args):
    executor = executors(f"timeout-{mode}")
    logged = len(executor.log())
    async with connect(server, executor) as bystander:
        other = await bystander.create_proxy(Probe())
        async with connect(server, executor, timeout=60.0, reconnect=False) as victim:
            remote = await victim.create_proxy(Probe())
            victim_pid = await remote.pid()
            with pytest.raises(RemoteTimeoutError):
                await getattr(remote, method)(*args)
            # Had the executor merely cancelled the call, the session would go on, its thread busy.
            await wait_until(lambda: session_ended(executor, logged, "cannot be interrupted"), timeout=30)
            with pytest.raises(ConnectionLostError):
                await remote.echo(1)
        if mode == "process":
            await wait_until(lambda: not pid_exists(victim_pid), timeout=10)
        assert await other.echo("unaffected") == "unaffected"
    assert executor.alive


@pytest.mark.parametrize(
    "mode, method, args",
    [
        ("process", "spin", ()),
        pytest.param(
            "inprocess", "sleep", (30,),
        ),
    ],
    ids=["process-spin", "inprocess-sleep"],
)
async def test_a_call_right_after_a_stuck_one_fails_with_the_lost_session(server, executors, mode, method, args):
    executor = executors(f"timeout-{mode}")
    async with connect(server, executor, timeout=60.0, reconnect=False) as client:
        remote = await client.create_proxy(Probe())
        with pytest.raises(RemoteTimeoutError):
            await getattr(remote, method)(*args)
        with pytest.raises(ConnectionLostError):
            await remote.echo(1)


@pytest.mark.parametrize(
    "method, says",
    [("nap", ["call timeout of 1 s", "--call-timeout"]), ("spin", ["call timeout of 1 s", "cannot be interrupted"])],
    ids=["async", "sync"],
)
async def test_the_executors_call_timeout_error_reaches_the_client_as_sent(server, executors, method, says):
    executor = executors("timeout-process")
    async with connect(server, executor, timeout=60.0, reconnect=False) as client:
        remote = await client.create_proxy(Probe())
        with pytest.raises(RemoteTimeoutError) as info:
            await (remote.nap(5) if method == "nap" else remote.spin())
        for text in says:
            assert text in str(info.value)


async def test_the_client_is_told_that_a_stuck_call_ended_its_session(server, executors):
    executor = executors("timeout-process")
    async with connect(server, executor, timeout=60.0, reconnect=False) as client:
        remote = await client.create_proxy(Probe())
        with pytest.raises(RemoteTimeoutError):
            await remote.spin()
        with pytest.raises(ConnectionLostError) as info:
            await remote.echo(1)
        assert "call timeout" in str(info.value)


async def test_the_clients_shorter_timeout_also_stops_the_call_on_the_executor(server, executors, tmp_path):
    executor = executors("process")  # its own call timeout is the default, 300 s
    stopped = tmp_path / "stopped"
    async with connect(server, executor, timeout=1.0) as client:
        remote = await client.create_proxy(Probe())
        # The client cancels too, when its own wait ends; the next test takes the executor alone.
        with pytest.raises(RemoteTimeoutError):
            await remote.nap(60, stopped=str(stopped))
        await wait_until(stopped.exists, timeout=10)
        assert await remote.echo("next") == "next"


@pytest.mark.parametrize("mode", ["process", "inprocess"])
async def test_the_executor_applies_the_timeout_the_client_sent_in_its_hello(server, executors, mode):
    # A hand-made client that never cancels: only the executor can stop the call.
    executor = executors(mode)  # its own call timeout is the default, 300 s
    signaling, session, pc, rpc, events, lost = await raw_session(server, executor)
    try:
        hello = {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20, "timeout": 1}
        await rpc.send(Kind.HELLO, 0, hello)
        assert (await asyncio.wait_for(events.get(), 20)).kind is Kind.WELCOME
        await rpc.send_pickled(Kind.CREATE, 1, dumps_object(Probe()))
        assert (await asyncio.wait_for(events.get(), 20)).kind is Kind.RESULT
        await rpc.send(Kind.CALL, 2, [1, "nap", [60], {}, 0, None])
        error = await asyncio.wait_for(events.get(), 30)
        assert error.kind is Kind.ERROR and error.id == 2 and error.body["code"] == "timeout"
        assert "call timeout of 1 s" in error.body["message"]
        assert "RemoteExecutorConfig.timeout" in error.body["message"]
        await rpc.send(Kind.CALL, 3, [1, "echo", ["next"], {}, 0, None])
        reply = await asyncio.wait_for(events.get(), 20)
        assert (reply.kind, reply.id, reply.body) == (Kind.RESULT, 3, "next")
        assert not lost.done()
    finally:
        rpc.close()
        await pc.close()
        await signaling.close()


# -- objects ---------------------------------------------------------------------------


async def test_a_session_holds_at_most_max_objects(server, executors):
    executor = executors("limits")
    async with connect(server, executor) as client:
        first = await client.create_proxy(Probe())
        await client.create_proxy(Probe())
        with pytest.raises(ResourceLimitError) as info:
            await client.create_proxy(Probe())
        assert info.value.limit == "objects"
        assert "--max-objects 2" in str(info.value) and "client.release" in str(info.value)
        await client.release(first)
        third = await client.create_proxy(Probe())
        assert await third.echo(3) == 3
        # The refused create did not count, and the freed slot is taken again.
        with pytest.raises(ResourceLimitError):
            await client.create_proxy(Probe())


async def test_the_object_limit_is_per_session(server, executors):
    executor = executors("limits")
    async with connect(server, executor) as one, connect(server, executor) as two:
        for client in (one, two):
            await client.create_proxy(Probe())
            await client.create_proxy(Probe())
        with pytest.raises(ResourceLimitError):
            await one.create_proxy(Probe())


# -- cleanup ---------------------------------------------------------------------------


async def test_leaving_the_block_cleans_up_in_the_worker_and_the_worker_exits(server, executors, tmp_path):
    executor = executors("process")
    marker = tmp_path / "cleaned"
    async with connect(server, executor) as client:
        remote = await client.create_proxy(Probe(marker=str(marker)))
        worker = await remote.pid()
        assert not marker.exists()
    await wait_until(marker.exists, timeout=15)
    assert marker.read_text() == str(worker)  # cleanup() ran in the session's worker
    await wait_until(lambda: not pid_exists(worker), timeout=15)
    assert executor.alive


async def test_leaving_the_block_releases_every_object_before_it_returns(server, executors, tmp_path, caplog):
    executor = executors("process")
    marker = tmp_path / "cleaned"
    with caplog.at_level(logging.WARNING, logger="remotemedia.remote.client"):
        async with connect(server, executor) as client:
            await client.create_proxy(Probe(marker=str(marker)))
    assert [r.getMessage() for r in caplog.records if "releasing remote object" in r.getMessage()] == []
    assert marker.exists()


async def test_inprocess_cleanup_runs_in_the_executor(server, executors, tmp_path):
    executor = executors("inprocess")
    marker = tmp_path / "cleaned"
    async with connect(server, executor) as client:
        await client.create_proxy(Probe(marker=str(marker)))
    await wait_until(marker.exists, timeout=15)
    assert marker.read_text() == str(executor.proc.pid)


# -- the command line ------------------------------------------------------------------


def run_executor(*args: str) -> subprocess.CompletedProcess:
    # Settings are checked before the signaling server is dialled: none is needed.
    return subprocess.run(
        [sys.executable, "-m", "executor", "--signaling", "ws://127.0.0.1:1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--mode", "thread"], ["--mode", "invalid choice: 'thread'", "process", "inprocess"]),
        (["--memory-limit", "10"], ["memory_limit", "at least 200 MB"]),
        (["--memory-limit", "500", "--mode", "inprocess"], ["memory_limit", "mode 'process'"]),
        (["--max-objects", "0"], ["max_objects", "positive integer"]),
        (["--call-timeout", "-1"], ["call_timeout", "positive"]),
    ],
    ids=["mode-thread", "memory-10", "memory-inprocess", "objects-0", "timeout-negative"],
)
def test_bad_policy_flags_exit_2_saying_why(args, says):
    result = run_executor(*args)
    assert result.returncode == 2
    assert "remotemedia-executor" in result.stderr
    for text in says:
        assert text in result.stderr
    assert "Traceback" not in result.stderr


def test_a_call_timeout_that_is_not_a_number_is_refused_in_plain_words():
    result = run_executor("--call-timeout", "soon")
    assert result.returncode == 2
    assert "--call-timeout" in result.stderr and "'soon'" in result.stderr
    assert "_seconds_or_none" not in result.stderr
