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
executor; a valid ``pair`` makes it a client; ``executors`` (discovery: which
executors this client may use) is a client's too, and may come first. Unless
the server is open, that first message must carry a credential of its role (:mod:`signaling_server.auth`
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

Several instances (``instance`` set: a cluster sharing Redis, see
:mod:`signaling_server.cluster`): the same rules, but a decision that needs
the shared state (taking a name, reserving an executor's slot) is answered
with an action (:class:`~signaling_server.cluster.Claim`,
:class:`~signaling_server.cluster.Reserve`) whose outcome comes back through
:meth:`Hub.claimed` and :meth:`Hub.reserved`; a message for a connection of
another instance leaves as :class:`~signaling_server.cluster.Forward` and
arrives there through :meth:`Hub.deliver`.
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

from .cluster import UNAVAILABLE, Claim, Forward, Grant, Refresh, Release, Reserve, Survey, Unclaim
from .auth import (
    OPEN, ROLE_OF, Credential, Refusal, authenticate, name_refusal, role_refusal, scope_refusal, visible_services,
)
from .config import ServerConfig
from .ratelimit import TokenBucket
from .registry import ExecutorRecord, Registry, SessionRecord
from .turn import ice_servers_for

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
    identified: bool = False  # ever sent a valid register, pair or executors
    closing: bool = False
    executor: str | None = None  # executor name, for role "executor"
    sessions: set[str] = field(default_factory=set)  # for role "client"
    pending: dict = field(default_factory=dict)  # cluster: session id -> pair message awaiting a Reserve
    claiming: str | None = None  # cluster: the name of a register awaiting its Claim
    idle_since: float | None = None  # identified, yet neither registered nor in a session: since when
    listings: TokenBucket | None = None  # its ``executors`` queries (made at its first)


#: What an anonymous connection is told when its first message is not a hello.
_FIRST = "the first message must be 'register', 'pair' or 'executors' with a credential"

#: Room left in an ``executors`` reply for its envelope (type, request, truncated).
_LISTING_ENVELOPE = 512

# An ``executors`` reply is the one answer far larger than its question: with a
# fleet of 2,000 executors, 30 bytes asked cost the hub 11.5 ms of its one
# thread and 280 KiB of a peer's outbox (measured here). The message rate
# limit (50 a second, bursts of 200) would let one connection take the whole
# server, and its 1,024-message outbox would hold 290 MB; so listings have
# limits of their own. A client that lists through remotemedia.discover()
# opens a connection for each listing and never meets the first.
#: ``executors`` queries one connection may send per second, and in a burst
#: (more: ``rate_limited``, closed).
LISTING_RATE = 1.0
LISTING_BURST = 5
#: Bytes of listings the hub builds per second for all connections together,
#: and in a burst (more: ``unavailable``, retry shortly): a small fleet's
#: listing is a few hundred bytes, so thousands a second; a listing cut to the
#: largest message, 8 a second.
LISTING_BYTES_RATE = 8 * messages.MAX_SERVER_MESSAGE
LISTING_BYTES_BURST = 32 * messages.MAX_SERVER_MESSAGE


class _Budget:
    """Bytes to spend, refilled at ``rate`` a second up to ``burst``; may run into debt (a cost is known only once paid)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.left, self.last = rate, burst, burst, now

    def available(self, now: float) -> bool:
        """Whether anything is left to spend at ``now``."""
        self.left = min(self.burst, self.left + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        return self.left > 0

    def spend(self, cost: float) -> None:
        """Pay ``cost`` bytes (what a listing came to)."""
        self.left -= cost


class _Bounded(dict):
    """A dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        while len(self) > self.limit:
            del self[next(iter(self))]


class Hub:
    """Signaling state: connections, the executor registry, sessions and statistics."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        instance: str | None = None,
    ) -> None:
        """
        ``wall_clock``: Unix time, for token expiry (the other events carry a
        monotonic ``now``); ``instance``: this instance's id in a cluster
        (``None``: a standalone server, all state here).
        """
        self.config = config or ServerConfig()
        self.instance = instance
        self.registry = Registry()
        self.stats = Stats()
        self._conns: dict[str, _Connection] = {}
        self._wall_clock = wall_clock
        # Signs tickets; never leaves this object (see the module docstring).
        self._ticket_secret = secrets.token_urlsafe(32)
        # Executor name -> id of the credential that owns it.
        self._owners: dict[str, str] = {}
        # Cluster: records of registrations awaiting their Claim, by connection.
        self._claims: dict[str, ExecutorRecord] = {}
        # Cluster: name of the executor each closed executor connection had (a
        # session forwarded to it after it left is answered with a bye). Bounded.
        self._gone_executors: _Bounded = _Bounded(4096)
        # Bytes of executors listings built, over all connections (made at the first listing).
        self._listing_budget: _Budget | None = None
        # Whether the last listing was cut to fit (warned once, not at every listing).
        self._listing_cut = False

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
                return self._refuse(conn, "unauthorized", f"{exc}; {_FIRST}")
            return [self._error(conn, exc.code, str(exc))]
        kind = message["type"]
        if conn.credential is None:
            if kind not in ROLE_OF:
                return self._refuse(conn, "unauthorized", f"{_FIRST}, not {kind!r}")
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
                if silent > self.config.signaling_heartbeat_timeout:
                    logger.warning("executor %r missed heartbeats for %.1f s; dropping it", record.name, silent)
                    actions += self._drop_executor(
                        conn, f"executor {record.name!r} stopped sending heartbeats"
                    )
                    actions += self._refuse(
                        conn,
                        "heartbeat_timeout",
                        f"no heartbeat for {silent:.1f} s (limit {self.config.signaling_heartbeat_timeout:g} s); "
                        "register again",
                    )
            elif not conn.identified and now - conn.opened_at > self.config.hello_timeout:
                actions += self._refuse(
                    conn,
                    "hello_timeout",
                    f"no 'register', 'pair' or 'executors' within {self.config.hello_timeout:g} s",
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
        body = {
            "status": "ok",
            "executors": len(self.registry.executors),
            "sessions": len(self.registry.sessions),
        }
        if self.instance is not None:
            body["instance"] = self.instance  # the counts are this instance's connections'
        return body

    # -- message handlers ----------------------------------------------------------

    def _on_register(self, conn: _Connection, message: dict, now: float) -> list:
        name = message["name"]
        if conn.role is not None:
            already = f"as executor {conn.executor!r}" if conn.role == "executor" else "as a client"
            return [self._error(conn, "not_allowed", f"this connection is already registered {already}")]
        credential = conn.credential
        # A cluster judges ownership where the owners are, in the shared registry (Claim).
        owner = self._owners.get(name) if self.instance is None else None
        refusal = role_refusal(self.config, credential, "executor") or name_refusal(credential, name, owner)
        if refusal is not None:
            return self._refusal(conn, refusal, message)
        if name in self.registry.executors or conn.claiming is not None:
            return [self._name_taken(conn, name)]
        record = ExecutorRecord.announced(
            name,
            conn.id,
            message["capacity"],
            message.get("capabilities", {}),
            last_seen=now,
            direct=tuple(message.get("direct", ())),
        )
        if self.instance is not None:
            conn.claiming = name
            conn.identified = True
            self._claims[conn.id] = record
            owner = credential.id if credential.role is not None else None
            named = credential.claims is not None and credential.claims.name is not None
            return [Claim(conn.id, name, self._shared_record(record), owner, named)]
        return self._registered(conn, record)

    def claimed(self, conn_id: str, outcome: str, now: float) -> list:
        """
        Cluster: the shared registry's answer to a :class:`Claim`: ``"ok"``,
        ``"name_taken"``, ``"name_owned"`` or ``"unavailable"``.
        """
        conn = self._conns.get(conn_id)
        record = self._claims.pop(conn_id, None)
        if record is None:
            return []
        if conn is None or conn.closing:
            # It went away while the claim ran: give the name back.
            return [Unclaim(record.name, conn_id)] if outcome == "ok" else []
        conn.claiming = None
        if outcome == "ok":
            record.last_seen = now
            return self._registered(conn, record)
        if outcome == "name_owned":
            refusal = name_refusal(conn.credential, record.name, "another")
            return self._refusal(conn, refusal, {})
        if outcome == "name_taken":
            return [self._name_taken(conn, record.name)]
        return [
            self._error(
                conn,
                UNAVAILABLE,
                "the signaling cluster's shared registry (Redis) is unreachable; retry shortly",
            )
        ]

    def _name_taken(self, conn: _Connection, name: str) -> Send:
        return self._error(
            conn, "name_taken", f"an executor named {name!r} is already registered; pick another name"
        )

    def _shared_record(self, record: ExecutorRecord) -> dict:
        """An executor's record as instances share it."""
        return {
            "instance": self.instance,
            "conn": record.conn,
            "capacity": record.capacity,
            "capabilities": record.capabilities(),
            "load": record.load,
            "reported": record.reported_sessions,
        }

    def _registered(self, conn: _Connection, record: ExecutorRecord) -> list:
        name, credential = record.name, conn.credential
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
                    "heartbeat_interval": float(self.config.signaling_heartbeat_interval),
                    "heartbeat_timeout": float(self.config.signaling_heartbeat_timeout),
                },
            )
        ]

    def _on_heartbeat(self, conn: _Connection, message: dict, now: float) -> list:
        if conn.role != "executor":
            return [self._error(conn, "not_allowed", "'heartbeat' is for registered executors")]
        record = self.registry.executors[conn.executor]
        record.load = message["load"]
        record.reported_sessions = message["sessions"]
        if self.instance is not None:
            return [Refresh(record.name, conn.id, self._shared_record(record))]
        return []

    def _on_unregister(self, conn: _Connection, message: dict, now: float) -> list:
        if conn.role != "executor":
            return [self._error(conn, "not_allowed", "'unregister' is for registered executors")]
        if self._owners.get(conn.executor) == conn.credential.id:
            del self._owners[conn.executor]  # given up on purpose: another credential may take it
        actions = self._drop_executor(conn, f"executor {conn.executor!r} unregistered", disown=True)

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
        if len(conn.sessions) + len(conn.pending) >= limit:
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
        if self.instance is not None:
            session_id = secrets.token_urlsafe(16)
            conn.pending[session_id] = message
            return [Reserve(conn.id, session_id, requirements, only, quota, credential.id)]
        record = self.registry.choose(requirements, only=only)
        if record is None:
            return [self._error(conn, "no_executor", self.registry.why_none(requirements, only=only), **request)]
        session_id = secrets.token_urlsafe(16)
        self.registry.open_session(session_id, conn.id, record, credential=credential.id)
        conn.sessions.add(session_id)
        self.stats.pairings_total += 1
        logger.info(
            "session %s: client %s (credential %s) paired with executor %r",
            session_id, conn.id, credential.label, record.name,
        )
        to_executor, paired = self._pairing(conn, session_id, record.name, record.capabilities(), message, record.direct)
        # The executor hears first, so it is ready for the offer the client sends next.
        return [Send(record.conn, to_executor), Send(conn.id, paired)]

    def _on_executors(self, conn: _Connection, message: dict, now: float) -> list:
        request = {"request": message["request"]} if "request" in message else {}
        if conn.role == "executor" or conn.claiming is not None:
            return [
                self._error(
                    conn, "not_allowed", "an executor connection cannot list executors; ask from a client's", **request
                )
            ]
        credential = conn.credential
        refusal = role_refusal(self.config, credential, "client")
        if refusal is None and credential.claims is not None and credential.claims.expired(self._wall_clock()):
            refusal = Refusal("token_expired", "the token expired; connect again with a new one")
        if refusal is not None:
            return self._refusal(conn, refusal, message)
        conn.identified = True
        if conn.listings is None:
            conn.listings = TokenBucket(LISTING_RATE, LISTING_BURST, now)
        if not conn.listings.take(now):
            return self._refuse(
                conn,
                "rate_limited",
                f"more than {LISTING_RATE:g} 'executors' queries per second (burst {LISTING_BURST}); closing",
                **request,
            )
        if self._listing_budget is None:
            self._listing_budget = _Budget(LISTING_BYTES_RATE, LISTING_BYTES_BURST, now)
        if not self._listing_budget.available(now):
            return [
                self._error(
                    conn, "unavailable", "the server is answering many 'executors' queries; ask again in a second",
                    **request,
                )
            ]
        if self.instance is not None:
            return [Survey(conn.id, message.get("request"))]
        return [self._listing(conn, self.registry.executors.values(), message.get("request"))]

    def surveyed(self, action: Survey, outcome: list[ExecutorRecord] | tuple[str, str], now: float) -> list:
        """
        Cluster: the answer to ``action``: every live executor of the cluster,
        or ``(error code, message)`` when the shared registry did not answer.
        """
        conn = self._conns.get(action.conn)
        if conn is None or conn.closing:
            return []
        if isinstance(outcome, tuple):
            request = {} if action.request is None else {"request": action.request}
            return [self._error(conn, *outcome, **request)]
        return [self._listing(conn, outcome, action.request)]

    def _listing(self, conn: _Connection, records, request: str | None) -> Send:
        """
        The ``executors`` reply for ``conn``: by name, only what its credential
        may use (:func:`~signaling_server.auth.visible_services`), cut to fit
        the largest message a client accepts.
        """
        entries, size, truncated = [], _LISTING_ENVELOPE, False
        for record in sorted(records, key=lambda r: r.name):
            services = visible_services(conn.credential, record.name, record.services)
            if services is None:
                continue
            entry = record.listing(services)
            size += len(messages.dump(entry)) + 1
            if size > messages.MAX_SERVER_MESSAGE:
                truncated = True
                break
            entries.append(entry)
        if self._listing_budget is not None:
            self._listing_budget.spend(size)
        reply = {"type": "executors", "executors": entries}
        if truncated:
            reply["truncated"] = True
            if not self._listing_cut:
                logger.warning("an executors listing was cut to %d executors to fit one message", len(entries))
        self._listing_cut = truncated
        if request is not None:
            reply["request"] = request
        return Send(conn.id, reply)

    def _pairing(
        self, conn: _Connection, session_id: str, executor: str, capabilities: dict, message: dict, direct: tuple = ()
    ) -> tuple[dict, dict]:
        """
        The ``session`` message for the executor and the ``paired`` one for the client, whichever instance pairs them.

        ``direct``: the executor's direct-lane addresses, for this client only
        (a cluster does not share them: its clients take the data channel).
        """
        ticket = make_ticket(self._ticket_secret, session_id, conn.id, executor)
        to_executor = {"type": "session", "session": session_id, "client": conn.id, "ticket": ticket}
        requirements = message.get("requirements", {})
        if requirements:
            to_executor["requirements"] = requirements
        paired = {
            "type": "paired",
            "session": session_id,
            "executor": executor,
            "client": conn.id,
            "ticket": ticket,
            "capabilities": capabilities,
        }
        if "request" in message:
            paired["request"] = message["request"]
        if direct:
            paired["direct"] = list(direct)
        if self.config.ice_servers:  # each end gets its own TURN credentials
            config, wall = self.config, self._wall_clock()
            to_executor["ice_servers"] = ice_servers_for(config.ice_servers, config.turn_secret, config.turn_ttl, executor, wall)
            paired["ice_servers"] = ice_servers_for(config.ice_servers, config.turn_secret, config.turn_ttl, conn.id, wall)
        return to_executor, paired

    def reserved(self, action: Reserve, outcome: Grant | tuple[str, str], now: float) -> list:
        """
        Cluster: the answer to ``action``: a :class:`Grant` (a slot is held
        for its session), or ``(error code, message)``.
        """
        conn, session_id, credential = self._conns.get(action.conn), action.session, action.credential
        message = conn.pending.pop(session_id, None) if conn is not None else None
        if message is None or conn.closing:
            # The client went away while its slot was reserved: free it.
            return [Release(outcome.name, session_id, credential)] if isinstance(outcome, Grant) else []
        request = {"request": message["request"]} if "request" in message else {}
        if not isinstance(outcome, Grant):
            code, text = outcome
            return [self._error(conn, code, text, **request)]
        local = outcome.instance == self.instance
        if local and outcome.name not in self.registry.executors:
            # Its executor left between the reservation and now.
            return [
                Release(outcome.name, session_id, credential),
                self._error(conn, "no_executor", f"executor {outcome.name!r} just left; pair again", **request),
            ]
        session = SessionRecord(
            session_id, conn.id, outcome.conn, outcome.name, credential,
            executor_instance=None if local else outcome.instance,
        )
        self.registry.add_session(session)
        conn.sessions.add(session_id)
        self.stats.pairings_total += 1
        logger.info(
            "session %s: client %s (credential %s) paired with executor %r on instance %s",
            session_id, conn.id, conn.credential.label, outcome.name, outcome.instance,
        )
        to_executor, paired = self._pairing(conn, session_id, outcome.name, outcome.capabilities, message)
        first = (
            Send(outcome.conn, to_executor)
            if local
            else Forward(outcome.instance, outcome.conn, to_executor, credential)
        )
        return [first, Send(conn.id, paired)]

    def lost(self, conn_id: str, name: str, now: float) -> list:
        """
        Cluster: the shared registry gives executor ``name`` to another
        connection now (its record was lost with Redis's data, and another
        executor took the name first): this one is dropped and told so.
        """
        conn = self._conns.get(conn_id)
        if conn is None or conn.closing or conn.executor != name:
            return []
        reason = f"executor {name!r} is registered through another connection now"
        actions = [a for a in self._drop_executor(conn, reason) if not isinstance(a, Unclaim)]
        return actions + self._refuse(
            conn,
            "name_taken",
            f"while the shared registry (Redis) was unreachable, another executor registered as {name!r}; "
            "pick another name, or stop the other executor",
        )

    def deliver(self, origin: str, conn_id: str, message: dict, now: float, *, credential: str = "") -> list:
        """
        Cluster: instance ``origin`` forwarded ``message`` for the local
        connection ``conn_id``: a ``session`` for an executor, or a relayed message.
        """
        conn = self._conns.get(conn_id)
        kind = message.get("type")
        if kind == "session":
            session_id = message["session"]
            if conn is None or conn.closing or conn.role != "executor":
                # The executor left meanwhile: the client must hear it at once, not time out.
                bye = {"type": "bye", "session": session_id, "reason": "executor disconnected"}
                name = self._gone_executors.get(conn_id, "")
                return [Forward(origin, message["client"], bye), Release(name, session_id, credential)]
            session = SessionRecord(
                session_id, message["client"], conn.id, conn.executor, credential, client_instance=origin
            )
            self.registry.add_session(session)
            return [Send(conn.id, message)]
        session = self.registry.sessions.get(message.get("session"))
        if conn is None or session is None or session.far_end(conn_id) is None:
            logger.debug("instance %s forwarded a %s for a session gone here; dropped", origin, kind)
            return []
        self.stats.relayed_total[kind] += 1
        if kind == "bye":
            self._forget_session(session)  # the origin released its slot
        return [Send(conn_id, message)]

    def _relay(self, conn: _Connection, message: dict, now: float) -> list:
        session_id = message["session"]
        session = self.registry.sessions.get(session_id)
        far = session.far_end(conn.id) if session is not None else None
        if far is None:
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
        actions = [self._to(far, message)]
        if message["type"] == "bye":
            self._forget_session(session)
            actions += self._released(session)
        return actions

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

    def _to(self, far: tuple[str | None, str], message: dict) -> Send | Forward:
        """Send ``message`` to a connection of this instance, or forward it to the one that holds it."""
        instance, conn = far
        return Send(conn, message) if instance is None else Forward(instance, conn, message)

    def _released(self, session: SessionRecord) -> list:
        """Cluster: free the session's slot and quota place in the shared state."""
        if self.instance is None:
            return []
        return [Release(session.executor, session.id, session.credential)]

    def _forget_session(self, session: SessionRecord) -> None:
        self.registry.close_session(session.id)
        client = self._conns.get(session.client)
        if client is not None:
            client.sessions.discard(session.id)

    def _drop_executor(self, conn: _Connection, reason: str, *, disown: bool = False) -> list:
        """Unregister the executor of ``conn``; its clients get ``bye``."""
        actions = []
        reason = reason[: messages.MAX_REASON]  # a long, escaped executor name must not make the bye invalid
        shared = []
        for session in self.registry.remove_executor(conn.executor):
            bye = {"type": "bye", "session": session.id, "reason": reason}
            shared += self._released(session)
            if session.client_instance is not None:
                actions.append(Forward(session.client_instance, session.client, bye))
                continue
            client = self._conns.get(session.client)
            if client is not None:
                client.sessions.discard(session.id)
                actions.append(Send(client.id, bye))
        logger.info("%s; %d sessions closed", reason, len(actions))
        if self.instance is not None:
            self._gone_executors[conn.id] = conn.executor
            shared.append(Unclaim(conn.executor, conn.id, disown=disown, owner=conn.credential.id))
        conn.role, conn.executor = None, None
        return actions + shared

    def _end_client_sessions(self, conn: _Connection, reason: str) -> list:
        actions = []
        for session_id in sorted(conn.sessions):
            session = self.registry.close_session(session_id)
            bye = {"type": "bye", "session": session_id, "reason": reason}
            actions.append(self._to((session.executor_instance, session.executor_conn), bye))
            actions += self._released(session)
        conn.sessions.clear()
        # Reservations still under way are freed when they answer (reserved()).
        return actions
