"""
RemoteMedia: real-time media and AI pipelines whose node instances can run on
remote machines.

The public API is this short list; everything else lives in modules named
after their concept (:mod:`remotemedia.codec`, :mod:`remotemedia.nodes`,
:mod:`remotemedia.serialization`...).
"""

from .exceptions import (
    AuthenticationError,
    CodecError,
    ConnectionLimitError,
    ConnectionLostError,
    DecodeError,
    EncodeError,
    MessageTooLargeError,
    ModelError,
    NoExecutorAvailable,
    PipelineError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    ResourceLimitError,
    WasmError,
    SerializationError,
    SignalingError,
    TLSError,
)
from .frames import AudioFrame, Transcript, VideoFrame
from .node import Node
from .pipeline import Pipeline

# The remote API imports aiortc and websockets (about 0.1 s): loaded on first
# use, so that processes that need only the codec and the RPC core (an
# executor's session workers) start fast.
_LAZY = {
    "ExecutorInfo": ".discovery",
    "discover": ".discovery",
    "RemoteExecutorConfig": ".remote",
    "RemoteObjectExecutionNode": ".remote",
    "RemoteProxyClient": ".remote",
    "SessionPool": ".remote",
    "default_pool": ".remote",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"

__all__ = [
    "AudioFrame",
    "AuthenticationError",
    "CodecError",
    "ConnectionLimitError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "ExecutorInfo",
    "MessageTooLargeError",
    "ModelError",
    "Node",
    "NoExecutorAvailable",
    "Pipeline",
    "PipelineError",
    "RemoteExecutionError",
    "RemoteExecutorConfig",
    "RemoteObjectExecutionNode",
    "RemoteProxyClient",
    "RemoteMediaError",
    "RemoteTimeoutError",
    "ResourceLimitError",
    "WasmError",
    "SerializationError",
    "SessionPool",
    "SignalingError",
    "TLSError",
    "Transcript",
    "VideoFrame",
    "discover",
    "default_pool",
]
