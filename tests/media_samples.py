"""Test media shared by the test modules."""

from __future__ import annotations

import numpy as np


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
