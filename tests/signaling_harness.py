"""
Start the real signaling server as a subprocess on a free port, for end-to-end
tests and benchmarks.

The server is asked for port 0 and prints the port it got, so there is no
race between picking a free port and binding it. Its log goes to a file that
is shown when a test fails to start it.
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

__all__ = ["ServerProcess", "running_server", "wait_until"]

ROOT = Path(__file__).resolve().parent.parent
_PREFIX = "remotemedia-signaling listening on "


class ServerProcess:
    """One ``python -m signaling_server`` process; :meth:`stop` ends it."""

    def __init__(self, *args: str, env: dict | None = None, start_timeout: float = 20.0) -> None:
        self.args = args
        self._log = tempfile.NamedTemporaryFile("w+", prefix="signaling-", suffix=".log", delete=False)
        # A token in the test runner's environment must not leak into the server.
        full_env = {k: v for k, v in os.environ.items() if k != "REMOTEMEDIA_TOKEN"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signaling_server", "--host", "127.0.0.1", "--port", "0", *args],
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
            self.stop()
            raise RuntimeError(f"signaling server did not start within {start_timeout} s:\n{self.log()}")
        if line is None or not line.startswith(_PREFIX):
            self.stop()
            raise RuntimeError(f"signaling server failed to start ({line!r}):\n{self.log()}")
        #: The websocket URL, ``ws://127.0.0.1:PORT/ws``.
        self.url = line[len(_PREFIX):].strip()
        #: The port it listens on.
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        #: Base of its HTTP endpoints.
        self.http_url = f"http://127.0.0.1:{self.port}"

    def _pump(self, lines: queue.Queue) -> None:
        for line in self.proc.stdout:
            lines.put(line)
        lines.put(None)

    def log(self) -> str:
        """What the server logged so far."""
        return Path(self._log.name).read_text()

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str, str]:
        """GET an HTTP path: (status, content type, body)."""
        with urllib.request.urlopen(self.http_url + path, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()

    def health(self) -> dict:
        """The parsed body of ``/healthz``."""
        status, _, body = self.get("/healthz")
        assert status == 200
        return json.loads(body)

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

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


@contextlib.contextmanager
def running_server(*args: str, env: dict | None = None):
    """Context manager: a :class:`ServerProcess` that is always stopped."""
    server = ServerProcess(*args, env=env)
    try:
        yield server
    finally:
        server.stop()


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Wait for ``predicate()`` to hold (polling the server's state), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
