"""The examples' shared helper: the embedded server in a subprocess, for ``--serve``."""

from __future__ import annotations

import contextlib
import subprocess
import sys


@contextlib.contextmanager
def embedded_server():
    """``python -m remotemedia serve --port 0`` in a subprocess; yields its port, stops it at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "remotemedia", "serve", "--port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # "remotemedia serve listening on ws://127.0.0.1:PORT/ws (...)"
        if not line.startswith("remotemedia serve listening on "):
            raise SystemExit(f"the embedded server did not start: {line!r}")
        yield int(line.split("ws://127.0.0.1:")[1].split("/")[0])
    finally:
        proc.terminate()
        proc.wait(10)
