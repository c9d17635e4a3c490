"""
Local pipeline demo: tone -> resample -> gain -> 20 ms chunks -> WAV file.

    python examples/local_pipeline.py [--output tone.wav] [--duration 2.0]

Every node here runs locally; later, any of these instances can be wrapped to
run on a remote executor without changing its code.
"""

from __future__ import annotations

import argparse
import time
import wave
from pathlib import Path

import numpy as np
from _embedded import run_main

from remotemedia import AudioFrame, Pipeline
from remotemedia.nodes import ChunkerNode, GainNode, ResampleNode, ToneNode


def write_wav(path: Path, frames: list[AudioFrame]) -> None:
    """Write float32 frames as a 16-bit PCM WAV file."""
    samples = np.concatenate([frame.samples for frame in frames], axis=1)
    pcm = np.clip(np.rint(samples.T * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[0])
        out.setsampwidth(2)
        out.setframerate(frames[0].sample_rate)
        out.writeframes(pcm.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--output", type=Path, default=Path("local_pipeline.wav"))
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of tone")
    parser.add_argument("--frequency", type=float, default=440.0, help="tone in Hz")
    args = parser.parse_args()

    pipeline = (
        Pipeline("local_demo")
        .add_node(ToneNode(args.frequency, args.duration, sample_rate=44100))
        .add_node(ResampleNode(16000))
        .add_node(GainNode(-6.0))
        .add_node(ChunkerNode(0.02))
    )
    started = time.perf_counter()
    frames = pipeline.run()
    elapsed = time.perf_counter() - started
    write_wav(args.output, frames)

    signal = np.concatenate([frame.samples[0] for frame in frames])
    spectrum = np.abs(np.fft.rfft(signal))
    peak_hz = np.argmax(spectrum) * frames[0].sample_rate / len(signal)
    peak_dbfs = 20 * np.log10(np.max(np.abs(signal)))
    duration = len(signal) / frames[0].sample_rate

    print(f"pipeline   {pipeline!r}")
    print(f"output     {len(frames)} frames of {frames[0].duration * 1000:.0f} ms, "
          f"{duration:.2f} s at {frames[0].sample_rate} Hz -> {args.output}")
    print(f"signal     peak at {peak_hz:.1f} Hz (tone was {args.frequency:.1f} Hz), "
          f"level {peak_dbfs:.1f} dBFS")
    print(f"speed      {elapsed * 1000:.1f} ms, {duration / elapsed:.0f}x real time")


if __name__ == "__main__":
    run_main(main)
