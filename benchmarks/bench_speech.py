"""
Speech on an executor: the real-time factors of Whisper and Piper, and the
voice-to-voice latency of the voice loop (``examples/voice_loop.py``).

Starts ``python -m remotemedia serve`` (a signaling server and one executor,
in process mode) as a subprocess, stopped at the end. The speech is a set of
questions synthesized with the bundled Piper voice (so no audio file and no
network are needed), and the replies are "You said: <question>". On loopback
it measures:

- **real-time factor** (processing time / audio duration; lower is faster)
  of Whisper tiny.en (speech in, one utterance a call) and of Piper (reply
  text in, its audio out), each against the same model run locally in this
  process, measured in the same run (the baseline):

  - *proxy call*: ``await remote.transcribe(samples)`` /
    ``await remote.synthesize(text)`` through ``RemoteProxyClient.create_proxy``,
    timed at the client, so the transfer of the audio (160 KB of float32 per
    5 s at 16 kHz) is in it; baseline: ``transcribe``/``synthesize`` called
    here;
  - *pipeline*: a ``Pipeline`` whose one node is the streaming node (a
    ``WhisperNode``, its VAD cutting the questions, or a ``TTSNode``) wrapped in a
    streaming ``RemoteObjectExecutionNode``, against the same pipeline with
    the node local. Frames go on the data channel: media tracks play in real
    time, which would make any real-time factor at least 1. Timed from the
    first input to the last output; connecting and loading the model are not
    counted.

- **voice-to-voice latency** of the voice loop, run in this process against
  the embedded server: questions played by ``AudioFileSource`` at the pace
  of the clock with a pause after each, Whisper and the TTS on the executor
  (audio on media tracks), the reply node here; per turn, from the moment
  the source played the end of the question to the arrival of the reply's
  first audio frame (see the example's docstring). p50 and p90 over the
  turns, compared with the 500-800 ms that Pipecat documents for a typical
  voice round trip ("In most cases, the entire round-trip interaction
  happens between 500-800ms", docs.pipecat.ai). That figure is cited, not
  measured: Pipecat is not installed here, and its pipelines use other
  models and services. The breakdown: the VAD's wait (its hangover, measured
  in the input, plus ``silence_ms``, or ``pause_ms`` and Whisper's time when
  longer: Whisper starts at the first pause; on a turn that ended on a
  finished sentence (``--end-on-sentence``), ``pause_ms`` and Whisper's time), Whisper's time on the utterance and
  the TTS's time to its first sentence (both measured on the executor, which
  tells them in its marks), and transport, which is what remains of each
  half (uplink: end of speech to transcript here; downlink: transcript here
  to first reply audio here).

- **barge-in reaction** of the voice loop (``--barge-ins``, 0 for none): a
  long question, then sentences each spoken over the reply to the one
  before (4 s after it ended), then "Yeah." over the last reply. Per
  barge-in, from the moment the source played the interrupting speech's
  first voiced frame (its onset) to the reply's audio stopped at the
  player (paused at the VAD's speech start); to the cut (the policy's
  ``min_speech_ms`` of speech: where the reply would stop without
  pausing, the baseline); from the cut to the executor's TTS saying it
  stopped; and to the last frame of the cut reply that reached the
  player (in flight: dropped there). Target: 150 ms from onset to stop.

About 70 s in all on 2 cores, and 50 s more for the barge-ins (``--quick``: about 45 s).

    python benchmarks/bench_speech.py [--utterances 6] [--rounds 2] [--turns 6] [--loops 1]
        [--silence-ms 300] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import av
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "examples"))

import voice_loop  # noqa: E402
from harness import ServeProcess  # noqa: E402
from report import Report, percentile  # noqa: E402

from remotemedia import (  # noqa: E402
    AudioFrame, Node, Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, RemoteProxyClient,
)
from remotemedia.nodes import TTSNode, VADNode, WhisperNode  # noqa: E402
from remotemedia.nodes.bargein import BargeInPolicy  # noqa: E402
from remotemedia.nodes.files import read_audio  # noqa: E402

TOKEN = "bench-speech"
QUESTIONS = (
    "What time does the library open tomorrow?",
    "Can you recommend a good book about space travel?",
    "How long does it take to bake a loaf of bread?",
    "Where is the nearest train station from here?",
    "Which planet in our solar system is the largest?",
    "Could you remind me to call my sister this evening?",
    "What is the weather going to be like on Saturday?",
    "How many people live in the city of Toronto?",
)
#: Pipecat's documented voice round trip, in seconds (docs.pipecat.ai).
PIPECAT = (0.5, 0.8)
#: Silence between questions in the pipeline RTF input (enough for the VAD to cut them).
GAP_S = 0.6
#: The VAD's default pause_ms: where a WhisperNode starts transcribing (speculatively).
PAUSE_MS = inspect.signature(VADNode).parameters["pause_ms"].default
#: Most seconds one timed pipeline output may take.
RECV_TIMEOUT = 60.0


def reply(question: str) -> str:
    """What the voice loop's reply node says to ``question`` when Whisper hears it right."""
    return f"You said: {question}"


def to_16k(frame: AudioFrame) -> np.ndarray:
    """``frame`` as 1-D float32 mono at 16 kHz: what WhisperNode.transcribe takes."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    parts = resampler.resample(frame.to_av()) + resampler.resample(None)
    return np.concatenate([part.to_ndarray().reshape(-1) for part in parts])


class FirstInput(Node):
    """Notes when the first input reaches the pipeline (after every node initialized)."""

    def __init__(self) -> None:
        super().__init__("FirstInput")
        self.at: float | None = None

    async def process(self, data: Any) -> Any:
        if self.at is None:
            self.at = time.perf_counter()
        return data


async def items(values: list) -> AsyncIterator:
    for value in values:
        yield value


# -- real-time factors --------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


async def atimed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def first_sentence(tts: TTSNode, text: str) -> float:
    """Seconds from ``text`` to the first audio frame of a local streaming TTSNode: its first sentence."""
    started = time.perf_counter()
    async with contextlib.aclosing(tts.stream(items([text]))) as frames:
        async for _ in frames:
            return time.perf_counter() - started
    raise RuntimeError(f"no audio for {text!r}")


async def local_figures(speech: list[np.ndarray], texts: list[str], rounds: int) -> dict[str, Any]:
    """Whisper and Piper called here: per-call seconds, and each reply's time to its first sentence."""
    whisper, tts = WhisperNode(), TTSNode()
    whisper.initialize()
    tts.initialize()
    try:
        whisper.transcribe(speech[0])  # the first calls set up their runtimes: not counted
        tts.synthesize(texts[0])
        asr = [timed(lambda: whisper.transcribe(s)) for _ in range(rounds) for s in speech]
        audio = [tts.synthesize(t) for t in texts]
        synth = [timed(lambda: tts.synthesize(t)) for _ in range(rounds) for t in texts]
        first = {t: await first_sentence(tts, t) for t in texts}
    finally:
        whisper.cleanup()
        tts.cleanup()
    return {"asr": asr, "synth": synth, "tts_audio": [a.duration for a in audio], "first": first}


async def proxy_figures(config: RemoteExecutorConfig, speech: list[np.ndarray], texts: list[str],
                        rounds: int) -> dict[str, list[float]]:
    """The same calls on the executor, through proxies (one session, connected before timing)."""
    async with RemoteProxyClient(config) as client:
        whisper = await client.create_proxy(WhisperNode())
        tts = await client.create_proxy(TTSNode())
        await whisper.transcribe(speech[0])
        await tts.synthesize(texts[0])
        asr = [await atimed(lambda: whisper.transcribe(s)) for _ in range(rounds) for s in speech]
        synth = [await atimed(lambda: tts.synthesize(t)) for _ in range(rounds) for t in texts]
    return {"asr": asr, "synth": synth}


async def pipeline_seconds(node: Any, inputs: list) -> tuple[float, list]:
    """Seconds from the first input reaching ``node`` to its last output; and the outputs."""
    first = FirstInput()
    pipeline = Pipeline("bench-speech").add_node(first).add_node(node)
    outputs = []
    stream = pipeline.stream(items(inputs)).__aiter__()
    async with contextlib.aclosing(stream):
        while True:
            try:
                outputs.append(await asyncio.wait_for(stream.__anext__(), RECV_TIMEOUT))
            except StopAsyncIteration:
                break
    return time.perf_counter() - first.at, outputs


async def pipeline_figures(config: RemoteExecutorConfig, frames: list[AudioFrame], texts: list[str],
                           rounds: int) -> dict[str, list[float]]:
    """Real-time factors of the streaming nodes in a pipeline, local and remote (data channel)."""
    audio_s = sum(frame.duration for frame in frames)
    figures: dict[str, list[float]] = {}

    def remote(node: Any) -> RemoteObjectExecutionNode:
        return RemoteObjectExecutionNode(node, config, node_config={"streaming": True, "transport": "datachannel"})

    for _ in range(rounds):
        for label, make in (("local", lambda n: n), ("remote", remote)):
            seconds, transcripts = await pipeline_seconds(make(WhisperNode()), frames)
            if len(transcripts) != len(texts):
                raise RuntimeError(f"{label} Whisper pipeline heard {len(transcripts)} utterances, not {len(texts)}")
            figures.setdefault(f"asr {label}", []).append(seconds / audio_s)
            seconds, spoken = await pipeline_seconds(make(TTSNode()), texts)
            figures.setdefault(f"tts {label}", []).append(seconds / sum(f.duration for f in spoken))
    return figures


# -- the voice loop -----------------------------------------------------------------------


async def loop_figures(config: RemoteExecutorConfig, source: str, silence_ms: int, folder: str,
                       early_clause: bool = True, end_on_sentence: bool = False) -> dict[str, Any]:
    """One run of the voice loop; its turns, and the VAD's hangover at each end of speech."""
    run = await voice_loop.run_loop(source, f"{folder}/replies.wav", config, silence_ms=silence_ms, quiet=True,
                                    early_clause=early_clause, end_on_sentence=end_on_sentence)
    trimmed = await voice_loop.speech_ends(source, silence_ms)
    raw = await voice_loop.speech_ends(source, silence_ms, trim=False)
    hangover = dict(zip(trimmed, (r - t for r, t in zip(raw, trimmed))))
    return {"turns": run.turns, "hangover": hangover, "elapsed": run.elapsed}


#: A long question, then sentences spoken over the replies, then a backchannel.
BARGE_INS = (
    "Please tell me everything you know about the history of the old city library and all of its many books.",
    "Stop please, tell me instead about the long journey of the first rockets into space.",
    "No wait, I would rather hear about the tallest mountains on every continent of the world.",
    "Actually, let us talk about how the oceans and the weather change over a long year.",
    "Yeah.",
)


async def barge_figures(config: RemoteExecutorConfig, count: int, silence_ms: int, folder: str) -> list:
    """One run of the voice loop with ``count`` sentences spoken over replies; its barge-ins."""
    source = f"{folder}/barge.wav"
    voice_loop.synthesize_questions(source, BARGE_INS[: count + 1] + BARGE_INS[-1:], pause_s=4.0)
    run = await voice_loop.run_loop(source, f"{folder}/barge_replies.wav", config, silence_ms=silence_ms,
                                    quiet=True, barge_in=BargeInPolicy())
    return run.barges


# -- the run ------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, port: int) -> Report:
    config = RemoteExecutorConfig(host="127.0.0.1", port=port, auth_token=TOKEN, timeout=60)
    with tempfile.TemporaryDirectory() as folder:
        # The inputs: the questions spoken once, then as a stream with short gaps, and as a conversation.
        questions = list(QUESTIONS[: args.utterances])
        tts = TTSNode()
        tts.initialize()
        try:
            spoken = [tts.synthesize(q) for q in questions]
        finally:
            tts.cleanup()
        speech = [to_16k(frame) for frame in spoken]
        speech_s = sum(len(s) for s in speech) / 16000
        texts = [reply(q) for q in questions]
        dense = f"{folder}/dense.wav"
        voice_loop.synthesize_questions(dense, tuple(questions), pause_s=GAP_S)
        frames = read_audio(dense)
        conversation = f"{folder}/conversation.wav"
        voice_loop.synthesize_questions(conversation, tuple(QUESTIONS[: args.turns]))

        local = await local_figures(speech, texts, args.rounds)
        proxy = await proxy_figures(config, speech, texts, args.rounds)
        pipes = await pipeline_figures(config, frames, texts, 1)
        loops = [await loop_figures(config, conversation, args.silence_ms, folder, not args.whole_sentence,
                                    args.end_on_sentence)
                 for _ in range(args.loops)]
        barges = await barge_figures(config, args.barge_ins, args.silence_ms, folder) if args.barge_ins else []

    tts_s = sum(local["tts_audio"])
    rtf = {
        ("asr", "local"): sum(local["asr"]) / (args.rounds * speech_s),
        ("asr", "proxy"): sum(proxy["asr"]) / (args.rounds * speech_s),
        ("tts", "local"): sum(local["synth"]) / (args.rounds * tts_s),
        ("tts", "proxy"): sum(proxy["synth"]) / (args.rounds * tts_s),
    }
    report = Report("speech")
    for key, model in (("asr", "Whisper tiny.en"), ("tts", "Piper")):
        report.add(f"{model} RTF, proxy call", ours=rtf[key, "proxy"], baseline=rtf[key, "local"], unit="x",
                   against=f"{model} called locally, same inputs")
        report.add(f"{model} RTF, pipeline (dc)", ours=min(pipes[f"{key} remote"]),
                   baseline=min(pipes[f"{key} local"]), unit="x",
                   against=f"the same pipeline with the {model} node local")

    turns = [turn for loop in loops for turn in loop["turns"]]
    timed_turns = [turn for turn in turns if turn.latency is not None]
    if not timed_turns:
        raise RuntimeError("no turn of the voice loop was timed")
    latencies = [turn.latency for turn in timed_turns]
    p50, p90 = percentile(latencies, 0.5), percentile(latencies, 0.9)
    pipecat = "Pipecat's documented round trip (docs.pipecat.ai), cited, not measured"
    report.add("voice-to-voice p50 vs Pipecat 500 ms", ours=p50, baseline=PIPECAT[0], unit="s", against=pipecat)
    report.add("voice-to-voice p50 vs Pipecat 800 ms", ours=p50, baseline=PIPECAT[1], unit="s", against=pipecat)
    report.add("voice-to-voice p90 vs Pipecat 800 ms", ours=p90, baseline=PIPECAT[1], unit="s", against=pipecat)

    # The breakdown, per turn: the two measured halves, less what the executor measured.
    asr_s = statistics.median(local["asr"])
    hangovers = {end: h for loop in loops for end, h in loop["hangover"].items()}
    parts: dict[str, list[float]] = {}
    per_turn: list[str] = []
    ended: dict[str, int] = {}
    for turn in timed_turns:
        up = turn.heard_at - turn.spoken_at
        down = turn.answered_at - turn.heard_at
        hangover = hangovers.get(turn.speech_end, 0.0)
        # Whisper starts at the VAD's first pause (speculative), so the
        # transcript leaves when both the end is confirmed and Whisper is done,
        # or, on a finished sentence (end_on_sentence), when Whisper is done.
        if turn.ended == "sentence":
            wait = hangover + PAUSE_MS / 1e3 + turn.asr_s
        else:
            wait = hangover + max(args.silence_ms / 1e3, PAUSE_MS / 1e3 + turn.asr_s)
        ended[turn.ended] = ended.get(turn.ended, 0) + 1
        for name, value in (
            ("VAD hangover", hangover), ("ASR", turn.asr_s), ("uplink transport", up - wait),
            ("TTS first sentence", turn.tts_s), ("downlink transport", down - turn.tts_s),
            ("end of speech -> transcript here", up), ("transcript here -> first reply audio", down),
        ):
            parts.setdefault(name, []).append(value)
        per_turn.append(
            f"turn {len(per_turn) + 1}: {turn.latency * 1e3:.0f} = end of turn {wait * 1e3:.0f} (hangover "
            f"{hangover * 1e3:.0f} + {'pause and Whisper' if turn.ended == 'sentence' else 'silence/pause and Whisper'} "
            f"{turn.asr_s * 1e3:.0f}, ended on {turn.ended}) + uplink {(up - wait) * 1e3:.0f} "
            f"+ TTS first audio {turn.tts_s * 1e3:.0f} + downlink {(down - turn.tts_s) * 1e3:.0f}"
        )

    report.note("voice loop, every turn (ms): " + "; ".join(per_turn))
    report.note("voice loop, how each turn's end was found: " + ", ".join(f"{n} on {how}" for how, n in sorted(ended.items()))
                + " (sentence: at the VAD's pause, Whisper's transcript a finished sentence; silence: silence_ms)")

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.0f}"

    report.note(
        f"RTF = processing seconds / audio seconds (x; lower is faster). Whisper: {len(speech)} questions, "
        f"{speech_s:.1f} s of speech, {args.rounds} round(s); local {rtf['asr', 'local']:.3f} "
        f"({asr_s * 1e3:.0f} ms a question: WhisperNode's short window, the utterance plus 3 s and at "
        f"least 10 s, not Whisper's 30 s), proxy {rtf['asr', 'proxy']:.3f}. Piper: "
        f"{len(texts)} replies, {tts_s:.1f} s of audio; local {rtf['tts', 'local']:.3f}, proxy "
        f"{rtf['tts', 'proxy']:.3f}. Pipelines (one streaming node, frames on the data channel: tracks "
        f"play in real time): Whisper local {min(pipes['asr local']):.3f} / remote {min(pipes['asr remote']):.3f} "
        f"over {sum(f.duration for f in frames):.1f} s of 20 ms frames (questions {GAP_S:g} s apart, VAD "
        f"included); Piper local {min(pipes['tts local']):.3f} / remote {min(pipes['tts remote']):.3f}"
    )
    report.note(
        f"voice loop: {len(timed_turns)} of {len(turns)} turns timed over {args.loops} run(s) of "
        f"{args.turns} questions, {voice_loop.PAUSE_S:g} s apart; VAD silence_ms {args.silence_ms}; "
        f"voice-to-voice p50 {p50 * 1e3:.0f} ms, p90 {p90 * 1e3:.0f} ms, per turn "
        + ", ".join(f"{t * 1e3:.0f}" for t in latencies)
        + f" ms; Pipecat documents {PIPECAT[0] * 1e3:.0f}-{PIPECAT[1] * 1e3:.0f} ms for its pipelines "
        "(with an LLM, cloud or local services; ours has no LLM, and CPU models on 2 shared cores)"
    )
    report.note(
        "voice loop breakdown, median ms per turn (each part's own median, so they need not add up): "
        f"end of speech -> transcript here {ms(parts['end of speech -> transcript here'])} = VAD hangover "
        f"{ms(parts['VAD hangover'])} (measured in the input) + the longer of VAD silence_ms {args.silence_ms} "
        f"and pause_ms {PAUSE_MS} + Whisper {ms(parts['ASR'])} (measured on the executor; Whisper starts at the "
        f"VAD's first pause, before the end is confirmed) + uplink transport {ms(parts['uplink transport'])} (the "
        "rest: Opus, the executor's jitter buffer, the VAD's 30 ms frames, the transcript back on the data "
        f"channel); transcript here -> first reply audio {ms(parts['transcript here -> first reply audio'])} = "
        f"TTS first sentence {ms(parts['TTS first sentence'])} (measured on the executor) + downlink transport "
        f"{ms(parts['downlink transport'])} (the rest: the text on the data channel, Opus, our jitter buffer "
        "filling before it gives the first frame). Per turn, Whisper "
        + ", ".join(f"{t * 1e3:.0f}" for t in parts["ASR"]) + " ms and TTS "
        + ", ".join(f"{t * 1e3:.0f}" for t in parts["TTS first sentence"])
        + f" ms (locally, Whisper {asr_s * 1e3:.0f} ms a question, Piper's first sentence "
        f"{statistics.median(local['first'].values()) * 1e3:.0f} ms)"
    )
    cut = [b for b in barges if b.cut_at is not None and b.onset_at is not None]
    if args.barge_ins and not cut:
        report.note(f"barge-in: no reply was cut ({len(barges)} paused and resumed)")
    if cut:
        stop = [b.reaction_ms / 1e3 for b in cut]
        gate = [b.cut_at - b.onset_at for b in cut]
        remote = [b.remote_at - b.cut_at for b in cut if b.remote_at is not None]
        tail = [b.last_frame_at - b.cut_at for b in cut if b.last_frame_at is not None]
        resumed = [b for b in barges if b.resumed_at is not None]
        report.add("barge-in onset -> audio stopped p50", ours=percentile(stop, 0.5), baseline=0.150,
                   unit="s", target=1.0, against="a 150 ms budget")
        report.add("barge-in onset -> audio stopped p50", ours=percentile(stop, 0.5),
                   baseline=percentile(gate, 0.5), unit="s",
                   against=f"stopping at the cut (min_speech_ms {BargeInPolicy.min_speech_ms:g})")

        def listed(values: list[float]) -> str:
            return ", ".join(f"{v * 1e3:.0f}" for v in values)

        report.note(
            f"barge-in: {len(cut)} of {args.barge_ins} replies cut, {len(resumed)} paused and resumed (the "
            f"backchannel); per cut, onset -> audio stopped at the player {listed(stop)} ms (the VAD's start_ms "
            f"90 and its 30 ms frames), onset -> cut {listed(gate)} ms, cut -> the executor's TTS stopped "
            f"{listed(remote)} ms, cut -> last in-flight frame of the cut reply (dropped here) {listed(tail)} ms "
            "(what had left the executor before its TTS said interrupted: the executor then drops the frames "
            "still queued for its track, 200 ms and a stream window of 16 frames)"
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=6, help="questions for the RTFs (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="calls of each question for the RTFs (default: %(default)s)")
    parser.add_argument("--turns", type=int, default=6, help="questions in the voice loop (default: %(default)s)")
    parser.add_argument("--loops", type=int, default=1, help="runs of the voice loop (default: %(default)s)")
    parser.add_argument("--end-on-sentence", action="store_true",
                        help="a turn may end at the VAD's pause on a finished sentence (WhisperNode(end_on_sentence=True); "
                        "faster, but Whisper ends any clip with a full stop, so it can cut a speaker at a comma)")
    parser.add_argument("--whole-sentence", action="store_true",
                        help="the TTS speaks a reply's first sentence whole (no early clause)")
    parser.add_argument("--barge-ins", type=int, default=3, choices=range(4),
                        help="sentences spoken over replies (default: %(default)s)")
    parser.add_argument("--silence-ms", type=int, default=300, help="the VAD's silence_ms (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="3 utterances, 1 round, 3 turns")
    args = parser.parse_args()
    if args.quick:
        args.utterances, args.rounds, args.turns, args.loops = 3, 1, 3, 1
    if not (1 <= args.utterances <= len(QUESTIONS) and 1 <= args.turns <= len(QUESTIONS)):
        parser.error(f"--utterances and --turns go from 1 to {len(QUESTIONS)}")
    budget = 120 + args.loops * args.turns * 15 + args.utterances * args.rounds * 5
    server = ServeProcess("--token", TOKEN)
    try:
        report = asyncio.run(asyncio.wait_for(measure(args, server.port), budget))
    finally:
        server.stop()
    report.finish()


if __name__ == "__main__":
    main()
