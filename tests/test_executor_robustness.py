"""
An executor against clients that misbehave on the wire (issue 18): every
unexpected kind, undecodable body, absurd nesting or decompression bomb gets
an error reply or ends only its own session, with a log line, and the other
sessions go on. Real signaling server and executors on loopback; the
attacker is a hand-made client (tests/harness.py's ``raw_session``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

import msgpack
import pytest
import harness
from harness import MODES, TOKEN, mode_config

from remotemedia import ConnectionLostError, RemoteProxyClient
from remotemedia.codec import FORMAT_VERSION, MAX_NESTING
from remotemedia.rpc import PROTOCOL_VERSION, ErrorCode, Kind, Message, compression
from remotemedia.rpc.framing import chunk
from remotemedia.rpc.protocol import HEADER_SIZE

pytestmark = pytest.mark.timeout(180)

_HEADER = struct.Struct("!BBI")


class Echo:
    """An object for the well-behaved session (sent by value: the executor cannot import this module)."""

    def echo(self, value):
        return value


@pytest.fixture(scope="module")
def cluster(cluster_processes):
    """The shared cluster (tests/conftest.py) as ``(server, {mode: executor})``."""
    server, executors = cluster_processes
    return server, dict(zip(MODES, executors))


@contextlib.asynccontextmanager
async def attacker(server, mode: str):
    """A hand-made client past HELLO: yields ``(rpc, events, lost)``."""
    signaling, session, pc, rpc, events, lost = await harness.raw_session(
        server.url, TOKEN, {"executor": f"exec-{mode}"}, heartbeat_timeout=15
    )
    try:
        await rpc.send(Kind.HELLO, 0, {"ticket": session.ticket, "version": PROTOCOL_VERSION, "max_message_size": 1 << 20})
        assert (await asyncio.wait_for(events.get(), 20)).kind is Kind.WELCOME
        yield rpc, events, lost
    finally:
        rpc.close()
        await pc.close()
        await signaling.close()


async def send_whole(rpc, data: bytes) -> None:
    """One whole message, as made by hand (header included), chunked as the framing wants."""
    await rpc.write(chunk([data], len(data)))


async def reply_to(events: asyncio.Queue, id: int, timeout: float = 20) -> Message:
    """The executor's next message for call ``id`` (others are skipped)."""
    while True:
        event = await asyncio.wait_for(events.get(), timeout)
        if isinstance(event, Message) and event.id == id:
            return event


async def still_served(rpc, events, id: int = 77) -> None:
    """The session's objects still answer: releasing a handle that does not exist gets ``no_object``."""
    await rpc.send(Kind.RELEASE, id, 12345)
    reply = await reply_to(events, id)
    assert reply.kind is Kind.ERROR and reply.body["code"] == ErrorCode.NO_OBJECT


def nested_body(depth: int) -> bytes:
    """A body in the codec's format that nests ``depth`` tuples deep, built by hand as an attacker would."""
    inner = msgpack.packb([1])
    for _ in range(depth):
        inner = msgpack.packb([msgpack.ExtType(5, inner)])
    return struct.pack("!BI", FORMAT_VERSION, len(inner)) + inner


@pytest.mark.parametrize("mode", MODES)
async def test_unexpected_kinds_get_bad_request_and_the_session_goes_on(cluster, mode):
    server, executors = cluster
    async with attacker(server, mode) as (rpc, events, lost):
        ids = {}
        for id, kind in enumerate((Kind.RESULT, Kind.ERROR, Kind.YIELD, Kind.END, Kind.WELCOME, Kind.HELLO), start=10):
            await rpc.send(kind, id, {"ticket": "again"} if kind is Kind.HELLO else None)
            ids[id] = kind
        await send_whole(rpc, _HEADER.pack(99, 0, 20) + b"\x00")  # a kind that does not exist
        ids[20] = None
        for id, kind in ids.items():
            reply = await reply_to(events, id)
            assert reply.kind is Kind.ERROR and reply.body["code"] == ErrorCode.BAD_REQUEST, (kind, reply)
        await still_served(rpc, events)
        assert not lost.done()
    log = executors[mode].log()
    assert "is not something a client sends" in log and "a second HELLO" in log
    assert "AttributeError" not in log and "Traceback" not in log


@pytest.mark.parametrize("mode", MODES)
async def test_an_undecodable_body_gets_an_error_and_kills_nothing(cluster, mode):
    server, executors = cluster
    async with attacker(server, mode) as (rpc, events, lost):
        await send_whole(rpc, _HEADER.pack(Kind.CALL, 0, 5) + b"\x01garbage that is no codec message")
        reply = await reply_to(events, 5)
        assert reply.kind is Kind.ERROR and reply.body["code"] == ErrorCode.BAD_REQUEST
        assert "does not decode" in reply.body["message"]
        await still_served(rpc, events)  # in process mode: the worker is alive
        assert not lost.done()
    assert executors[mode].alive


@pytest.mark.parametrize("mode", MODES)
async def test_absurd_nesting_gets_an_error_not_a_crash(cluster, mode):
    # 400 nested tuples used to crash the interpreter that decoded them (the worker, or the executor itself).
    server, executors = cluster
    async with attacker(server, mode) as (rpc, events, lost):
        await send_whole(rpc, _HEADER.pack(Kind.CALL, 0, 6) + nested_body(400))
        reply = await reply_to(events, 6)
        assert reply.kind is Kind.ERROR and reply.body["code"] == ErrorCode.BAD_REQUEST
        assert f"more than {MAX_NESTING}" in reply.body["message"]
        await still_served(rpc, events)
    assert executors[mode].alive


@pytest.mark.parametrize("mode", MODES)
async def test_an_lz4_bomb_is_refused_and_its_session_ended_while_another_is_served(cluster, mode):
    server, executors = cluster
    # 60 MiB of zeros: about 240 KB on the wire.
    packed = compression.compress(bytes(60 << 20))
    ping_bomb = _HEADER.pack(Kind.PING, 0x02, 1) + packed
    async with RemoteProxyClient(mode_config(server, TOKEN, mode)) as client:
        remote = await client.create_proxy(Echo())
        assert await remote.echo("before") == "before"
        async with attacker(server, mode) as (rpc, events, lost):
            codes = []
            for i in range(40):
                if lost.done():
                    break
                # A compressed control kind, and a compressed CALL (pickled zeros: no valid object).
                try:
                    await send_whole(rpc, ping_bomb)
                    await send_whole(rpc, _HEADER.pack(Kind.CALL, 0x03, 100 + i) + packed)
                except ConnectionLostError:
                    break  # the executor ended the session
                # The other session is served meanwhile.
                assert await asyncio.wait_for(remote.echo(i), 30) == i
                while not events.empty():
                    event = events.get_nowait()
                    if isinstance(event, Message) and event.kind is Kind.ERROR:
                        codes.append(event.body["code"])
            # Refused and told why, then ended after repeated abuse.
            reason = await asyncio.wait_for(lost, 30)
            assert reason
        while not events.empty():
            event = events.get_nowait()
            if isinstance(event, Message) and event.kind is Kind.ERROR:
                codes.append(event.body["code"])
        assert ErrorCode.BAD_REQUEST in codes and ErrorCode.RATE_LIMITED in codes
        assert ErrorCode.SESSION_ENDED in codes
        assert await remote.echo("after") == "after"
    log = executors[mode].log()
    assert "a PING message may not be compressed" in log and "inflate rate" in log
    assert "messages the executor refused" in log
    assert executors[mode].alive


async def test_a_client_that_ignores_credit_gets_an_error_and_its_call_is_cancelled(cluster):
    server, executors = cluster
    from remotemedia.serialization import dumps_object

    async with attacker(server, "process") as (rpc, events, lost):
        await rpc.send_pickled(Kind.CREATE, 1, dumps_object(Slow()))
        assert (await reply_to(events, 1)).kind is Kind.RESULT
        await rpc.send(Kind.CALL, 2, [1, "consume", [None], {}, 4, 0])  # a duplex stream, input at position 0
        for _ in range(40):  # far beyond the window of 16, without waiting for credit
            await rpc.send(Kind.INPUT, 2, b"x" * 1000)
        reply = await reply_to(events, 2)
        while reply.kind is Kind.CREDIT:
            reply = await reply_to(events, 2)
        assert reply.kind is Kind.ERROR and "credit" in reply.body["message"]
        await still_served(rpc, events)
        assert not lost.done()
    assert "more inputs than its credit" in executors["process"].log()


class Slow:
    """A streamed method that takes its inputs slowly."""

    async def consume(self, inputs):
        async for item in inputs:
            await asyncio.sleep(0.5)
            yield len(item)


def test_header_size_is_what_these_tests_build():
    assert _HEADER.size == HEADER_SIZE
