"""
A real ``redis-server`` for tests: started on a free port in a temporary
folder, with no persistence, and always stopped (:func:`running_redis`).

Debian's ``redis-server`` package provides it (``./run test`` installs it);
the tests that need it are skipped when it is missing and
``REMOTEMEDIA_REQUIRE_REDIS`` is unset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "running_redis", "redis_binary"]


def redis_binary() -> str | None:
    """Path of ``redis-server``, or ``None``."""
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One ``redis-server`` process; :meth:`stop` and :meth:`start` again keep its port (a restart)."""

    def __init__(self, folder: str) -> None:
        binary = redis_binary()
        if binary is None:
            if os.environ.get("REMOTEMEDIA_REQUIRE_REDIS"):
                raise RuntimeError("redis-server is not installed: apt-get install redis-server")
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.folder = Path(folder)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start it (on the same port as before) and wait until it answers."""
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGKILL: no goodbye, as a crash looks to its clients)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def running_redis():
    """Context manager: a started :class:`RedisServer`, always stopped and its folder removed."""
    with tempfile.TemporaryDirectory(prefix="redis-") as folder:
        server = RedisServer(folder)
        server.start()
        try:
            yield server
        finally:
            server.stop()
