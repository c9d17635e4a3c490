"""
A real WebRTC peer connection negotiated through the real signaling server:
the SDP that aiortc produces survives the relay, and a data channel opens.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from harness import running_server

from remotemedia.signaling import SignalingClient

TIMEOUT = 15.0


def peer_connection() -> RTCPeerConnection:
    # No ICE servers: without internet a STUN lookup costs a 5 s timeout.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def executor_side(signaling: SignalingClient, ticket: asyncio.Future) -> str:
    session = await signaling.accept(timeout=TIMEOUT)
    ticket.set_result(session.ticket)
    pc = peer_connection()
    echoed = asyncio.get_running_loop().create_future()

    @pc.on("datachannel")
    def on_datachannel(channel):
        @channel.on("message")
        def on_message(message):
            channel.send(f"pong:{message}")
            if not echoed.done():
                echoed.set_result(message)

    try:
        offer = await session.expect("offer", TIMEOUT)
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await session.send_answer(pc.localDescription.sdp)
        return await asyncio.wait_for(echoed, TIMEOUT)
    finally:
        await pc.close()


async def test_aiortc_peers_connect_through_the_signaling_server():
    with running_server("--token", "s3cret", "--executor-token", "exec-s3cret") as server:
        async with await SignalingClient.connect(server.url, token="exec-s3cret") as executor, await SignalingClient.connect(
            server.url, token="s3cret"
        ) as client:
            await executor.register("webrtc-executor", capacity=1)
            ticket = asyncio.get_running_loop().create_future()
            serving = asyncio.create_task(executor_side(executor, ticket))
            session = await client.pair(timeout=TIMEOUT)
            assert await asyncio.wait_for(ticket, TIMEOUT) == session.ticket  # the server told both ends the same
            pc = peer_connection()
            try:
                channel = pc.createDataChannel("rpc")
                opened = asyncio.get_running_loop().create_future()
                reply = asyncio.get_running_loop().create_future()
                channel.on("open", lambda: opened.done() or opened.set_result(True))
                channel.on("message", lambda m: reply.done() or reply.set_result(m))
                # aiortc gathers every candidate before the offer is ready: no trickle.
                await pc.setLocalDescription(await pc.createOffer())
                await session.send_offer(pc.localDescription.sdp)
                answer = await session.expect("answer", TIMEOUT)
                await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
                await asyncio.wait_for(opened, TIMEOUT)
                channel.send("ping")
                assert await asyncio.wait_for(reply, TIMEOUT) == "pong:ping"
                assert pc.connectionState == "connected"
                assert await asyncio.wait_for(serving, TIMEOUT) == "ping"
            finally:
                await pc.close()
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)
            await session.close("done")
            assert server.health()["executors"] == 1
