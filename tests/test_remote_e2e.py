"""
Remote execution end to end: a real signaling server and real executors as
subprocesses on loopback, driven through the public API. The classes below
live in this test module, which the executors cannot import: cloudpickle
sends them by value.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from harness import EXECUTOR_TOKEN, TOKEN, ExecutorProcess, config_for, running_executor, running_server, wait_until

from remotemedia import (
    AuthenticationError,
    ConnectionLostError,
    MessageTooLargeError,
    NoExecutorAvailable,
    RemoteExecutionError,
    RemoteExecutorConfig,
    RemoteProxyClient,
    RemoteTimeoutError,
    SerializationError,
)


class StreamingDataProcessor:
    """The specification's section 3.2 example: a stateful processor."""

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale
        self.processed = 0
        self.ready = False

    def initialize(self) -> None:
        self.ready = True

    def process(self, data):
        self.processed += 1
        return data * self.scale

    async def process_async(self, data):
        await asyncio.sleep(0)
        self.processed += 1
        return data * self.scale

    def stream(self, frames):
        for frame in frames:
            self.processed += 1
            yield frame * self.scale

    async def stream_async(self, count: int):
        for i in range(count):
            yield {"index": i, "ready": self.ready}

    def stats(self) -> dict:
        return {"processed": self.processed, "ready": self.ready}


class Tools:
    """Methods that fail, sleep, echo and clean up."""

    def __init__(self, marker: str | None = None) -> None:
        self.marker = marker

    def echo(self, value):
        return value

    def fail(self, text: str):
        return self._deeper(text)

    def _deeper(self, text: str):
        raise ValueError(f"remote says {text}")

    def sleep(self, seconds: float, started: str | None = None) -> str:
        if started:
            Path(started).write_text("sleeping")  # tells the test the call is running
        time.sleep(seconds)
        return "slept"

    async def nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "napped"

    def make(self, nbytes: int):
        return np.ones(nbytes, dtype=np.uint8)

    def numbers(self):
        yield from range(3)

    def cleanup(self) -> None:
        if self.marker:
            Path(self.marker).write_text("cleaned up")


@pytest.fixture(scope="module")
def cluster_executors():
    """One executor, ``exec-a``, shared by the module's tests."""
    return (("--name", "exec-a", "--max-sessions", "8"),)


@pytest.fixture(scope="module")
def cluster(cluster_processes):
    """The shared cluster (tests/conftest.py) as ``(server, executor)``."""
    server, (executor,) = cluster_processes
    return server, executor


async def test_the_specifications_example_runs_remotely_and_keeps_state(cluster):
    server, executor = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        processor = StreamingDataProcessor()
        remote = await client.create_proxy(processor)
        assert client.executor == executor.name == "exec-a"
        assert "StreamingDataProcessor #" in repr(remote) and "exec-a" in repr(remote)
        assert await remote.process(21) == 42
        assert await remote.process_async(1.5) == 3.0
        assert [x async for x in remote.stream([1, 2, 3])] == [2, 4, 6]
        items = [item async for item in remote.stream_async(40)]  # more than one credit window
        assert items == [{"index": i, "ready": True} for i in range(40)]
        # The state lives remotely: the local object never ran anything.
        assert await remote.stats() == {"processed": 5, "ready": True}
        assert processor.processed == 0 and not processor.ready


async def test_remote_exception_carries_type_message_and_traceback_and_the_session_goes_on(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(Tools())
        with pytest.raises(RemoteExecutionError) as info:
            await remote.fail("no")
        error = info.value
        assert error.remote_type == "builtins.ValueError"
        assert error.remote_message == "remote says no"
        assert "_deeper" in error.remote_traceback and "fail" in error.remote_traceback
        assert "executor/objects.py" not in error.remote_traceback  # only the user's frames
        assert "remote says no" in str(error) and "_deeper" in str(error)
        assert await remote.echo("still here") == "still here"


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(1).standard_normal(2 * 1024 * 1024).astype(np.float32),  # 8 MiB
        np.random.default_rng(2).integers(-(2**15), 2**15, (480, 640, 3), dtype=np.int16),
        np.arange(10, dtype=np.complex128)[::2],  # not contiguous
        np.zeros((0, 3)),
    ],
    ids=["8MiB-float32", "int16-image", "strided-complex", "empty"],
)
async def test_numpy_arrays_arrive_bit_exact(cluster, array):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(Tools())
        back = await remote.echo({"array": array, "tag": "x"})
        assert back["tag"] == "x"
        assert back["array"].dtype == array.dtype and back["array"].shape == array.shape
        assert back["array"].tobytes() == array.tobytes()


async def test_values_the_codec_cannot_carry_travel_pickled(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(Tools())
        value = {1, 2, 3}  # a set: not in the codec
        assert await remote.echo(value) == value


async def test_a_message_above_the_limit_fails_cleanly_on_either_side(cluster):
    server, _ = cluster
    limit = 1024 * 1024
    async with RemoteProxyClient(config_for(server, max_message_size=limit)) as client:
        remote = await client.create_proxy(Tools())
        # Too large to send: refused here, before anything goes out.
        with pytest.raises(MessageTooLargeError) as info:
            await remote.echo(np.zeros(limit, dtype=np.uint8))
        assert info.value.limit == limit and "max_message_size" in str(info.value)
        # Too large to come back: the executor refuses to send it and says so.
        with pytest.raises(MessageTooLargeError) as info:
            await remote.make(2 * limit)
        assert "too large" in str(info.value)
        assert (await remote.make(1000)).sum() == 1000  # the session is fine


async def test_the_executor_refuses_a_message_above_its_own_limit(cluster):
    server, _ = cluster
    with running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "small", "--max-message-size", "100000") as small:
        async with RemoteProxyClient(config_for(server, requirements={"executor": small.name})) as client:
            remote = await client.create_proxy(Tools())
            # The executor told its limit: the client refuses locally.
            with pytest.raises(MessageTooLargeError):
                await remote.echo(b"x" * 200_000)
            # A client that ignores it: the executor skips the message unbuffered and refuses it.
            client._rpc.protocol.send_limit = 10**9
            with pytest.raises(MessageTooLargeError) as info:
                await remote.echo(b"x" * 200_000)
            assert "--max-message-size" in str(info.value)
            assert await remote.echo(b"small") == b"small"


async def test_two_clients_are_isolated(cluster):
    server, _ = cluster
    config = config_for(server)
    async with RemoteProxyClient(config) as one, RemoteProxyClient(config) as two:
        a = await one.create_proxy(StreamingDataProcessor(scale=1))
        b = await two.create_proxy(StreamingDataProcessor(scale=10))
        assert await asyncio.gather(a.process(1), b.process(1), a.process(2)) == [1, 10, 2]
        assert (await a.stats())["processed"] == 2 and (await b.stats())["processed"] == 1
        # Handles are per session: the other session's object is not reachable.
        with pytest.raises(RemoteExecutionError) as info:
            await two._call(a._handle + 100, "stats", (), {})
        assert info.value.remote_type == "no_object"


async def test_leaving_the_block_runs_cleanup_and_frees_the_session(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "cleanup.txt"
    async with RemoteProxyClient(config_for(server)) as client:
        await client.create_proxy(Tools(marker=str(marker)))
        assert server.health()["sessions"] >= 1
    # Cleanup ran before the client's exit returned: release waits for it.
    assert marker.read_text() == "cleaned up"
    await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)


async def test_released_proxy_runs_cleanup_at_once(cluster, tmp_path):
    server, _ = cluster
    marker = tmp_path / "released.txt"
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(Tools(marker=str(marker)))
        await client.release(remote)
        assert marker.read_text() == "cleaned up"
        await client.release(remote)  # twice is fine
        with pytest.raises(TypeError):
            await client.release(Tools())
        with pytest.raises(RemoteExecutionError):
            await client._call(remote._handle, "echo", (1,), {})


async def test_a_wrong_token_is_refused(cluster):
    server, _ = cluster
    with pytest.raises(AuthenticationError):
        async with RemoteProxyClient(config_for(server, auth_token="wrong")):
            pass
    with pytest.raises(AuthenticationError):
        async with RemoteProxyClient(config_for(server, auth_token=None)):
            pass


async def test_no_executor_available():
    with running_server() as server:
        with pytest.raises(NoExecutorAvailable) as info:
            async with RemoteProxyClient(config_for(server, auth_token=None)):
                pass
        assert "no executor" in str(info.value)


async def test_an_object_that_cannot_be_pickled_fails_locally(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        holder = Tools()
        holder.lock = threading.Lock()
        with pytest.raises(SerializationError) as info:
            await client.create_proxy(holder)
        assert "initialize()" in str(info.value)
        assert await (await client.create_proxy(Tools())).echo(1) == 1


async def test_an_object_needing_a_module_missing_on_the_executor_names_it(cluster, tmp_path, monkeypatch):
    server, _ = cluster
    (tmp_path / "only_here_module.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here_module

    tools = Tools()
    tools.items = [only_here_module.Thing()]  # inside a list: pickled by reference
    try:
        async with RemoteProxyClient(config_for(server)) as client:
            with pytest.raises(SerializationError) as info:
                await client.create_proxy(tools)
            assert "only_here_module" in str(info.value)
            assert await (await client.create_proxy(Tools())).echo(2) == 2
    finally:
        sys.modules.pop("only_here_module", None)


async def test_a_call_longer_than_the_timeout_raises_and_the_session_goes_on(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server, timeout=1.0)) as client:
        remote = await client.create_proxy(Tools())
        with pytest.raises(RemoteTimeoutError) as info:
            await remote.nap(5)
        assert "RemoteExecutorConfig.timeout" in str(info.value)
        assert await remote.echo("next") == "next"


async def test_generator_methods_must_be_iterated_and_others_awaited(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(Tools())
        with pytest.raises(RemoteExecutionError) as info:
            await remote.numbers()
        assert "async for" in str(info.value)
        with pytest.raises(RemoteExecutionError) as info:
            [x async for x in remote.echo(1)]
        assert "await" in str(info.value)
        assert [x async for x in remote.numbers()] == [0, 1, 2]
        with pytest.raises(AttributeError):
            remote.no_such_method
        with pytest.raises(AttributeError):
            remote._deeper


async def test_breaking_out_of_a_stream_leaves_the_session_usable(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(StreamingDataProcessor())
        async for item in remote.stream_async(1000):
            if item["index"] == 3:
                break
        assert (await remote.stats())["ready"]


@contextlib.asynccontextmanager
async def sleeping_call(server, tmp_path, name: str, seconds: float, **overrides):
    """A fresh executor process ``name`` running ``Tools.sleep(seconds)`` for a client: (process, call)."""
    # A short drain: SIGTERM ends the stuck session after 1 s (see test_executor_drain.py for the drain itself).
    process = ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", name, "--drain-timeout", "1")
    started = tmp_path / f"{name}-started"
    try:
        config = config_for(server, requirements={"executor": name}, timeout=60, **overrides)
        async with RemoteProxyClient(config) as client:
            remote = await client.create_proxy(Tools())
            call = asyncio.ensure_future(remote.sleep(seconds, started=str(started)))
            await wait_until(started.exists, timeout=10)
            yield process, call, remote
    finally:
        process.stop()


async def test_a_killed_executor_fails_the_pending_call_quickly(cluster, tmp_path):
    server, _ = cluster
    async with sleeping_call(server, tmp_path, "victim", 30, reconnect=False) as (victim, call, remote):
        victim.kill()
        # The 30 s call must fail with the lost connection, not run out its time.
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(call, 10)
        with pytest.raises(ConnectionLostError):
            await remote.echo(1)


async def test_the_embedded_server_serves_everything_in_one_process():
    from harness import ServeProcess

    serve = ServeProcess()
    try:
        config = RemoteExecutorConfig(host="127.0.0.1", port=serve.port)
        async with RemoteProxyClient(config) as client:
            assert client.executor == serve.executor
            remote = await client.create_proxy(StreamingDataProcessor(scale=3))
            assert (await remote.process(np.arange(3))).tolist() == [0, 3, 6]
        await wait_until(lambda: serve.health() == {"status": "ok", "executors": 1, "sessions": 0}, timeout=10)
    finally:
        assert serve.stop() == 0


async def test_a_frozen_executor_is_noticed_by_the_heartbeat(cluster):
    # SIGSTOP keeps its sockets open, so the signaling server sees nothing:
    # only the data channel's heartbeat can tell that the executor is gone.
    server, _ = cluster
    frozen = ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "frozen")
    try:
        config = config_for(
            server, requirements={"executor": "frozen"}, heartbeat_interval=0.5, heartbeat_timeout=2.0, reconnect=False
        )
        async with RemoteProxyClient(config) as client:
            remote = await client.create_proxy(Tools())
            assert await remote.echo(1) == 1
            frozen.proc.send_signal(signal.SIGSTOP)
            # Not RemoteTimeoutError after 15 s: the heartbeat declares the executor lost first.
            with pytest.raises(ConnectionLostError) as info:
                await asyncio.wait_for(remote.sleep(0), 10)
            assert "heartbeat_timeout" in str(info.value)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
        frozen.stop()


async def test_the_executor_frees_the_session_of_a_frozen_client(cluster, tmp_path):
    server, executor = cluster
    marker = tmp_path / "cleaned.txt"
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_remote_e2e import Tools, config_for_port
from remotemedia import RemoteProxyClient

async def main():
    async with RemoteProxyClient(config_for_port({server.port})) as client:
        await client.create_proxy(Tools(marker={str(marker)!r}))
        print("ready", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "ready"
        before = server.health()["sessions"]
        client.send_signal(signal.SIGSTOP)
        # The executor's heartbeat (5 s) ends the session and runs the object's cleanup.
        await wait_until(lambda: marker.exists(), timeout=15)
        await wait_until(lambda: server.health()["sessions"] == before - 1, timeout=10)
    finally:
        client.kill()
        client.wait(10)


def config_for_port(port: int) -> RemoteExecutorConfig:
    """For the client subprocess above."""
    return RemoteExecutorConfig(host="127.0.0.1", port=port, auth_token=TOKEN)


async def test_keyword_arguments_reach_the_remote_method(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        remote = await client.create_proxy(StreamingDataProcessor())
        assert await remote.process(data=4) == 8
        assert [x async for x in remote.stream(frames=[1])] == [2]


async def test_sigterm_with_a_call_stuck_in_user_code_still_stops_the_executor(cluster, tmp_path):
    server, _ = cluster
    async with sleeping_call(server, tmp_path, "stuck", 3600) as (stuck, call, _remote):
        stuck.proc.terminate()
        # The drain ends the session after 1 s; teardown gives the object's cleanup 5 s behind the stuck call, then exits.
        assert await asyncio.to_thread(stuck.proc.wait, 20) == 0
        assert "did not finish within 5 s" in stuck.log()
        with pytest.raises(ConnectionLostError):
            await asyncio.wait_for(call, 10)


async def test_concurrent_calls_and_streams_share_one_session(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        tools = await client.create_proxy(Tools())
        processor = await client.create_proxy(StreamingDataProcessor(scale=1))

        async def collect(n):
            return [item["index"] async for item in processor.stream_async(n)]

        results = await asyncio.gather(*(tools.echo(i) for i in range(50)), collect(30), collect(5), tools.nap(0.05))
        assert results[:50] == list(range(50))
        assert results[50:] == [list(range(30)), list(range(5)), "napped"]


async def test_large_objects_and_large_stream_items_are_chunked(cluster):
    server, _ = cluster
    async with RemoteProxyClient(config_for(server)) as client:
        big = StreamingDataProcessor()
        big.table = np.arange(1_000_000, dtype=np.float32)  # 4 MB of state, uploaded in chunks
        remote = await client.create_proxy(big)
        frames = [frame async for frame in remote.stream([np.ones(500_000, dtype=np.float32)] * 3)]
        assert len(frames) == 3 and all(f.nbytes == 2_000_000 and f[0] == 2.0 for f in frames)


async def test_an_executor_needs_no_shared_secret_to_check_tickets():
    # Tickets are signed with the server's own secret; the executor admits the
    # ticket its server sent it, whatever credential it registered with.
    with running_server() as server, running_executor(server.url, "--executor-token", "mine"):
        async with RemoteProxyClient(config_for(server, auth_token=None)) as client:
            assert await (await client.create_proxy(StreamingDataProcessor())).process(2) == 4
