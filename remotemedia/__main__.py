"""
Command line: ``python -m remotemedia serve [--host H] [--port P]``,
``python -m remotemedia token client|executor ...`` to mint signed tokens
(:mod:`remotemedia.tokens`), and ``python -m remotemedia executors [--signaling
URL]`` to list the executors a signaling server offers (:mod:`remotemedia.discovery`).

Runs a signaling server and one executor in one process: everything a first
try needs, in one command. ``RemoteExecutorConfig()`` with its defaults
(localhost:50052) reaches it. Prints ``remotemedia serve listening on URL
(executor NAME)`` once both are ready, and stops cleanly on SIGINT or
SIGTERM. Exit status: 0 when stopped, 1 when the port is busy, 2 for bad
settings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import signal
import ssl
import sys
from typing import TYPE_CHECKING

from executor.__main__ import add_executor_arguments, setup_logging, signaling_url
from executor.__main__ import executor_config as make_executor_config
from signaling_server.__main__ import access_settings, add_access_arguments

from .tokens import add_token_command, run_token_command

if TYPE_CHECKING:
    from executor.executor import ExecutorConfig

__all__ = ["main", "parse_args", "dial_own_server"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m remotemedia", description="RemoteMedia tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a signaling server and one executor in this process",
        description=(
            "Run a signaling server and one executor in this process: everything a first try needs. "
            "RemoteExecutorConfig() with its defaults reaches it, and the browser demo page is served at / "
            "(the address is printed at start). Ctrl-C stops it."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=50052, help="port, 0 for a free one (default: %(default)s)")
    add_access_arguments(
        serve,
        executor_token_help="credential more executors present to join (default: $REMOTEMEDIA_EXECUTOR_TOKEN; "
        "the embedded executor needs none: with a --token or --token-secret and no --executor-token, a random "
        "one is made for it)",
    )
    # The embedded executor serves the developer's own code on their own
    # machine: Python objects and WASM nodes alike (python -m executor: python).
    # Its direct lane listens where the server does (port: any free one), so clients on this host get it at once.
    add_executor_arguments(serve, accept="any", direct="auto")
    add_token_command(commands)
    _add_executors_command(commands)
    return parser.parse_args(argv)


def _add_executors_command(commands) -> None:
    listing = commands.add_parser(
        "executors",
        help="list the executors a signaling server offers (discovery)",
        description=(
            "List the executors that a signaling server offers this client: name, services, GPU, free "
            "sessions out of capacity, load and version (--json: every field). A scoped client token sees "
            "only the executors and services it may use. Exit status: 0 listed, 1 refused or unreachable, "
            "2 bad settings."
        ),
    )
    listing.add_argument(
        "--signaling",
        default="ws://127.0.0.1:50052/ws",
        metavar="URL",
        help="the signaling server, e.g. ws://HOST:50052 (wss:// for TLS); several instances of one cluster, "
        "comma-separated, are tried in turn (default: %(default)s, the local 'python -m remotemedia serve')",
    )
    listing.add_argument(
        "--token", default=None,
        help="the client token (default: $REMOTEMEDIA_TOKEN, which keeps it out of the process list)",
    )
    listing.add_argument(
        "--ca-file", default=None, metavar="PATH",
        help="PEM file of the CA that signed a wss:// server's certificate (default: $REMOTEMEDIA_CA_FILE, "
        "else the system's CAs)",
    )
    listing.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="give up after this long (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="print a JSON list of every field instead of a table")


def _run_executors_command(args: argparse.Namespace) -> int:
    from .discovery import discover, table
    from .exceptions import RemoteMediaError
    from .remote import RemoteExecutorConfig

    try:
        urls = tuple(signaling_url(args.signaling).split(","))
        if args.ca_file is not None and not any(url.startswith("wss://") for url in urls):
            raise ValueError("--ca-file verifies a TLS server: give a wss:// URL to --signaling, or leave --ca-file out")
        config = RemoteExecutorConfig(
            signaling_urls=urls,
            auth_token=args.token,
            ssl_enabled=any(url.startswith("wss://") for url in urls),
            ca_file=args.ca_file,
        )
        executors = asyncio.run(discover(config, timeout=args.timeout))
    except KeyboardInterrupt:
        return 130  # Ctrl-C while waiting: the user's choice, not an error to explain
    except RemoteMediaError as exc:  # before ValueError: some of them are ValueErrors too
        print(f"remotemedia executors: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"remotemedia executors: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dataclasses.asdict(e) for e in executors], indent=2))
    else:
        print(table(executors))
        if not executors:
            print("remotemedia executors: no executor is registered there (or none this token may use)", file=sys.stderr)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from executor.executor import Executor, default_name
    from signaling_server.app import start_server
    from signaling_server.config import ServerConfig

    try:
        executor_token = args.executor_token
        if executor_token is None and (args.token is not None or args.token_secret is not None):
            # Clients need a credential here, so executors do too: one only this process knows.
            executor_token = secrets.token_urlsafe(32)
        server_config = ServerConfig(**{**access_settings(args), "executor_token": executor_token})
        server_config.ssl_context()  # unreadable certificate files are bad settings
        executor_config = make_executor_config(
            args, signaling="", token=executor_token, name=f"embedded-{default_name()}"
        )  # dial_own_server gives it the signaling URL, once the real port is known
    except ValueError as exc:
        print(f"remotemedia serve: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = await start_server(server_config, host=args.host, port=args.port)
    except OSError as exc:
        print(
            f"remotemedia serve: cannot listen on {args.host}:{args.port}: {exc}"
            + ("; is another server running there? pick another port with --port" if args.port else ""),
            file=sys.stderr,
        )
        return 1
    executor_config = dial_own_server(executor_config, args.host, server.port, tls=server.tls)
    direct = executor_config.direct
    if args.direct == "auto":  # where the server listens, on any free port
        direct = executor_config.signaling.split("://", 1)[1].rsplit(":", 1)[0] + ":0"
    if direct is not None:
        # With TLS, the direct lane shows the server's own certificate.
        executor_config = dataclasses.replace(
            executor_config, direct=direct, direct_tls_cert=server_config.tls_cert, direct_tls_key=server_config.tls_key
        )
    executor = Executor(executor_config)
    try:
        await executor.start()
        print(f"remotemedia serve listening on {server.url} (executor {executor_config.name})", flush=True)
        print(f"demo page: {server.page_url} (open it in a browser)", flush=True)
        serving = asyncio.create_task(executor.serve())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    finally:
        await executor.close()
        await server.close()
    return 0


def dial_own_server(config: ExecutorConfig, host: str, port: int, *, tls: bool) -> ExecutorConfig:
    """
    The embedded executor's ``config`` once its server listens on ``host:port``:
    a new config (``config`` is frozen) that dials that server.
    """
    # A wildcard address is reached on loopback.
    dial = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    scheme = "wss" if tls else "ws"
    signaling = f"{scheme}://{f'[{dial}]' if ':' in dial else dial}:{port}/ws"
    # With TLS it dials the socket this process listens on, over loopback: the
    # certificate (made for the public name) proves nothing there.
    return dataclasses.replace(config, signaling=signaling, ssl_context=_loopback_tls() if tls else None)


def _loopback_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m remotemedia``; returns the exit status."""
    args = parse_args(argv)
    if args.command == "token":
        return run_token_command(args)
    if args.command == "executors":
        return _run_executors_command(args)
    setup_logging(args.log_level)
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
