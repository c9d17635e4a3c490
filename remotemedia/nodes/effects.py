"""
Built-in video effects: light enough to run anywhere, visible enough to
show where they ran (the demos run them on an executor).

:class:`InvertNode` and :class:`EdgeNode` are plain numpy;
:class:`VideoEffectNode` runs FFmpeg's filters (through PyAV's filter
graphs) and can switch effect while it runs, which the browser demo uses.
"""

from __future__ import annotations

import itertools
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ..frames import VideoFrame
from ..node import Node

__all__ = ["InvertNode", "EdgeNode", "VideoEffectNode", "EFFECTS"]

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


#: The effects of :class:`VideoEffectNode`.
EFFECTS = ("none", "edges", "cartoon", "blur", "invert")

# FFmpeg filter chains, by effect (``cartoon`` combines two of them, see _cartoon).
_CHAINS = {
    "edges": [("edgedetect", "low=0.08:high=0.2"), ("lut", "c0='min(val*3,255)'")],  # brighter lines
    "blur": [("gblur", "sigma=12")],
    "invert": [("negate", None)],
    "smooth": [("gblur", "sigma=2"), ("lutrgb", "r='trunc(val/64)*64+32':g='trunc(val/64)*64+32':b='trunc(val/64)*64+32'")],
}


class VideoEffectNode(Node):
    """
    One of :data:`EFFECTS`, computed by FFmpeg's filters, switchable while
    running with :meth:`configure`:

    - ``"edges"``: Canny edges (``edgedetect``), white on black;
    - ``"cartoon"``: colors flattened to a few levels, with dark outlines;
    - ``"blur"``: a strong Gaussian blur (``gblur``);
    - ``"invert"``: a negative (``negate``);
    - ``"none"``: the frame as it came.

    Takes ``rgb24``, ``bgr24`` or ``gray`` frames and returns frames of the
    same format and size.
    """

    #: Allowed values of each option (the browser demo builds its controls from this).
    choices = {"effect": EFFECTS}
    #: It takes video frames only (a service is given only those).
    takes = ("video",)

    def __init__(self, effect: str = "edges", name: str | None = None) -> None:
        super().__init__(name)
        self.effect = self._checked(effect)
        self._graphs: dict = {}
        self._lock = threading.Lock()

    @staticmethod
    def _checked(effect: Any) -> str:
        if effect not in EFFECTS:
            raise ValueError(f"effect must be one of {', '.join(EFFECTS)}, not {effect!r}")
        return effect

    def configure(self, effect: str | None = None) -> None:
        """Switch to another effect; the next frame has it. ``ValueError`` for an unknown one."""
        if effect is not None:
            self.effect = self._checked(effect)

    def options(self) -> dict:
        """The node's options now."""
        return {"effect": self.effect}

    def process(self, data: Any) -> VideoFrame:
        frame = _check(self, data)
        effect = self.effect
        if effect == "none":
            return frame
        if effect == "cartoon":
            image = self._cartoon(frame)
        else:
            image = self._filter(effect, frame)
        return VideoFrame(image, frame.format, frame.timestamp)

    def _cartoon(self, frame: VideoFrame) -> np.ndarray:
        flat = self._filter("smooth", frame)
        edges = self._filter("edges", frame)
        # Darken the flattened colors along the edges: outlines.
        keep = 1.0 - (edges.astype(np.float32) * (0.85 / 255))
        return (flat * keep).astype(np.uint8)

    def _filter(self, chain: str, frame: VideoFrame) -> np.ndarray:
        image = frame.image
        key = (chain, image.shape, frame.format)
        with self._lock:  # a graph is not thread-safe; frames of one node come one at a time anyway
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._graphs[key] = _graph(_CHAINS[chain], frame)
            _, source, sink, counter = graph  # the graph itself must stay referenced: it owns the filters
            av_frame = av.VideoFrame.from_ndarray(image, format=frame.format)
            av_frame.pts = next(counter)
            av_frame.time_base = Fraction(1, 90000)
            source.push(av_frame)
            out = sink.pull()
        return out.to_ndarray(format=frame.format)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_graphs"], state["_lock"] = {}, None  # FFmpeg graphs and locks stay where they were made
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _graph(chain: list, frame: VideoFrame) -> tuple:
    graph = av.filter.Graph()
    node = source = graph.add_buffer(
        width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 90000)
    )
    for name, args in chain:
        step = graph.add(name, args) if args else graph.add(name)
        node.link_to(step)
        node = step
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph, source, sink, itertools.count()
