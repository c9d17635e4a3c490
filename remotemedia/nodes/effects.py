"""
Built-in video effects, in numpy: light enough to run anywhere, visible
enough to show where they ran (the demos run them on an executor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..frames import VideoFrame
from ..node import Node

__all__ = ["InvertNode", "EdgeNode"]

_PIXEL_FORMATS = ("rgb24", "bgr24", "gray")


def _check(node: Node, data: Any) -> VideoFrame:
    if not isinstance(data, VideoFrame):
        raise TypeError(f"{type(node).__name__} {node.name!r} takes VideoFrame inputs, not {type(data).__name__}")
    if data.format not in _PIXEL_FORMATS:
        raise ValueError(
            f"{type(node).__name__} {node.name!r} takes {', '.join(_PIXEL_FORMATS)} frames, not {data.format} "
            f"(convert with VideoTransformNode(format='rgb24') first)"
        )
    return data


class InvertNode(Node):
    """A negative: every pixel value ``v`` becomes ``255 - v``."""

    def process(self, data: Any) -> VideoFrame:
        frame = _check(self, data)
        return VideoFrame(255 - frame.image, frame.format, frame.timestamp)


class EdgeNode(Node):
    """
    Edges (the Sobel gradient's magnitude), white on black, in the frame's
    pixel format. ``gain`` scales the magnitude before it is clipped to 255.
    """

    def __init__(self, gain: float = 1.0, name: str | None = None) -> None:
        super().__init__(name)
        if not gain > 0:
            raise ValueError(f"gain must be positive, not {gain!r}")
        #: Scale of the gradient's magnitude.
        self.gain = float(gain)

    def process(self, data: Any) -> VideoFrame:
        frame = _check(self, data)
        image = frame.image.astype(np.float32)
        luma = image if image.ndim == 2 else image @ np.array([0.299, 0.587, 0.114], np.float32)
        padded = np.pad(luma, 1, mode="edge")
        # Sobel kernels as shifted sums: no SciPy needed.
        gx = (padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:]) - (padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2])
        gy = (padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:]) - (padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:])
        edges = np.clip(np.hypot(gx, gy) * (self.gain / 4), 0, 255).astype(np.uint8)
        if frame.format != "gray":
            edges = np.repeat(edges[:, :, np.newaxis], 3, axis=2)
        return VideoFrame(edges, frame.format, frame.timestamp)
