"""Built-in nodes: audio (resample, gain, chunk), video (transform) and a tone source."""

from .audio import ChunkerNode, GainNode, ResampleNode
from .sources import ToneNode
from .video import VideoTransformNode

__all__ = ["ChunkerNode", "GainNode", "ResampleNode", "ToneNode", "VideoTransformNode"]
