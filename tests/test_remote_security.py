"""
Nothing unauthenticated reaches unpickling on the executor.

A hand-made client pairs properly through the signaling server (so it gets a
peer connection) but then presents a wrong ticket, or none at all, and sends
a pickle that would create a file when loaded. The executor must refuse, end
the session, and never load it.
"""

from __future__ import annotations

import asyncio
import os
import pickle

import pytest
import harness
from harness import EXECUTOR_TOKEN, TOKEN, running_executor, running_server, wait_until

from remotemedia.rpc import PROTOCOL_VERSION, Kind, Message
from remotemedia.signaling import SignalingClient


def guarded_server():
    """A server that wants :data:`TOKEN` of clients and the harness's executor credential of executors."""
    return running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN)


def guarded_executor(url: str, *args: str):
    """An executor of :func:`guarded_server`."""
    return running_executor(url, "--executor-token", EXECUTOR_TOKEN, *args)


class _Trap:
    """Unpickling this creates the file at ``path``: proof that it was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


async def raw_session(url: str):
    """Pair and open the rpc channel by hand; returns (signaling, session, pc, rpc, events, lost)."""
    return await harness.raw_session(url, TOKEN)


@pytest.mark.parametrize("hello", [None, {"ticket": "v1.forged", "version": PROTOCOL_VERSION}], ids=["no-hello", "forged"])
async def test_a_wrong_or_missing_ticket_gets_nothing_unpickled(tmp_path, hello):
    trap = tmp_path / "unpickled.txt"
    with guarded_server() as server, guarded_executor(server.url) as executor:
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            if hello is not None:
                await rpc.send(Kind.HELLO, 0, hello)
            await rpc.send_pickled(Kind.CREATE, 1, pickle.dumps(_Trap(str(trap))))
            error = await asyncio.wait_for(events.get(), 10)
            assert isinstance(error, Message) and error.kind is Kind.ERROR
            assert error.body["code"] == "unauthorized"
            # The executor ends the session: the channel closes and the server frees the slot.
            assert await asyncio.wait_for(lost, 10)
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
            assert not trap.exists()
            assert "refused" in executor.log() or "before authentication" in executor.log()
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()
        assert executor.alive


async def test_the_right_ticket_is_accepted(tmp_path):
    with guarded_server() as server, guarded_executor(server.url):
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
            welcome = await asyncio.wait_for(events.get(), 10)
            assert welcome.kind is Kind.WELCOME and welcome.body["max_message_size"] > 0
            assert not lost.done()
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()


async def test_another_protocol_version_is_refused():
    with guarded_server() as server, guarded_executor(server.url):
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION + 1})
            error = await asyncio.wait_for(events.get(), 10)
            assert error.kind is Kind.ERROR and "protocol version" in error.body["message"]
            assert await asyncio.wait_for(lost, 10)
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()


async def test_a_client_that_never_says_hello_is_dropped():
    with guarded_server() as server, guarded_executor(server.url, "--connect-timeout", "1") as executor:
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            await asyncio.wait_for(lost, 15)  # the executor closed the channel
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
            assert "no HELLO" in executor.log()
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()


async def test_garbage_on_the_channel_ends_only_that_session(tmp_path):
    with guarded_server() as server, guarded_executor(server.url) as executor:
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            rpc.channel.send(b"\x07" + os.urandom(64))  # not our framing
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()
        assert executor.alive
        assert "broke the protocol" in executor.log()


@pytest.mark.parametrize("sdp", ["v=0\r\n", "not sdp at all", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"])
async def test_a_malformed_offer_ends_only_that_session(sdp):
    with guarded_server() as server, guarded_executor(server.url, "--connect-timeout", "2") as executor:
        signaling = await SignalingClient.connect(server.url, token=TOKEN)
        try:
            session = await signaling.pair(timeout=10)
            await session.send_offer(sdp)  # refused at once, or no channel ever opens
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
        finally:
            await signaling.close()
        assert executor.alive and "setup failed" in executor.log()
        assert "Task exception was never retrieved" not in executor.log()


@pytest.mark.parametrize("mode", ["process", "inprocess"])
async def test_a_forged_ticket_gets_nothing_unpickled_in_either_execution_mode(tmp_path, mode):
    # The ticket is checked by the executor itself in both modes, before any worker process sees a byte.
    trap = tmp_path / "unpickled.txt"
    with guarded_server() as server, guarded_executor(server.url, "--mode", mode) as executor:
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket + "x", "version": PROTOCOL_VERSION})
            await rpc.send_pickled(Kind.CREATE, 1, pickle.dumps(_Trap(str(trap))))
            await rpc.send_pickled(Kind.CALL, 2, pickle.dumps(_Trap(str(trap))))
            error = await asyncio.wait_for(events.get(), 10)
            assert isinstance(error, Message) and error.kind is Kind.ERROR
            assert error.body["code"] == "unauthorized" and "wrong session ticket" in error.body["message"]
            assert await asyncio.wait_for(lost, 10)
            await wait_until(lambda: server.health()["sessions"] == 0, timeout=10)
            assert not trap.exists()
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()
        assert executor.alive
        # The same bytes with the right ticket are loaded: the trap works, only the ticket stopped it.
        signaling, session, pc, rpc, events, lost = await raw_session(server.url)
        try:
            await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
            assert (await asyncio.wait_for(events.get(), 10)).kind is Kind.WELCOME
            await rpc.send_pickled(Kind.CREATE, 1, pickle.dumps(_Trap(str(trap))))
            await wait_until(trap.exists, timeout=10)
        finally:
            rpc.close()
            await pc.close()
            await signaling.close()
