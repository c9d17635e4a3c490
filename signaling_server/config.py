"""The signaling server's settings, one dataclass with a docstring on each field."""

from __future__ import annotations

from dataclasses import dataclass

from remotemedia.signaling.messages import MAX_MESSAGE_SIZE

from .web import DEFAULT_ROOT

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """
    How the signaling server behaves; every field has a working default.

    The command line (``python -m signaling_server --help``) sets the same
    fields.
    """

    #: Shared secret that executors and clients must present in ``register`` or
    #: ``pair``; it also signs session tickets. ``None`` runs an open server.
    token: str | None = None
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

    def __post_init__(self) -> None:
        if self.token is not None and (not isinstance(self.token, str) or not self.token):
            raise ValueError("token must be a non-empty string, or None for an open server")
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
