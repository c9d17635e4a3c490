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
    ConnectionLostError,
    DecodeError,
    EncodeError,
    MessageTooLargeError,
    NoExecutorAvailable,
    PipelineError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    ResourceLimitError,
    SerializationError,
    SignalingError,
)
from .frames import AudioFrame, VideoFrame
from .node import Node
from .pipeline import Pipeline
from .remote import RemoteExecutorConfig, RemoteProxyClient

__version__ = "0.1.0"

__all__ = [
    "AudioFrame",
    "AuthenticationError",
    "CodecError",
    "ConnectionLostError",
    "DecodeError",
    "EncodeError",
    "MessageTooLargeError",
    "Node",
    "NoExecutorAvailable",
    "Pipeline",
    "PipelineError",
    "RemoteExecutionError",
    "RemoteExecutorConfig",
    "RemoteProxyClient",
    "RemoteMediaError",
    "RemoteTimeoutError",
    "ResourceLimitError",
    "SerializationError",
    "SignalingError",
    "VideoFrame",
]
