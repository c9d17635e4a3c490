"""
The executor service: registers with the signaling server and serves each
paired client in an :class:`~executor.session.ExecutorSession`.

Executors dial out to the signaling server, so a GPU host needs no open
inbound TCP port; media and calls then flow peer to peer over WebRTC. That is
also why an executor outlives its signaling server: when the connection drops,
the sessions already paired keep running while the executor reconnects and
registers again.

With ``--direct HOST:PORT`` it also listens there for direct lanes (the RPC
over TCP, :mod:`remotemedia.transport.direct`), announces the address when it
registers, and hands each connection whose ticket matches a session to that
session; that port is then the one inbound port to open, and only for speed:
clients that cannot reach it use the data channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from remotemedia import __version__ as remotemedia_version
from remotemedia import validation as check
from remotemedia.aio import Backoff, Tasks
from remotemedia.exceptions import ConnectionLostError, RemoteTimeoutError, SignalingError
from remotemedia.rpc.compression import DEFAULT_INFLATE_RATE
from remotemedia.signaling import SignalingClient, SignalingSession
from remotemedia.transport.door import DirectDoor, parse_address

from .dispatch import ACCEPTS, Limits
from .isolation import PROTECTIONS, Confinement
from .gpu import has_gpu
from .service_session import ServiceSession
from .memory import return_freed_memory
from .peer_session import PeerSession
from .pool import WorkerPool
from .registry import Factory, default_services
from .session import DEFAULT_MAX_MESSAGE_SIZE, MODES, ExecutorSession, SessionSettings

__all__ = ["ExecutorConfig", "Executor", "default_name"]

logger = logging.getLogger(__name__)

#: The smallest --memory-limit, in MB: a worker process uses about 130 MB before any object.
MIN_MEMORY_LIMIT = 200


def default_name() -> str:
    """``HOST-PID``: unique per process, and says where the executor runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ExecutorConfig:
    """
    Settings of one executor (the command line's flags).

    Frozen, and checked once, here (with :mod:`remotemedia.validation`): change
    one with :func:`dataclasses.replace`, which checks again. What each session
    uses is derived from it, never copied: :class:`~executor.session.SessionSettings`
    reads through to it, and :attr:`limits` is what a session may spend.
    """

    #: The signaling server's websocket URL, e.g. ``ws://127.0.0.1:50052/ws``.
    #: Several instances of one signaling cluster, comma-separated, are tried in turn
    #: (at start and when registering again).
    signaling: str
    #: The executor credential presented to the signaling server (``REMOTEMEDIA_EXECUTOR_TOKEN``):
    #: its ``--executor-token``, or a signed executor token. Never a client's token.
    token: str | None = None
    #: The name to register under; unique per signaling server.
    name: str = field(default_factory=default_name)
    #: Most sessions served at once (the capacity announced to the server).
    max_sessions: int = 4
    #: Largest message accepted from a client, in bytes.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds between data-channel pings, and of silence before a client counts as gone.
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    #: Seconds for a client's offer, its data channel and its HELLO to arrive.
    connect_timeout: float = 15.0
    #: STUN/TURN servers for the executor's side of each peer connection (a list is stored as a tuple).
    ice_servers: tuple = ()
    #: Where sessions' objects run: ``"process"`` (a worker process per session) or ``"inprocess"``.
    mode: str = "process"
    #: Seconds one call may run (lowered to a client's shorter timeout); ``None``: no limit.
    call_timeout: float | None = 300.0
    #: Objects one session may hold.
    max_objects: int = 64
    #: MB of memory each session's worker process may use (``process`` mode); ``None``: no cap.
    memory_limit: int | None = None
    #: Bytes per second of compressed bodies one session may have inflated (see :class:`~remotemedia.rpc.InflateBudget`).
    inflate_rate: int = DEFAULT_INFLATE_RATE
    #: What clients may send (see :data:`~executor.dispatch.ACCEPTS`): ``"wasm"`` refuses every pickle.
    accept: str = "python"
    #: Named services offered to clients that ask for one (browsers): name to node factory
    #: (stored as a read-only mapping).
    services: Mapping[str, Factory] = field(default_factory=default_services)
    #: PEM file of the CA certificates that may sign a ``wss://`` server's certificate
    #: (``--ca-file``, ``$REMOTEMEDIA_CA_FILE``); ``None`` trusts the system's CAs.
    ca_file: str | None = None
    #: TLS context for a ``wss://`` server, replacing :attr:`ca_file` (the embedded
    #: executor of ``python -m remotemedia serve`` dials its own server with one).
    ssl_context: ssl.SSLContext | None = None
    #: The protections of :mod:`executor.isolation` to use where the machine offers them (``process`` mode).
    isolation: tuple[str, ...] = PROTECTIONS
    #: Worker processes kept booted for the next sessions (``process`` mode).
    spare_workers: int = 1
    #: Fork workers from a warm interpreter (``process`` mode; see :mod:`executor.forkserver`) instead of booting each.
    fork_server: bool = True
    #: ``HOST:PORT`` to take direct lanes on (the RPC over TCP, see :mod:`remotemedia.transport.direct`;
    #: port 0 for any); ``None`` offers none. With ``wss://`` signaling it needs :attr:`direct_tls_cert`
    #: (the lane is TLS too), else it is not offered.
    direct: str | None = None
    #: The host to announce for :attr:`direct` instead of the one it listens on (a public name or address,
    #: the name its TLS certificate gives); ``None``: the listening host (a wildcard: this host's addresses).
    direct_announce: str | None = None
    #: PEM certificate chain of the direct lane with ``wss://`` signaling (it must name the announced host).
    direct_tls_cert: str | None = None
    #: PEM private key of :attr:`direct_tls_cert` (``None``: in the certificate's file).
    direct_tls_key: str | None = None

    def __post_init__(self) -> None:
        # Checked once, here, with the checks every config shares (remotemedia/validation.py).
        check.text("name", self.name)
        check.optional_text("token", self.token)
        check.optional_text("ca_file", self.ca_file, "a path (a string)")
        check.choice("mode", self.mode, MODES)
        check.choice("accept", self.accept, ACCEPTS)
        check.optional_positive("call_timeout", self.call_timeout)
        check.at_least("inflate_rate", self.inflate_rate, 1024 * 1024, "1 MiB/s (in bytes per second)")
        check.positive_int("max_objects", self.max_objects)
        check.positive_int("max_sessions", self.max_sessions)
        check.at_least("max_message_size", self.max_message_size, 1024, "1024 bytes")
        for name in ("connect_timeout", "heartbeat_interval", "heartbeat_timeout"):
            check.positive(name, getattr(self, name))
        check.longer("heartbeat_timeout", self.heartbeat_timeout, "heartbeat_interval", self.heartbeat_interval)
        check.non_negative_int("spare_workers", self.spare_workers)
        check.flag("fork_server", self.fork_server)
        check.optional_text("direct", self.direct, "HOST:PORT (port 0 for any)")
        if self.direct is not None:
            parse_address(self.direct)
        check.optional_text("direct_announce", self.direct_announce, "a host name or address")
        check.optional_text("direct_tls_cert", self.direct_tls_cert, "a path (a string)")
        check.optional_text("direct_tls_key", self.direct_tls_key, "a path (a string)")
        if self.direct_tls_key is not None and self.direct_tls_cert is None:
            raise ValueError("direct_tls_key needs direct_tls_cert: pass the certificate chain too (--direct-tls-cert)")
        object.__setattr__(self, "ice_servers", check.ice_servers("ice_servers", self.ice_servers))
        isolation = check.sequence("isolation", self.isolation, "protection names")
        unknown = set(isolation) - set(PROTECTIONS)
        if unknown:
            raise ValueError(f"isolation names protections among {', '.join(PROTECTIONS)}, not {', '.join(sorted(unknown))}")
        object.__setattr__(self, "isolation", isolation)
        for name, factory in self.services.items():
            if not isinstance(name, str) or not callable(factory):
                raise ValueError(f"services maps names to node factories, not {name!r} to {factory!r}")
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        if self.memory_limit is not None:
            if self.mode != "process":
                raise ValueError("memory_limit caps worker processes: it needs mode 'process'")
            check.at_least(
                "memory_limit", self.memory_limit, MIN_MEMORY_LIMIT,
                f"{MIN_MEMORY_LIMIT} MB (a worker needs about 130 MB to start)",
            )

    @property
    def tls(self) -> bool:
        """Whether the signaling server is dialed with TLS (``wss://``): the direct lane is TLS then too."""
        return any(url.strip().startswith("wss://") for url in self.signaling.split(","))

    def direct_ssl_context(self) -> ssl.SSLContext | None:
        """The direct lane's server TLS context (``None`` with ``ws://`` signaling); ``ValueError`` for unreadable files."""
        if not self.tls or self.direct_tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.direct_tls_cert, self.direct_tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the direct lane's TLS certificate from {self.direct_tls_cert}: {exc}") from None
        return context

    @property
    def limits(self) -> Limits:
        """What each session may use, derived from this config (a client's shorter timeout lowers its own)."""
        return Limits(
            call_timeout=self.call_timeout,
            max_objects=self.max_objects,
            memory_limit=self.memory_limit,
            inflate_rate=self.inflate_rate,
            accept=self.accept,
        )


class Executor:
    """
    A running executor. ``await executor.start()`` registers, or raises at
    once when the signaling server cannot be reached or refuses; :meth:`serve`
    accepts sessions until :meth:`close`.

    When the signaling connection is lost, :meth:`serve` reconnects and
    registers again, with backoff, for as long as it runs; the sessions
    already paired are peer to peer and keep running meanwhile. It ends with
    the server's error only for a refusal that retrying cannot change, such
    as a wrong token (:exc:`~remotemedia.exceptions.AuthenticationError`).
    """

    #: Seconds before the first reconnection attempt; each failure doubles it (jittered), up to the next.
    RECONNECT_FIRST_DELAY = 0.2
    #: Longest wait between reconnection attempts, in seconds.
    RECONNECT_MAX_DELAY = 5.0
    # Refusals that a later attempt may not meet: a restarted server may be
    # busy, and the old registration stays until the server notices that its
    # connection died ("name_taken").
    _RETRY_CODES = frozenset({"unreachable", "name_taken", "rate_limited", "hello_timeout", "heartbeat_timeout"})
    # The server's connection limits pass: a full server takes us later.
    _RETRY_CODES |= {"server_full", "too_many_connections", "idle_timeout"}
    # A cluster's instance whose Redis is down refuses until it is back.
    _RETRY_CODES |= {"unavailable"}
    # Set by close(); created by start(), inside the event loop.
    _closing: asyncio.Event | None = None

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.signaling: SignalingClient | None = None
        #: The sessions being served, torn-down ones excluded: what capacity counts.
        self.sessions: dict[str, asyncio.Task] = {}
        #: How workers are confined (``process`` mode, once started).
        self.confinement: Confinement | None = None
        self._pool: WorkerPool | None = None
        #: Whether :meth:`drain` began: no new session is taken.
        self.draining = False
        self._runners: dict[str, PeerSession] = {}
        #: Where clients dial direct lanes (``None`` when none is offered; listening once started).
        self.door: DirectDoor | None = None
        self._freed = asyncio.Event()  # a slot came free
        self._queued = 0  # pairings waiting for a slot that a teardown is freeing
        self._background = Tasks()  # refusals, queued pairings, load reports: ended by close()
        #: What every session shares: this config, read through (the confinement joins it at start).
        self._settings = SessionSettings(config)

    async def start(self) -> None:
        """
        Connect to the signaling server and register.

        No retry here: an executor that cannot register when it starts is
        misconfigured more often than not (wrong URL, wrong token), so it says
        so at once instead of waiting.
        """
        self._closing = asyncio.Event()
        return_freed_memory()  # what an ended session held leaves the executor's resident size
        if self.config.mode == "process" and self.confinement is None:
            # Before registering: a client paired at once finds its worker confined and booted.
            self.confinement = Confinement.probe(self.config.memory_limit, wanted=self.config.isolation)
            self._settings = dataclasses.replace(self._settings, confinement=self.confinement)
            for line in self.confinement.describe():
                (logger.warning if line.startswith("isolation:") else logger.info)(line)
            if self.config.fork_server:
                await self.confinement.start_spawner()
            self._pool = WorkerPool(self.confinement, self.config.spare_workers)
            await self._pool.start()
        try:
            await self._open_door()
            self.signaling = await self._register()
        except BaseException:
            await self.close()  # the spare worker, the fork server and the cgroups
            raise
        logger.info("executor %r registered with %s (capacity %d)", self.config.name, self.config.signaling, self.config.max_sessions)

    async def serve(self) -> None:
        """
        Accept sessions and serve each in its own task, until :meth:`close`.

        A lost signaling connection is replaced (see the class docstring);
        raises :exc:`~remotemedia.exceptions.SignalingError` when the server
        refuses the executor for good.
        """
        if self.signaling is None or self._closing is None:
            raise RuntimeError("call start() before serve()")
        while not self._closing.is_set():
            try:
                session = await self.signaling.accept()
            except (ConnectionLostError, SignalingError) as exc:
                if self._closing.is_set():
                    return
                if not self._retryable(exc):
                    raise
                logger.warning(
                    "executor %r lost the signaling server at %s (%s); reconnecting, sessions keep running (%d open)",
                    self.config.name, self.config.signaling, exc, len(self.sessions),
                )
                await self._reregister()
                continue
            self._serve_session(session)

    async def drain(self, timeout: float) -> None:
        """
        Take no new session, let the open ones run up to ``timeout`` seconds,
        then end each with reason ``draining`` (``session_ended``), so a
        client with ``reconnect=True`` moves to another executor. :meth:`close` follows.

        The executor stays registered meanwhile, reporting itself full in its
        heartbeats, so the server pairs no one with it and its sessions'
        signaling (a bye) still flows.
        """
        if self.draining:
            return
        self.draining = True
        logger.warning(
            "executor %r draining: no new sessions; %d open ones end within %g s",
            self.config.name, len(self.sessions), timeout,
        )
        if self.signaling is not None:
            with contextlib.suppress(ConnectionLostError, SignalingError):
                await self.signaling.heartbeat(*self._status())  # full from now on, at once
        if self.sessions and timeout > 0:
            await asyncio.wait(list(self.sessions.values()), timeout=timeout)
        why = f"draining: executor {self.config.name!r} is shutting down; pair again with another executor"
        for runner in list(self._runners.values()):
            runner.end(why)
        await asyncio.gather(*self.sessions.values(), return_exceptions=True)

    async def close(self) -> None:
        """End every session (their objects' cleanup runs), stop reconnecting and leave the signaling server."""
        if self._closing is not None:
            self._closing.set()
        for task in list(self.sessions.values()):
            task.cancel()
        await asyncio.gather(*self.sessions.values(), return_exceptions=True)
        await self._background.close()
        if self.door is not None:
            await self.door.close()
        if self._pool is not None:
            await self._pool.close()
        if self.confinement is not None:
            await self.confinement.stop_spawner()
            self.confinement.close()
        if self.signaling is not None:
            await self.signaling.close()

    def _serve_session(self, session: SignalingSession, may_wait: bool = True) -> None:
        if self.draining:
            # Paired before the server heard that we are full: the client pairs elsewhere.
            self._in_background(session.close("draining: the executor takes no new sessions"), f"drain-{session.id}")
            return
        if len(self.sessions) >= self.config.max_sessions:
            # Counted here, whatever the signaling server believes: a slot is
            # freed only when its session has been torn down. The server frees
            # it at the client's bye, so a pairing that comes while a teardown
            # is under way waits for it (the offer waits in the session's inbox);
            # any other is refused at once.
            ending = any(runner.ending for runner in self._runners.values())
            if may_wait and ending and self._queued < self.config.max_sessions:
                self._queued += 1
                self._in_background(self._serve_when_free(session), f"queued-{session.id}")
                return
            logger.warning(
                "session %s: refused, %d sessions already open (--max-sessions %d)",
                session.id, len(self.sessions), self.config.max_sessions,
            )
            self._in_background(
                session.close(f"executor {self.config.name} is at capacity ({self.config.max_sessions} sessions)"),
                f"refuse-{session.id}",
            )
            return
        runner = self._runner_for(session)
        task = asyncio.create_task(runner.run(), name=f"session-{session.id}")
        self.sessions[session.id] = task
        self._runners[session.id] = runner
        task.add_done_callback(lambda _t, sid=session.id: self._session_over(sid))

    def _runner_for(self, session: SignalingSession) -> PeerSession:
        """The session that serves ``session``'s client: a named service, or the RPC (which opens its lane itself)."""
        service = session.requirements.get("service")
        if service is not None:
            logger.info("session %s: paired with client %s for service %r", session.id, session.client, service)
            return ServiceSession(session, self._settings, self.config.services)
        logger.info("session %s: paired with client %s", session.id, session.client)
        return ExecutorSession(session, self._settings, self._pool.take() if self._pool is not None else None)

    def _session_over(self, id: str) -> None:
        self.sessions.pop(id, None)
        self._runners.pop(id, None)
        self._freed.set()
        # The server counts the sessions we last reported; tell it now, not at the next heartbeat,
        # that the slot is free (it freed its own count at the client's bye, before our teardown).
        if self.signaling is not None and not self.signaling.closed and not self._closing.is_set():
            self._in_background(self._report(), f"report-{id}")

    async def _report(self) -> None:
        with contextlib.suppress(ConnectionLostError, SignalingError):
            await self.signaling.heartbeat(*self._status())

    async def _serve_when_free(self, session: SignalingSession) -> None:
        """Serve ``session`` once a slot is free, or refuse it after ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout
        try:
            while len(self.sessions) >= self.config.max_sessions and loop.time() < deadline:
                self._freed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), deadline - loop.time())
        finally:
            self._queued -= 1
        if session.ended is None:
            self._serve_session(session, may_wait=False)  # refused there if no slot came free

    def _in_background(self, coro, name: str) -> None:
        """Run ``coro`` in a task that :meth:`close` ends if it is still running."""
        self._background.spawn(coro, name)

    async def _register(self) -> SignalingClient:
        """A new signaling connection, registered; its heartbeats report this executor's sessions."""
        signaling = await SignalingClient.connect_any(
            self.config.signaling.split(","), token=self.config.token, ca_file=self.config.ca_file,
            ssl_context=self.config.ssl_context,
        )
        try:
            await signaling.register(
                self.config.name,
                self.config.max_sessions,
                self._capabilities(),
                status=self._status,
                direct=self.door.addresses if self.door is not None else None,
            )
        except BaseException:
            await signaling.close()
            raise
        return signaling

    def _capabilities(self) -> dict:
        """
        What registering announces: pairing matches ``gpu`` and ``services``;
        discovery (``python -m remotemedia executors``) also shows the rest.
        No ``models``: models load inside sessions (in each worker process, in
        ``process`` mode) when a node asks, so nothing here knows them beforehand.
        """
        return {
            "gpu": has_gpu(),
            "services": sorted(self.config.services),
            "version": remotemedia_version,
            "accept": self.config.accept,
            "mode": self.config.mode,
        }

    async def _open_door(self) -> None:
        """Listen for direct lanes (``--direct``), unless TLS is wanted and there is no certificate for it."""
        config = self.config
        if config.direct is None or self.door is not None:
            return
        if config.tls and config.direct_tls_cert is None:
            logger.warning(
                "no direct lane: the signaling server is wss://, so the direct lane needs TLS too; "
                "give it a certificate (--direct-tls-cert) to offer it. Clients use the data channel"
            )
            return
        host, port = parse_address(config.direct)
        door = DirectDoor(host, port, ssl_context=config.direct_ssl_context(), announce=config.direct_announce)
        await door.start()
        self.door = door
        self._settings = dataclasses.replace(self._settings, door=door)

    def _status(self) -> tuple[float, int]:
        # Counted here, not by the connection (its default): sessions accepted
        # through an earlier connection still run after registering again, and
        # the server must see them, both right away and in every heartbeat.
        count = len(self.sessions)
        if self.draining:  # full, so the server pairs no one with it
            return 1.0, max(count, self.config.max_sessions)
        return count / self.config.max_sessions, count

    async def _reregister(self) -> None:
        """Replace the lost signaling connection: retry with backoff until registered or closed."""
        await self.signaling.close()  # its reader is done; the sessions it paired stay up
        loop = asyncio.get_running_loop()
        lost_at, attempts, last_reason = loop.time(), 0, None
        # Jitter spreads the executors of a restarted server over time.
        backoff = Backoff(self.RECONNECT_FIRST_DELAY, self.RECONNECT_MAX_DELAY, jitter=0.5)
        while True:
            attempts += 1
            try:
                signaling = await self._register()
            except (ConnectionLostError, RemoteTimeoutError, SignalingError) as exc:
                if not self._retryable(exc):
                    raise
                # Once per kind of failure at WARNING: a long outage must not flood the log.
                reason = getattr(exc, "code", type(exc).__name__)
                (logger.warning if reason != last_reason else logger.debug)(
                    "executor %r: registering again failed (%s); retrying", self.config.name, exc
                )
                last_reason = reason
            else:
                if self._closing.is_set():  # close() came while we were registering
                    await signaling.close()
                    return
                self.signaling = signaling
                logger.warning(
                    "executor %r registered again with %s after %.1f s (attempt %d; %d sessions open)",
                    self.config.name, self.config.signaling, loop.time() - lost_at, attempts, len(self.sessions),
                )
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), backoff.next())
            if self._closing.is_set():
                return

    @classmethod
    def _retryable(cls, exc: Exception) -> bool:
        """Whether registering again may succeed later, so ``exc`` is worth a retry."""
        if isinstance(exc, (ConnectionLostError, RemoteTimeoutError)):
            return True
        return isinstance(exc, SignalingError) and exc.code in cls._RETRY_CODES

    async def __aenter__(self) -> Executor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
