"""
The executor service: registers with the signaling server and serves each
paired client in an :class:`~executor.session.ExecutorSession`.

Executors dial out to the signaling server, so a GPU host needs no open
inbound TCP port; media and calls then flow peer to peer over WebRTC. That is
also why an executor outlives its signaling server: when the connection drops,
the sessions already paired keep running while the executor reconnects and
registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import ssl
from dataclasses import dataclass, field

from remotemedia.exceptions import ConnectionLostError, RemoteTimeoutError, SignalingError
from remotemedia.signaling import SignalingClient, SignalingSession

from .dispatch import Limits
from .live import ServiceSession
from .process import WorkerProcess
from .services import Factory, default_services
from .session import DEFAULT_MAX_MESSAGE_SIZE, MODES, ExecutorSession, SessionSettings

__all__ = ["ExecutorConfig", "Executor", "default_name"]

logger = logging.getLogger(__name__)

#: The smallest --memory-limit, in MB: a worker process uses about 130 MB before any object.
MIN_MEMORY_LIMIT = 200


def default_name() -> str:
    """``HOST-PID``: unique per process, and says where the executor runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ExecutorConfig:
    """Settings of one executor (the command line's flags)."""

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
    #: STUN/TURN servers for the executor's side of each peer connection.
    ice_servers: list = field(default_factory=list)
    #: Where sessions' objects run: ``"process"`` (a worker process per session) or ``"inprocess"``.
    mode: str = "process"
    #: Seconds one call may run (lowered to a client's shorter timeout); ``None``: no limit.
    call_timeout: float | None = 300.0
    #: Objects one session may hold.
    max_objects: int = 64
    #: MB of memory each session's worker process may use (``process`` mode); ``None``: no cap.
    memory_limit: int | None = None
    #: Named services offered to clients that ask for one (browsers): name to node factory.
    services: dict[str, Factory] = field(default_factory=default_services)
    #: PEM file of the CA certificates that may sign a ``wss://`` server's certificate
    #: (``--ca-file``, ``$REMOTEMEDIA_CA_FILE``); ``None`` trusts the system's CAs.
    ca_file: str | None = None
    #: TLS context for a ``wss://`` server, replacing :attr:`ca_file` (the embedded
    #: executor of ``python -m remotemedia serve`` dials its own server with one).
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.call_timeout is not None and not self.call_timeout > 0:
            raise ValueError(f"call_timeout must be positive, not {self.call_timeout!r}")
        if not isinstance(self.max_objects, int) or self.max_objects < 1:
            raise ValueError(f"max_objects must be a positive integer, not {self.max_objects!r}")
        for name, factory in self.services.items():
            if not isinstance(name, str) or not callable(factory):
                raise ValueError(f"services maps names to node factories, not {name!r} to {factory!r}")
        if self.memory_limit is not None:
            if self.mode != "process":
                raise ValueError("memory_limit caps worker processes: it needs mode 'process'")
            if not isinstance(self.memory_limit, int) or self.memory_limit < MIN_MEMORY_LIMIT:
                raise ValueError(
                    f"memory_limit must be at least {MIN_MEMORY_LIMIT} MB (a worker needs about 130 MB "
                    f"to start), not {self.memory_limit!r}"
                )
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive integer, not {self.max_sessions!r}")
        if not isinstance(self.max_message_size, int) or self.max_message_size < 1024:
            raise ValueError(f"max_message_size must be at least 1024 bytes, not {self.max_message_size!r}")
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be positive, not {self.connect_timeout!r}")
        if not self.heartbeat_timeout > self.heartbeat_interval > 0:
            raise ValueError("heartbeat_timeout must be longer than heartbeat_interval, both positive")


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
        self.sessions: dict[str, asyncio.Task] = {}
        #: Whether :meth:`drain` began: no new session is taken.
        self.draining = False
        self._runners: dict[str, ExecutorSession | ServiceSession] = {}
        self._spare: WorkerProcess | None = None
        self._background: set[asyncio.Task] = set()
        self._settings = SessionSettings(
            executor=config.name,
            max_message_size=config.max_message_size,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            connect_timeout=config.connect_timeout,
            ice_servers=list(config.ice_servers),
            mode=config.mode,
            limits=Limits(config.call_timeout, config.max_objects, config.memory_limit),
        )

    async def start(self) -> None:
        """
        Connect to the signaling server and register.

        No retry here: an executor that cannot register when it starts is
        misconfigured more often than not (wrong URL, wrong token), so it says
        so at once instead of waiting.
        """
        self._closing = asyncio.Event()
        self.signaling = await self._register()
        await self._prepare_worker()
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
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._spare is not None:
            await self._spare.close(1.0)
            self._spare = None
        if self.signaling is not None:
            await self.signaling.close()

    async def _prepare_worker(self) -> None:
        # process mode: one worker process started ahead, so a new session does
        # not wait for an interpreter to boot (about 0.2 s against 30 ms for ICE and DTLS).
        if self.config.mode != "process" or (self._closing is not None and self._closing.is_set()):
            return
        worker = WorkerProcess()
        try:
            await worker.start()
        except OSError as exc:
            logger.warning("could not start a spare worker process: %s", exc)
            return
        self._spare = worker

    def _take_worker(self) -> WorkerProcess | None:
        worker, self._spare = self._spare, None
        if self.config.mode == "process":
            task = asyncio.create_task(self._prepare_worker(), name="spare-worker")
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return worker

    def _serve_session(self, session: SignalingSession) -> None:
        if self.draining:
            # Paired before the server heard that we are full: the client pairs elsewhere.
            task = asyncio.create_task(session.close("draining: the executor takes no new sessions"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        service = session.requirements.get("service")
        if service is not None:
            logger.info("session %s: paired with client %s for service %r", session.id, session.client, service)
            runner = ServiceSession(session, self._settings, self.config.services)
        else:
            logger.info("session %s: paired with client %s", session.id, session.client)
            runner = ExecutorSession(session, self._settings, self._take_worker())
        task = asyncio.create_task(runner.run(), name=f"session-{session.id}")
        self.sessions[session.id] = task
        self._runners[session.id] = runner
        task.add_done_callback(lambda _t, sid=session.id: (self.sessions.pop(sid, None), self._runners.pop(sid, None)))

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
                {"gpu": _has_gpu(), "services": sorted(self.config.services)},
                status=self._status,
            )
        except BaseException:
            await signaling.close()
            raise
        return signaling

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
        lost_at, delay, attempts, last_reason = loop.time(), self.RECONNECT_FIRST_DELAY, 0, None
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
            # Jitter spreads the executors of a restarted server over time.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), delay * random.uniform(0.5, 1.0))
            if self._closing.is_set():
                return
            delay = min(2 * delay, self.RECONNECT_MAX_DELAY)

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


@functools.lru_cache(maxsize=None)
def _has_gpu() -> bool:
    # Announced to the signaling server for ``pair(requirements={"gpu": True})``;
    # probed once per process (it imports CTranslate2 and ONNX Runtime: about 25 MB).
    from remotemedia.models import gpu_available

    return gpu_available()
