"""
Built-in nodes: audio (resample, gain, chunk), video (transform, effects),
sources (tone, video pattern, audio file), a WAV writer, speech (VAD,
Whisper, TTS, Ultravox), WebAssembly (:class:`WasmNode`), and the browser
demo's live node.

The speech nodes import their model libraries (``remotemedia[ml]``) only
when they load a model, so they can be built, and sent to an executor, on a
machine without them.
"""

from .audio import ChunkerNode, GainNode, ResampleNode
from .effects import EdgeNode, InvertNode, VideoEffectNode
from .files import AudioFileSource, WavWriterNode
from .live import LiveDemoNode
from .sources import ToneNode, VideoPatternNode
from .tts import TTSNode
from .ultravox import UltravoxMinDurationWrapper, UltravoxNode
from .vad import VADNode
from .video import VideoTransformNode
from .whisper import WhisperNode

__all__ = [
    "AudioFileSource",
    "ChunkerNode",
    "EdgeNode",
    "GainNode",
    "InvertNode",
    "LiveDemoNode",
    "ResampleNode",
    "TTSNode",
    "ToneNode",
    "UltravoxMinDurationWrapper",
    "UltravoxNode",
    "VADNode",
    "VideoEffectNode",
    "VideoPatternNode",
    "VideoTransformNode",
    "WasmNode",
    "WavWriterNode",
    "WhisperNode",
]


def __getattr__(name: str):
    # WasmNode loads wasmtime (30-90 ms): only for those who use it.
    if name == "WasmNode":
        from .wasm import WasmNode

        return WasmNode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
