"""
Command line: ``python -m signaling_server`` (also ``remotemedia-signaling``).

Prints one line, ``remotemedia-signaling listening on ws://HOST:PORT/ws``
(``wss://`` with ``--tls-cert``), once
it accepts connections (with the real port when ``--port 0`` asked for a free
one), and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .app import start_server
from .config import ServerConfig

__all__ = ["main", "parse_args", "add_access_arguments", "access_settings"]

_DEFAULTS = ServerConfig()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="remotemedia-signaling",
        description="Pair RemoteMedia clients with executors and relay their WebRTC signaling.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=50052, help="port, 0 for a free one (default: %(default)s)")
    add_access_arguments(parser)
    # The executors' heartbeat on their signaling connection, not the sessions'
    # data-channel heartbeat; the short names are the flags' old names.
    parser.add_argument(
        "--signaling-heartbeat-timeout",
        "--heartbeat-timeout",
        dest="signaling_heartbeat_timeout",
        type=float,
        default=_DEFAULTS.signaling_heartbeat_timeout,
        help="drop executors silent on their signaling connection for this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--signaling-heartbeat-interval",
        "--heartbeat-interval",
        dest="signaling_heartbeat_interval",
        type=float,
        default=None,
        help="how often executors should send heartbeats on their signaling connection "
        "(default: a third of the timeout, at most 5)",
    )
    parser.add_argument(
        "--hello-timeout",
        type=float,
        default=_DEFAULTS.hello_timeout,
        help="close connections that send no register or pair within this many seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=_DEFAULTS.rate_limit,
        help="messages per second allowed per connection (default: %(default)s)",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        default=_DEFAULTS.rate_burst,
        help="burst above the rate limit (default: %(default)s)",
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=_DEFAULTS.max_message_size,
        help="largest message in bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sessions-per-client",
        type=int,
        default=_DEFAULTS.max_sessions_per_client,
        help="open sessions allowed per client connection (default: %(default)s)",
    )
    parser.add_argument(
        "--web-root",
        default=_DEFAULTS.web_root,
        metavar="DIR",
        help="folder of the browser demo page served at / ('' serves none; default: the project's web_demo)",
    )
    # -- transport: connection limits (TLS: add_access_arguments) --
    parser.add_argument(
        "--max-connections",
        type=int,
        default=_DEFAULTS.max_connections,
        help="websocket connections open at once; more are closed with code 4503 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=int,
        default=_DEFAULTS.max_connections_per_address,
        help="connections open at once from one address (IPv6: one /64); more are closed with code 4429; "
        "raise it behind a reverse proxy, where all come from one address (default: %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=_DEFAULTS.idle_timeout,
        help="close authenticated connections that are neither a registered executor nor in a session "
        "for this many seconds, with code 4408 (default: %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def add_access_arguments(parser: argparse.ArgumentParser, *, executor_token_help: str | None = None) -> None:
    """
    Who may connect and how: credentials, TLS, ICE servers and the shared
    Redis. Also ``python -m remotemedia serve``'s, which embeds this server;
    :func:`access_settings` turns them into :class:`ServerConfig` fields.
    """
    parser.add_argument(
        "--token",
        default=os.environ.get("REMOTEMEDIA_TOKEN") or None,
        help="client credential: the secret clients present to pair (default: $REMOTEMEDIA_TOKEN, "
        "which other users cannot read in the process list, unlike this flag; "
        "it can never register an executor)",
    )
    parser.add_argument(
        "--executor-token",
        default=os.environ.get("REMOTEMEDIA_EXECUTOR_TOKEN") or None,
        help=executor_token_help
        or "executor credential: the secret executors present to register, which clients never hold "
        "(default: $REMOTEMEDIA_EXECUTOR_TOKEN; with no credential at all the server is open to anyone "
        "who can reach it, for localhost development)",
    )
    parser.add_argument(
        "--token-secret",
        default=os.environ.get("REMOTEMEDIA_TOKEN_SECRET") or None,
        help="secret of at least 32 bytes that signs scoped, expiring tokens for both roles, minted with "
        "'python -m remotemedia token' (default: $REMOTEMEDIA_TOKEN_SECRET)",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="PEM",
        help="certificate chain: serve only TLS (https:// and wss://) with it (default: plain text)",
    )
    parser.add_argument(
        "--tls-key", default=None, metavar="PEM", help="private key of --tls-cert (default: in the --tls-cert file)"
    )
    # -- ICE servers for clients and executors (README, "Across NATs and firewalls: TURN") --
    parser.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN or TURN URL handed to clients, executors and the browser page with each session "
        "(repeatable: list turn:HOST:PORT?transport=udp and ?transport=tcp for networks that block UDP)",
    )
    parser.add_argument(
        "--turn-secret",
        default=os.environ.get("REMOTEMEDIA_TURN_SECRET") or None,
        help="the TURN server's shared secret (coturn --use-auth-secret --static-auth-secret): each session "
        "gets TURN credentials minted from it, valid --turn-ttl seconds (default: $REMOTEMEDIA_TURN_SECRET)",
    )
    parser.add_argument(
        "--turn-ttl",
        type=float,
        default=_DEFAULTS.turn_ttl,
        help="seconds the minted TURN credentials stay valid (default: %(default)s)",
    )
    # -- the cluster (README, "Deploying several instances") --
    parser.add_argument(
        "--redis",
        default=os.environ.get("REMOTEMEDIA_REDIS") or None,
        metavar="URL",
        help="redis://HOST:PORT/DB: share executors and relay messages with every instance given the same URL "
        "(default: $REMOTEMEDIA_REDIS; none: a standalone server with its registry in memory)",
    )


def access_settings(args: argparse.Namespace) -> dict:
    """The :class:`ServerConfig` fields that :func:`add_access_arguments` gives."""
    return {
        "token": args.token,
        "executor_token": args.executor_token,
        "token_secret": args.token_secret,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "ice_servers": tuple(args.ice_server),
        "turn_secret": args.turn_secret,
        "turn_ttl": args.turn_ttl,
        "redis": args.redis,
    }


def _config(args: argparse.Namespace) -> ServerConfig:
    interval = args.signaling_heartbeat_interval
    if interval is None:
        interval = min(_DEFAULTS.signaling_heartbeat_interval, args.signaling_heartbeat_timeout / 3)
    return ServerConfig(
        signaling_heartbeat_interval=interval,
        signaling_heartbeat_timeout=args.signaling_heartbeat_timeout,
        hello_timeout=args.hello_timeout,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        max_message_size=args.max_message_size,
        max_sessions_per_client=args.max_sessions_per_client,
        web_root=args.web_root or None,
        max_connections=args.max_connections,
        max_connections_per_address=args.max_connections_per_address,
        idle_timeout=args.idle_timeout,
        **access_settings(args),
    )


async def _serve(config: ServerConfig, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await start_server(config, host=host, port=port)
    print(f"remotemedia-signaling listening on {server.url}", flush=True)
    if config.web_root is not None:
        print(f"demo page: {server.page_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    """Run the signaling server until interrupted; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = _config(args)
        config.ssl_context()  # an unreadable certificate or key is a bad setting, said before listening
    except ValueError as exc:
        print(f"remotemedia-signaling: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.host, args.port))
    except OSError as exc:
        print(
            f"remotemedia-signaling: cannot listen on {args.host}:{args.port}: {exc}"
            + ("; is another server running there? pick another port with --port" if args.port else ""),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
