"""
The command lines ``python -m executor`` (``remotemedia-executor``) and
``python -m remotemedia serve``: start, register, stop, and fail clearly.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, ExecutorProcess, ServeProcess, running_executor, running_server, wait_until

from executor.__main__ import signaling_url


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


async def test_an_executor_registers_and_unregisters_on_sigterm():
    with running_server("--token", "t", "--executor-token", "e") as server:
        executor = ExecutorProcess(server.url, "--executor-token", "e", "--name", "gpu-box", "--max-sessions", "3")
        try:
            assert executor.name == "gpu-box"
            assert server.health()["executors"] == 1
        finally:
            assert executor.stop() == 0
        await wait_until(lambda: server.health()["executors"] == 0, timeout=10)


def test_the_signaling_url_may_omit_the_path():
    assert signaling_url("ws://127.0.0.1:50052") == "ws://127.0.0.1:50052/ws"
    assert signaling_url("wss://h.example:443/") == "wss://h.example:443/ws"
    assert signaling_url("ws://h:1/custom") == "ws://h:1/custom"
    for bad in ("http://h:1", "h:1", "ws://"):
        with pytest.raises(ValueError):
            signaling_url(bad)


async def test_the_credentials_come_from_the_environment():
    with running_server(env={"REMOTEMEDIA_TOKEN": "c", "REMOTEMEDIA_EXECUTOR_TOKEN": "from-env"}) as server, running_executor(
        server.url, env={"REMOTEMEDIA_EXECUTOR_TOKEN": "from-env"}
    ):
        assert server.health()["executors"] == 1


def test_a_wrong_token_exits_1_with_the_reason():
    with running_server("--token", "right", "--executor-token", "exec") as server:
        result = run("-m", "executor", "--signaling", server.url, "--executor-token", "wrong")
    assert result.returncode == 1
    assert "token" in result.stderr


def test_the_client_token_cannot_register_an_executor():
    # An old single-token setup: the server runs, its executors are told what to add.
    with running_server("--token", "shared") as server:
        result = run("-m", "executor", "--signaling", server.url, "--token", "shared")
        assert server.health()["executors"] == 0
    assert result.returncode == 1
    assert "client credential cannot register" in result.stderr and "--executor-token" in result.stderr


def test_an_unreachable_signaling_server_exits_1():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = run("-m", "executor", "--signaling", f"ws://127.0.0.1:{port}")
    assert result.returncode == 1
    assert "cannot reach the signaling server" in result.stderr


@pytest.mark.parametrize(
    "args", [["--signaling", "http://x"], ["--signaling", "ws://h:1", "--max-sessions", "0"],
             ["--signaling", "ws://h:1", "--max-message-size", "10"], ["--signaling", "ws://h:1", "--inflate-rate", "0"]]
)
def test_bad_settings_exit_2(args):
    result = run("-m", "executor", *args)
    assert result.returncode == 2
    assert result.stderr.startswith("remotemedia-executor: ")


def test_the_inflate_rate_is_given_in_mib_per_second():
    from executor.__main__ import executor_config, parse_args

    args = parse_args(["--signaling", "ws://h:1", "--inflate-rate", "8"])
    config = executor_config(args, signaling="ws://h:1/ws", token=None, name="n")
    assert config.inflate_rate == 8 * 1024 * 1024


async def test_an_executor_outlives_its_signaling_server_and_still_stops_with_0():
    with running_server() as server:
        executor = ExecutorProcess(server.url)
    try:
        # The server is gone: the executor says so and keeps trying to register
        # again (tests/test_executor_reregister.py restarts the server).
        await wait_until(lambda: "lost the signaling server" in executor.log(), timeout=30)
        assert executor.alive
    finally:
        assert executor.stop() == 0


def test_console_scripts_are_installed():
    for name, flag in (("remotemedia-executor", "--signaling"), ("remotemedia", "serve")):
        script = Path(sys.executable).parent / name
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=20)
        assert result.returncode == 0 and flag in result.stdout


async def test_serve_runs_a_signaling_server_and_an_executor():
    serve = ServeProcess("--token", "t", "--max-sessions", "2")
    try:
        assert serve.executor.startswith("embedded-")
        assert serve.health() == {"status": "ok", "executors": 1, "sessions": 0}
    finally:
        assert serve.stop() == 0


def test_serve_on_a_busy_port_exits_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("-m", "remotemedia", "serve", "--port", str(port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_with_bad_settings_exits_2():
    result = run("-m", "remotemedia", "serve", "--port", "0", "--max-sessions", "0")
    assert result.returncode == 2
    assert "max_sessions" in result.stderr
