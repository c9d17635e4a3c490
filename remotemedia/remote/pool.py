"""
:class:`SessionPool`: warm executor sessions, lent run after run.

Opening a session costs pairing, a WebRTC handshake (ICE, DTLS, SCTP) and
the ticket check; on loopback that is most of a short run's time, and a
notebook cell run again, or a server answering request after request, pays
it every time. A pool keeps the :class:`RemoteProxyClient` sessions a run
used, keyed by ``(config, media_tracks)`` and the credentials the session
presented, and lends them to the next run::

    pool = SessionPool(max_sessions=4, idle_ttl=60)
    pipeline = Pipeline("asr", session_pool=pool)
    await pipeline.run_async(frames)    # opens a session, keeps it
    await pipeline.run_async(frames)    # same session: no pairing, no handshake
    await pool.close()

    async with pool.session(config) as client:   # lent to your own code
        proxy = await client.create_proxy(obj)

Rules, and why:

- **One borrower at a time** unless every borrower asks for ``shared=True``:
  a run's streams, media slots and errors stay its own.
- **Objects go, the session stays**: when a session comes back, every remote
  object still alive on it is released (the executor runs their
  ``cleanup()``), so the next run starts from the same state as with a fresh
  session. What the executor caches across objects (models of an
  ``inprocess`` executor) stays loaded: that is the point.
- **Health**: a session that comes back with its connection lost, closed,
  reconnecting, or with a call still in flight (a run cut short) is closed,
  never lent again. The connection's own heartbeat (``heartbeat_interval``)
  is the health check: a dead executor marks the session lost within
  ``heartbeat_timeout``, idle or not.
- **Bounds**: at most ``max_sessions`` are kept; asking for one more closes
  the oldest idle one, and with none idle the borrower gets a session that
  is closed when given back (never kept). An idle session is closed after
  ``idle_ttl`` seconds.
- **One event loop per session**: a session's connection lives on the loop
  that opened it. The pool keeps each loop's sessions apart and never lends
  one to another loop; the sessions of a loop that has closed are forgotten
  (their connections died with the loop; the executor notices by heartbeat).
  Loops in several threads may share a pool (each touches only its own
  sessions; the bound may then be passed by a session or so).

Pipelines pool only when given a pool (``Pipeline(session_pool=pool)``, or
:func:`default_pool`, one per process): pooling is opt-in because a kept
session outlives the run. That is what makes the second run fast, and also
what would surprise code that expects ``run()`` to leave nothing behind:
an executor counts the kept session against its capacity, and a test's
server would see a client still connected. ``Pipeline.run()`` (which runs
its own event loop) closes the sessions of that loop when it returns, so
pooling pays off with ``await pipeline.run_async()`` in a long-lived loop (a
notebook, a server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator

from ..aio import Tasks
from .client import RemoteProxyClient
from .config import RemoteExecutorConfig

__all__ = ["SessionPool", "default_pool", "DEFAULT_MAX_SESSIONS", "DEFAULT_IDLE_TTL"]

logger = logging.getLogger(__name__)

#: Sessions a pool keeps, by default (over all configs and loops).
DEFAULT_MAX_SESSIONS = 8
#: Seconds an idle session is kept, by default.
DEFAULT_IDLE_TTL = 60.0

_Key = tuple[RemoteExecutorConfig, "str | None", "str | None", int]


def _key(config: RemoteExecutorConfig, media_tracks: int) -> _Key:
    """
    What a session must match to be lent: the config, and the credentials it
    was opened with. ``auth_token=None`` and ``ca_file=None`` read the
    environment when a session connects, so two equal configs can stand for
    two users (``$REMOTEMEDIA_TOKEN`` changed between loans): the token and CA
    file in force are part of the key, and a session is never lent under
    credentials other than those that opened it.
    """
    return (config, config.token, config.tls_ca_file, media_tracks)


@dataclass(eq=False)
class _Entry:
    """One kept session."""

    key: _Key = field(repr=False)  # holds the token
    client: RemoteProxyClient
    loop: asyncio.AbstractEventLoop
    #: Runs or users holding it now.
    borrowers: int = 0
    #: Whether its borrowers asked to share it.
    shared: bool = False
    #: Connected (an entry is reserved before its client connects).
    ready: bool = False
    #: Closes it after the idle TTL (only while nobody holds it).
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    #: Close it when given back (the pool was closed while it was lent).
    doomed: bool = False
    #: Times it was lent.
    loans: int = 0


class SessionPool:
    """
    Warm :class:`RemoteProxyClient` sessions, lent to pipeline runs and to
    users (see the module docstring for the rules).

    ``max_sessions`` bounds the sessions kept (a positive int) and
    ``idle_ttl`` is how many seconds an unused one is kept (positive).
    """

    def __init__(self, *, max_sessions: int = DEFAULT_MAX_SESSIONS, idle_ttl: float = DEFAULT_IDLE_TTL) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, not {max_sessions!r}")
        if isinstance(idle_ttl, bool) or not isinstance(idle_ttl, (int, float)) or not idle_ttl > 0:
            raise ValueError(f"idle_ttl must be a positive number of seconds, not {idle_ttl!r}")
        self.max_sessions = max_sessions
        self.idle_ttl = float(idle_ttl)
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._closing = Tasks()
        #: Sessions this pool opened (kept or not).
        self.opened = 0
        #: Loans served by a session that was already open.
        self.reused = 0

    def __len__(self) -> int:
        """Sessions kept now (lent or idle), on every loop."""
        return len(self._entries)

    def __repr__(self) -> str:
        idle = sum(1 for e in self._entries if e.borrowers == 0)
        return f"<SessionPool {len(self._entries)} sessions ({idle} idle), max {self.max_sessions}, idle_ttl {self.idle_ttl:g} s>"

    async def __aenter__(self) -> SessionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- lending -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def session(
        self, config: RemoteExecutorConfig | None = None, *, media_tracks: int = 0, shared: bool = False
    ) -> AsyncIterator[RemoteProxyClient]:
        """
        ``async with pool.session(config) as client:``: a connected session,
        given back on leaving the block (its remote objects are released
        there; the session stays open for the next borrower).
        """
        client = await self.acquire(config, media_tracks=media_tracks, shared=shared)
        try:
            yield client
        finally:
            await self.give_back(client)

    async def acquire(
        self, config: RemoteExecutorConfig | None = None, *, media_tracks: int = 0, shared: bool = False
    ) -> RemoteProxyClient:
        """
        A connected session for ``config`` and ``media_tracks``: a kept one
        that is free (or shared, when ``shared``), else a new one. Give it
        back with :meth:`give_back`. Raises what
        :meth:`RemoteProxyClient.connect` raises.
        """
        if config is None:
            config = RemoteExecutorConfig()
        if not isinstance(config, RemoteExecutorConfig):
            raise TypeError(f"config must be a RemoteExecutorConfig, not {type(config).__name__}")
        loop = asyncio.get_running_loop()
        self._forget_dead_loops()
        key = _key(config, media_tracks)
        for entry in list(self._entries):
            if entry.loop is not loop or entry.key != key or not entry.ready or entry.doomed:
                continue
            if entry.borrowers and not (shared and entry.shared):
                continue
            if not entry.client.usable:
                if entry.borrowers == 0:
                    self._drop(entry, "its connection was lost")
                continue
            self._lend(entry, shared)
            self.reused += 1
            logger.debug("session pool: lending the session with %r again (loan %d)", entry.client.executor, entry.loans)
            return entry.client
        client = RemoteProxyClient(config, media_tracks=media_tracks)
        entry: _Entry | None = None
        if self._make_room(loop):
            entry = _Entry(key, client, loop)
            self._entries.append(entry)
            self._lend(entry, shared)
        try:
            await client.connect()
        except BaseException:
            if entry is not None:
                self._forget(entry)
            raise
        self.opened += 1
        if entry is not None:
            entry.ready = True
        else:
            logger.info("session pool full (%d sessions, none idle): this session is closed when given back", self.max_sessions)
        return client

    async def give_back(self, client: RemoteProxyClient) -> None:
        """
        End a loan. The session's remote objects are released; it is kept
        for the next borrower if healthy, else closed. Never raises for a
        session that fails to close.
        """
        entry = next((e for e in self._entries if e.client is client), None)
        if entry is None:  # not kept: an overflow session, or one dropped meanwhile
            await _close_quietly(client)
            return
        if entry.borrowers == 0:
            # Given back twice: the session is idle already (or lent again since, and the
            # loan it was lent for has ended). Releasing its objects now could be another
            # borrower's, so nothing is done.
            logger.warning("session pool: the session with %r was given back when it was not lent; ignored", client.executor)
            return
        if entry.borrowers > 1:
            entry.borrowers -= 1
            return
        # Still held (borrowers == 1) while it is checked and cleaned: nobody borrows it meanwhile.
        for _ in range(3):
            if client.idle:
                break
            # A stream left with `break` is closed by its finalizer, which the loop runs soon: let it.
            await asyncio.sleep(0)
        why = self._unfit(entry)
        if why is None:
            try:
                await client.release_all()
            except Exception as exc:  # the session cannot even release: not one to lend again
                why = f"releasing its objects failed ({exc})"
            else:
                why = self._unfit(entry)
        entry.borrowers, entry.shared = 0, False
        if why is not None:
            self._forget(entry)
            logger.info("session pool: closing the session with %r: %s", client.executor, why)
            await _close_quietly(client)
            return
        entry.timer = entry.loop.call_later(self.idle_ttl, self._expire, entry)

    async def close(self) -> None:
        """
        Close every idle session of the running loop now, and every lent one
        when it is given back; forget those of loops that have closed. The
        pool stays usable (new loans open new sessions).
        """
        loop = asyncio.get_running_loop()
        self._forget_dead_loops()
        idle = []
        for entry in list(self._entries):
            if entry.loop is not loop:
                continue
            if entry.borrowers:
                entry.doomed = True
            else:
                self._forget(entry)
                _cancel_timer(entry)
                idle.append(entry.client)
        await asyncio.gather(*(_close_quietly(client) for client in idle))
        await self._closing.wait()

    # -- internals ----------------------------------------------------------------------

    def _lend(self, entry: _Entry, shared: bool) -> None:
        _cancel_timer(entry)
        entry.borrowers += 1
        entry.shared = shared
        entry.loans += 1

    def _unfit(self, entry: _Entry) -> str | None:
        """Why a given-back session must not be lent again, or ``None``."""
        client = entry.client
        if entry.doomed:
            return "the pool was closed"
        if not client.usable:
            return "its connection was lost or closed"
        if not client.idle:
            return "a call was still in flight when it came back"
        return None

    def _make_room(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether a new session may be kept: closes the oldest idle one of ``loop`` when full."""
        if len(self._entries) < self.max_sessions:
            return True
        idle = [e for e in self._entries if e.borrowers == 0 and e.loop is loop]
        if not idle:
            return False
        self._drop(idle[0], f"the pool is full ({self.max_sessions} sessions)")
        return True

    def _drop(self, entry: _Entry, why: str) -> None:
        """Forget an idle session and close it in the background (on its own loop)."""
        self._forget(entry)
        _cancel_timer(entry)
        logger.info("session pool: closing the session with %r: %s", entry.client.executor, why)
        self._closing.spawn(_close_quietly(entry.client), name="remotemedia:session-pool:close")

    def _expire(self, entry: _Entry) -> None:
        entry.timer = None
        if entry in self._entries and entry.borrowers == 0:
            self._drop(entry, f"idle for {self.idle_ttl:g} s")

    def _forget(self, entry: _Entry) -> None:
        # Loops in other threads may forget a dead loop's entry at the same moment.
        with self._lock:
            if entry in self._entries:
                self._entries.remove(entry)

    def _forget_dead_loops(self) -> None:
        dead = [e for e in self._entries if e.loop.is_closed()]
        for entry in dead:
            # Its connection died with its loop; nothing can run on that loop any more.
            self._forget(entry)
            logger.debug("session pool: forgetting the session with %r of a closed event loop", entry.client.executor)


def _cancel_timer(entry: _Entry) -> None:
    if entry.timer is not None:
        entry.timer.cancel()
        entry.timer = None


async def _close_quietly(client: RemoteProxyClient) -> None:
    try:
        await client.close()
    except Exception as exc:
        logger.warning("closing the session with %r failed: %s", client.executor, exc)


_default: SessionPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SessionPool:
    """
    The process-wide pool, made on first use: pass it to pipelines that
    should share warm sessions (``Pipeline(session_pool=default_pool())``).
    Pipelines do not use it unless told to (see the module docstring).
    """
    global _default
    with _default_lock:  # threads asking at once get the same pool
        if _default is None:
            _default = SessionPool()
        return _default
