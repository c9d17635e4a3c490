"""
WASM nodes' speed: WasmNode against numpy and against pure Python, in the same run.

Per-frame cost of a whole node call (input frame in, new frame out) on the
frames real-time media uses: the gain and the biquad on 20 ms of 48 kHz
stereo audio (2 x 960 float32), and the invert, threshold and C-built
grayscale effects on 640x480 RGB video. The numpy baselines do the same
work the same way a node would (a new frame out); the biquad has no numpy
form (it is recursive: numpy alone loops in Python), so its baseline is the
pure-Python loop. The targets (issue 22): the WASM gain within 3x of numpy
and at least 50x faster than pure Python; a 640x480 effect well inside a
33 ms frame budget.

    python benchmarks/bench_wasm.py
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from remotemedia import AudioFrame, VideoFrame
from remotemedia.nodes import WasmNode
from remotemedia.wasm import example, lowpass


def per_call(fns: list[tuple[Callable[[], Any], int]], rounds: int = 7) -> list[float]:
    """
    Seconds per call of each ``(fn, calls)``: the best of ``rounds`` runs of
    ``calls`` calls. The functions take turns within each round, so a burst
    of load on the shared machine weighs on all of them alike.
    """
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, (fn, calls) in enumerate(fns):
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.perf_counter() - started) / calls)
    return best


def row(label: str, wasm: float, numpy: float | None, python: float) -> None:
    vs_numpy = f"numpy {numpy * 1e6:9.1f} us  wasm/numpy {wasm / numpy:5.2f}x" if numpy else f"{'no numpy form':>41}"
    print(f"{label:<34} wasm {wasm * 1e6:9.1f} us  {vs_numpy}  python {python * 1e6:11.1f} us  "
          f"python/wasm {python / wasm:7.1f}x")


def audio_benchmarks() -> None:
    frame = AudioFrame((np.random.default_rng(0).random((2, 960), dtype=np.float32) - 0.5).astype(np.float32), 48000)

    gain = WasmNode(example("gain"), config={"gain": 0.5})
    gain.initialize()
    g = np.float32(0.5)

    def numpy_gain() -> AudioFrame:
        return AudioFrame(frame.samples * g, frame.sample_rate, frame.timestamp)

    def python_gain() -> AudioFrame:
        out = [s * 0.5 for s in frame.samples.ravel().tolist()]
        return AudioFrame(np.array(out, np.float32).reshape(2, 960), frame.sample_rate, frame.timestamp)

    wasm, numpy, python = per_call([(lambda: gain.process(frame), 2000), (numpy_gain, 2000), (python_gain, 20)])
    row("gain, 20 ms 48 kHz stereo", wasm, numpy, python)

    c = lowpass(1000, 48000)
    biquad = WasmNode(example("biquad"), config=c)
    biquad.initialize()
    b0, b1, b2, a1, a2 = (c[k] for k in ("b0", "b1", "b2", "a1", "a2"))
    state = [[0.0] * 4 for _ in range(2)]

    def python_biquad() -> AudioFrame:
        out = []
        for ch, samples in enumerate(frame.samples.tolist()):
            x1, x2, y1, y2 = state[ch]
            for x in samples:
                y = b0 * x + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
                out.append(y)
                x2, x1, y2, y1 = x1, x, y1, y
            state[ch] = [x1, x2, y1, y2]
        return AudioFrame(np.array(out, np.float32).reshape(2, 960), frame.sample_rate, frame.timestamp)

    wasm, python = per_call([(lambda: biquad.process(frame), 2000), (python_biquad, 10)])
    row("biquad low-pass, 20 ms stereo", wasm, None, python)


def video_benchmarks() -> None:
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    frame = VideoFrame(image)
    weights = np.array([77, 150, 29], np.int32)

    def numpy_luma() -> np.ndarray:
        return ((image.astype(np.int32) @ weights) >> 8).astype(np.uint8)

    def python_luma() -> list[int]:
        flat = image.ravel().tolist()
        return [(77 * flat[i] + 150 * flat[i + 1] + 29 * flat[i + 2]) >> 8 for i in range(0, len(flat), 3)]

    cases = {
        "invert": (
            WasmNode(example("invert")),
            lambda: VideoFrame(255 - image, frame.format, frame.timestamp),
            lambda: VideoFrame(np.frombuffer(bytes([255 - v for v in image.ravel().tolist()]), np.uint8).reshape(image.shape)),
        ),
        "threshold": (
            WasmNode(example("threshold"), config={"threshold": 128}),
            lambda: VideoFrame(np.repeat(np.where(numpy_luma() >= 128, 255, 0).astype(np.uint8)[..., None], 3, axis=2)),
            lambda: VideoFrame(np.repeat(np.array([255 if v >= 128 else 0 for v in python_luma()], np.uint8).reshape(480, 640)[..., None], 3, axis=2)),
        ),
        "grayscale (built from C)": (
            WasmNode(example("grayscale")),
            lambda: VideoFrame(np.repeat(numpy_luma()[..., None], 3, axis=2)),
            lambda: VideoFrame(np.repeat(np.array(python_luma(), np.uint8).reshape(480, 640)[..., None], 3, axis=2)),
        ),
    }
    for name, (node, numpy_fn, python_fn) in cases.items():
        node.initialize()
        wasm, numpy = per_call([(lambda: node.process(frame), 30), (numpy_fn, 30)])
        (python,) = per_call([(python_fn, 1)], rounds=2)
        row(f"{name}, 640x480 RGB", wasm, numpy, python)
        print(f"{'':<34} {wasm * 1e3:.2f} ms of a 33 ms frame budget ({wasm / (1 / 30):.1%})")


def main() -> None:
    audio_benchmarks()
    video_benchmarks()


if __name__ == "__main__":
    main()
