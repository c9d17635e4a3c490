"""Test media shared by the test modules."""

from __future__ import annotations

import numpy as np

from remotemedia import AudioFrame


def random_image(fmt: str, width: int = 16, height: int = 10, seed: int = 1) -> np.ndarray:
    """A random uint8 image in the layout of pixel format ``fmt`` (PyAV's ndarray layout)."""
    rng = np.random.default_rng(seed)
    shape = {
        "rgb24": (height, width, 3),
        "bgr24": (height, width, 3),
        "rgba": (height, width, 4),
        "bgra": (height, width, 4),
        "gray": (height, width),
        "yuv420p": (height * 3 // 2, width),
    }[fmt]
    return rng.integers(0, 256, shape, dtype=np.uint8)


def sine(rate: int, seconds: float, hz: float = 440.0, channels: int = 1, dtype=np.float32) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t)
    if dtype == np.int16:
        wave = wave * 32767
    return np.repeat(wave[np.newaxis, :], channels, axis=0).astype(dtype)


def audio_frames(samples: np.ndarray, rate: int, size: int, start: float = 0.0) -> list[AudioFrame]:
    return [
        AudioFrame(np.ascontiguousarray(samples[:, i:i + size]), rate, start + i / rate)
        for i in range(0, samples.shape[1], size)
    ]
