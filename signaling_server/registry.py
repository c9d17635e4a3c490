"""
The registry: which executors are registered, what they offer, and which
sessions are open between clients and executors.

Plain data and a choice rule, no I/O. :class:`~signaling_server.hub.Hub`
drives it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from remotemedia.signaling import messages

__all__ = ["ExecutorRecord", "SessionRecord", "Registry"]


@dataclass(eq=False)
class ExecutorRecord:
    """One registered executor."""

    #: Unique name the executor registered with.
    name: str
    #: Connection id of its websocket.
    conn: str
    #: Most sessions it accepts at once.
    capacity: int
    #: Whether it has a GPU.
    gpu: bool = False
    #: Model names it has loaded or can load.
    models: tuple[str, ...] = ()
    #: Named services it offers.
    services: tuple[str, ...] = ()
    #: What it announced for discovery only (``""``: not announced): its remotemedia
    #: version, what clients may send it (``python``, ``wasm``, ``any``), its mode.
    version: str = ""
    accept: str = ""
    mode: str = ""
    #: Load it reported in its last heartbeat (its own measure, 0 when idle).
    load: float = 0.0
    #: Sessions it reported in its last heartbeat.
    reported_sessions: int = 0
    #: Time of its last message (heartbeat or other), server clock.
    last_seen: float = 0.0
    #: Ids of the sessions the server paired it into and that are still open.
    sessions: set[str] = field(default_factory=set)
    #: Registration order, the last tie-breaker of the choice.
    order: int = 0
    #: Where it takes direct lanes (``HOST:PORT`` each), told only to the clients paired with it.
    direct: tuple[str, ...] = ()

    @property
    def free(self) -> int:
        """
        Sessions it can still take.

        The sessions it reports count too: after a restart of this server an
        executor still serves sessions paired by the one before, which this
        registry never saw.
        """
        return self.capacity - max(len(self.sessions), self.reported_sessions)

    @classmethod
    def announced(cls, name: str, conn: str, capacity: int, capabilities: dict, **state) -> ExecutorRecord:
        """The record of what a ``register`` announced (``capabilities`` as the protocol writes them)."""
        return cls(
            name=name,
            conn=conn,
            capacity=capacity,
            gpu=capabilities.get("gpu", False),
            models=tuple(capabilities.get("models", ())),
            services=tuple(capabilities.get("services", ())),
            version=capabilities.get("version", ""),
            accept=capabilities.get("accept", ""),
            mode=capabilities.get("mode", ""),
            **state,
        )

    def capabilities(self) -> dict:
        """Its capabilities as the protocol writes them (what it did not announce left out)."""
        caps = {"gpu": self.gpu, "models": list(self.models), "services": list(self.services)}
        caps.update((key, value) for key in ("version", "accept", "mode") if (value := getattr(self, key)))
        return caps

    def listing(self, services: tuple[str, ...] | None = None) -> dict:
        """
        Its entry in an ``executors`` reply: what it offers and how busy it is,
        never where it is; ``services``: the ones the client may see (``None``: all).
        """
        return {
            "name": self.name,
            "services": [s for s in self.services if services is None or s in services],
            "models": list(self.models),
            "gpu": self.gpu,
            "capacity": self.capacity,
            "free": max(0, self.free),
            "load": self.load,
            "version": self.version,
            "accept": self.accept,
            "mode": self.mode,
        }

    def matches(self, requirements: dict) -> bool:
        """Whether it satisfies a ``pair`` request's requirements (:func:`remotemedia.signaling.messages.meets`)."""
        return messages.meets(requirements, name=self.name, gpu=self.gpu, services=self.services, models=self.models)


@dataclass(eq=False)
class SessionRecord:
    """One open session: a client and an executor that relay through the server."""

    #: Session id (random, URL-safe).
    id: str
    #: Connection id of the client end.
    client: str
    #: Connection id of the executor end.
    executor_conn: str
    #: Name of the executor.
    executor: str
    #: Id of the client's credential, whose session quota the session counts against.
    credential: str = ""
    #: Instance of a cluster that holds the client's connection (``None``: this one).
    client_instance: str | None = None
    #: Instance of a cluster that holds the executor's connection (``None``: this one).
    executor_instance: str | None = None

    def other_end(self, conn: str) -> str | None:
        """The connection at the other end from ``conn``, or ``None`` if ``conn`` is not an end."""
        far = self.far_end(conn)
        return None if far is None else far[1]

    def far_end(self, conn: str) -> tuple[str | None, str] | None:
        """
        ``(instance, connection)`` at the other end from the local connection
        ``conn`` (instance ``None``: this one), or ``None`` if ``conn`` is not a local end.
        """
        if conn == self.client and self.client_instance is None:
            return self.executor_instance, self.executor_conn
        if conn == self.executor_conn and self.executor_instance is None:
            return self.client_instance, self.client
        return None


class Registry:
    """Executors by name and sessions by id."""

    def __init__(self) -> None:
        self.executors: dict[str, ExecutorRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self._order = itertools.count()

    def add_executor(self, record: ExecutorRecord) -> None:
        """Register an executor (its name must be free)."""
        assert record.name not in self.executors
        record.order = next(self._order)
        self.executors[record.name] = record

    def remove_executor(self, name: str) -> list[SessionRecord]:
        """Drop an executor and return its sessions, which are closed too."""
        record = self.executors.pop(name)
        return [self.sessions.pop(sid) for sid in sorted(record.sessions)]

    def choose(self, requirements: dict, *, only: tuple[str, ...] | None = None) -> ExecutorRecord | None:
        """
        The matching executor with the most free capacity, or ``None``;
        ``only``: the executor names the client's token allows (``None``: any).

        Ties go to the lower reported load, then to the earlier registration.
        Executors named in ``requirements["avoid"]`` come last, whatever
        their capacity: a client re-pairing after losing one asks to avoid it
        (it may be frozen yet still registered), but takes it if it is all
        there is.
        """
        avoid = set(requirements.get("avoid", ()))
        best = None
        best_key = None
        for record in self.executors.values():
            if record.free <= 0 or not record.matches(requirements) or (only is not None and record.name not in only):
                continue
            key = (record.name in avoid, -record.free, record.load, record.order)
            if best_key is None or key < best_key:
                best, best_key = record, key
        return best

    def why_none(self, requirements: dict, *, only: tuple[str, ...] | None = None) -> str:
        """Explain, for the ``no_executor`` error, why :meth:`choose` found nothing."""
        if only is not None and not any(name in self.executors for name in only):
            return (
                f"none of the executors this token allows ({', '.join(only) or 'none'}) is registered; "
                "retry later or ask for a token that allows others"
            )
        if not self.executors:
            return (
                "no executor is registered with this signaling server; start one with "
                "'./run executor --signaling ws://HOST:PORT' (or 'python -m executor ...') and retry"
            )
        matching = [
            r for r in self.executors.values() if r.matches(requirements) and (only is None or r.name in only)
        ]
        if not matching:
            wanted = ", ".join(f"{k}={v!r}" for k, v in sorted(requirements.items()))
            return (
                f"none of the {len(self.executors)} registered executors matches "
                f"the requirements ({wanted}); relax them or start an executor that offers them"
            )
        return (
            f"all {len(matching)} matching executors are at capacity; "
            "retry later or start more executors"
        )

    def open_session(
        self, session_id: str, client: str, record: ExecutorRecord, *, credential: str = ""
    ) -> SessionRecord:
        """Open a session between a client connection (authenticated as ``credential``) and an executor."""
        session = SessionRecord(session_id, client, record.conn, record.name, credential)
        self.sessions[session_id] = session
        record.sessions.add(session_id)
        return session

    def add_session(self, session: SessionRecord) -> None:
        """
        Hold a session of which only one end may be on this instance (a
        cluster's): its local executor's record, if any, counts it.
        """
        self.sessions[session.id] = session
        record = self.executors.get(session.executor)
        if record is not None and session.executor_instance is None:
            record.sessions.add(session.id)

    def sessions_of(self, credential: str) -> int:
        """
        Open sessions of clients authenticated as ``credential``: a count,
        not a counter, so it cannot drift from the sessions really open.
        """
        return sum(1 for session in self.sessions.values() if session.credential == credential)

    def close_session(self, session_id: str) -> SessionRecord:
        """Free a session (and its executor's slot)."""
        session = self.sessions.pop(session_id)
        record = self.executors.get(session.executor)
        if record is not None:
            record.sessions.discard(session_id)
        return session
