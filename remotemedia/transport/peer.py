"""
aiortc peer connections negotiated through a signaling session.

The client makes the offer (it creates the ``rpc`` data channel), the
executor answers. aiortc gathers every candidate before a description is
ready, so it never trickles; browsers do, so relayed ``candidate`` messages
are applied with :func:`add_candidate`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from ..aio import Tasks
from ..exceptions import RemoteMediaError, RemoteTimeoutError
from ..signaling import SignalingSession
from . import jitter
from .ice import candidates_tried

__all__ = [
    "new_peer_connection",
    "close_peer_connection",
    "CLOSE_WAIT",
    "make_offer",
    "make_answer",
    "add_candidate",
    "wait_open",
    "watch_bye",
    "RPC_LABEL",
    "SERVICE_LABEL",
]

logger = logging.getLogger(__name__)

#: Label of the data channel that carries the RPC protocol.
RPC_LABEL = "rpc"
#: Label of a service session's data channel (JSON messages: signaling_server/PROTOCOL.md, Services).
SERVICE_LABEL = "service"


def ice_server(entry: str | dict) -> RTCIceServer:
    """An ``RTCIceServer`` from a URL (``"stun:host:3478"``) or a dict ``{urls, username, credential}``."""
    if isinstance(entry, str):
        return RTCIceServer(urls=entry)
    return RTCIceServer(urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential"))


def new_peer_connection(ice_servers: Iterable[str | dict] = ()) -> RTCPeerConnection:
    """
    A peer connection with exactly the given ICE servers.

    No servers is the default on purpose: aiortc's own default is Google's
    STUN server, which costs a 5 s timeout per connection where it cannot be
    reached. Loopback and LAN need none; give STUN/TURN across NATs.

    The bundle policy is ``max-compat`` (a transport per track until the
    answer bundles them all onto one) on both ends. Under aiortc's default,
    ``balanced``, tracks of a kind start on a shared transport, and a second
    audio or video transceiver is then left on a transport that the
    answer's BUNDLE closes: it never sends or receives (aiortc issue #1414;
    ``max-bundle`` fails too). Media slots need several of each kind.
    """
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[ice_server(e) for e in ice_servers], bundlePolicy=RTCBundlePolicy.MAX_COMPAT)
    )
    jitter.install(pc)  # audio received through an adaptive jitter buffer (see transport/jitter.py)
    return pc


# Trickled candidates being applied, referenced until applied.
_applying = Tasks()

#: Seconds to wait for a peer connection to close before leaving it to finish alone.
CLOSE_WAIT = 1.0
# Closings that outlived CLOSE_WAIT, referenced until they end.
_closing: set[asyncio.Future] = set()


async def close_peer_connection(pc: RTCPeerConnection, wait: float = CLOSE_WAIT) -> None:
    """
    Close ``pc`` and drop the event handlers that would keep it alive,
    waiting at most ``wait`` seconds; the rest goes on in the background.

    Closing releases each TURN allocation with a request to the TURN server,
    which aioice retransmits for about 30 s when the route to it is gone (the
    very case that ends a session on a broken network, issue 26): a
    reconnection, and the executor's slot, must not wait for that. The
    closing is shielded: an ``RTCPeerConnection`` whose ``close()`` was
    cancelled never finishes closing.
    """
    closing = asyncio.ensure_future(_close_and_release(pc))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
    try:
        await asyncio.wait_for(asyncio.shield(closing), wait)
    except asyncio.TimeoutError:
        logger.info("a peer connection is still closing after %g s (an unreachable TURN server?); not waiting", wait)


async def _close_and_release(pc: RTCPeerConnection) -> None:
    """
    Close ``pc``, then remove the handlers that tie it in reference cycles.

    aiortc registers the peer connection's own bound methods as
    ``statechange`` handlers on its ICE gatherer, ICE and DTLS transports
    (and a closure on its SCTP transport), and ours hang on the peer
    connection itself: reference cycles that only a full garbage collection
    frees. An executor that let them be kept every ended session's
    buffers, channels and tracks until then (issue 18: 30 ended sessions
    left 2 GB). Removing the handlers once it is closed frees it by
    reference counting, at once.
    """
    await pc.close()
    pc.remove_all_listeners()
    dtls = {t.receiver.transport for t in pc.getTransceivers()} | {t.sender.transport for t in pc.getTransceivers()}
    if pc.sctp is not None:
        pc.sctp.remove_all_listeners()
        dtls.add(pc.sctp.transport)
    for transport in dtls:
        if transport is not None:
            transport.remove_all_listeners()
            transport.transport.remove_all_listeners()  # its ICE transport
            transport.transport.iceGatherer.remove_all_listeners()


def add_candidate(pc: RTCPeerConnection, candidate: dict | None) -> None:
    """Apply a trickled candidate (``RTCIceCandidate.toJSON()`` form) relayed from a browser."""
    if not candidate or not candidate.get("candidate"):
        return  # end of candidates: aiortc needs no marker
    sdp = candidate["candidate"]
    try:
        parsed = candidate_from_sdp(sdp[len("candidate:"):] if sdp.startswith("candidate:") else sdp)
    except (ValueError, IndexError) as exc:
        logger.warning("ignoring a malformed ICE candidate %r: %s", sdp, exc)
        return
    parsed.sdpMid = candidate.get("sdpMid")
    parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
    _applying.spawn(pc.addIceCandidate(parsed))


async def make_offer(pc: RTCPeerConnection, session: SignalingSession, timeout: float) -> None:
    """Offer through ``session`` and apply the answer."""
    session.on_candidate(lambda candidate: add_candidate(pc, candidate))
    await pc.setLocalDescription(await pc.createOffer())
    await session.send_offer(pc.localDescription.sdp)
    answer = await session.expect("answer", timeout)
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))


async def make_answer(
    pc: RTCPeerConnection, session: SignalingSession, timeout: float, prepare: Callable[[RTCPeerConnection], None] | None = None
) -> None:
    """Wait for the offer through ``session`` and answer it; ``prepare(pc)`` runs between the two (add tracks there)."""
    session.on_candidate(lambda candidate: add_candidate(pc, candidate))
    offer = await session.expect("offer", timeout)
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    if prepare is not None:
        prepare(pc)
    await pc.setLocalDescription(await pc.createAnswer())
    await session.send_answer(pc.localDescription.sdp)


async def wait_open(channel: Any, timeout: float, what: str, pc: RTCPeerConnection | None = None) -> None:
    """
    Wait until ``channel`` is open; :exc:`RemoteTimeoutError` naming ``what`` otherwise.

    With ``pc``, ICE failing ends the wait at once, and the error names the
    candidates each end offered: what a user needs to tell a missing TURN
    server from a firewall.
    """
    if channel.readyState == "open":
        return
    opened = asyncio.get_running_loop().create_future()
    channel.once("open", lambda: opened.done() or opened.set_result(None))
    if pc is not None:

        @pc.on("iceconnectionstatechange")
        def on_state() -> None:
            if pc.iceConnectionState == "failed" and not opened.done():
                opened.set_exception(RemoteTimeoutError(_no_path(pc, what, "ICE found no working candidate pair")))

    try:
        await asyncio.wait_for(opened, timeout)
    except asyncio.TimeoutError:
        if pc is not None:
            raise RemoteTimeoutError(_no_path(pc, what, f"not connected within {timeout:g} s")) from None
        raise RemoteTimeoutError(
            f"{what}: the WebRTC data channel did not open within {timeout:g} s (is a firewall "
            f"blocking UDP between the two hosts? across NATs, configure ice_servers with STUN/TURN)"
        ) from None


def _no_path(pc: RTCPeerConnection, what: str, why: str) -> str:
    local, remote = candidates_tried(pc)
    relayed = any(c.startswith("relay") for c in local + remote)
    advice = (
        "a TURN server was offered, yet no pair worked: is the TURN server reachable from both ends, "
        "and over TCP (turn:HOST:PORT?transport=tcp) where UDP is blocked?"
        if relayed
        else "no relay candidate at either end: across NATs or firewalls, configure ice_servers with a "
        "TURN server (RemoteExecutorConfig(ice_servers=[...]) or the signaling server's --ice-server), "
        "and a turn:...?transport=tcp URL where UDP is blocked"
    )
    return (
        f"{what}: no network path between the two ends ({why}; ICE {pc.iceConnectionState}); "
        f"candidates tried: this end {', '.join(local) or 'none'}; the other end {', '.join(remote) or 'none'}; "
        f"{advice}"
    )


async def watch_bye(
    session: SignalingSession, on_bye: Callable[[str], None], *, on_candidate: Callable[[dict | None], None] | None = None
) -> None:
    """
    After negotiation, read ``session`` until the other end says ``bye``, then call ``on_bye(reason)``.

    The server says bye the moment the other end's websocket drops (a crash,
    a kill): far sooner than a data-channel heartbeat notices. Losing the
    signaling server itself does not end a peer connection that is up, so
    that only logs: the heartbeat decides. Candidates trickled after the
    answer (browsers do) go to ``on_candidate``; without one they are ignored.
    """
    try:
        while True:
            message = await session.recv()
            if message["type"] == "bye":
                on_bye(session.ended or "bye")
                return
            if message["type"] == "candidate":
                if on_candidate is not None:
                    on_candidate(message.get("candidate"))
                else:
                    logger.debug("session %s: a late candidate, ignored", session.id)
    except RemoteMediaError as exc:
        logger.warning("session %s: signaling ended: %s", session.id, exc)
