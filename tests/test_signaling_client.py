"""
The Python signaling client (``SignalingClient``) against the real server,
started as a subprocess.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from harness import running_server, wait_until

from remotemedia import (
    AuthenticationError,
    ConnectionLostError,
    NoExecutorAvailable,
    RemoteTimeoutError,
    SignalingError,
)
from remotemedia.exceptions import PermissionDeniedError
from remotemedia.signaling import SignalingClient
from remotemedia.signaling.ticket import verify_ticket

TIMEOUT = 5.0


@pytest.fixture
def server():
    with running_server("--token", "s3cret", "--executor-token", "exec-s3cret") as srv:
        yield srv


@pytest.fixture
async def peers(server):
    """An executor and a client connection with the right token, closed after the test."""
    async with await SignalingClient.connect(server.url, token="exec-s3cret") as executor:
        async with await SignalingClient.connect(server.url, token="s3cret") as client:
            yield executor, client


async def test_pair_accept_and_negotiate(peers):
    executor, client = peers
    registered = await executor.register("gpu-1", capacity=2, capabilities={"gpu": True})
    assert registered["name"] == "gpu-1" and executor.name == "gpu-1"
    session = await client.pair({"gpu": True}, timeout=TIMEOUT)
    accepted = await executor.accept(timeout=TIMEOUT)
    assert session.id == accepted.id
    assert session.executor == accepted.executor == "gpu-1"
    assert session.client == accepted.client
    assert session.ticket == accepted.ticket
    # Signed with the server's own secret: no token either end holds verifies it.
    assert not verify_ticket("s3cret", accepted.ticket, accepted.id, accepted.client, "gpu-1")
    assert not verify_ticket("exec-s3cret", accepted.ticket, accepted.id, accepted.client, "gpu-1")
    assert session.capabilities["gpu"] is True
    assert accepted.requirements == {"gpu": True}

    await session.send_offer("v=0 offer\r\n")
    assert (await accepted.expect("offer", TIMEOUT))["sdp"] == "v=0 offer\r\n"
    await accepted.send_candidate({"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0})
    await accepted.send_answer("v=0 answer\r\n")
    got = []
    session.on_candidate(got.append)
    assert (await session.expect("answer", TIMEOUT))["sdp"] == "v=0 answer\r\n"
    assert got == [{"candidate": "candidate:1", "sdpMid": "0", "sdpMLineIndex": 0}]
    await session.send_candidate(None)
    assert (await accepted.recv(TIMEOUT)) == {"type": "candidate", "session": session.id, "candidate": None}


async def test_close_sends_bye_and_ends_the_other_side(peers):
    executor, client = peers
    await executor.register("e", capacity=1)
    session = await client.pair()
    accepted = await executor.accept(timeout=TIMEOUT)
    await session.close("finished")
    await session.close()  # twice is fine
    bye = await accepted.recv(TIMEOUT)
    assert bye["type"] == "bye" and bye["reason"] == "finished"
    assert accepted.ended == "finished"
    with pytest.raises(ConnectionLostError, match="finished"):
        await accepted.recv(TIMEOUT)
    with pytest.raises(ConnectionLostError):
        await session.send_offer("v=0")
    # The slot is free again.
    await client.pair(timeout=TIMEOUT)


async def test_expect_raises_when_the_other_end_says_bye(peers):
    executor, client = peers
    await executor.register("e", capacity=1)
    session = await client.pair()
    accepted = await executor.accept(timeout=TIMEOUT)
    await accepted.close("no thanks")
    with pytest.raises(ConnectionLostError, match="no thanks"):
        await session.expect("answer", TIMEOUT)


async def test_closing_the_client_connection_ends_its_sessions(server):
    async with await SignalingClient.connect(server.url, token="exec-s3cret") as executor:
        await executor.register("e", capacity=1)
        client = await SignalingClient.connect(server.url, token="s3cret")
        await client.pair()
        accepted = await executor.accept(timeout=TIMEOUT)
        await client.close()
        assert client.closed
        bye = await accepted.recv(TIMEOUT)
        assert bye["type"] == "bye" and "client disconnected" in bye["reason"]
        with pytest.raises(ConnectionLostError):
            await client.pair()


async def test_heartbeats_keep_a_registered_executor_alive_until_they_stop():
    with running_server("--heartbeat-timeout", "0.6") as server:
        async with await SignalingClient.connect(server.url) as executor:
            registered = await executor.register("e", capacity=1)
            assert registered["heartbeat_interval"] == pytest.approx(0.2)
            # Three heartbeat timeouts pass while the background task beats.
            with pytest.raises(RemoteTimeoutError):
                await executor.accept(timeout=1.8)
            assert server.health()["executors"] == 1
            executor._heartbeat.cancel()  # a hung executor
            await wait_until(lambda: server.health()["executors"] == 0)


async def test_heartbeat_timeout_is_reported_to_the_executor():
    with running_server("--heartbeat-timeout", "0.6") as server:
        async with await SignalingClient.connect(server.url) as executor:
            await executor.register("e", capacity=1)
            executor._heartbeat.cancel()
            with pytest.raises(SignalingError) as info:
                await executor.accept(timeout=TIMEOUT)
            assert info.value.code == "heartbeat_timeout"
            assert executor.closed


async def test_a_fatal_error_from_the_server_ends_the_heartbeats_quietly():
    # The server ends a connection that floods it with a fatal ``rate_limited``.
    # A heartbeat sent after that meets the same error: it must end the
    # heartbeat loop, not leave an exception in a task that nobody awaits.
    with running_server("--rate-limit", "1", "--rate-burst", "2") as server:
        async with await SignalingClient.connect(server.url) as executor:
            await executor.register("e", capacity=1)
            with pytest.raises(SignalingError) as info:
                for _ in range(100):
                    await executor.heartbeat(0.0, 0)
                await executor.accept(timeout=TIMEOUT)
            assert info.value.code == "rate_limited"
            await asyncio.wait_for(executor._beat(0.01, lambda: (0.0, 0)), TIMEOUT)


async def test_unregister_ends_the_sessions(peers):
    executor, client = peers
    await executor.register("e", capacity=1)
    session = await client.pair()
    await executor.accept(timeout=TIMEOUT)
    await executor.unregister(timeout=TIMEOUT)
    assert executor.name is None
    bye = await session.recv(TIMEOUT)
    assert bye["type"] == "bye" and "unregistered" in bye["reason"]
    with pytest.raises(NoExecutorAvailable):
        await client.pair()


async def test_no_executor_leaves_the_connection_usable(server):
    async with await SignalingClient.connect(server.url, token="s3cret") as client:
        with pytest.raises(NoExecutorAvailable) as info:
            await client.pair(timeout=TIMEOUT)
        assert info.value.code == "no_executor"
        assert "python -m executor" in str(info.value)
        async with await SignalingClient.connect(server.url, token="exec-s3cret") as executor:
            await executor.register("late", capacity=1, capabilities={"services": ["edges"]})
            with pytest.raises(NoExecutorAvailable):
                await client.pair({"service": "blur"})
            session = await client.pair({"service": "edges"})
            assert session.executor == "late"


@pytest.mark.parametrize("token", [None, "wrong"])
@pytest.mark.parametrize("role", ["pair", "register"])
async def test_missing_or_wrong_token_raises_authentication_error(server, token, role):
    async with await SignalingClient.connect(server.url, token=token) as peer:
        with pytest.raises(AuthenticationError) as info:
            if role == "pair":
                await peer.pair(timeout=TIMEOUT)
            else:
                await peer.register("e", capacity=1, timeout=TIMEOUT)
        assert info.value.code == "unauthorized"
        assert "token" in str(info.value)
        # The server closed the connection; what follows says so.
        with pytest.raises(AuthenticationError):
            await peer.pair(timeout=TIMEOUT)


async def test_a_client_token_cannot_register(server):
    async with await SignalingClient.connect(server.url, token="s3cret") as peer:
        with pytest.raises(PermissionDeniedError) as info:
            await peer.register("gpu-1", capacity=100_000, capabilities={"gpu": True}, timeout=TIMEOUT)
        assert info.value.code == "wrong_role"
        with pytest.raises(PermissionDeniedError):  # and the server closed the connection
            await peer.pair(timeout=TIMEOUT)


async def test_name_taken(server):
    async with await SignalingClient.connect(server.url, token="exec-s3cret") as first, await SignalingClient.connect(
        server.url, token="exec-s3cret"
    ) as second:
        await first.register("same", capacity=1)
        with pytest.raises(SignalingError) as info:
            await second.register("same", capacity=1)
        assert info.value.code == "name_taken"
        await second.register("other", capacity=1)


async def test_waits_time_out(peers):
    executor, client = peers
    await executor.register("e", capacity=1)
    with pytest.raises(RemoteTimeoutError, match="0.2 s"):
        await executor.accept(timeout=0.2)
    session = await client.pair()
    with pytest.raises(RemoteTimeoutError):
        await session.recv(timeout=0.2)
    with pytest.raises(RemoteTimeoutError, match="answer"):
        await session.expect("answer", timeout=0.2)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.register("e", capacity=0),
        lambda c: c.register("", capacity=1),
        lambda c: c.register("e", capacity=1, capabilities={"gpu": "yes"}),
        lambda c: c.pair({"gpu": "yes"}),
        lambda c: c.pair({"service": 3}),
    ],
)
async def test_bad_arguments_are_refused_before_sending(server, call):
    async with await SignalingClient.connect(server.url, token="s3cret") as peer:
        with pytest.raises(SignalingError) as info:
            await call(peer)
        assert info.value.code == "bad_message"
        # Nothing reached the server, so the connection is still fine.
        with pytest.raises(NoExecutorAvailable):
            await peer.pair(timeout=TIMEOUT)


async def test_unreachable_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SignalingError) as info:
        await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws", timeout=TIMEOUT)
    assert info.value.code == "unreachable"
    assert "is it running" in str(info.value)


async def test_a_server_that_never_answers_the_handshake_times_out():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(RemoteTimeoutError, match="handshake"):
            await SignalingClient.connect(f"ws://127.0.0.1:{port}/ws", timeout=0.3)


async def test_a_stopped_server_fails_pending_waits_with_connection_lost():
    with running_server() as server:
        executor = await SignalingClient.connect(server.url)
        client = await SignalingClient.connect(server.url)
        await executor.register("e", capacity=1)
        session = await client.pair()
        accepted = await executor.accept(timeout=TIMEOUT)
        waiting = [asyncio.create_task(executor.accept()), asyncio.create_task(session.recv())]
        assert server.stop() == 0
        for task in waiting:
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(task, TIMEOUT)
        with pytest.raises(ConnectionLostError):
            await accepted.recv(TIMEOUT)
        with pytest.raises(ConnectionLostError):
            await client.pair()
        await executor.close()
        await client.close()
