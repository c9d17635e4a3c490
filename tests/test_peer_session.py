"""executor.peer_session: what the RPC and service sessions share (no network)."""

from __future__ import annotations

import asyncio

import pytest

from executor.peer_session import PeerSession, SessionOver
from remotemedia.exceptions import RemoteTimeoutError


class FakeSignaling:
    id = "s1"

    def __init__(self) -> None:
        self.closed_with: list[str] = []
        self.candidate_callback = object()

    def on_candidate(self, callback) -> None:
        self.candidate_callback = callback

    async def close(self, reason: str = "") -> None:
        self.closed_with.append(reason)


class Probe(PeerSession):
    def __init__(self, serve) -> None:
        super().__init__(FakeSignaling(), settings=None)
        self.serve = serve
        self.torn_down = False

    async def _serve(self) -> None:
        await self.serve(self)

    async def _teardown(self) -> None:
        assert self.ending
        self.torn_down = True


async def _ends_when_told(session: Probe) -> None:
    session.end("draining")
    session.end("a second reason is ignored")
    await session._done.wait()


async def _times_out(session: Probe) -> None:
    raise RemoteTimeoutError("no offer within 1 s")


async def _breaks(session: Probe) -> None:
    raise ValueError("malformed SDP")


async def _stops(session: Probe) -> None:
    session._end("the client left (bye)")
    raise SessionOver()


@pytest.mark.parametrize(
    "serve, why",
    [
        (_ends_when_told, "draining"),
        (_times_out, "setup failed: no offer within 1 s"),
        (_breaks, "setup failed: ValueError: malformed SDP"),
        (_stops, "the client left (bye)"),
    ],
)
async def test_run_ends_with_a_reason_tears_down_and_says_bye(serve, why):
    session = Probe(serve)
    await session.run()
    assert session.torn_down and session.ending and session._why == why
    assert session.signaling.closed_with == [why]
    assert session.signaling.candidate_callback is None


async def test_a_cancelled_session_is_torn_down_too():
    session = Probe(lambda s: asyncio.Event().wait())
    running = asyncio.ensure_future(session.run())
    await asyncio.sleep(0)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert session.torn_down and session.signaling.closed_with == [""]
