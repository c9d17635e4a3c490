"""Real speech for the tests (synthesized once per session with the bundled Piper voice), and word error rate."""

from __future__ import annotations

import functools
import re

import av
import numpy as np

from remotemedia.frames import AudioFrame

FIRST = "Hello there this is the first part."
SECOND = "And here comes the second part of the test."


@functools.lru_cache(maxsize=None)
def say(text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken by the bundled voice, the same every time: float32 mono samples (read-only) and their rate."""
    from remotemedia.nodes import TTSNode

    tts = TTSNode(deterministic=True)
    tts.initialize()
    try:
        frame = tts.synthesize(text)
    finally:
        tts.cleanup()
    samples = frame.samples[0]
    samples.flags.writeable = False
    return samples, frame.sample_rate


def voiced_span(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Seconds from the first to the last sample above -40 dBFS (Piper pads its output with quiet)."""
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return loud[0] / rate, (loud[-1] + 1) / rate


def resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    """FFmpeg's resampler, for mono float32."""
    if rate == to:
        return samples
    resampler = av.AudioResampler(format="flt", layout="mono", rate=to)
    frame = AudioFrame(samples[np.newaxis, :].copy(), rate).to_av()
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.float32)


def speech_silence_speech(rate: int = 22050, pause_s: float = 1.5) -> tuple[np.ndarray, int, list[tuple[float, float]]]:
    """Half a second of silence, :data:`FIRST`, a pause, :data:`SECOND`, half a second; and the two voiced spans."""
    parts, spans, t = [], [], 0.0
    for text, silence in ((FIRST, 0.5), (SECOND, pause_s)):
        samples, native = say(text)
        samples = resample(samples, native, rate)
        parts.append(np.zeros(round(silence * rate), np.float32))
        t += silence
        start, end = voiced_span(samples, rate)
        spans.append((t + start, t + end))
        parts.append(samples)
        t += len(samples) / rate
    parts.append(np.zeros(rate // 2, np.float32))
    return np.concatenate(parts), rate, spans


def words(text: str) -> list[str]:
    """Lowercase words, punctuation dropped."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in ``reference`` (Levenshtein over words)."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(1, len(ref))
