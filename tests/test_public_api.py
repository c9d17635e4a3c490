"""The public surface is exactly what we mean to export, and every module says what it exports."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import remotemedia

PUBLIC = {
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
    "SerializationError",
    "SessionPool",
    "default_pool",
    "SignalingError",
    "TLSError",
    "Transcript",
    "VideoFrame",
    "WasmError",
    "discover",
}


def test_top_level_names_are_exactly_the_public_api():
    assert set(remotemedia.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(remotemedia, name).__doc__, f"{name} has no docstring"


def test_documented_imports_work():
    from remotemedia import AudioFrame, Node, Pipeline, VideoFrame  # noqa: F401
    from remotemedia.nodes import (  # noqa: F401
        ChunkerNode,
        EdgeNode,
        GainNode,
        InvertNode,
        ResampleNode,
        ToneNode,
        VideoPatternNode,
        VideoTransformNode,
        VADNode,
        WhisperNode,
        TTSNode,
        UltravoxNode,
        UltravoxMinDurationWrapper,
        AudioFileSource,
        WavWriterNode,
        WasmNode,
    )


def test_the_speech_nodes_import_their_model_libraries_only_to_load_a_model():
    # A client that only sends a WhisperNode to a GPU executor needs none of them.
    code = (
        "import sys\n"
        "from remotemedia.nodes import TTSNode, UltravoxNode, VADNode, WhisperNode\n"
        "nodes = [WhisperNode(), TTSNode(), VADNode(), UltravoxNode()]\n"
        "heavy = ['faster_whisper', 'ctranslate2', 'piper', 'onnxruntime', 'webrtcvad', 'transformers', 'torch']\n"
        "print([name for name in heavy if name in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_every_module_declares_all_and_its_names_exist():
    for package in ("remotemedia", "signaling_server", "executor"):
        root = importlib.import_module(package)
        modules = [root] + [
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        ]
        for module in modules:
            assert hasattr(module, "__all__"), f"{module.__name__} has no __all__"
            for name in module.__all__:
                assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


def test_errors_form_one_tree():
    for name in PUBLIC:
        obj = getattr(remotemedia, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, remotemedia.RemoteMediaError)
    assert issubclass(remotemedia.EncodeError, TypeError)
    assert issubclass(remotemedia.DecodeError, ValueError)
    assert issubclass(remotemedia.AuthenticationError, remotemedia.SignalingError)
    assert issubclass(remotemedia.NoExecutorAvailable, remotemedia.SignalingError)
    assert issubclass(remotemedia.ConnectionLimitError, remotemedia.SignalingError)
    assert issubclass(remotemedia.TLSError, remotemedia.SignalingError)
    assert issubclass(remotemedia.ConnectionLostError, ConnectionError)
    assert issubclass(remotemedia.RemoteTimeoutError, TimeoutError)
    assert issubclass(remotemedia.MessageTooLargeError, ValueError)
