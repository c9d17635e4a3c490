"""Built-in nodes: audio (resample, gain, chunk), video (transform, effects) and sources (tone, video pattern)."""

from .audio import ChunkerNode, GainNode, ResampleNode
from .effects import EdgeNode, InvertNode
from .sources import ToneNode, VideoPatternNode
from .video import VideoTransformNode

__all__ = [
    "ChunkerNode",
    "EdgeNode",
    "GainNode",
    "InvertNode",
    "ResampleNode",
    "ToneNode",
    "VideoPatternNode",
    "VideoTransformNode",
]
