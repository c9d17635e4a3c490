"""
Raw aiortc baseline: what a bare data channel costs on this machine.

Our framework carries node calls over aiortc data channels, so the cost of the
transport itself is the floor under every number the other benchmarks report.
This module measures that floor with plain aiortc and nothing of ours (it does
not import ``remotemedia``), in the same run and on the same machine as the
framework benchmarks, so they can report their overhead as a ratio to it:

- **setup**: from creating a peer connection to its data channel being open
  (offer, answer over a pipe, ICE, DTLS, SCTP);
- **echo round trip**: one message sent, echoed back, awaited, one at a time;
- **bulk throughput**: bytes per second one way, with send-side backpressure,
  until the remote end confirms it has received everything;
- **message rates** of small messages: one way from the remote end
  (:func:`burst_rate`, optionally under credit flow control), and echoed
  with a fixed number in flight (:func:`windowed_echo_rate`);
- **paced echo**: one message per period (a 20 ms audio frame's bytes,
  say), each round trip timed (:func:`paced_echo_round_trips`);
- **media echo**: :meth:`RawEchoPeer.connect_media` offers audio or video
  tracks, and the peer sends every track it receives straight back on the
  same transceiver (decoded, then encoded again, as a relay would).

The remote end is this script run with ``--peer`` in its own process, so the
two ends do not share an event loop. It reads offers from stdin and writes
answers to stdout, one JSON object a line; on each channel it echoes every
message, except that the str ``"sink:N"`` makes it swallow the next N bytes
of binary messages and then reply ``"sunk"``, and the str
``"burst:N:SIZE:WINDOW"`` makes it send N binary messages of SIZE bytes
(at most WINDOW unacknowledged when WINDOW > 0, each str ``"credit:K"``
acknowledging K more; else paced by ``bufferedAmount`` only). Every media
track an offer brings is sent back to the offerer.

    python benchmarks/raw_aiortc.py           # quick table of the baseline
    python benchmarks/raw_aiortc.py --peer    # the remote end (used by RawEchoPeer)
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time

from report import percentile
from aiortc import (
    MediaStreamTrack, RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription,
)

__all__ = [
    "RawEchoPeer", "echo_round_trips", "bulk_throughput", "setup_times", "burst_rate", "windowed_echo_rate",
    "paced_echo_round_trips", "main",
]

logger = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
REPLY_TIMEOUT = 10.0
LOW_MARK = 1 << 20
HIGH_MARK = 4 << 20


def _new_pc() -> RTCPeerConnection:
    # No STUN: there is no internet, and the default server costs a 5 s timeout.
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def _burst(channel: RTCDataChannel, count: int, size: int, credit: asyncio.Semaphore | None) -> None:
    payload = bytes(size)
    loop = asyncio.get_running_loop()
    for _ in range(count):
        if credit is not None:
            await credit.acquire()
        elif channel.bufferedAmount > HIGH_MARK:
            channel.bufferedAmountLowThreshold = LOW_MARK
            drained = loop.create_future()
            channel.once("bufferedamountlow", lambda: drained.done() or drained.set_result(None))
            await drained
        channel.send(payload)


def _serve_channel(channel: RTCDataChannel) -> None:
    # Bytes still expected in sink mode; None means echo mode.
    state: dict[str, int | None] = {"left": None}
    # The credit of the burst under way, if it has a window.
    credits: list[asyncio.Semaphore] = []
    # The burst tasks, kept referenced until they end.
    bursts: set[asyncio.Task] = set()

    @channel.on("message")
    def on_message(message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("burst:"):
            count, size, window = (int(x) for x in message[6:].split(":"))
            credits[:] = [asyncio.Semaphore(window)] if window > 0 else []
            task = asyncio.ensure_future(_burst(channel, count, size, credits[0] if credits else None))
            bursts.add(task)
            task.add_done_callback(bursts.discard)
            return
        if isinstance(message, str) and message.startswith("credit:"):
            for _ in range(int(message[7:]) if credits else 0):
                credits[0].release()
            return
        if isinstance(message, str) and message.startswith("sink:"):
            state["left"] = int(message[5:])
        elif state["left"] is not None and isinstance(message, bytes):
            state["left"] -= len(message)
        else:
            channel.send(message)
            return
        if state["left"] <= 0:
            state["left"] = None
            channel.send("sunk")


async def _peer_main() -> None:
    loop = asyncio.get_running_loop()
    # Every connection stays up until stdin closes: the parent may keep one
    # for echo and throughput while it opens and closes others for setup.
    pcs: list[RTCPeerConnection] = []
    try:
        while True:
            # A thread keeps stdin blocking-safe whatever it is (pipe, tty, file).
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            if not line.strip():
                continue
            pc = _new_pc()
            pcs.append(pc)
            pc.on("datachannel", _serve_channel)
            # Fired inside setRemoteDescription, so the echo is in the answer: the
            # received track goes back out on its own (sendrecv) transceiver.
            pc.on("track", lambda track, pc=pc: pc.addTrack(track))
            await pc.setRemoteDescription(RTCSessionDescription(json.loads(line)["sdp"], "offer"))
            # aiortc gathers every candidate inside setLocalDescription: no trickle.
            await pc.setLocalDescription(await pc.createAnswer())
            sys.stdout.write(json.dumps({"sdp": pc.localDescription.sdp}) + "\n")
            sys.stdout.flush()
    finally:
        for pc in pcs:
            await pc.close()


class RawEchoPeer:
    """The echo peer in a subprocess, and the local peer connections to it.

    ``async with RawEchoPeer() as peer`` starts the process; leaving closes
    every connection made by :meth:`connect` and stops the process.
    """

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._pcs: list[RTCPeerConnection] = []
        # One offer/answer exchange on the pipe at a time.
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> RawEchoPeer:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--peer",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,  # an SDP line can outgrow the 64 KiB default
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        pcs, self._pcs = self._pcs, []
        for pc in pcs:
            await pc.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except asyncio.TimeoutError:
            logger.warning("echo peer did not exit; killing it")
            proc.kill()
            await proc.wait()

    async def connect(
        self, timeout: float = OPEN_TIMEOUT
    ) -> tuple[RTCPeerConnection, RTCDataChannel]:
        """Connect to the echo peer; return the pc and its open ``"rpc"`` channel.

        Raises TimeoutError if the channel is not open within ``timeout`` s.
        """
        assert self._proc is not None, "use 'async with RawEchoPeer()'"
        pc = _new_pc()
        self._pcs.append(pc)
        channel = pc.createDataChannel("rpc")
        opened = asyncio.get_running_loop().create_future()
        channel.on("open", lambda: opened.done() or opened.set_result(None))
        await self._negotiate(pc, opened, timeout, "data channel not open")
        return pc, channel

    async def _negotiate(self, pc: RTCPeerConnection, ready: asyncio.Future, timeout: float, what: str):
        """Offer from ``pc``, apply the echo peer's answer, then return what ``ready`` resolves to.

        Raises TimeoutError ("``what`` after ``timeout`` s") if all that
        takes longer than ``timeout`` s.
        """
        answered = False

        async def handshake():
            nonlocal answered
            await pc.setLocalDescription(await pc.createOffer())
            async with self._lock:
                offer = json.dumps({"sdp": pc.localDescription.sdp}) + "\n"
                self._proc.stdin.write(offer.encode())
                await self._proc.stdin.drain()
                line = await self._proc.stdout.readline()
                answered = True
            if not line:
                raise RuntimeError("echo peer exited")
            await pc.setRemoteDescription(RTCSessionDescription(json.loads(line)["sdp"], "answer"))
            return await ready

        try:
            return await asyncio.wait_for(handshake(), timeout)
        except asyncio.TimeoutError:
            if not answered:
                # Its late answer would be read as the answer to the next offer.
                self._proc.kill()
            raise TimeoutError(f"{what} after {timeout} s") from None

    async def disconnect(self, pc: RTCPeerConnection) -> None:
        """Close one connection made by :meth:`connect` or :meth:`connect_media` (idempotent)."""
        await pc.close()
        if pc in self._pcs:
            self._pcs.remove(pc)

    async def connect_media(
        self, tracks: list[MediaStreamTrack], timeout: float = OPEN_TIMEOUT
    ) -> tuple[RTCPeerConnection, list[MediaStreamTrack]]:
        """Connect with ``tracks`` to send; return the pc and the tracks the peer echoes back.

        The returned tracks are in the order of ``tracks``; the caller must
        read them (a track nobody reads piles up frames). Raises
        TimeoutError if the connection is not up within ``timeout`` s.
        """
        assert self._proc is not None, "use 'async with RawEchoPeer()'"
        pc = _new_pc()
        self._pcs.append(pc)
        for track in tracks:
            pc.addTrack(track)
        received: dict[str, MediaStreamTrack] = {}
        pc.on("track", lambda track: received.setdefault(track.kind, track))
        connected = asyncio.get_running_loop().create_future()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("connected", "failed", "closed") and not connected.done():
                connected.set_result(pc.connectionState)

        state = await self._negotiate(pc, connected, timeout, "media connection not up")
        if state != "connected":
            raise RuntimeError(f"media connection {state}")
        missing = [t.kind for t in tracks if t.kind not in received]
        if missing:
            raise RuntimeError(f"the echo peer sent no {missing} track back")
        return pc, [received[t.kind] for t in tracks]


async def _round_trip(channel: RTCDataChannel, replies: asyncio.Queue, payload: bytes) -> float:
    """Send ``payload`` and await its echo on ``replies``; the seconds that took."""
    start = time.perf_counter()
    channel.send(payload)
    reply = await asyncio.wait_for(replies.get(), REPLY_TIMEOUT)
    elapsed = time.perf_counter() - start
    if reply != payload:
        raise RuntimeError("echo differs from what was sent")
    return elapsed


async def echo_round_trips(
    channel: RTCDataChannel, payload: bytes, count: int, warmup: int = 20
) -> list[float]:
    """Seconds per round trip of ``payload`` to the echo peer, one at a time.

    The first ``warmup`` round trips are made but not returned.
    """
    replies: asyncio.Queue[str | bytes] = asyncio.Queue()
    channel.on("message", replies.put_nowait)
    samples: list[float] = []
    try:
        for i in range(warmup + count):
            elapsed = await _round_trip(channel, replies, payload)
            if i >= warmup:
                samples.append(elapsed)
    finally:
        channel.remove_listener("message", replies.put_nowait)
    return samples


async def bulk_throughput(
    channel: RTCDataChannel, total_bytes: int, message_size: int = 65536
) -> float:
    """Bytes per second for ``total_bytes`` one way, until the peer says ``"sunk"``."""
    loop = asyncio.get_running_loop()
    sunk = loop.create_future()

    def on_message(message: str | bytes) -> None:
        if message == "sunk" and not sunk.done():
            sunk.set_result(None)

    channel.on("message", on_message)
    channel.bufferedAmountLowThreshold = LOW_MARK
    chunk = bytes(message_size)
    # Generous: a tenth of the expected rate still finishes.
    deadline = 30.0 + total_bytes / 300_000
    try:
        channel.send(f"sink:{total_bytes}")
        start = time.perf_counter()
        sent = 0
        while sent < total_bytes:
            if channel.bufferedAmount > HIGH_MARK:
                # Without this aiortc queues everything in memory and the
                # clock would time the queue, not the wire.
                drained = loop.create_future()
                channel.once(
                    "bufferedamountlow", lambda: drained.done() or drained.set_result(None)
                )
                await asyncio.wait_for(drained, REPLY_TIMEOUT)
            piece = chunk if total_bytes - sent >= message_size else chunk[: total_bytes - sent]
            channel.send(piece)
            sent += len(piece)
        await asyncio.wait_for(sunk, max(REPLY_TIMEOUT, deadline - (time.perf_counter() - start)))
        return total_bytes / (time.perf_counter() - start)
    finally:
        channel.remove_listener("message", on_message)


async def burst_rate(channel: RTCDataChannel, count: int, size: int, window: int = 0) -> float:
    """Messages per second of ``count`` messages of ``size`` bytes sent by the peer to us.

    With ``window`` > 0 the peer keeps at most ``window`` unacknowledged and
    we grant half a window back each time half a window has arrived (the
    credit scheme of a stream); with 0 only the peer's ``bufferedAmount``
    paces it. Timed from our request to the last message's arrival.
    """
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    half = max(1, window // 2)
    received = 0

    def on_message(message: str | bytes) -> None:
        nonlocal received
        if not isinstance(message, bytes):
            return
        received += 1
        if window and received % half == 0 and received < count:
            channel.send(f"credit:{half}")
        if received == count and not done.done():
            done.set_result(None)

    channel.on("message", on_message)
    try:
        start = time.perf_counter()
        channel.send(f"burst:{count}:{size}:{window}")
        await asyncio.wait_for(done, REPLY_TIMEOUT + count / 1000)
        return count / (time.perf_counter() - start)
    finally:
        channel.remove_listener("message", on_message)


async def windowed_echo_rate(channel: RTCDataChannel, count: int, size: int, window: int = 16) -> float:
    """Messages per second echoed by the peer, ``count`` in all, ``window`` in flight at a time."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    payload = bytes(size)
    sent = received = 0

    def on_message(message: str | bytes) -> None:
        nonlocal sent, received
        received += 1
        if sent < count:
            channel.send(payload)
            sent += 1
        if received == count and not done.done():
            done.set_result(None)

    channel.on("message", on_message)
    try:
        start = time.perf_counter()
        while sent < min(window, count):
            channel.send(payload)
            sent += 1
        await asyncio.wait_for(done, REPLY_TIMEOUT + count / 1000)
        return count / (time.perf_counter() - start)
    finally:
        channel.remove_listener("message", on_message)


async def paced_echo_round_trips(
    channel: RTCDataChannel, payload: bytes, count: int, period: float, warmup: int = 10
) -> list[float]:
    """Seconds per round trip of ``payload``, one sent every ``period`` s (or on the reply, if later).

    Paced like real-time media, so each message finds an idle connection,
    as a 20 ms audio frame does. The first ``warmup`` are not returned.
    """
    replies: asyncio.Queue[str | bytes] = asyncio.Queue()
    channel.on("message", replies.put_nowait)
    samples: list[float] = []
    loop = asyncio.get_running_loop()
    try:
        origin = loop.time()
        for i in range(warmup + count):
            delay = origin + i * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elapsed = await _round_trip(channel, replies, payload)
            if i >= warmup:
                samples.append(elapsed)
    finally:
        channel.remove_listener("message", replies.put_nowait)
    return samples


async def setup_times(peer: RawEchoPeer, count: int) -> list[float]:
    """Seconds from starting :meth:`RawEchoPeer.connect` to the channel open, ``count`` times."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        pc, _channel = await peer.connect()
        samples.append(time.perf_counter() - start)
        await pc.close()
        peer._pcs.remove(pc)
    return samples


async def _smoke() -> None:
    async with RawEchoPeer() as peer:
        setups = await setup_times(peer, 5)
        _pc, channel = await peer.connect()
        rows = [("setup (median of 5)", f"{statistics.median(setups) * 1e3:9.2f} ms")]
        for size in (16, 1024):
            rtts = await echo_round_trips(channel, bytes(size), 500)
            rows.append((f"echo {size} B  p50", f"{percentile(rtts, 0.50) * 1e3:9.3f} ms"))
            rows.append((f"echo {size} B  p99", f"{percentile(rtts, 0.99) * 1e3:9.3f} ms"))
        # A fresh association can lose a packet to its first burst and stall
        # for SCTP's 1 s minimum RTO; one small untimed run absorbs that.
        await bulk_throughput(channel, 1 << 20)
        rate = await bulk_throughput(channel, 16 << 20)
        rows.append(("bulk 16 MiB", f"{rate / 1e6:9.2f} MB/s"))
    print("raw aiortc baseline")
    for name, value in rows:
        print(f"  {name:<22}{value}")


def main() -> None:
    """Run the echo peer (``--peer``) or print the baseline's numbers."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    if sys.argv[1:] == ["--peer"]:
        asyncio.run(_peer_main())
    else:
        asyncio.run(asyncio.wait_for(_smoke(), 240))


if __name__ == "__main__":
    main()
