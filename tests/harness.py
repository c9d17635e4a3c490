"""
Start the real processes (signaling server, executors, the embedded server)
as subprocesses on free ports, for end-to-end tests and benchmarks.

Servers are asked for port 0 and print the port they got, so there is no race
between picking a free port and binding it. Each process prints one line when
it is ready; its log goes to a file that is shown when it fails to start.

The credentials and execution modes that tests and benchmarks share live here
too, not in ``conftest.py``: this module is imported by name (by benchmarks,
and by client scripts that tests run as subprocesses), while pytest loads
``conftest.py`` as a plugin that is not meant to be imported. ``conftest.py``
builds its fixtures (``cluster``, ``mode``) on what this module starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

__all__ = [
    "ManagedProcess",
    "ServerProcess",
    "ExecutorProcess",
    "ServeProcess",
    "running_server",
    "running_executor",
    "running_cluster",
    "mode_executor",
    "mode_config",
    "client_config",
    "config_for",
    "wait_until",
    "TOKEN",
    "EXECUTOR_TOKEN",
    "MODES",
]

ROOT = Path(__file__).resolve().parent.parent
#: The client credential of the servers that tests start (see :func:`running_cluster`).
TOKEN = "harness-client-credential"
#: The executor credential of the servers that tests start with a client token (clients never hold it).
EXECUTOR_TOKEN = "harness-executor-credential"
#: The executor's execution modes that end-to-end tests run each remote test in (see :func:`mode_executor`).
MODES = ("process", "inprocess")
# Credentials in the test runner's environment must not leak into the processes.
_CREDENTIALS = ("REMOTEMEDIA_TOKEN", "REMOTEMEDIA_EXECUTOR_TOKEN", "REMOTEMEDIA_TOKEN_SECRET")


class ManagedProcess:
    """A ``python -m MODULE ARGS`` process that prints a line starting with ``prefix`` when ready."""

    def __init__(
        self,
        module: str,
        args: list[str],
        prefix: str,
        *,
        env: dict | None = None,
        start_timeout: float = 20.0,
        command_prefix: tuple[str, ...] = (),
    ) -> None:
        """``command_prefix`` runs the interpreter through another command (``ip netns exec NS``, tests/netlab.py)."""
        self.args = args
        self._log = tempfile.NamedTemporaryFile("w+", prefix=f"{module}-", suffix=".log", delete=False)
        full_env = {k: v for k, v in os.environ.items() if k not in _CREDENTIALS}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*command_prefix, sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=full_env,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(lines,), daemon=True).start()
        try:
            line = lines.get(timeout=start_timeout)
        except queue.Empty:
            log = self.log()  # before stop(), which removes it
            self.stop()
            raise RuntimeError(f"{module} did not start within {start_timeout} s:\n{log}")
        if line is None or not line.startswith(prefix):
            log = self.log()
            self.stop()
            raise RuntimeError(f"{module} failed to start ({line!r}):\n{log}")
        #: What followed the prefix on the ready line.
        self.ready = line[len(prefix):].strip()

    def _pump(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            lines.put(line)
        lines.put(None)

    def log(self) -> str:
        """What the process logged so far."""
        return Path(self._log.name).read_text()

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye (a crash, as the peers see it)."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
        return self.proc.returncode


class _HTTPEndpoints:
    port: int

    @property
    def http_url(self) -> str:
        """Base of the server's HTTP endpoints (``https://`` for a server with TLS)."""
        scheme = "https" if getattr(self, "url", "").startswith("wss:") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str, str]:
        """GET an HTTP path: (status, content type, body)."""
        with urllib.request.urlopen(self.http_url + path, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()

    def health(self) -> dict:
        """The parsed body of ``/healthz``."""
        status, _, body = self.get("/healthz")
        assert status == 200
        return json.loads(body)

class ServerProcess(ManagedProcess, _HTTPEndpoints):
    """
    One ``python -m signaling_server`` process on a free port; :meth:`stop` ends it.

    ``port`` asks for a given one instead: to restart a server where its
    executors and clients will look for it.
    """

    def __init__(self, *args: str, env: dict | None = None, port: int = 0) -> None:
        super().__init__(
            "signaling_server",
            ["--host", "127.0.0.1", "--port", str(port), *args],
            "remotemedia-signaling listening on ",
            env=env,
        )
        #: The websocket URL, ``ws://127.0.0.1:PORT/ws``.
        self.url = self.ready
        #: The port it listens on.
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])


class ServeProcess(ServerProcess):
    """``python -m remotemedia serve``: a signaling server and one executor in one process."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        ManagedProcess.__init__(
            self,
            "remotemedia",
            ["serve", "--host", "127.0.0.1", "--port", "0", *args],
            "remotemedia serve listening on ",
            env=env,
        )
        self.url, _, executor = self.ready.partition(" (executor ")
        #: The embedded executor's name.
        self.executor = executor.rstrip(")")
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])


class ExecutorProcess(ManagedProcess):
    """One ``python -m executor`` registered with the server at ``url``."""

    def __init__(self, url: str, *args: str, env: dict | None = None) -> None:
        super().__init__("executor", ["--signaling", url, *args], "remotemedia-executor ", env=env)
        #: The name it registered under.
        self.name = self.ready.split(" registered with ")[0]


@contextlib.contextmanager
def running_server(*args: str, env: dict | None = None, port: int = 0):
    """Context manager: a :class:`ServerProcess` (on ``port``, else a free one) that is always stopped."""
    server = ServerProcess(*args, env=env, port=port)
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_executor(url: str, *args: str, env: dict | None = None):
    """Context manager: an :class:`ExecutorProcess` that is always stopped."""
    executor = ExecutorProcess(url, *args, env=env)
    try:
        yield executor
    finally:
        executor.stop()


@contextlib.contextmanager
def running_cluster(
    token: str, *executors: tuple[str, ...], server_args: tuple[str, ...] = (), env: dict | None = None
):
    """
    Context manager: a server that requires ``token`` of clients (tests pass
    :data:`TOKEN`) and :data:`EXECUTOR_TOKEN` of executors, and one executor
    per entry of ``executors`` (its arguments after ``--signaling URL
    --executor-token EXECUTOR_TOKEN``), all always stopped; yields ``(server,
    [executor, ...])``. ``server_args`` go to the server's command line,
    ``env`` to every process's environment.
    """
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            running_server("--token", token, "--executor-token", EXECUTOR_TOKEN, *server_args, env=env)
        )
        started = [
            stack.enter_context(running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, *args, env=env))
            for args in executors
        ]
        yield server, started


def mode_executor(mode: str) -> tuple[str, ...]:
    """The arguments of an executor named ``exec-MODE`` running in ``mode``, for :func:`running_cluster`."""
    return ("--name", f"exec-{mode}", "--mode", mode, "--max-sessions", "8")


def client_config(server, token: str | None, **overrides):
    """A ``RemoteExecutorConfig`` for ``server`` with ``token`` and a 15 s timeout, then ``overrides``."""
    from remotemedia import RemoteExecutorConfig

    settings = {"host": "127.0.0.1", "port": server.port, "auth_token": token, "timeout": 15.0}
    settings.update(overrides)
    return RemoteExecutorConfig(**settings)


def config_for(server, **overrides):
    """:func:`client_config` with :data:`TOKEN`: a client of the servers that tests start."""
    return client_config(server, TOKEN, **overrides)


def mode_config(server, token: str, mode: str):
    """
    A client config for the executor of :func:`mode_executor`, with generous
    timeouts (the test machine is loaded).
    """
    return client_config(
        server, token, timeout=30.0, heartbeat_timeout=15.0, requirements={"executor": f"exec-{mode}"}
    )


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Wait for ``predicate()`` to hold (polling the server's state), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


async def raw_session(url: str, token: str | None, requirements: dict | None = None, *, heartbeat_timeout: float = 5.0):
    """
    Pair and open the ``rpc`` data channel by hand, to send messages no real
    client would: returns ``(signaling, session, pc, rpc, events, lost)``,
    where ``events`` queues what the executor sends and ``lost`` resolves
    with the reason the channel was lost.
    """
    from remotemedia.rpc import RPCProtocol
    from remotemedia.signaling import SignalingClient
    from remotemedia.transport import RPC_LABEL, RPCChannel, make_offer, new_peer_connection, wait_open

    signaling = await SignalingClient.connect(url, token=token)
    session = await signaling.pair(requirements, timeout=15)
    pc = new_peer_connection()
    channel = pc.createDataChannel(RPC_LABEL)
    await make_offer(pc, session, 15)
    await wait_open(channel, 15, "test")
    events: asyncio.Queue = asyncio.Queue()
    lost = asyncio.get_running_loop().create_future()
    rpc = RPCChannel(
        channel,
        RPCProtocol(1 << 20),
        events.put_nowait,
        lambda why: lost.done() or lost.set_result(why),
        heartbeat_timeout=heartbeat_timeout,
    )
    return signaling, session, pc, rpc, events, lost
