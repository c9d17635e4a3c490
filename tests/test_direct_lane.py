"""
The direct lane end to end (:mod:`remotemedia.transport.direct`): real
servers and executors on loopback. Which lane a client takes, its fallback
to the data channel, the door's ticket check (nothing unpickled for a peer
without the session's ticket), a lost or killed executor, large arrays and
long duplex streams on the direct lane in both execution modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from harness import EXECUTOR_TOKEN, MODES, TOKEN, ExecutorProcess, ServerProcess, config_for, mode_executor, running_server, wait_until

from remotemedia import ConnectionLostError, MessageTooLargeError, RemoteProxyClient
from remotemedia.rpc import Kind, Message, RPCProtocol, calls
from remotemedia.rpc.framing import frame, read_frame
from remotemedia.signaling import SignalingClient
from remotemedia.transport.door import ADMITTED, MAX_KNOCK, knock_body

pytestmark = pytest.mark.timeout(180)

#: Large enough for a 64 MiB array and its header.
BIG = 80 * 1024 * 1024
DIRECT = ("--direct", "127.0.0.1:0", "--max-message-size", str(BIG))


@pytest.fixture(scope="module")
def cluster_executors():
    # One per mode with a direct lane, and one whose announced address nobody listens on.
    blocked = ("--name", "exec-blocked", "--mode", "inprocess", "--direct", "127.0.0.1:0", "--direct-announce", "127.0.0.2")
    return (*(mode_executor(mode) + DIRECT for mode in MODES), blocked)


class Echo:
    """What the tests call remotely (sent by value: the executors cannot import this module)."""

    def echo(self, value):
        return value

    async def doubled(self, inputs):
        async for item in inputs:
            yield 2 * item


class Creates:
    """Unpickling this creates a file: the marker of code run from a pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def client_of(server, executor: str, *, media_tracks: int = 0, **overrides) -> RemoteProxyClient:
    settings = {"timeout": 60.0, "heartbeat_timeout": 15.0, "requirements": {"executor": executor}, "max_message_size": BIG}
    return RemoteProxyClient(config_for(server, **{**settings, **overrides}), media_tracks=media_tracks)


def door_port(executor: ExecutorProcess) -> int:
    """The port of an executor's direct lane, from its log."""
    found = re.search(r"direct lane listening on 127\.0\.0\.1:(\d+)", executor.log())
    assert found, executor.log()
    return int(found.group(1))


def by_name(processes, name: str) -> ExecutorProcess:
    (executor,) = [e for e in processes[1] if e.name == name]
    return executor


# -- the wire, without processes -----------------------------------------------------------------


def test_knocks_and_addresses_parse_or_say_why():
    from remotemedia.exceptions import DecodeError
    from remotemedia.transport.door import parse_address, parse_knock

    knock = parse_knock(knock_body("t", True))
    assert (knock.ticket, knock.media) == ("t", True)
    for bad in (b"\x80\x04", b"[]", b'{"ticket": 1}', pickle.dumps({"ticket": "t"})):
        with pytest.raises(DecodeError):
            parse_knock(bad)
    assert parse_address("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    for bad in ("nohost", ":80", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


async def _pair(**beats):
    """Two DirectConnections over a local socket pair: ``(a, b, events of b, lost of a, lost of b)``."""
    from remotemedia.transport.direct import DirectConnection

    left, right = socket.socketpair()
    ends, events, lost = [], asyncio.Queue(), [asyncio.get_running_loop().create_future() for _ in range(2)]
    for i, sock in enumerate((left, right)):
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        on_event = events.put_nowait if i == 1 else (lambda e: None)
        ends.append(DirectConnection(reader, writer, RPCProtocol(8 << 20), on_event, lambda why, f=lost[i]: f.done() or f.set_result(why), **beats))
    return ends[0], ends[1], events, lost[0], lost[1]


async def test_a_direct_connection_carries_large_messages_and_answers_pings():
    a, b, events, _, _ = await _pair(heartbeat_interval=0.05, heartbeat_timeout=5.0)
    try:
        array = np.arange(3 << 20, dtype=np.uint8)  # three chunks
        await a.send(Kind.CALL, 7, {"x": array})
        event = await asyncio.wait_for(events.get(), 10)
        assert event.kind is Kind.CALL and event.id == 7 and np.array_equal(event.body["x"], array)
        await asyncio.wait_for(_until(lambda: a.rtt is not None and b.rtt is not None), 10)
        assert events.empty()  # pings and pongs stay inside
    finally:
        a.close()
        b.close()


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)


async def test_a_direct_connection_is_lost_once_when_the_peer_closes_or_breaks_the_framing():
    a, b, _, lost_a, lost_b = await _pair()
    a.close("bye")
    assert "closed" in await asyncio.wait_for(lost_b, 10)
    assert await lost_a == "bye"
    with pytest.raises(ConnectionLostError):
        await b.send(Kind.CALL, 1, 1)
    b.close()

    a, b, _, _, lost_b = await _pair()
    a._writer.write((64 << 20).to_bytes(4, "big"))  # a frame above any chunk: not our peer
    assert "broke the protocol" in await asyncio.wait_for(lost_b, 10)
    a.close()


async def test_dial_takes_the_first_address_whose_door_admits_the_ticket():
    from remotemedia.transport.door import DirectDoor, dial

    async def not_a_door(reader, writer):
        writer.close()  # answers TCP, admits nobody

    impostor = await asyncio.start_server(not_a_door, "127.0.0.1", 0)
    door = DirectDoor("127.0.0.1", 0)
    await door.start()
    try:
        wrong = f"127.0.0.1:{impostor.sockets[0].getsockname()[1]}"
        (right,) = door.addresses
        arrived = door.expect("the-ticket")
        with pytest.raises(ConnectionLostError, match="did not admit"):
            await dial([wrong], "the-ticket", media=False, ssl_context=None, timeout=5)
        reader, writer, address = await dial([wrong, right], "the-ticket", media=True, ssl_context=None, timeout=5)
        assert address == right
        _, _, knock = await asyncio.wait_for(arrived, 5)
        assert knock.ticket == "the-ticket" and knock.media is True
        writer.close()
    finally:
        impostor.close()
        await door.close()


# -- the announced address -----------------------------------------------------------------------


def test_the_server_hands_the_direct_address_only_to_the_paired_client():
    from hub_world import World, only

    world = World(token="s3cret")
    executor = world.connect()
    register = {"type": "register", "name": "gpu-1", "capacity": 2, "token": world.executor_token, "direct": ["10.0.0.12:7000"]}
    assert only(world.send(executor, register), executor)["type"] == "registered"
    plain = world.executor("cpu-1")
    paired, actions = world.pair(world.connect(), {"executor": "gpu-1"})
    assert paired["direct"] == ["10.0.0.12:7000"]
    assert "direct" not in only(actions, executor)  # the executor's own session message does not echo it
    paired, _ = world.pair(world.connect(), {"executor": "cpu-1"})
    assert "direct" not in paired and plain


def test_a_bad_announced_address_is_refused_at_register():
    from hub_world import World, only

    world = World()
    executor = world.connect()
    reply = only(world.send(executor, {"type": "register", "name": "x", "capacity": 1, "direct": "not-a-list"}), executor)
    assert reply["type"] == "error" and reply["code"] == "bad_message"


# -- which lane ----------------------------------------------------------------------------------


async def test_a_client_takes_the_direct_lane_when_the_executor_offers_one(cluster, mode):
    async with client_of(cluster, f"exec-{mode}") as client:
        assert client.lane == "direct"
        assert client.route.kind == "direct" and client.route.remote.startswith("tcp 127.0.0.1:")
        remote = await client.create_proxy(Echo())
        assert await remote.echo({"a": [1, 2.5, "x"]}) == {"a": [1, 2.5, "x"]}


async def test_lane_datachannel_never_dials(cluster):
    async with client_of(cluster, "exec-inprocess", lane="datachannel") as client:
        assert client.lane == "datachannel"
        remote = await client.create_proxy(Echo())
        assert await remote.echo(7) == 7


async def test_with_media_tracks_the_peer_connection_opens_beside_the_direct_lane(cluster):
    async with client_of(cluster, "exec-inprocess", media_tracks=1) as client:
        assert client.lane == "direct"
        assert client.route is not None  # the peer connection of the media slots
        remote = await client.create_proxy(Echo())
        assert await remote.echo("both") == "both"


async def test_serve_offers_the_direct_lane_by_default():
    from harness import ServeProcess

    serve = ServeProcess()
    try:
        config = {"host": "127.0.0.1", "port": serve.port, "timeout": 30.0}
        from remotemedia import RemoteExecutorConfig

        async with RemoteProxyClient(RemoteExecutorConfig(**config)) as client:
            assert client.lane == "direct"
            assert await (await client.create_proxy(Echo())).echo(1) == 1
        async with RemoteProxyClient(RemoteExecutorConfig(**config, lane="datachannel")) as client:
            assert client.lane == "datachannel"
    finally:
        serve.stop()


# -- fallback ------------------------------------------------------------------------------------


async def test_an_unreachable_direct_lane_falls_back_to_the_data_channel(cluster):
    async with client_of(cluster, "exec-blocked") as client:
        assert client.lane == "datachannel"
        remote = await client.create_proxy(Echo())
        assert await remote.echo("fine") == "fine"


async def test_lane_direct_fails_when_the_direct_lane_is_unreachable(cluster):
    with pytest.raises(ConnectionLostError, match="direct lane .* unreachable"):
        async with client_of(cluster, "exec-blocked", lane="direct"):
            pass


async def test_max_message_size_holds_on_the_direct_lane(cluster):
    async with client_of(cluster, "exec-inprocess", max_message_size=1 << 20) as client:
        remote = await client.create_proxy(Echo())
        with pytest.raises(MessageTooLargeError):
            await remote.echo(np.zeros(2 << 20, dtype=np.uint8))
        assert await remote.echo(3) == 3  # the session goes on


# -- the door's ticket check ---------------------------------------------------------------------


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 15) == b""
    except ConnectionError:
        return True


@pytest.mark.parametrize("knock", ["wrong-ticket", "pickle", "oversized"])
async def test_a_knock_without_the_ticket_is_dropped_and_nothing_is_unpickled(cluster_processes, tmp_path, knock):
    server, _ = cluster_processes
    executor = by_name(cluster_processes, "exec-process")
    marker = tmp_path / f"pwned-{knock}"
    evil = pickle.dumps(Creates(str(marker)))
    reader, writer = await asyncio.open_connection("127.0.0.1", door_port(executor))
    if knock == "wrong-ticket":
        writer.writelines(frame(knock_body("not-the-ticket", False)))
        writer.writelines(frame(RPCProtocol(1 << 20).encode(Kind.CREATE, 1, evil, pickled=True)))
    elif knock == "pickle":
        writer.writelines(frame(evil))
    else:
        writer.write((MAX_KNOCK + 1).to_bytes(4, "big") + b"x" * 64)
    await writer.drain()
    assert await _closed_by_peer(reader)
    writer.close()
    assert not marker.exists()
    async with client_of(server, "exec-process") as client:  # the executor is unharmed
        assert await (await client.create_proxy(Echo())).echo(1) == 1


async def test_with_the_ticket_nothing_is_unpickled_before_hello(cluster_processes, tmp_path):
    server, _ = cluster_processes
    executor = by_name(cluster_processes, "exec-process")
    marker = tmp_path / "pwned"
    signaling = await SignalingClient.connect(server.url, token=TOKEN)
    try:
        session = await signaling.pair({"executor": "exec-process"}, timeout=15)
        assert session.direct == [f"127.0.0.1:{door_port(executor)}"]
        reader, writer = await asyncio.open_connection("127.0.0.1", door_port(executor))
        protocol = RPCProtocol(1 << 20)
        writer.writelines(frame(knock_body(session.ticket, False)))
        for payload in protocol.send_pickled(Kind.CREATE, 1, pickle.dumps(Creates(str(marker)))):
            writer.writelines(frame(payload))
        await writer.drain()
        assert await asyncio.wait_for(read_frame(reader), 15) == ADMITTED  # the door took it: the session judges what follows
        replies = []
        with contextlib.suppress(ConnectionError):
            while (data := await asyncio.wait_for(read_frame(reader), 15)) is not None:
                replies += [e for e in protocol.receive_data(data) if isinstance(e, Message) and e.kind is Kind.ERROR]
        assert replies and calls.parse_error(replies[0].body).code == "unauthorized"
        assert "HELLO" in calls.parse_error(replies[0].body).message
        writer.close()
    finally:
        await signaling.close()
    assert not marker.exists()


# -- losing the executor -------------------------------------------------------------------------


@contextlib.contextmanager
def two_executors():
    server = ServerProcess("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN)
    started: list[ExecutorProcess] = []
    try:
        for i in range(2):
            started.append(ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", f"exec-{i}", *DIRECT))
        yield server, started
    finally:
        for executor in started:
            executor.stop()
        server.stop()


async def test_a_killed_executor_reconnects_on_the_direct_lane():
    with two_executors() as (server, executors):
        quick = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0, "requirements": {}}
        async with client_of(server, "", **quick) as client:
            remote = await client.create_proxy(Echo())
            assert client.lane == "direct"
            (victim,) = [e for e in executors if e.name == client.executor]
            victim.kill()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(remote.echo(1), 30)  # in flight or sent on the lost lane
            assert await asyncio.wait_for(remote.echo("again"), 30) == "again"
            assert client.reconnects == 1 and client.executor != victim.name
            assert client.lane == "direct"


async def test_without_reconnect_a_lost_direct_lane_stays_closed():
    with two_executors() as (server, executors):
        quick = {"heartbeat_interval": 0.5, "heartbeat_timeout": 3.0, "requirements": {}, "reconnect": False}
        async with client_of(server, "", **quick) as client:
            remote = await client.create_proxy(Echo())
            (victim,) = [e for e in executors if e.name == client.executor]
            victim.kill()
            for _ in range(2):
                with pytest.raises(ConnectionLostError):
                    await asyncio.wait_for(remote.echo(1), 30)
            assert client.reconnects == 0


# -- bulk data -----------------------------------------------------------------------------------


async def test_a_64_mib_array_comes_back_bit_exact(cluster, mode):
    array = np.random.default_rng(5).integers(0, 256, 64 * 1024 * 1024, dtype=np.uint8)
    async with client_of(cluster, f"exec-{mode}") as client:
        assert client.lane == "direct"
        remote = await client.create_proxy(Echo())
        back = await remote.echo(array)
        assert back.dtype == array.dtype and np.array_equal(back, array)


async def test_a_duplex_stream_of_ten_thousand_items_on_the_direct_lane(cluster, mode):
    n = 10_000

    async def inputs():
        for i in range(n):
            yield i

    async with client_of(cluster, f"exec-{mode}") as client:
        assert client.lane == "direct"
        remote = await client.create_proxy(Echo())
        assert [out async for out in remote.doubled(inputs())] == [2 * i for i in range(n)]


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a certificate for 127.0.0.1, as files."""
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    return {name: str(path) for name, path in files.items()}


async def test_with_wss_the_direct_lane_is_tls_and_needs_a_certificate(pki, monkeypatch):
    monkeypatch.delenv("REMOTEMEDIA_CA_FILE", raising=False)
    server = ServerProcess("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, "--tls-cert", pki["cert"], "--tls-key", pki["key"])
    started: list[ExecutorProcess] = []
    try:
        common = ("--executor-token", EXECUTOR_TOKEN, "--ca-file", pki["ca"], "--mode", "inprocess", "--direct", "127.0.0.1:0")
        tls = ("--direct-tls-cert", pki["cert"], "--direct-tls-key", pki["key"])
        started.append(ExecutorProcess(server.url, *common, "--name", "with-cert", *tls))
        started.append(ExecutorProcess(server.url, *common, "--name", "no-cert"))
        assert "direct lane needs TLS too" in started[1].log()
        settings = {"ssl_enabled": True, "ca_file": pki["ca"]}
        async with client_of(server, "with-cert", **settings) as client:
            assert client.lane == "direct"
            assert await (await client.create_proxy(Echo())).echo("tls") == "tls"
        async with client_of(server, "no-cert", **settings) as client:
            assert client.lane == "datachannel"
        # Plain text on the TLS door is no knock.
        reader, writer = await asyncio.open_connection("127.0.0.1", door_port(started[0]))
        writer.writelines(frame(knock_body("whatever", False)))
        assert await _closed_by_peer(reader)
        writer.close()
    finally:
        for executor in started:
            executor.stop()
        server.stop()


# -- memory --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_ended_direct_session_is_freed_by_reference_counting_alone(monkeypatch, mode):
    """The executor's session and both ends' DirectConnections die with the garbage collector off."""
    import gc
    import weakref

    import executor.session as session_module
    import remotemedia.transport.direct as direct_module
    from executor.executor import Executor, ExecutorConfig

    alive: list[tuple[str, weakref.ref]] = []
    made, made_connection = session_module.ExecutorSession.__init__, direct_module.DirectConnection

    def init(self, *args, **kwargs):
        made(self, *args, **kwargs)
        alive.append(("ExecutorSession", weakref.ref(self)))

    def connection(*args, **kwargs):
        made = made_connection(*args, **kwargs)
        alive.append(("DirectConnection", weakref.ref(made)))
        return made

    monkeypatch.setattr(session_module.ExecutorSession, "__init__", init)
    monkeypatch.setattr(direct_module, "DirectConnection", connection)
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as server:
        config = ExecutorConfig(signaling=server.url, token=EXECUTOR_TOKEN, name="gc", mode=mode, direct="127.0.0.1:0")
        executor = Executor(config)
        await executor.start()
        serving = asyncio.create_task(executor.serve())
        gc.collect()
        gc.disable()
        try:
            async with client_of(server, "gc", lane="direct") as client:
                remote = await client.create_proxy(Echo())
                assert (await remote.echo(np.ones(1 << 18))).sum() == 1 << 18
                del remote
            del client
            await wait_until(lambda: not executor.sessions, 30)
            assert sorted(name for name, _ in alive) == ["DirectConnection", "DirectConnection", "ExecutorSession"]
            await wait_until(lambda: all(ref() is None for _, ref in alive), 10)
        except AssertionError:
            left = sorted(name for name, ref in alive if ref() is not None)
            raise AssertionError(f"kept alive without a garbage collection: {left}") from None
        finally:
            gc.enable()
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
            await executor.close()


# -- the command line ----------------------------------------------------------------------------


def test_bad_direct_flags_say_what_is_wrong():
    import os
    import subprocess
    import sys

    from harness import ROOT

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "executor", *args], capture_output=True, text=True, env=env, timeout=60)

    done = run("--direct", "nonsense")
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
    done = run("--signaling", "wss://127.0.0.1:1/ws", "--direct", "127.0.0.1:0", "--direct-tls-cert", "/nonexistent.pem")
    assert done.returncode == 2 and "/nonexistent.pem" in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("--signaling", "ws://127.0.0.1:1/ws", "--mode", "inprocess", "--direct", f"127.0.0.1:{port}")
    assert done.returncode == 1 and f"cannot listen on --direct 127.0.0.1:{port}" in done.stderr
