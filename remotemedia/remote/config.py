"""``RemoteExecutorConfig``: where the executors are found, and how to talk to them."""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
from dataclasses import dataclass, field
from typing import Any

from remotemedia import validation as check

__all__ = ["RemoteExecutorConfig", "CA_FILE_ENV", "LANES"]

#: Environment variable naming the CA file that clients and executors verify the server with.
CA_FILE_ENV = "REMOTEMEDIA_CA_FILE"
#: The values of :attr:`RemoteExecutorConfig.lane`.
LANES = ("auto", "direct", "datachannel")


class _Requirements(dict):
    """A dict that cannot change: a config's requirements are part of its hash (and so of its identity)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError(
            "RemoteExecutorConfig.requirements cannot change (the config is frozen, and they are part of its "
            "hash); make a new config: dataclasses.replace(config, requirements={...})"
        )

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return (_Requirements, (dict(self),))


@dataclass(frozen=True)
class RemoteExecutorConfig:
    """
    Connection settings for remote execution.

    ``host`` and ``port`` name the signaling server (the "negotiation port"),
    which pairs the client with an executor; calls then go peer to peer over
    WebRTC. The config is immutable (change it with :func:`dataclasses.replace`)
    and round-trips through pickle, :meth:`to_dict`/:meth:`from_dict` and JSON,
    so it can be stored in a node's configuration.
    """

    #: Signaling server hostname or IP.
    host: str = "localhost"
    #: Signaling server port (``python -m remotemedia serve`` listens on 50052).
    port: int = 50052
    #: Use ``wss://`` (TLS) to reach the signaling server; its certificate is verified.
    ssl_enabled: bool = False
    #: Largest message sent or accepted, in bytes (10 MiB); larger ones raise ``MessageTooLargeError``.
    max_message_size: int = 10 * 1024 * 1024
    #: When the connection drops, pair again (another executor if that one is gone) and
    #: re-create the remote objects; ``False``: raise ``ConnectionLostError`` and stay closed.
    reconnect: bool = True
    #: The signaling server's token; ``None`` reads ``REMOTEMEDIA_TOKEN`` from the environment.
    auth_token: str | None = None
    #: Seconds one remote call (or one item of a stream) may take before ``RemoteTimeoutError``;
    #: the executor stops a call that runs longer. It bounds creating an object too, so raise it
    #: for objects whose ``initialize()`` loads a big model. A duplex stream's wait does not count
    #: the time its own input source is idle (a microphone in a pause): that wait is the caller's.
    timeout: float = 30.0
    #: Seconds for pairing, the WebRTC handshake and uploading an object.
    connect_timeout: float = 15.0
    #: STUN/TURN servers: URLs such as ``"stun:stun.example.org:3478"``, or dicts
    #: ``{"urls": ..., "username": ..., "credential": ...}``. Empty for loopback and LAN.
    ice_servers: tuple = ()
    #: Executor requirements for pairing: ``{"gpu": True}``, ``{"executor": "name"}``...
    requirements: dict = field(default_factory=dict)
    #: Seconds between data-channel pings, and of silence before the executor counts as lost.
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    #: Whether results the codec cannot carry may come back as pickles, which this
    #: client then unpickles: unpickling runs code the executor chooses. ``True``
    #: (the default) keeps remote objects transparent (any return value works) and
    #: trusts the executors that the signaling server's executor credential admits;
    #: ``False`` unpickles nothing an executor sends, and such a result raises
    #: ``PickleRefusedError``: use it with executors you do not trust that far.
    allow_pickled_results: bool = True
    #: PEM file of the CA certificates that may sign the server's certificate (with
    #: ``ssl_enabled``), for a server whose CA is your own; ``None`` reads
    #: ``REMOTEMEDIA_CA_FILE``, and without it the system's CAs are trusted.
    ca_file: str | None = None
    #: Several instances of one signaling cluster (``ws://`` or ``wss://`` URLs), tried
    #: in turn: the first that answers pairs, and a reconnection tries them again. Empty:
    #: the single server of :attr:`host` and :attr:`port`.
    signaling_urls: tuple = ()
    #: Which lane the calls take (see :mod:`remotemedia.transport.direct`): ``"auto"`` a direct TCP
    #: connection to the executor when it offers one and it is reachable, else the WebRTC data
    #: channel; ``"direct"`` only the direct lane (connecting fails without it); ``"datachannel"``
    #: never dials directly. Media tracks always go over WebRTC.
    lane: str = "auto"

    def __post_init__(self) -> None:
        # Checked once, here, with the checks every config shares (remotemedia/validation.py).
        check.text("host", self.host)
        check.port("port", self.port)
        for name in ("ssl_enabled", "reconnect", "allow_pickled_results"):
            check.flag(name, getattr(self, name))
        check.at_least("max_message_size", self.max_message_size, 1024, "1024 bytes")
        for name in ("timeout", "connect_timeout", "heartbeat_interval", "heartbeat_timeout"):
            check.positive(name, getattr(self, name))
        check.longer("heartbeat_timeout", self.heartbeat_timeout, "heartbeat_interval", self.heartbeat_interval)
        check.choice("lane", self.lane, LANES)
        check.optional_text("ca_file", self.ca_file, "a path (a string)")
        if self.ca_file is not None and not self.ssl_enabled:
            raise ValueError("ca_file verifies a TLS server: set ssl_enabled=True too")
        check.optional_text("auth_token", self.auth_token, "a string", empty=True)
        object.__setattr__(self, "ice_servers", check.ice_servers("ice_servers", self.ice_servers))
        urls = check.sequence("signaling_urls", self.signaling_urls, "ws:// or wss:// URLs (or use host and port)")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
                raise ValueError(f"each of signaling_urls must be a ws:// or wss:// URL, not {url!r}")
        object.__setattr__(self, "signaling_urls", urls)
        if not isinstance(self.requirements, dict):
            raise ValueError(f"requirements must be a dict, not {self.requirements!r}")
        object.__setattr__(self, "requirements", _Requirements(self.requirements))

    @property
    def url(self) -> str:
        """The signaling server's websocket URL."""
        scheme = "wss" if self.ssl_enabled else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/ws"

    @property
    def urls(self) -> tuple[str, ...]:
        """The signaling URLs to try in turn: :attr:`signaling_urls`, else :attr:`url`."""
        return self.signaling_urls or (self.url,)

    @property
    def token(self) -> str | None:
        """The token to present: :attr:`auth_token`, else ``$REMOTEMEDIA_TOKEN``, else none."""
        return self.auth_token if self.auth_token is not None else (os.environ.get("REMOTEMEDIA_TOKEN") or None)

    @property
    def tls_ca_file(self) -> str | None:
        """The CA file to verify the server with: :attr:`ca_file`, else ``$REMOTEMEDIA_CA_FILE``, else none."""
        return self.ca_file if self.ca_file is not None else (os.environ.get(CA_FILE_ENV) or None)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context that verifies the server (``None`` without :attr:`ssl_enabled`)."""
        if not self.ssl_enabled:
            return None
        ca_file = self.tls_ca_file
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load CA certificates from {ca_file!r} (ca_file / ${CA_FILE_ENV}): {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists, dicts, numbers, strings)."""
        out = dataclasses.asdict(self)
        out["ice_servers"] = list(self.ice_servers)
        out["signaling_urls"] = list(self.signaling_urls)
        out["requirements"] = dict(self.requirements)  # a plain dict of the caller's own
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RemoteExecutorConfig:
        """The inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RemoteExecutorConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def __hash__(self) -> int:
        # Configs key the grouping of remote nodes onto sessions; the dict field needs help.
        return hash(json.dumps(self.to_dict(), sort_keys=True, default=str))

    def __repr__(self) -> str:
        # Never print the token.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if shown["auth_token"] is not None:
            shown["auth_token"] = "***"
        return "RemoteExecutorConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
