"""The signaling server's settings, one dataclass with a docstring on each field."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from remotemedia import validation as check
from remotemedia.signaling.messages import MAX_MESSAGE_SIZE
from remotemedia.tokens import check_secret

from .turn import DEFAULT_TURN_TTL
from .web import DEFAULT_ROOT

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """
    How the signaling server behaves; every field has a working default.

    The command line (``python -m signaling_server --help``) sets the same
    fields.
    """

    #: Client credential: a shared secret that clients present in ``pair``. It
    #: can never register an executor. ``None`` (with no ``token_secret``):
    #: clients need no credential.
    token: str | None = None
    #: Executor credential: a shared secret that executors present in
    #: ``register``, which clients never hold. ``None`` (with no ``token_secret``):
    #: executors can register only on a server with no credentials at all.
    executor_token: str | None = None
    #: Secret (at least 32 bytes) that signs scoped, expiring tokens for both
    #: roles (:mod:`remotemedia.tokens`; ``python -m remotemedia token``).
    token_secret: str | None = None
    #: How often executors are asked to send ``heartbeat`` on their signaling
    #: connection, in seconds (``--signaling-heartbeat-interval``). Not the
    #: data-channel heartbeat of a session (``heartbeat_interval`` of
    #: ``RemoteExecutorConfig`` and ``ExecutorConfig``), which this server never sees.
    signaling_heartbeat_interval: float = 5.0
    #: An executor silent on its signaling connection for this long is dropped
    #: and its sessions get ``bye`` (``--signaling-heartbeat-timeout``).
    signaling_heartbeat_timeout: float = 15.0
    #: A connection that has not sent a valid ``register`` or ``pair`` within
    #: this many seconds is closed.
    hello_timeout: float = 10.0
    #: Largest accepted message, in bytes.
    max_message_size: int = MAX_MESSAGE_SIZE
    #: Sustained messages per second allowed from one connection.
    rate_limit: float = 50.0
    #: Messages one connection may send in a burst above ``rate_limit``.
    rate_burst: int = 200
    #: Open sessions allowed on one client connection.
    max_sessions_per_client: int = 16
    #: Messages queued for one slow connection before it is closed.
    outbox_size: int = 1024
    #: Folder of the browser demo page served at ``/``; ``None`` serves no page.
    web_root: str | None = str(DEFAULT_ROOT)

    # -- ICE servers handed to both ends of each session (signaling_server/turn.py) --
    #: STUN/TURN URLs (``stun:host:3478``, ``turn:host:3478?transport=tcp``) given
    #: to clients and executors in ``paired`` and ``session`` (``--ice-server``).
    ice_servers: tuple = ()
    #: The TURN server's shared secret (coturn ``--static-auth-secret``): each
    #: session's TURN URLs come with credentials minted from it (``--turn-secret``).
    turn_secret: str | None = None
    #: Seconds those credentials stay valid.
    turn_ttl: float = DEFAULT_TURN_TTL

    @property
    def open_to_clients(self) -> bool:
        """Whether clients pair with no credential (no ``token`` and no ``token_secret``)."""
        return self.token is None and self.token_secret is None

    @property
    def open_to_executors(self) -> bool:
        """Whether executors register with no credential: only on a server with none at all."""
        return self.open_to_clients and self.executor_token is None

    # -- transport: connection limits and TLS (see README, "Deploying on a public network") --
    #: Most websocket connections open at once; more are closed with code 4503 (``server_full``).
    max_connections: int = 1000
    #: Most open at once from one address (an IPv6 /64); more are closed with code 4429.
    max_connections_per_address: int = 100
    #: An authenticated connection that is neither a registered executor nor
    #: in a session for this many seconds is closed (``idle_timeout``, code 4408).
    idle_timeout: float = 30.0
    #: PEM certificate chain: with :attr:`tls_key`, the server speaks only TLS
    #: (``https://`` and ``wss://``); ``None`` serves plain text.
    tls_cert: str | None = None
    #: PEM private key of :attr:`tls_cert` (``None``: the key is in the ``tls_cert`` file).
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS."""
        return self.tls_cert is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """
        The server's TLS context (``None`` without :attr:`tls_cert`); raises
        ``ValueError`` naming the file when the certificate or key cannot be loaded.
        """
        if self.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            files = self.tls_cert if self.tls_key is None else f"{self.tls_cert} and {self.tls_key}"
            raise ValueError(
                f"cannot load the TLS certificate and key from {files}: {exc}; pass a PEM certificate "
                "chain (--tls-cert) and its private key (--tls-key)"
            ) from exc
        return context

    # -- cluster: several instances sharing Redis (see README, "Deploying several instances") --
    #: ``redis://HOST:PORT/DB``: share the executor registry and relay messages
    #: with every instance given the same URL; ``None``: a standalone server,
    #: its registry in memory.
    redis: str | None = None
    # -- end cluster --

    def __post_init__(self) -> None:
        # Checked once, here, with the checks every config shares (remotemedia/validation.py).
        check.optional_text("token", self.token, none="for an open server")
        check.optional_text("executor_token", self.executor_token)
        if self.executor_token is not None and self.executor_token == self.token:
            raise ValueError(
                "executor_token must differ from token: clients hold the token, and a client "
                "credential must never register an executor"
            )
        if self.token_secret is not None:
            check_secret(self.token_secret)
        if self.redis is not None and not str(self.redis).startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis must be a URL like redis://HOST:6379/0, not {self.redis!r}")
        for name in ("signaling_heartbeat_interval", "signaling_heartbeat_timeout", "hello_timeout", "idle_timeout", "turn_ttl"):
            check.positive(name, getattr(self, name))
        check.positive("rate_limit", self.rate_limit, "messages per second")
        check.longer(
            "signaling_heartbeat_timeout", self.signaling_heartbeat_timeout,
            "signaling_heartbeat_interval", self.signaling_heartbeat_interval,
        )
        object.__setattr__(self, "ice_servers", check.ice_servers("ice_servers", self.ice_servers, urls_only=True))
        check.optional_text("turn_secret", self.turn_secret)
        if self.turn_secret is not None and not any(u.startswith(("turn:", "turns:")) for u in self.ice_servers):
            raise ValueError("turn_secret signs TURN credentials: give the TURN server's URL too (--ice-server turn:HOST:PORT)")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert: pass the certificate chain too (--tls-cert)")
        for name in (
            "max_connections", "max_connections_per_address",
            "max_message_size", "rate_burst", "max_sessions_per_client", "outbox_size",
        ):
            check.positive_int(name, getattr(self, name))
