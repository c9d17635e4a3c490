"""
The speech chain: the specification's section 7, with real models and a
real source.

    speech.wav -> WhisperNode (local) -> TTSNode (remote) -> reply.wav

A WAV file of speech is transcribed by a local ``WhisperNode`` (Whisper
tiny.en); each transcript goes to a ``TTSNode`` on the executor, whose
audio comes back over a WebRTC audio track and is written to a WAV file.
Without ``--input``, the speech is synthesized first with a local
``TTSNode``. Both models ship inside PyPI packages (``remotemedia[ml]``)
and run on a CPU.

    python -m remotemedia serve &                      # the embedded server, on localhost:50052
    python examples/speech_chain.py                    # connects to localhost:50052
    python examples/speech_chain.py --serve            # starts the embedded server itself, then stops it
    python examples/speech_chain.py --input talk.wav --output reply.wav --host 10.0.0.12
    python examples/speech_chain.py --voice bark       # Bark on a GPU executor (needs transformers there)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

from _embedded import add_server_arguments, server_config, run_main

from remotemedia import Pipeline, RemoteExecutorConfig, RemoteObjectExecutionNode, Transcript
from remotemedia.nodes import AudioFileSource, TTSNode, WavWriterNode, WhisperNode
from remotemedia.nodes.files import write_wav

SENTENCE = "Remote media runs each node where it fits. This sentence was spoken, heard, and spoken again."


def synthesize(text: str, path: str) -> None:
    """Speak ``text`` into a WAV file with a local TTSNode."""
    tts = TTSNode(deterministic=True)
    tts.initialize()
    try:
        write_wav(path, [tts.synthesize(text)])
    finally:
        tts.cleanup()


def build(source: str, output: str, remote: RemoteExecutorConfig, voice: str) -> Pipeline:
    """Section 7's pipeline: a local ASR node, then a remote TTS node."""
    asr = WhisperNode(model="tiny.en")
    remote_tts = RemoteObjectExecutionNode(
        obj_to_execute=TTSNode(model=voice),
        remote_config=remote,
        name="TTSRemote",
    )
    pipeline = Pipeline("speech_chain")
    pipeline.add_node(AudioFileSource(source))
    pipeline.add_node(asr)
    pipeline.add_node(TranscriptPrinter())
    pipeline.add_node(remote_tts)
    pipeline.add_node(WavWriterNode(output))
    return pipeline


class TranscriptPrinter:
    """Print each transcript as it passes (a plain object is a node too)."""

    def process(self, transcript: Transcript) -> Transcript:
        print(f"heard      [{transcript.start:5.2f}-{transcript.end:5.2f} s] {transcript.text}", flush=True)
        return transcript


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--input", help="a WAV (or any audio) file of speech (default: synthesize one)")
    parser.add_argument("--text", default=SENTENCE, help="what to synthesize when there is no --input")
    parser.add_argument("--output", default=None, help="where the reply goes (default: a temporary folder)")
    parser.add_argument("--voice", default="piper", help="the remote TTSNode's model (default: %(default)s)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        source = args.input
        if source is None:
            source = os.path.join(stack.enter_context(tempfile.TemporaryDirectory()), "speech.wav")
            synthesize(args.text, source)
            print(f"input      {source} (synthesized: {args.text!r})")
        output = args.output or os.path.join(os.getcwd(), "speech_chain_reply.wav")
        config = server_config(args, stack)
        pipeline = build(source, output, config, args.voice)
        started = time.perf_counter()
        frames = pipeline.run()
        elapsed = time.perf_counter() - started
        for stats in pipeline.last_run_stats:
            where = f"remote ({stats.location})" if stats.remote else stats.location
            print(f"node       {stats.name:<18} {where:<28} in {stats.inputs:>4}  out {stats.outputs:>4}")
        seconds = sum(frame.duration for frame in frames)
        rate = frames[0].sample_rate if frames else 0
        print(f"reply      {len(frames)} frames, {seconds:.2f} s at {rate} Hz -> {output}")
        print(f"total      {elapsed:.2f} s, connecting, loading models and real-time playback included")


if __name__ == "__main__":
    run_main(main)
