"""
Audio and video frames through a remote pass-through, each against raw
aiortc measured in the same run.

Starts ``python -m remotemedia serve`` (an embedded signaling server and one
executor) once per execution mode in ``--modes``, and the raw baseline's
echo peer (``raw_aiortc.py --peer``, which sends every media track it
receives back on the same transceiver, with no relay in between); all are
subprocesses, stopped at the end. The remote object is a pass-through
(``async for f in frames: yield f``), reached at the client level
(``remote.stream(frames)``, one client per mode, connected before anything
is timed) and, unless ``--no-pipeline``, through a ``Pipeline`` of one
streaming ``RemoteObjectExecutionNode`` on the first mode's executor. Every
input is paced in real time, as a microphone or camera delivers it. On
loopback it measures:

- **audio over tracks** (Opus): 20 ms frames at 48 kHz, silent but for a
  20 ms tone burst every :data:`BURST_EVERY` frames, its frequency one of
  four (so a burst is known by its frequency for four periods). Both sides
  find a burst's onset in the audio that comes back; round trip = the
  arrival of the frame holding the onset minus the moment the burst frame
  was handed over (to ``remote.stream(...).over_tracks()``, or returned by
  the raw track's ``recv``). Target: median within 1.1x of raw (aiortc's
  jitter buffer makes raw about 165 ms). A note gives our per-frame latency
  by timestamp too, which the framework keeps.
- **audio over the data channel** (``remote.stream(frames)``, no tracks):
  20 ms int16 frames (a tone under noise, so compression gains little, as
  with a recording), lossless; per-frame round trip by timestamp, against a
  raw data-channel echo of the same 1920 bytes, one every 20 ms. Target: median under 10 ms (a row against that budget), and
  the ratio to raw.
- **video over tracks** (VP8): 640x480 ``rgb24`` at 30 fps; each frame
  carries its index as 16 black or white 80x80 blocks (VP8 is lossy, the
  blocks survive it) over a moving gradient. Frames per second sustained
  (distinct frames received over the time they took to arrive), and
  per-frame latency (p50, p90), against a raw echo of the same frames from
  a track that paces itself and sets ``pts``/``time_base``. Target: fps at
  least 0.95x raw.

The first :data:`SETTLE` seconds of each stream (jitter buffers filling,
the first VP8 key frame, bitrate ramp) are not counted. The cases run one
after the other, raw first, ``--rounds`` times, samples pooled.

    python benchmarks/bench_media.py [--audio 6] [--dc 3] [--video 4] [--rounds 1]
        [--modes process inprocess] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import AsyncIterator, Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from harness import ServeProcess  # noqa: E402
from raw_aiortc import RawEchoPeer, paced_echo_round_trips  # noqa: E402
from report import Report, percentile  # noqa: E402

from remotemedia import (  # noqa: E402
    AudioFrame, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, RemoteProxyClient, VideoFrame,
)

TOKEN = "bench-media"
RATE = 48000
#: Samples of one 20 ms audio frame.
FRAME = 960
PERIOD = FRAME / RATE
#: A burst every this many audio frames (200 ms).
BURST_EVERY = 10
#: Burst frequencies; burst n has ``BURST_HZ[n % 4]``.
BURST_HZ = (500.0, 1000.0, 2000.0, 4000.0)
#: Seconds at the start of each stream that are not counted.
SETTLE = 1.0
#: Silence after the last audio frame, so that the raw echo's jitter buffers give back the last bursts.
RAW_TAIL = 0.6
WIDTH, HEIGHT, FPS = 640, 480, 30
#: Bits of the frame index drawn in the image, and the side of one block.
BITS, BLOCK = 16, 80
VIDEO_TIME_BASE = Fraction(1, 90000)
#: Seconds a received frame may take before a case gives up.
RECV_TIMEOUT = 10.0


class PassThrough:
    """The remote object: yields every frame it gets."""

    async def stream(self, frames):
        async for frame in frames:
            yield frame


# -- the signals --------------------------------------------------------------------------


def audio_signal(count: int) -> tuple[list[np.ndarray], dict[int, int]]:
    """``count`` float32 frames of 20 ms, and the bursts in them: {frame index: code}."""
    silent = np.zeros(FRAME, np.float32)
    t = np.arange(FRAME) / RATE
    fade = np.minimum(1.0, np.minimum(np.arange(FRAME), np.arange(FRAME)[::-1]) / 48)  # 1 ms ramps
    tones = [(0.5 * np.sin(2 * np.pi * hz * t) * fade).astype(np.float32) for hz in BURST_HZ]
    frames, bursts = [], {}
    for i in range(count):
        if i % BURST_EVERY == 0 and i * PERIOD >= SETTLE:
            code = (i // BURST_EVERY) % len(BURST_HZ)
            bursts[i] = code
            frames.append(tones[code])
        else:
            frames.append(silent)
    return frames, bursts


def dc_samples() -> np.ndarray:
    """20 ms of int16 audio for the data channel: a tone under noise, as little compressible as a recording."""
    t = np.arange(FRAME) / RATE
    noise = np.random.default_rng(0).normal(0, 2000, FRAME)
    return np.clip(8000 * np.sin(2 * np.pi * 440 * t) + noise, -32768, 32767).astype(np.int16)


class BurstDetector:
    """Finds burst onsets in received audio: ``feed`` each frame; ``events`` holds (arrival, code)."""

    ON, OFF = 0.05, 0.02  # RMS thresholds: a burst's is about 0.35, Opus's silence about 0

    def __init__(self) -> None:
        self.events: list[tuple[float, int]] = []
        self._quiet = True
        self._onset: tuple[float, np.ndarray] | None = None

    def feed(self, arrival: float, samples: np.ndarray) -> None:
        if self._onset is not None:
            # The burst straddles two frames after the codec's delay: classify on both.
            at, first = self._onset
            self._onset = None
            both = np.concatenate([first, samples])
            spectrum = np.abs(np.fft.rfft(both * np.hanning(len(both))))
            hz = np.argmax(spectrum) * RATE / len(both)
            code = int(np.argmin([abs(np.log2(hz / f)) if hz > 0 else 99 for f in BURST_HZ]))
            self.events.append((at, code))
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
        if self._quiet and rms > self.ON:
            self._quiet = False
            self._onset = (arrival, samples)
        elif rms < self.OFF:
            self._quiet = True


def burst_round_trips(events: list[tuple[float, int]], bursts: dict[int, int],
                      sent: dict[int, float]) -> tuple[list[float], int]:
    """Round trip of each detected burst (matched to the latest burst sent with its code); and how many were lost."""
    window = len(BURST_HZ) * BURST_EVERY * PERIOD
    rtts, matched = [], set()
    for arrival, code in events:
        candidates = [i for i, c in bursts.items() if c == code and i in sent and 0 < arrival - sent[i] < window]
        if not candidates:
            continue
        i = max(candidates, key=lambda j: sent[j])
        if i not in matched:
            matched.add(i)
            rtts.append(arrival - sent[i])
    return rtts, len(bursts) - len(matched)


def _gradient() -> np.ndarray:
    x = np.arange(WIDTH + 256)
    row = (64 + 96 * (0.5 + 0.5 * np.sin(2 * np.pi * x / 256))).astype(np.uint8)
    return np.repeat(np.repeat(row[np.newaxis, :, np.newaxis], HEIGHT, 0), 3, 2)


_GRADIENT = _gradient()


def video_image(index: int) -> np.ndarray:
    """A 640x480 rgb24 image: a gradient moving 4 px a frame, and ``index`` in 16 blocks at the top."""
    shift = (4 * index) % 256
    image = np.array(_GRADIENT[:, shift:shift + WIDTH])
    for bit in range(BITS):
        y, x = (bit // 8) * BLOCK, (bit % 8) * BLOCK
        image[y:y + BLOCK, x:x + BLOCK] = 255 if index >> bit & 1 else 0
    return image


def read_index(luma: np.ndarray) -> int:
    """The frame index drawn by :func:`video_image`, read from the centres of its blocks."""
    index = 0
    for bit in range(BITS):
        y, x = (bit // 8) * BLOCK + BLOCK // 2, (bit % 8) * BLOCK + BLOCK // 2
        if luma[y - 20:y + 20, x - 20:x + 20].mean() > 128:
            index |= 1 << bit
    return index


def video_figures(arrivals: dict[int, float], sent: dict[int, float], count: int) -> tuple[float, list[float], int]:
    """(frames per second received, latencies, frames lost) over the frames after :data:`SETTLE`."""
    first = int(SETTLE * FPS)
    got = sorted((i, t) for i, t in arrivals.items() if first <= i < count and i in sent)
    if len(got) < 2:
        raise RuntimeError(f"only {len(got)} video frames came back")
    times = sorted(t for _, t in got)
    fps = (len(times) - 1) / (times[-1] - times[0])
    return fps, [t - sent[i] for i, t in got], (count - first) - len(got)


# -- raw aiortc ---------------------------------------------------------------------------


class PacedTrack(MediaStreamTrack):
    """A track that hands out ``make(i)`` at its real time (``pts`` set), noting when each went."""

    def __init__(self, kind: str, make: Callable[[int], av.frame.Frame], period: float) -> None:
        super().__init__()
        self.kind = kind
        self._make, self._period = make, period
        self._index = 0
        self._origin: float | None = None
        #: Index -> perf_counter() when recv returned it.
        self.sent: dict[int, float] = {}

    async def recv(self) -> av.frame.Frame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._origin is None:
            self._origin = loop.time()
        delay = self._origin + self._index * self._period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = self._make(self._index)
        self.sent[self._index] = time.perf_counter()
        self._index += 1
        return frame


async def raw_echo(track: PacedTrack, on_frame: Callable[[float, av.frame.Frame], None], seconds: float) -> PacedTrack:
    """Send ``track`` to a fresh raw echo peer for ``seconds``; ``on_frame(arrival, frame)`` for each echoed frame."""
    async with RawEchoPeer() as peer:
        pc, (echo,) = await peer.connect_media([track])
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            while loop.time() < end:
                frame = await asyncio.wait_for(echo.recv(), RECV_TIMEOUT)
                on_frame(time.perf_counter(), frame)
        finally:
            await peer.disconnect(pc)
    return track


async def raw_audio(seconds: float) -> tuple[list[float], int]:
    count = int(seconds / PERIOD)
    signal, bursts = audio_signal(count)
    silent = np.zeros(FRAME, np.int16)

    def make(i: int) -> av.AudioFrame:
        samples = (signal[i] * 32767).astype(np.int16) if i < count else silent
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, i * FRAME, Fraction(1, RATE)
        return frame

    detector = BurstDetector()

    def on_frame(arrival: float, frame: av.AudioFrame) -> None:
        samples = frame.to_ndarray()  # packed s16: (1, channels * n)
        detector.feed(arrival, samples[0, :: len(frame.layout.channels)] / 32768.0)

    track = await raw_echo(PacedTrack("audio", make, PERIOD), on_frame, seconds + RAW_TAIL)
    return burst_round_trips(detector.events, bursts, track.sent)


async def raw_video(seconds: float) -> tuple[float, list[float], int]:
    count = int(seconds * FPS)
    arrivals: dict[int, float] = {}

    def make(i: int) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(video_image(i), format="rgb24")
        frame.pts, frame.time_base = i * 3000, VIDEO_TIME_BASE
        return frame

    def on_frame(arrival: float, frame: av.VideoFrame) -> None:
        luma = frame.to_ndarray()[:HEIGHT] if frame.format.name == "yuv420p" else frame.to_ndarray(format="gray")
        arrivals.setdefault(read_index(luma), arrival)

    track = await raw_echo(PacedTrack("video", make, 1 / FPS), on_frame, seconds + 0.5)
    return video_figures(arrivals, track.sent, count)


async def raw_datachannel(seconds: float) -> list[float]:
    payload = dc_samples().tobytes()
    async with RawEchoPeer() as peer:
        pc, channel = await peer.connect()
        try:
            return await paced_echo_round_trips(channel, payload, int(seconds / PERIOD), PERIOD,
                                                warmup=int(SETTLE / PERIOD))
        finally:
            await peer.disconnect(pc)


# -- ours ---------------------------------------------------------------------------------


async def paced(make: Callable[[int], object], count: int, period: float, sent: dict[int, float]) -> AsyncIterator:
    """Yield ``make(i)`` at its real time (or when asked, if later), noting when each went."""
    loop = asyncio.get_running_loop()
    origin = loop.time()
    for i in range(count):
        delay = origin + i * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        item = make(i)
        sent[i] = time.perf_counter()
        yield item


#: How ours runs a stream: ``run(frames, tracks)`` gives the outputs of the pass-through for ``frames``.
Run = Callable[[AsyncIterator, bool], AsyncIterator]


def client_run(remote) -> Run:
    """Ours at the client level: ``remote.stream(frames)``, with ``.over_tracks()`` for tracks."""
    return lambda frames, tracks: remote.stream(frames).over_tracks() if tracks else remote.stream(frames)


def pipeline_run(config: RemoteExecutorConfig) -> Run:
    """Ours at the pipeline level: a Pipeline of one streaming RemoteObjectExecutionNode (a session per run)."""

    def run(frames: AsyncIterator, tracks: bool) -> AsyncIterator:
        node = RemoteObjectExecutionNode(
            obj_to_execute=PassThrough(), remote_config=config,
            node_config={"streaming": True, "transport": "tracks" if tracks else "datachannel"},
        )
        return Pipeline("bench-media").add_node(node).stream(frames)

    return run


async def ours_audio_tracks(run: Run, seconds: float) -> tuple[list[float], int, list[float]]:
    count = int(seconds / PERIOD)
    signal, bursts = audio_signal(count)
    sent: dict[int, float] = {}
    detector = BurstDetector()
    by_timestamp = []
    frames = paced(lambda i: AudioFrame(signal[i][np.newaxis, :], RATE, i * PERIOD), count, PERIOD, sent)
    async for out in _with_timeout(run(frames, True)):
        arrival = time.perf_counter()
        detector.feed(arrival, out.samples[0])
        i = round(out.timestamp / PERIOD)
        if i in sent and i * PERIOD >= SETTLE:
            by_timestamp.append(arrival - sent[i])
    rtts, lost = burst_round_trips(detector.events, bursts, sent)
    return rtts, lost, by_timestamp


async def ours_datachannel(run: Run, seconds: float) -> list[float]:
    count = int(seconds / PERIOD)
    samples = dc_samples()[np.newaxis, :]
    sent: dict[int, float] = {}
    warmup = int(SETTLE / PERIOD)
    rtts = []
    frames = paced(lambda i: AudioFrame(samples, RATE, i * PERIOD), warmup + count, PERIOD, sent)
    async for out in _with_timeout(run(frames, False)):
        arrival = time.perf_counter()
        i = round(out.timestamp / PERIOD)
        if i >= warmup:
            rtts.append(arrival - sent[i])
    if len(rtts) != count:
        raise RuntimeError(f"{count} frames sent on the data channel, {len(rtts)} came back")
    return rtts


async def ours_video(run: Run, seconds: float) -> tuple[float, list[float], int, int]:
    count = int(seconds * FPS)
    sent: dict[int, float] = {}
    arrivals: dict[int, float] = {}
    misread = 0
    frames = paced(lambda i: VideoFrame(video_image(i), "rgb24", i / FPS), count, 1 / FPS, sent)
    async for out in _with_timeout(run(frames, True)):
        arrival = time.perf_counter()
        index = read_index(out.image[:, :, 1])
        # The framework gives the timestamp back: the blocks must agree with it.
        misread += index != round(out.timestamp * FPS)
        arrivals.setdefault(index, arrival)
    fps, latencies, lost = video_figures(arrivals, sent, count)
    return fps, latencies, lost, misread


async def _with_timeout(stream: AsyncIterator) -> AsyncIterator:
    iterator = stream.__aiter__()
    try:
        while True:
            try:
                item = await asyncio.wait_for(iterator.__anext__(), RECV_TIMEOUT)
            except StopAsyncIteration:
                return
            yield item
    finally:
        with contextlib.suppress(Exception):
            await iterator.aclose()


# -- the run ------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, ports: dict[str, int]) -> Report:
    r: dict[str, list] = {}

    def add(key: str, value) -> None:
        r.setdefault(key, []).extend(value if isinstance(value, list) else [value])

    configs = {
        mode: RemoteExecutorConfig(host="127.0.0.1", port=port, auth_token=TOKEN, timeout=60, heartbeat_timeout=15.0)
        for mode, port in ports.items()
    }
    async with contextlib.AsyncExitStack() as stack:
        # The variants of ours, by label: a client per mode, set up before timing anything.
        runs: dict[str, Run] = {}
        for mode, config in configs.items():
            client = await stack.enter_async_context(RemoteProxyClient(config, media_tracks=1))
            runs[mode] = client_run(await client.create_proxy(PassThrough()))
        if args.pipeline:
            mode = next(iter(configs))
            runs["pipeline"] = pipeline_run(configs[mode])
        for _ in range(args.rounds):
            rtts, lost = await raw_audio(args.audio)
            add("raw audio", rtts)
            add("raw audio lost", lost)
            for label, run in runs.items():
                rtts, lost, by_ts = await ours_audio_tracks(run, args.audio)
                add(f"audio {label}", rtts)
                add(f"audio {label} lost", lost)
                add(f"audio {label} by timestamp", by_ts)
            add("raw dc", await raw_datachannel(args.dc))
            for label, run in runs.items():
                add(f"dc {label}", await ours_datachannel(run, args.dc))
            fps, latencies, lost = await raw_video(args.video)
            add("raw video fps", fps)
            add("raw video", latencies)
            add("raw video lost", lost)
            for label, run in runs.items():
                fps, latencies, lost, misread = await ours_video(run, args.video)
                add(f"video {label} fps", fps)
                add(f"video {label}", latencies)
                add(f"video {label} lost", lost)
                add(f"video {label} misread", misread)

    report = Report("media")
    for label in runs:
        for q, name, target in ((0.5, "p50", 0.5), (0.9, "p90", None)):
            report.add(f"audio track RTT {name}, {label}", ours=percentile(r[f"audio {label}"], q),
                       baseline=percentile(r["raw audio"], q), unit="s", target=target,
                       against="raw aiortc audio track echo, burst onset")
    for label in runs:
        report.add(f"audio dc p50 vs 10 ms budget, {label}", ours=percentile(r[f"dc {label}"], 0.5),
                   baseline=0.010, unit="s", target=1.0, against="a 10 ms budget")
        for q, name in ((0.5, "p50"), (0.9, "p90")):
            report.add(f"audio dc RTT {name}, {label}", ours=percentile(r[f"dc {label}"], q),
                       baseline=percentile(r["raw dc"], q), unit="s",
                       against="raw data-channel echo of the same 1920 B every 20 ms")
    for label in runs:
        report.add(f"video fps 640x480@30, {label}", ours=min(r[f"video {label} fps"]),
                   baseline=min(r["raw video fps"]), unit="fps", target=0.95, against="raw aiortc video track echo")
        for q, name in ((0.5, "p50"), (0.9, "p90")):
            report.add(f"video latency {name}, {label}", ours=percentile(r[f"video {label}"], q),
                       baseline=percentile(r["raw video"], q), unit="s", against="raw aiortc video track echo")

    def ms(samples: list[float], q: float) -> str:
        return f"{percentile(samples, q) * 1e3:.1f}"

    report.note(
        f"{args.rounds} round(s): audio {args.audio:g} s, data channel {args.dc:g} s, video {args.video:g} s per side; "
        f"the first {SETTLE:g} s of each stream not counted; raw always measured first, on a fresh echo peer. "
        "process/inprocess = the executor's mode, client level (remote.stream(frames)[.over_tracks()] on one "
        "client set up beforehand); pipeline = a Pipeline of one streaming RemoteObjectExecutionNode "
        f"on the {next(iter(configs))} executor, each run connecting its own session; dc = the data channel"
    )
    report.note(
        "audio tracks: bursts detected (lost) - raw " + f"{len(r['raw audio'])} ({sum(r['raw audio lost'])})"
        + "".join(f", {label} {len(r[f'audio {label}'])} ({sum(r[f'audio {label} lost'])})" for label in runs)
        + ". Our per-frame latency by the timestamp the framework keeps (every frame, not just bursts): "
        + ", ".join(f"{label} p50 {ms(r[f'audio {label} by timestamp'], 0.5)} / p90 "
                    f"{ms(r[f'audio {label} by timestamp'], 0.9)} ms" for label in runs)
    )
    report.note(
        f"video: frames lost after the first {SETTLE:g} s - raw {sum(r['raw video lost'])}"
        + "".join(f", {label} {sum(r[f'video {label} lost'])}" for label in runs)
        + "; frames whose blocks disagreed with their timestamp: "
        + ", ".join(f"{label} {sum(r[f'video {label} misread'])}" for label in runs)
        + "; fps = distinct frames over the time they took to arrive, the worst round of each side"
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=float, default=6.0, help="seconds of audio over tracks per side (default: %(default)s)")
    parser.add_argument("--dc", type=float, default=3.0, help="seconds of audio on the data channel per side (default: %(default)s)")
    parser.add_argument("--video", type=float, default=4.0, help="seconds of video per side (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, samples pooled (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=("process", "inprocess"), default=["process", "inprocess"],
                        help="executor modes to measure (default: %(default)s)")
    parser.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                        help="skip the pipeline-level variant (on the first mode)")
    args = parser.parse_args()
    budget = 120 + 3 * args.rounds * (args.audio + args.dc + args.video) * (2 + len(args.modes))
    with contextlib.ExitStack() as stack:
        ports = {}
        for mode in args.modes:
            server = ServeProcess("--mode", mode, "--token", TOKEN)
            stack.callback(server.stop)
            ports[mode] = server.port
        report = asyncio.run(asyncio.wait_for(measure(args, ports), budget))
    report.finish()


if __name__ == "__main__":
    main()
