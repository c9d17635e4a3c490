"""
How a run ends when it fails or is interrupted: one clean exception chain
(the PipelineError and its real cause, nothing unrelated before it), Ctrl-C
stopping with a short message and status 130, and a lost executor reported
by how reconnecting ended.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, ExecutorProcess, ServerProcess

from remotemedia import ConnectionLostError, Node, Pipeline, PipelineError, RemoteExecutorConfig, RemoteObjectExecutionNode
from remotemedia.nodes import ToneNode

ROOT = Path(__file__).resolve().parent.parent


class Explodes(Node):
    def process(self, data):
        raise ValueError("bad frame")


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_a_failing_run_raises_one_clean_chain():
    pipeline = Pipeline("p").add_node(Explodes())
    with pytest.raises(PipelineError) as info:
        pipeline.run([1])
    text = formatted(info.value)
    assert "During handling of the above exception" not in text
    assert "no running event loop" not in text
    assert isinstance(info.value.__cause__, ValueError)


def test_an_unreachable_executor_raises_one_clean_chain():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    config = RemoteExecutorConfig(host="127.0.0.1", port=port, connect_timeout=5.0)
    pipeline = Pipeline("p").add_node(RemoteObjectExecutionNode(Explodes(), config))
    with pytest.raises(PipelineError, match="cannot reach the signaling server") as info:
        pipeline.run([1])
    text = formatted(info.value)
    assert "During handling of the above exception" not in text
    assert "no running event loop" not in text
    assert "./run serve" in str(info.value)  # the hint names the README's way


INTERRUPTED = """
import sys, time
sys.path.insert(0, "examples")
from _embedded import run_main
from remotemedia import Node, Pipeline
from remotemedia.nodes import ToneNode

class Slow(Node):
    def __init__(self):
        super().__init__()
        self.cleaned = False
    def process(self, frame):
        print("running", flush=True)
        time.sleep(0.05)
        return frame
    def cleanup(self):
        print("cleaned up", flush=True)

def main():
    Pipeline("forever").add_node(ToneNode(440.0, duration_s=None)).add_node(Slow()).run()

run_main(main)
"""


def test_ctrl_c_stops_a_run_after_cleanup_with_one_line_and_status_130():
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline() == "running\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130
    assert "cleaned up" in out
    assert err.strip() == "interrupted"


class Ticks:
    async def stream(self, frames):
        async for frame in frames:
            yield frame


async def test_a_run_whose_executor_is_lost_for_good_says_reconnecting_failed(caplog):
    server = ServerProcess("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN)
    executor = ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN)
    try:
        config = RemoteExecutorConfig(
            host="127.0.0.1", port=server.port, auth_token=TOKEN, timeout=20.0,
            heartbeat_interval=0.5, heartbeat_timeout=2.0, connect_timeout=4.0, reconnect=True,
        )
        node = RemoteObjectExecutionNode(Ticks(), config, node_config={"streaming": True, "transport": "datachannel"})
        pipeline = Pipeline("lost").add_node(ToneNode(440.0, duration_s=None, realtime=True)).add_node(node)
        caplog.set_level(logging.ERROR)
        with pytest.raises(PipelineError) as info:
            async for _ in pipeline.stream():
                if executor.proc.poll() is None:
                    executor.proc.kill()
    finally:
        executor.stop()
        server.stop()
    assert isinstance(info.value.__cause__, ConnectionLostError)
    assert "reconnecting failed" in str(info.value)
    assert "calls made from now on wait for it" not in str(info.value)
    assert not [r for r in caplog.records if "cleanup" in r.getMessage()]
