"""
Memory a client can pin in an executor (issue 18): after the clients of each
attack leave, the real executor process is back within 50 MB of its start
(its resident size, from ``/proc/PID/status``), and an ended session is freed
by reference counting alone, with no garbage collection.

The attacks: clients that vanish in the middle of a 48 MB upload, clients
that announce a 64 MiB message, send one chunk and vanish, and a client that
ignores its input credit and floods a worker that is not reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import struct
import time
import weakref

import pytest
import harness
from harness import TOKEN, running_cluster, wait_until

from remotemedia import RemoteProxyClient
from remotemedia.exceptions import RemoteMediaError
from remotemedia.rpc import PROTOCOL_VERSION, Kind, compression
from remotemedia.rpc.framing import CHUNK_SIZE, chunk
from remotemedia.serialization import dumps_object

#: How far above its start an executor may stay once the attackers have left.
SLACK_MB = 50
pytestmark = pytest.mark.timeout(240)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Echo:
    def echo(self, value):
        return value


class Stuck:
    """A streamed method that blocks its worker's event loop: the worker reads nothing meanwhile."""

    async def hold(self, inputs, seconds):
        time.sleep(seconds)
        yield 0


@contextlib.contextmanager
def executor_of(mode: str):
    args = ("--name", f"mem-{mode}", "--mode", mode, "--max-sessions", "16")
    with running_cluster(TOKEN, args) as (server, [executor]):
        yield server, executor


def config(server, mode):
    return harness.client_config(server, TOKEN, timeout=30.0, heartbeat_timeout=15.0, requirements={"executor": f"mem-{mode}"})


async def warm_up(server, mode: str, executor) -> float:
    """One ordinary session (so what the executor loads once is loaded), then its resident size."""
    async with RemoteProxyClient(config(server, mode)) as client:
        remote = await client.create_proxy(Echo())
        assert await remote.echo(b"x" * (1 << 20)) == b"x" * (1 << 20)
    await sessions_ended(executor, 1)
    return rss_mb(executor.proc.pid)


async def sessions_ended(executor, count: int, timeout: float = 60) -> None:
    """Wait until the executor has logged the end of ``count`` sessions."""
    await wait_until(lambda: executor.log().count(" ended: ") >= count, timeout)


@contextlib.asynccontextmanager
async def hello(server, mode: str):
    """A hand-made client past HELLO: yields ``(rpc, events)``; leaves abruptly (no goodbye on the channel)."""
    signaling, session, pc, rpc, events, lost = await harness.raw_session(
        server.url, TOKEN, {"executor": f"mem-{mode}"}, heartbeat_timeout=15
    )
    try:
        await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
        assert (await asyncio.wait_for(events.get(), 20)).kind is Kind.WELCOME
        yield rpc, events
    finally:
        await pc.close()
        rpc.close()
        await signaling.close()


async def settle(executor, start: float) -> float:
    """The executor's resident size once it has had a moment to let go (polled: never a fixed sleep)."""
    deadline = time.monotonic() + 20
    while (now := rss_mb(executor.proc.pid)) - start >= SLACK_MB and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return now


async def test_clients_that_vanish_mid_upload_leave_nothing_behind():
    with executor_of("process") as (server, executor):
        start = await warm_up(server, "process", executor)
        upload = chunk([bytes(48 << 20)], 48 << 20)  # a 48 MB message
        for _ in range(3):
            async with hello(server, "process") as (rpc, events):
                await rpc.write(upload[: len(upload) // 2])  # half of it, then gone
                await rpc.drain(30)
        await sessions_ended(executor, 4)
        end = await settle(executor, start)
        print(f"executor RSS {start:.0f} MB -> {end:.0f} MB after 3 clients vanished mid-upload")
        assert end - start < SLACK_MB


@pytest.mark.parametrize("mode", ["process", "inprocess"])
async def test_announcing_64_mib_and_vanishing_pins_nothing(mode):
    with executor_of(mode) as (server, executor):
        start = await warm_up(server, mode, executor)
        announced = (64 << 20) - 64
        first = chunk([bytes(announced)], announced)[0]  # one chunk of a 64 MiB message
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(10):
                rpc, _events = await stack.enter_async_context(hello(server, mode))
                await rpc.write([first])
            peak = rss_mb(executor.proc.pid)
        await sessions_ended(executor, 11)
        end = await settle(executor, start)
        print(f"executor RSS {start:.0f} MB -> {peak:.0f} MB with 10 partial 64 MiB messages -> {end:.0f} MB after")
        assert peak - start < 10 * CHUNK_SIZE / 1e6 + SLACK_MB  # what arrived, not what was announced
        assert end - start < SLACK_MB


@pytest.mark.parametrize("mode", ["process", "inprocess"])
async def test_a_large_upload_that_fails_is_not_kept(mode):
    # 60 MiB of zeros (240 KB compressed) that do not unpickle: the error's traceback must not pin them.
    with executor_of(mode) as (server, executor):
        start = await warm_up(server, mode, executor)
        data = struct.pack("!BBI", Kind.CREATE, 0x03, 1) + compression.compress(bytes(60 << 20))
        async with hello(server, mode) as (rpc, events):
            await rpc.write(chunk([data], len(data)))
            reply = await asyncio.wait_for(events.get(), 30)
            assert reply.kind is Kind.ERROR and reply.body["code"] == "serialization"
        await sessions_ended(executor, 2)
        end = await settle(executor, start)
        print(f"executor RSS {start:.0f} MB -> {end:.0f} MB after a failed 60 MiB upload")
        assert end - start < SLACK_MB


async def test_a_client_that_ignores_credit_cannot_fill_the_relay():
    with executor_of("process") as (server, executor):
        start = await warm_up(server, "process", executor)
        async with hello(server, "process") as (rpc, events):
            await rpc.send_pickled(Kind.CREATE, 1, dumps_object(Stuck()))
            assert (await asyncio.wait_for(events.get(), 20)).kind is Kind.RESULT
            await rpc.send(Kind.CALL, 2, [1, "hold", [None, 8], {}, 4, 0])  # a duplex stream
            # Incompressible (zeros would travel, and wait for the worker, as 4 KB), under the
            # hand-made client's own 1 MiB limit.
            item = os.urandom((1 << 20) - 4096)
            peak = start
            with contextlib.suppress(RemoteMediaError):
                for _ in range(80):  # 80 MiB, far beyond the window of 16 inputs
                    await rpc.send(Kind.INPUT, 2, item)
                    peak = max(peak, rss_mb(executor.proc.pid))
                await rpc.drain(60)
            peak = max(peak, rss_mb(executor.proc.pid))
            codes = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    event = await asyncio.wait_for(events.get(), 10)
                    if event.kind is Kind.ERROR:
                        codes.append(event.body["code"])
                        break
        await sessions_ended(executor, 2)
        end = await settle(executor, start)
        print(f"executor RSS {start:.0f} MB -> {peak:.0f} MB while flooded -> {end:.0f} MB after")
        assert codes == ["bad_request"]
        assert "more inputs than its credit" in executor.log()
        assert peak - start < 16 + SLACK_MB  # a window of inputs waits for the worker, no more
        assert end - start < SLACK_MB


@pytest.mark.parametrize("mode", ["process", "inprocess"])
@pytest.mark.parametrize("ending", ["bye", "refused", "half-message"])
async def test_an_ended_session_is_freed_by_reference_counting_alone(monkeypatch, mode, ending):
    """ExecutorSession, RPCChannel and RTCPeerConnection of an ended session die with the garbage collector off."""
    import executor.session as session_module
    import remotemedia.transport.connection as lane_module  # where the executor's peer connection and channel are made
    from executor.executor import Executor, ExecutorConfig

    alive: dict[str, weakref.ref] = {}
    made = session_module.ExecutorSession.__init__
    new_pc = lane_module.new_peer_connection
    new_rpc = lane_module.RPCChannel

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        alive["ExecutorSession"] = weakref.ref(self)

    def peer_connection(*args):
        pc = new_pc(*args)
        alive["RTCPeerConnection"] = weakref.ref(pc)
        return pc

    def channel(*args, **kwargs):
        rpc = new_rpc(*args, **kwargs)
        alive["RPCChannel"] = weakref.ref(rpc)
        return rpc

    monkeypatch.setattr(session_module.ExecutorSession, "__init__", init)
    monkeypatch.setattr(lane_module, "new_peer_connection", peer_connection)
    monkeypatch.setattr(lane_module, "RPCChannel", channel)

    with harness.running_server("--token", TOKEN, "--executor-token", harness.EXECUTOR_TOKEN) as server:
        executor = Executor(ExecutorConfig(signaling=server.url, token=harness.EXECUTOR_TOKEN, name="gc", mode=mode))
        await executor.start()
        serving = asyncio.create_task(executor.serve())
        gc.collect()
        gc.disable()
        try:
            signaling, session, pc, rpc, events, lost = await harness.raw_session(server.url, TOKEN, heartbeat_timeout=15)
            ticket = session.ticket if ending != "refused" else "v1.forged"
            await rpc.send(Kind.HELLO, 0, {"ticket": ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
            await asyncio.wait_for(events.get(), 20)
            if ending == "half-message":
                await rpc.write(chunk([bytes(4 << 20)], 4 << 20)[:8])
                await rpc.drain(10)
            if ending == "refused":
                await asyncio.wait_for(lost, 20)
            rpc.close()
            await pc.close()
            await signaling.close()
            await wait_until(lambda: not executor.sessions, 30)
            assert set(alive) == {"ExecutorSession", "RTCPeerConnection", "RPCChannel"}
            # The session's task has ended; let the loop run what its ending scheduled.
            await wait_until(lambda: all(ref() is None for ref in alive.values()), 10)
        except AssertionError:
            left = sorted(name for name, ref in alive.items() if ref() is not None)
            raise AssertionError(f"kept alive without a garbage collection: {left}") from None
        finally:
            gc.enable()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await executor.close()
