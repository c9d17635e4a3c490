"""
Codec speed: remotemedia.codec against pickle (protocol 5) in the same run.

pickle is the baseline: the fastest general serializer in the standard
library, though unusable on the wire (unpickling runs code). Two payloads: a
50 MB float64 array (bulk tensors) and a call carrying one 20 ms audio frame
(the per-frame cost of real-time audio). Ratios above 1 mean the codec is
faster than pickle.

    python benchmarks/bench_codec.py
"""

from __future__ import annotations

import pickle
import time
from typing import Any, Callable

import numpy as np

from remotemedia import AudioFrame
from remotemedia.codec import decode, encode


def best_time(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def compare(label: str, payload: Any, repeat: int) -> None:
    message = encode(payload)
    pickled = pickle.dumps(payload, protocol=5)
    codec_enc = best_time(lambda: encode(payload), repeat)
    codec_dec = best_time(lambda: decode(message), repeat)
    pickle_enc = best_time(lambda: pickle.dumps(payload, protocol=5), repeat)
    pickle_dec = best_time(lambda: pickle.loads(pickled), repeat)
    print(f"{label}: {len(message):,} bytes (pickle {len(pickled):,})")
    print(f"  encode {codec_enc * 1e6:12.1f} us   pickle {pickle_enc * 1e6:12.1f} us   "
          f"ratio {pickle_enc / codec_enc:.2f}")
    print(f"  decode {codec_dec * 1e6:12.1f} us   pickle {pickle_dec * 1e6:12.1f} us   "
          f"ratio {pickle_dec / codec_dec:.2f}")


def main() -> None:
    big = np.random.default_rng(0).random(50 * 1024 * 1024 // 8)
    compare("50 MB float64 array", big, repeat=5)
    frame = AudioFrame(np.zeros((1, 960), np.float32), 48000, 1.0)
    call = {"type": "call", "id": 7, "method": "process", "args": [frame], "kwargs": {}}
    compare("call with one 20 ms audio frame", call, repeat=2000)


if __name__ == "__main__":
    main()
