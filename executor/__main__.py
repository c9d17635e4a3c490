"""
Command line: ``python -m executor --signaling ws://HOST:PORT`` (also ``remotemedia-executor``).

Prints ``remotemedia-executor NAME registered with URL`` once it can take
sessions, and stops cleanly on SIGINT or SIGTERM (every session's objects get
their ``cleanup()``). Losing the signaling server later does not stop it: it
reconnects and registers again (with backoff, for as long as it runs), and its
sessions keep running meanwhile. Exit status: 0 when stopped, 1 when the
signaling server cannot be reached at start or refuses the executor (at start,
or on a reconnection, e.g. for a wrong token), 2 for bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from urllib.parse import urlsplit

from remotemedia.exceptions import RemoteMediaError

from .dispatch import ACCEPTS
from .executor import Executor, ExecutorConfig, default_name
from .registry import default_services, load_services
from .isolation import PROTECTIONS
from .session import MODES

__all__ = ["main", "parse_args", "add_executor_arguments", "executor_config", "setup_logging", "signaling_url"]


#: Seconds the open sessions may run on after SIGTERM (``--drain-timeout``).
DRAIN_TIMEOUT = 30.0


def signaling_url(url: str) -> str:
    """
    ``ws://HOST:PORT`` with the server's ``/ws`` path added when none is given;
    several comma-separated URLs (instances of one cluster) each get it.
    """
    if "," in url:
        return ",".join(signaling_url(one.strip()) for one in url.split(",") if one.strip())
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"--signaling must be a ws:// or wss:// URL such as ws://127.0.0.1:50052, not {url!r}")
    return url if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}/ws"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="remotemedia-executor",
        description="Run RemoteMedia objects for clients paired through a signaling server.",
    )
    parser.add_argument(
        "--signaling",
        default="ws://127.0.0.1:50052/ws",
        help="the signaling server to dial; several instances of one cluster, comma-separated, are tried in turn "
        "(default: %(default)s, the local './run signaling' or './run serve')",
    )
    parser.add_argument(
        "--executor-token",
        "--token",  # its old name: the credential is now the executor's own, not the clients' token
        dest="token",
        default=os.environ.get("REMOTEMEDIA_EXECUTOR_TOKEN") or None,
        help="the executor credential the signaling server was given (its --executor-token), or an "
        "executor token from 'python -m remotemedia token executor' (default: $REMOTEMEDIA_EXECUTOR_TOKEN, "
        "which other users cannot read in the process list, unlike this flag)",
    )
    parser.add_argument("--name", default=None, help="name to register under (default: HOST-PID)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT,
        metavar="S",
        help="on SIGTERM, take no new sessions and let open ones run this many seconds before ending them "
        "with reason 'draining' (clients with reconnect=True move); a second SIGTERM, or SIGINT, ends at once; "
        "0 ends at once (default: %(default)s)",
    )
    parser.add_argument(
        "--ca-file",
        default=os.environ.get("REMOTEMEDIA_CA_FILE") or None,
        metavar="PEM",
        help="CA certificates that may sign a wss:// server's certificate, for a server whose CA is "
        "your own (default: $REMOTEMEDIA_CA_FILE; without it, the system's CAs)",
    )
    parser.add_argument(
        "--ice-server", action="append", default=[], metavar="URL",
        help="a STUN URL of this executor's own (repeatable), used before the ICE servers the signaling "
        "server hands out with each session (TURN, which needs credentials, comes best from the server: "
        "its --ice-server and --turn-secret)",
    )
    parser.add_argument(
        "--direct-tls-cert", default=None, metavar="PEM",
        help="with wss:// signaling, the direct lane (--direct) is TLS too: its certificate chain, which must "
        "name the address clients dial (without it, no direct lane is offered with wss://)",
    )
    parser.add_argument("--direct-tls-key", default=None, metavar="PEM", help="private key of --direct-tls-cert")
    parser.add_argument(
        "--direct-announce", default=None, metavar="HOST",
        help="the host clients dial for --direct, when it is not the one listened on (behind NAT, a DNS name "
        "its certificate names; default: the --direct host, or this host's addresses for 0.0.0.0)",
    )
    add_executor_arguments(parser)
    return parser.parse_args(argv)


def add_executor_arguments(parser: argparse.ArgumentParser, *, accept: str | None = None, direct: str = "off") -> None:
    """
    The executor's limits and logging, shared with ``python -m remotemedia serve``
    (``accept``, ``direct``: its own defaults).
    """
    defaults = ExecutorConfig(signaling="")
    parser.add_argument(
        "--direct",
        default=direct,
        metavar="HOST:PORT",
        help="take the RPC of clients that reach HOST:PORT over TCP (the direct lane: much faster than the data "
        "channel for calls and arrays; port 0 for any; open it in the firewall to clients), 'off', or, for "
        "serve, 'auto': the server's own host, any free port (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sessions", type=int, default=defaults.max_sessions, help="sessions served at once (default: %(default)s)"
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=defaults.max_message_size,
        help="largest message accepted from a client, in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=defaults.connect_timeout,
        help="seconds for a paired client's offer, data channel and handshake (default: %(default)s)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=defaults.mode,
        help="process: each session's objects run in a worker process of their own, so a crash, leak or "
        "runaway loop ends only that session; inprocess: in the executor itself, for trusted code, the "
        "lowest latency and models shared between sessions (default: %(default)s)",
    )
    parser.add_argument(
        "--accept",
        choices=ACCEPTS,
        default=accept or defaults.accept,
        help="what clients may send: python (pickled Python objects: trusted clients only), wasm (WASM nodes "
        "only, which travel as data and run sandboxed: nothing is ever unpickled) or any (default: %(default)s)",
    )
    parser.add_argument(
        "--call-timeout",
        type=_seconds_or_none,
        default=defaults.call_timeout,
        help="seconds one call may run, 0 for no limit; a client's shorter RemoteExecutorConfig.timeout "
        "applies to its own calls (default: %(default)s)",
    )
    parser.add_argument(
        "--max-objects", type=int, default=defaults.max_objects, help="objects one session may hold (default: %(default)s)"
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        default=None,
        metavar="MB",
        help="memory each session's worker process may use, in MB (process mode; default: no cap)",
    )
    parser.add_argument(
        "--inflate-rate",
        type=int,
        default=defaults.inflate_rate // (1024 * 1024),
        metavar="MIB",
        help="MiB per second of compressed data one session may have decompressed; beyond it, messages are "
        "refused (rate_limited), so a decompression bomb cannot slow other sessions (default: %(default)s)",
    )
    parser.add_argument(
        "--services",
        action="append",
        default=[],
        metavar="MODULE:ATTRIBUTE",
        help="offer your own named services besides demo, effects and transcribe: ATTRIBUTE is a dict of "
        "name to node factory, or one factory (repeatable; see executor/registry.py)",
    )
    parser.add_argument(
        "--isolation",
        type=_protections,
        default=defaults.isolation,
        metavar="LIST",
        help=f"process mode: the protections to use where the machine offers them, comma-separated among "
        f"{','.join(PROTECTIONS)}, or none (default: all; the executor logs at start which ones it lacks)",
    )
    parser.add_argument(
        "--spare-workers",
        type=int,
        default=defaults.spare_workers,
        help="process mode: worker processes kept booted for the next sessions (default: %(default)s)",
    )
    parser.add_argument(
        "--no-fork-server",
        dest="fork_server",
        action="store_false",
        help="process mode: boot every worker's own interpreter (about 0.2 s of CPU each) instead of forking "
        "it from a warm one",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log lines shown (default: %(default)s; debug shows every message and state change)",
    )


def _protections(text: str) -> tuple[str, ...]:
    names = () if text == "none" else tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PROTECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"takes none or names among {','.join(PROTECTIONS)}, not {', '.join(unknown)}")
    return names


def _seconds_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes seconds (a number; 0 for no limit), not {text!r}") from None
    return None if value == 0 else value


def executor_config(args: argparse.Namespace, *, signaling: str, token: str | None, name: str) -> ExecutorConfig:
    """The :class:`ExecutorConfig` for parsed arguments (``ValueError`` for bad settings)."""
    services = default_services()
    for spec in args.services:
        services.update(load_services(spec))
    return ExecutorConfig(
        ca_file=getattr(args, "ca_file", None),  # only python -m executor has --ca-file
        ice_servers=list(getattr(args, "ice_server", [])),  # and --ice-server
        signaling=signaling,
        services=services,
        token=token,
        name=name,
        max_sessions=args.max_sessions,
        max_message_size=args.max_message_size,
        connect_timeout=args.connect_timeout,
        mode=args.mode,
        call_timeout=args.call_timeout,
        max_objects=args.max_objects,
        memory_limit=args.memory_limit,
        inflate_rate=args.inflate_rate * 1024 * 1024,
        accept=args.accept,
        isolation=args.isolation,
        spare_workers=args.spare_workers,
        fork_server=args.fork_server,
        direct=None if args.direct in (None, "off", "auto") else args.direct,  # "auto": serve sets it
        direct_tls_cert=getattr(args, "direct_tls_cert", None),  # only python -m executor has these
        direct_tls_key=getattr(args, "direct_tls_key", None),
        direct_announce=getattr(args, "direct_announce", None),
    )


def setup_logging(level: str) -> None:
    """Log to stderr; aioice logs every ICE check at INFO, so show it only when debugging."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["REMOTEMEDIA_LOG_LEVEL"] = level  # for the sessions' worker processes
    if level != "debug":
        logging.getLogger("aioice").setLevel(logging.WARNING)


async def _run(config: ExecutorConfig, drain_timeout: float = DRAIN_TIMEOUT) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    executor = Executor(config)
    drains: set[asyncio.Task] = set()

    def on_sigterm() -> None:
        # The first drains (see Executor.drain); a second ends at once.
        if executor.draining or drain_timeout <= 0:
            stop.set()
            return
        task = asyncio.create_task(executor.drain(drain_timeout), name="drain")
        task.add_done_callback(lambda _t: stop.set())
        drains.add(task)

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await executor.start()
    except RemoteMediaError as exc:
        print(f"remotemedia-executor: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the direct lane's address (--direct) cannot be listened on
        print(f"remotemedia-executor: cannot listen on --direct {config.direct}: {exc}", file=sys.stderr)
        return 1
    print(f"remotemedia-executor {config.name} registered with {config.signaling}", flush=True)
    serving = asyncio.create_task(executor.serve())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        for task in drains:
            task.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        await executor.close()
    if serving.done() and not serving.cancelled() and serving.exception() is not None:
        print(f"remotemedia-executor: {serving.exception()}", file=sys.stderr)
        return 1
    return 0


def _check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load CA certificates from --ca-file {path}: {exc}; pass a PEM file") from exc


def main(argv: list[str] | None = None) -> int:
    """Run the executor until interrupted; returns the exit status."""
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = executor_config(
            args, signaling=signaling_url(args.signaling), token=args.token, name=args.name or default_name()
        )
        if args.ca_file is not None:
            _check_ca_file(args.ca_file)
        config.direct_ssl_context()  # an unreadable --direct-tls-cert is a bad setting, said before starting
    except ValueError as exc:
        print(f"remotemedia-executor: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_run(config, args.drain_timeout))


if __name__ == "__main__":
    sys.exit(main())
