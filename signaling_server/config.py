"""The signaling server's settings, one dataclass with a docstring on each field."""

from __future__ import annotations

from dataclasses import dataclass

from remotemedia.signaling.messages import MAX_MESSAGE_SIZE
from remotemedia.tokens import check_secret

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
    #: How often executors are asked to send ``heartbeat``, in seconds.
    heartbeat_interval: float = 5.0
    #: An executor silent for this long is dropped and its sessions get ``bye``.
    heartbeat_timeout: float = 15.0
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

    @property
    def open_to_clients(self) -> bool:
        """Whether clients pair with no credential (no ``token`` and no ``token_secret``)."""
        return self.token is None and self.token_secret is None

    @property
    def open_to_executors(self) -> bool:
        """Whether executors register with no credential: only on a server with none at all."""
        return self.open_to_clients and self.executor_token is None

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("token must be a non-empty string, or None for an open server")
        if self.executor_token is not None and (not isinstance(self.executor_token, str) or not self.executor_token):
            raise ValueError("executor_token must be a non-empty string, or None")
        if self.executor_token is not None and self.executor_token == self.token:
            raise ValueError(
                "executor_token must differ from token: clients hold the token, and a client "
                "credential must never register an executor"
            )
        if self.token_secret is not None:
            check_secret(self.token_secret)
        for name in ("heartbeat_interval", "heartbeat_timeout", "hello_timeout", "rate_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"heartbeat_timeout ({self.heartbeat_timeout} s) must be longer than "
                f"heartbeat_interval ({self.heartbeat_interval} s)"
            )
        for name in ("max_message_size", "rate_burst", "max_sessions_per_client", "outbox_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
