"""
The hub: the signaling server's state machine, without I/O.

It is fed events (a connection opened, a text message arrived, a connection
went away, the clock ticked) with the current time, and answers with
*actions*: :class:`Send` a message to a connection, or :class:`Close` one.
The aiohttp application (:mod:`signaling_server.app`) only moves websocket
messages in and out and carries the actions out, so every rule here
(authentication, roles, pairing, relay, rate limits, heartbeat expiry) is
tested by calling methods, with no network and no sleeps.

Roles: a connection starts anonymous. A valid ``register`` makes it an
executor; a valid ``pair`` makes it a client. Unless the server is open, that
first message must carry a credential of its role (:mod:`signaling_server.auth`
decides), or the connection is told why (``unauthorized``, ``wrong_role``,
``token_expired``) and closed.

Tickets: each pairing's ticket is an HMAC signed with a secret this hub draws
at random and shows no one. The executor receives it in ``session`` over its
own authenticated connection and admits only the peer that shows that same
ticket; it never needs, and never gets, the secret. So no credential anyone
else holds can mint a ticket, and a client credential cannot obtain the
executor's side of a session.

Executor names are bound to credentials: the first executor credential to
register a name owns it for the server's lifetime (until it unregisters), so
no other credential can take the name, in a reconnection window included; a
token minted for a name owns it outright, across restarts of the server too.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from remotemedia.exceptions import SignalingError
from remotemedia.signaling import messages
from remotemedia.signaling.ticket import make_ticket

from .auth import OPEN, Credential, Refusal, authenticate, name_refusal, role_refusal, scope_refusal
from .config import ServerConfig
from .ratelimit import TokenBucket
from .registry import ExecutorRecord, Registry, SessionRecord

__all__ = ["Send", "Close", "Hub", "Stats", "POLICY_VIOLATION"]

logger = logging.getLogger(__name__)

#: Websocket close code for a connection that broke the rules (RFC 6455).
POLICY_VIOLATION = messages.CLOSE_POLICY_VIOLATION


@dataclass(frozen=True)
class Send:
    """Action: send ``message`` (a dict, JSON-encoded by the caller) on connection ``conn``."""

    conn: str
    message: dict


@dataclass(frozen=True)
class Close:
    """Action: close connection ``conn`` with a websocket close code, after what was sent before."""

    conn: str
    code: int
    reason: str


@dataclass
class Stats:
    """Counters for ``/metrics``; the gauges are read off the registry."""

    #: Connections accepted since start.
    connections_total: int = 0
    #: Pairings made since start.
    pairings_total: int = 0
    #: Relayed messages, by type.
    relayed_total: Counter = field(default_factory=Counter)
    #: Error messages sent, by code.
    errors_total: Counter = field(default_factory=Counter)


@dataclass(eq=False)
class _Connection:
    id: str
    opened_at: float
    bucket: TokenBucket
    #: What it authenticated as (with its first ``register`` or ``pair``), or ``None`` yet.
    credential: Credential | None
    role: str | None = None  # None, "executor" or "client"
    identified: bool = False  # ever sent a valid register or pair
    closing: bool = False
    executor: str | None = None  # executor name, for role "executor"
    sessions: set[str] = field(default_factory=set)  # for role "client"
    idle_since: float | None = None  # identified, yet neither registered nor in a session: since when


class Hub:
    """Signaling state: connections, the executor registry, sessions and statistics."""

    def __init__(self, config: ServerConfig | None = None, *, wall_clock: Callable[[], float] = time.time) -> None:
        """``wall_clock``: Unix time, for token expiry (the other events carry a monotonic ``now``)."""
        self.config = config or ServerConfig()
        self.registry = Registry()
        self.stats = Stats()
        self._conns: dict[str, _Connection] = {}
        self._wall_clock = wall_clock
        # Signs tickets; never leaves this object (see the module docstring).
        self._ticket_secret = secrets.token_urlsafe(32)
        # Executor name -> id of the credential that owns it.
        self._owners: dict[str, str] = {}

    # -- events ------------------------------------------------------------------

    def open(self, now: float) -> str:
        """A websocket connected; returns the id that names it in actions."""
        conn_id = secrets.token_urlsafe(9)
        self._conns[conn_id] = _Connection(
            id=conn_id,
            opened_at=now,
            bucket=TokenBucket(self.config.rate_limit, self.config.rate_burst, now),
            credential=OPEN if self.config.open_to_executors else None,
        )
        self.stats.connections_total += 1
        return conn_id

    def receive(self, conn_id: str, data: str | bytes, now: float) -> list:
        """A message arrived on ``conn_id``; returns the actions it causes."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing:
            return []
        if not conn.bucket.take(now):
            return self._refuse(
                conn,
                "rate_limited",
                f"more than {self.config.rate_limit:g} messages per second "
                f"(burst {self.config.rate_burst}); closing",
            )
        try:
            message = messages.parse(data, max_size=self.config.max_message_size)
        except SignalingError as exc:
            if conn.credential is None:
                return self._refuse(
                    conn, "unauthorized", f"{exc}; the first message must be 'register' or 'pair' with a credential"
                )
            return [self._error(conn, exc.code, str(exc))]
        kind = message["type"]
        if conn.credential is None:
            if kind not in ("register", "pair"):
                return self._refuse(
                    conn,
                    "unauthorized",
                    f"the first message must be 'register' or 'pair' with a credential, not {kind!r}",
                )
            credential = authenticate(self.config, kind, message.get("token"), self._wall_clock())
            if isinstance(credential, Refusal):
                return self._refusal(conn, credential, message)
            conn.credential = credential
        if conn.role == "executor":
            record = self.registry.executors.get(conn.executor)
            if record is not None:
                record.last_seen = now
        return getattr(self, f"_on_{kind}")(conn, message, now)

    def close(self, conn_id: str, now: float) -> list:
        """The websocket of ``conn_id`` is gone; the other ends of its sessions get ``bye``."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        if conn.role == "executor":
            return self._drop_executor(conn, f"executor {conn.executor!r} disconnected")
        if conn.role == "client":
            return self._end_client_sessions(conn, "client disconnected")
        return []

    def tick(self, now: float) -> list:
        """
        Drop executors whose heartbeats stopped, anonymous connections that
        never said hello, and authenticated ones idle past ``idle_timeout``.
        """
        actions: list = []
        for conn in list(self._conns.values()):
            if conn.closing:
                continue
            if conn.role == "executor":
                record = self.registry.executors[conn.executor]
                silent = now - record.last_seen
                if silent > self.config.heartbeat_timeout:
                    logger.warning("executor %r missed heartbeats for %.1f s; dropping it", record.name, silent)
                    actions += self._drop_executor(
                        conn, f"executor {record.name!r} stopped sending heartbeats"
                    )
                    actions += self._refuse(
                        conn,
                        "heartbeat_timeout",
                        f"no heartbeat for {silent:.1f} s (limit {self.config.heartbeat_timeout:g} s); "
                        "register again",
                    )
            elif not conn.identified and now - conn.opened_at > self.config.hello_timeout:
                actions += self._refuse(
                    conn,
                    "hello_timeout",
                    f"no 'register' or 'pair' within {self.config.hello_timeout:g} s",
                )
            elif conn.identified:
                actions += self._check_idle(conn, now)
        return actions

    def _check_idle(self, conn: _Connection, now: float) -> list:
        # An authenticated connection that holds nothing (a client whose pair
        # found no executor, or whose sessions ended; an executor that
        # unregistered) costs a socket and buys nothing: it may wait a while
        # (a client retrying a pair), not for ever. Measured from the first
        # tick that sees it idle, so up to one tick (at most 1 s) late.
        if conn.role == "executor" or conn.sessions:
            conn.idle_since = None
            return []
        if conn.idle_since is None:
            conn.idle_since = now
            return []
        if now - conn.idle_since <= self.config.idle_timeout:
            return []
        return self._refuse(
            conn,
            "idle_timeout",
            f"neither registered as an executor nor in a session for {self.config.idle_timeout:g} s; "
            "connect again when there is work",
            close_code=messages.CLOSE_IDLE_TIMEOUT,
        )

    # -- queries -----------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        """Open websocket connections."""
        return len(self._conns)

    def health(self) -> dict:
        """The body of ``/healthz``."""
        return {
            "status": "ok",
            "executors": len(self.registry.executors),
            "sessions": len(self.registry.sessions),
        }

    # -- message handlers ----------------------------------------------------------

    def _on_register(self, conn: _Connection, message: dict, now: float) -> list:
        name = message["name"]
        if conn.role is not None:
            already = f"as executor {conn.executor!r}" if conn.role == "executor" else "as a client"
            return [self._error(conn, "not_allowed", f"this connection is already registered {already}")]
        credential = conn.credential
        refusal = role_refusal(self.config, credential, "executor") or name_refusal(
            credential, name, self._owners.get(name)
        )
        if refusal is not None:
            return self._refusal(conn, refusal, message)
        if name in self.registry.executors:
            return [
                self._error(
                    conn,
                    "name_taken",
                    f"an executor named {name!r} is already registered; pick another name",
                )
            ]
        caps = message.get("capabilities", {})
        record = ExecutorRecord(
            name=name,
            conn=conn.id,
            capacity=message["capacity"],
            gpu=caps.get("gpu", False),
            models=tuple(caps.get("models", ())),
            services=tuple(caps.get("services", ())),
            last_seen=now,
        )
        self.registry.add_executor(record)
        if credential.role is not None:
            self._owners[name] = credential.id
        conn.role, conn.executor, conn.identified = "executor", name, True
        logger.info(
            "executor %r registered (capacity %d, %s; credential %s)",
            name, record.capacity, record.capabilities(), credential.label,
        )
        return [
            Send(
                conn.id,
                {
                    "type": "registered",
                    "name": name,
                    "heartbeat_interval": float(self.config.heartbeat_interval),
                    "heartbeat_timeout": float(self.config.heartbeat_timeout),
                },
            )
        ]

    def _on_heartbeat(self, conn: _Connection, message: dict, now: float) -> list:
        if conn.role != "executor":
            return [self._error(conn, "not_allowed", "'heartbeat' is for registered executors")]
        record = self.registry.executors[conn.executor]
        record.load = message["load"]
        record.reported_sessions = message["sessions"]
        return []

    def _on_unregister(self, conn: _Connection, message: dict, now: float) -> list:
        if conn.role != "executor":
            return [self._error(conn, "not_allowed", "'unregister' is for registered executors")]
        if self._owners.get(conn.executor) == conn.credential.id:
            del self._owners[conn.executor]  # given up on purpose: another credential may take it
        actions = self._drop_executor(conn, f"executor {conn.executor!r} unregistered")
        return actions + [Send(conn.id, {"type": "unregistered"})]

    def _on_pair(self, conn: _Connection, message: dict, now: float) -> list:
        request = {"request": message["request"]} if "request" in message else {}
        if conn.role == "executor":
            return [self._error(conn, "not_allowed", "an executor connection cannot pair", **request)]
        requirements = message.get("requirements", {})
        credential = conn.credential
        refusal = role_refusal(self.config, credential, "client") or scope_refusal(
            credential, requirements, self._wall_clock()
        )
        if refusal is not None:
            return self._refusal(conn, refusal, message)
        conn.role, conn.identified = "client", True
        limit = self.config.max_sessions_per_client
        if len(conn.sessions) >= limit:
            return [
                self._error(
                    conn,
                    "too_many_sessions",
                    f"this connection has {limit} open sessions, the limit; send 'bye' for one first",
                    **request,
                )
            ]
        quota = credential.claims.max_sessions if credential.claims is not None else None
        if quota is not None and self.registry.sessions_of(credential.id) >= quota:
            return [
                self._error(
                    conn,
                    "quota_exceeded",
                    f"this token may hold {quota} open sessions at once, over all its connections, and "
                    "holds them; close one first, or ask for a token with a larger quota",
                    **request,
                )
            ]
        only = credential.claims.executors if credential.claims is not None else None
        record = self.registry.choose(requirements, only=only)
        if record is None:
            return [self._error(conn, "no_executor", self.registry.why_none(requirements, only=only), **request)]
        session_id = secrets.token_urlsafe(16)
        ticket = make_ticket(self._ticket_secret, session_id, conn.id, record.name)
        self.registry.open_session(session_id, conn.id, record, credential=credential.id)
        conn.sessions.add(session_id)
        self.stats.pairings_total += 1
        logger.info(
            "session %s: client %s (credential %s) paired with executor %r",
            session_id, conn.id, credential.label, record.name,
        )
        to_executor = {"type": "session", "session": session_id, "client": conn.id, "ticket": ticket}
        if requirements:
            to_executor["requirements"] = requirements
        paired = {
            "type": "paired",
            "session": session_id,
            "executor": record.name,
            "client": conn.id,
            "ticket": ticket,
            "capabilities": record.capabilities(),
            **request,
        }
        # The executor hears first, so it is ready for the offer the client sends next.
        return [Send(record.conn, to_executor), Send(conn.id, paired)]

    def _relay(self, conn: _Connection, message: dict, now: float) -> list:
        session_id = message["session"]
        session = self.registry.sessions.get(session_id)
        other = session.other_end(conn.id) if session is not None else None
        if other is None:
            # The same answer whether the session does not exist or is someone
            # else's, so that session ids cannot be probed.
            return [
                self._error(
                    conn,
                    "unknown_session",
                    f"no open session {session_id!r} on this connection",
                    session=session_id,
                )
            ]
        self.stats.relayed_total[message["type"]] += 1
        if message["type"] == "bye":
            self._forget_session(session)
        return [Send(other, message)]

    _on_offer = _on_answer = _on_candidate = _on_bye = _relay

    # -- helpers -------------------------------------------------------------------

    def _error(self, conn: _Connection, code: str, text: str, **extra) -> Send:
        self.stats.errors_total[code] += 1
        logger.debug("connection %s: error %s: %s", conn.id, code, text)
        return Send(conn.id, {"type": "error", "code": code, "message": text, **extra})

    def _refusal(self, conn: _Connection, refusal: Refusal, message: dict) -> list:
        """Answer ``message`` with ``refusal``: an error, and a close when the refusal asks for one."""
        request = {"request": message["request"]} if "request" in message else {}
        if refusal.close:
            return self._refuse(conn, refusal.code, refusal.message, **request)
        return [self._error(conn, refusal.code, refusal.message, **request)]

    def _refuse(
        self, conn: _Connection, code: str, text: str, *, close_code: int = POLICY_VIOLATION, **extra
    ) -> list:
        """Send an error and close the connection: it must end."""
        conn.closing = True
        logger.info("closing connection %s: %s: %s", conn.id, code, text)
        return [self._error(conn, code, text, **extra), Close(conn.id, close_code, code)]

    def _forget_session(self, session: SessionRecord) -> None:
        self.registry.close_session(session.id)
        client = self._conns.get(session.client)
        if client is not None:
            client.sessions.discard(session.id)

    def _drop_executor(self, conn: _Connection, reason: str) -> list:
        """Unregister the executor of ``conn``; its clients get ``bye``."""
        actions = []
        reason = reason[: messages.MAX_REASON]  # a long, escaped executor name must not make the bye invalid
        for session in self.registry.remove_executor(conn.executor):
            client = self._conns.get(session.client)
            if client is not None:
                client.sessions.discard(session.id)
                actions.append(Send(client.id, {"type": "bye", "session": session.id, "reason": reason}))
        logger.info("%s; %d sessions closed", reason, len(actions))
        conn.role, conn.executor = None, None
        return actions

    def _end_client_sessions(self, conn: _Connection, reason: str) -> list:
        actions = []
        for session_id in sorted(conn.sessions):
            session = self.registry.close_session(session_id)
            actions.append(Send(session.executor_conn, {"type": "bye", "session": session_id, "reason": reason}))
        conn.sessions.clear()
        return actions
