"""
The connection interface (remotemedia.transport.connection): the data-channel
lane, opened by each side's factory, with two peers in one process and an
in-memory signaling session between them.
"""

from __future__ import annotations

import asyncio

import pytest

from remotemedia.rpc import Kind, Message, RPCProtocol
from remotemedia.transport import RPCChannel
from remotemedia.transport.connection import DataChannelLane, Lane, RPCConnection, accept_lane, open_lane

TIMEOUT = 20


class FakeSession:
    """One end of a signaling session, relayed in memory to its twin."""

    def __init__(self, id: str = "s1") -> None:
        self.id = id
        self.ended: str | None = None
        self.ice_servers: list = []
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.other: FakeSession | None = None
        self._on_candidate = None

    @classmethod
    def pair(cls) -> tuple[FakeSession, FakeSession]:
        a, b = cls(), cls()
        a.other, b.other = b, a
        return a, b

    def on_candidate(self, callback) -> None:
        self._on_candidate = callback

    async def send_offer(self, sdp: str) -> None:
        self.other.inbox.put_nowait({"type": "offer", "sdp": sdp})

    async def send_answer(self, sdp: str) -> None:
        self.other.inbox.put_nowait({"type": "answer", "sdp": sdp})

    async def expect(self, kind: str, timeout: float) -> dict:
        message = await asyncio.wait_for(self.inbox.get(), timeout)
        assert message["type"] == kind
        return message

    async def recv(self) -> dict:
        return await self.inbox.get()

    def bye(self, reason: str) -> None:
        """The other end left: what the signaling server tells this one."""
        self.ended = reason
        self.inbox.put_nowait({"type": "bye"})


def _ends():
    """Callbacks of one end: its events, its losses, its byes."""
    events: asyncio.Queue = asyncio.Queue()
    lost: list[str] = []
    byes: list[str] = []
    return events, lost, byes, dict(on_event=events.put_nowait, on_lost=lost.append, on_bye=byes.append)


async def _open_pair(media_tracks: int = 0):
    client_session, executor_session = FakeSession.pair()
    c_events, c_lost, c_byes, c_callbacks = _ends()
    e_events, e_lost, e_byes, e_callbacks = _ends()
    common = dict(ice_servers=[], heartbeat_interval=0.5, heartbeat_timeout=TIMEOUT, timeout=TIMEOUT)
    client, executor = await asyncio.gather(
        open_lane(client_session, media_tracks=media_tracks, protocol=RPCProtocol(1 << 20), what="test", **c_callbacks, **common),
        accept_lane(executor_session, protocol=RPCProtocol(1 << 20), ended=asyncio.Event(), **e_callbacks, **common),
    )
    return (client, client_session, c_events, c_lost, c_byes), (executor, executor_session, e_events, e_lost, e_byes)


async def test_the_factories_open_a_lane_that_carries_messages_both_ways():
    (client, _, c_events, c_lost, _), (executor, _, e_events, _, _) = await _open_pair(media_tracks=1)
    try:
        assert isinstance(client, Lane) and isinstance(executor, DataChannelLane)
        assert isinstance(client.rpc, RPCConnection) and isinstance(client.rpc, RPCChannel)
        assert len(client.slots) == len(executor.slots) == 1
        assert client.route is not None and client.route.kind == "direct"
        await client.rpc.send(Kind.CALL, 7, {"x": 1})
        message = await asyncio.wait_for(e_events.get(), TIMEOUT)
        assert isinstance(message, Message) and (message.kind, message.id, message.body) == (Kind.CALL, 7, {"x": 1})
        await executor.rpc.send(Kind.RESULT, 7, "ok")
        reply = await asyncio.wait_for(c_events.get(), TIMEOUT)
        assert (reply.kind, reply.body) == (Kind.RESULT, "ok")
        await client.rpc.drain()
    finally:
        await client.close()
        await executor.close()
    assert c_lost == ["closed by this end"]  # on_lost once, when the lane closed
    await client.close()  # twice is fine


async def test_a_bye_reaches_on_bye_and_closing_ends_the_connection():
    (client, client_session, _, _, c_byes), (executor, _, _, e_lost, _) = await _open_pair()
    try:
        client_session.bye("the executor left")
        for _ in range(100):
            if c_byes:
                break
            await asyncio.sleep(0)
        assert c_byes == ["the executor left"]
        await client.close("done here")
        assert client.rpc.lost == "done here"
        with pytest.raises(ConnectionError):
            await client.rpc.send(Kind.PING, 1)
        # The executor's end notices the channel close.
        await asyncio.wait_for(_until(lambda: e_lost), TIMEOUT)
    finally:
        await executor.close()


async def test_accept_gives_up_at_once_when_the_session_ends_first():
    client_session, executor_session = FakeSession.pair()
    ended = asyncio.Event()
    _, _, _, callbacks = _ends()
    accepting = asyncio.ensure_future(
        accept_lane(
            executor_session, protocol=RPCProtocol(1 << 20), ended=ended, ice_servers=[],
            heartbeat_interval=0.5, heartbeat_timeout=TIMEOUT, timeout=TIMEOUT, **callbacks,
        )
    )
    # An offer without the rpc channel: the wait for it ends only with the session.
    from remotemedia.transport import new_peer_connection

    pc = new_peer_connection()
    pc.createDataChannel("not-rpc")
    await pc.setLocalDescription(await pc.createOffer())
    await client_session.send_offer(pc.localDescription.sdp)
    await asyncio.wait_for(client_session.inbox.get(), TIMEOUT)  # the answer
    ended.set()
    assert await asyncio.wait_for(accepting, TIMEOUT) is None
    await pc.close()


async def test_a_failed_offer_leaves_nothing_open():
    client_session, executor_session = FakeSession.pair()
    _, _, _, callbacks = _ends()
    with pytest.raises(asyncio.TimeoutError):
        await open_lane(
            client_session, media_tracks=0, protocol=RPCProtocol(1 << 20), what="test", ice_servers=[],
            heartbeat_interval=0.5, heartbeat_timeout=5, timeout=0.01, **callbacks,
        )


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
