"""The examples' shared helpers: where the server is (``--host``/``--port``/``--token``), or the embedded one (``--serve``); Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys

from remotemedia import RemoteExecutorConfig


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


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``--host``, ``--port``, ``--token`` and ``--serve``."""
    parser.add_argument("--host", default="localhost", help="signaling server host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50052, help="signaling server port (default: %(default)s)")
    parser.add_argument("--token", default=None, help="the server's token (default: $REMOTEMEDIA_TOKEN)")
    parser.add_argument("--serve", action="store_true", help="start the embedded server on a free port first")


def server_config(args: argparse.Namespace, stack: contextlib.ExitStack) -> RemoteExecutorConfig:
    """The config for the server the arguments name; with ``--serve``, the embedded one, stopped when ``stack`` closes."""
    if args.serve:
        args.host, args.port = "127.0.0.1", stack.enter_context(embedded_server())
    return RemoteExecutorConfig(host=args.host, port=args.port, auth_token=args.token)


def run_main(main) -> None:
    """Run an example's ``main()``; Ctrl-C stops it with one line and status 130, as shells expect."""
    try:
        main()
    except KeyboardInterrupt:
        # The pipeline has already stopped and cleaned up every node, remote ones included.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
