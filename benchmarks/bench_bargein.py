"""
The demo service's live behaviour on an executor: barge-in, and video that
keeps its frame rate while speech is recognized.

Starts ``python -m remotemedia serve`` (process mode) as a subprocess and
drives its ``demo`` service with :class:`~remotemedia.remote.RemoteServiceNode`
from this process, with real-time paced camera and microphone frames:

- **barge-in reaction**: a question (Piper-synthesized) is answered by
  talk-back; once its reply's audio arrives here, a second sentence is spoken
  over it. Measured per turn: from the moment the interrupting speech starts
  being sent to the ``paused`` message (the VAD heard speech start: the
  reply's audio is held), to the ``interrupted`` message (the policy
  confirmed: ``min_speech_ms`` of speech), and to the last reply audio frame
  received with sound in it (the reply stopped; the track goes on with silence). The baseline is the reply's own length: what
  a person would have had to sit through without barge-in (with the reply
  paced in real time, only what was heard before the cut plus what the
  executor flushed: a lower bound).
- **video during recognition**: 320x240 video at 30 fps with a microphone that
  beeps (0.1 s of 1 kHz every 0.5 s, which WebRTC's VAD takes for speech)
  and transcription on, against the same video with transcription off, in
  the same run: processed frames a second, and the executor's utterances
  ignored (too short) and merged (while busy).

    python benchmarks/bench_bargein.py [--turns 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import ServeProcess  # noqa: E402
from report import Report, percentile  # noqa: E402
from speech_samples import FIRST, SECOND, say  # noqa: E402

from remotemedia import AudioFrame, RemoteExecutorConfig, VideoFrame  # noqa: E402
from remotemedia.remote import RemoteServiceNode  # noqa: E402

RATE = 16000
STEP = RATE // 50  # 20 ms


def frames_of(samples: np.ndarray, start: float) -> list[AudioFrame]:
    samples = np.pad(samples.astype(np.float32), (0, -len(samples) % STEP))
    return [AudioFrame(samples[i : i + STEP][np.newaxis, :], RATE, start + i / RATE) for i in range(0, len(samples), STEP)]


async def barge_in_turn(config: RemoteExecutorConfig, first: np.ndarray, second: np.ndarray) -> dict:
    replying = asyncio.Event()
    marks: dict[str, float] = {}
    clock = time.perf_counter

    async def microphone():
        t = 0.0
        for frame in frames_of(np.concatenate([first, np.zeros(RATE // 2, np.float32)]), t):
            yield frame
            await asyncio.sleep(0.02)
        t = 10.0
        while not replying.is_set():
            yield AudioFrame(np.zeros((1, STEP), np.float32), RATE, t)
            t += 0.02
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # half a second into the reply
        marks["spoke"] = clock()
        for frame in frames_of(np.concatenate([second, np.zeros(RATE, np.float32)]), t):
            yield frame
            await asyncio.sleep(0.02)

    node = RemoteServiceNode("demo", config, options={"talkback": True, "transcribe": False, "effect": "none"})
    reply_audio = 0.0
    async for item in node.stream(microphone()):
        if isinstance(item, AudioFrame):
            if "interrupted" not in marks:
                reply_audio += item.duration
            replying.set()
            if "spoke" in marks and "interrupted" not in marks and np.abs(item.samples).max() > 0.01:
                marks["last_audio"] = clock()
        elif isinstance(item, dict) and item.get("type") == "paused" and "spoke" in marks and "paused" not in marks:
            marks["paused"] = clock()
        elif isinstance(item, dict) and item.get("type") == "interrupted" and "interrupted" not in marks:
            marks["interrupted"] = clock()
            marks["by"] = item["by"]
            marks["flushed_s"] = item.get("flushed_s", 0.0)
        elif isinstance(item, dict) and item.get("type") == "reply" and "reply_text" not in marks:
            marks["reply_text"] = item["text"]
    return {**marks, "reply_audio": reply_audio}


async def video_fps(config: RemoteExecutorConfig, seconds: float, transcribe: bool) -> dict:
    beep = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(RATE // 10) / RATE)).astype(np.float32)
    period = np.concatenate([beep, np.zeros(RATE // 2 - len(beep), np.float32)])
    audio = frames_of(np.tile(period, int(seconds * 2) + 1), 0.0)
    image = np.zeros((240, 320, 3), np.uint8)

    async def live():
        started = time.perf_counter()
        a = 0
        for i in range(int(seconds * 30)):
            image[:, :, 0] = (i * 8) % 256
            yield VideoFrame(image.copy(), "rgb24", i / 30)
            while a < len(audio) and audio[a].timestamp <= i / 30:
                yield audio[a]
                a += 1
            await asyncio.sleep(max(0.0, started + (i + 1) / 30 - time.perf_counter()))

    node = RemoteServiceNode("demo", config, options={"transcribe": transcribe, "talkback": False, "effect": "invert"})
    arrivals = []
    async for item in node.stream(live()):
        if isinstance(item, VideoFrame):
            arrivals.append(time.perf_counter())
    stats = getattr(node, "stats", {})
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {"fps": (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0, "stats": stats}


async def measure(args: argparse.Namespace, port: int) -> Report:
    config = RemoteExecutorConfig(host="127.0.0.1", port=port, timeout=60.0, connect_timeout=60.0)
    first, rate = say(FIRST)
    second, _ = say(SECOND)
    assert rate == RATE or True
    from speech_samples import resample

    first, second = resample(first, rate, RATE), resample(second, rate, RATE)
    report = Report("bargein")
    reactions, stops, replies, pauses = [], [], [], []
    for _ in range(args.turns):
        turn = await barge_in_turn(config, first, second)
        if "interrupted" not in turn:
            report.note(f"a turn was not interrupted (reply {turn['reply_audio']:.2f} s): {turn}")
            continue
        reactions.append(turn["interrupted"] - turn["spoke"])
        if "paused" in turn:
            pauses.append(turn["paused"] - turn["spoke"])
        stops.append(turn.get("last_audio", turn["interrupted"]) - turn["spoke"])
        replies.append(turn["reply_audio"] + turn["flushed_s"])
        report.note(f"turn: interrupted by {turn['by']} after {reactions[-1] * 1e3:.0f} ms, "
                    f"{turn['flushed_s']:.2f} s of queued reply audio dropped")
    if reactions:
        full = percentile(replies, 0.5)
        if pauses:
            report.add("barge-in: speech start to 'paused' p50", ours=percentile(pauses, 0.5), baseline=0.150,
                       unit="s", target=1.0, against="a 150 ms budget (from the VAD's start, which comes ~90 ms later)")
        report.add("barge-in: speech start to 'interrupted' p50", ours=percentile(reactions, 0.5), baseline=full,
                   unit="s", against="the reply's whole length (no barge-in)")
        report.add("barge-in: speech start to last reply audio p50", ours=percentile(stops, 0.5), baseline=full,
                   unit="s", against="the reply's whole length (no barge-in)")
        report.add("barge-in: speech start to last reply audio p50", ours=percentile(stops, 0.5), baseline=0.150,
                   unit="s", target=1.0, against="a 150 ms budget (from the VAD's start, which comes ~90 ms later)")
    off = await video_fps(config, args.seconds, transcribe=False)
    on = await video_fps(config, args.seconds, transcribe=True)
    report.add("video fps while beeps are recognized", ours=on["fps"], baseline=off["fps"], unit="fps",
               target=0.8, against="the same video, transcription off")
    report.note(f"executor stats with transcription on: {on['stats']}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3, help="barge-in turns (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of video per case (default: %(default)s)")
    args = parser.parse_args()
    serve = ServeProcess("--max-sessions", "4")
    try:
        report = asyncio.run(measure(args, serve.port))
    finally:
        serve.stop()
    report.finish()


if __name__ == "__main__":
    main()
