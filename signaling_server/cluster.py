"""
Several signaling instances as one: the actions the hub asks of the shared
state, the interface that carries them out, and the instance-to-instance wire.

A standalone server (no ``--redis``) never sees any of this: its hub keeps
the registry in memory and answers with :class:`~signaling_server.hub.Send`
and :class:`~signaling_server.hub.Close` only. An instance of a cluster
(``ServerConfig.redis``) runs the same hub with an instance id; where a
decision needs the state every instance shares, the hub answers with one of
the actions below instead, and the I/O around it (:mod:`signaling_server.app`
with a :class:`Directory`) carries it out and feeds the outcome back
(:meth:`Hub.claimed`, :meth:`Hub.reserved`, :meth:`Hub.deliver`). The hub so
stays sans-I/O: every rule is still tested by calling methods.

What is shared, and why no more: the executor records (name, capacity,
capabilities, which instance holds its connection), each executor's reserved
slots, name ownership and client quotas. Sessions are not: each instance
knows the sessions that have an end on one of its connections, learning the
far end from the ``session`` it hands over (:class:`Forward`), so relaying an
offer, answer, candidate or bye costs one publish and no lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

__all__ = [
    "Forward",
    "Claim",
    "Reserve",
    "Grant",
    "Release",
    "Refresh",
    "Unclaim",
    "Survey",
    "Directory",
    "UNAVAILABLE",
    "Envelope",
    "encode_envelope",
    "decode_envelope",
]

#: Error code of a request the shared state could not serve (Redis unreachable).
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Forward:
    """Action: deliver ``message`` to connection ``conn`` of instance ``instance``."""

    instance: str
    conn: str
    message: dict
    #: Client credential id of the session, for a ``session`` message (the far
    #: instance releases the quota when the session ends there).
    credential: str = ""


@dataclass(frozen=True)
class Claim:
    """
    Action: take executor ``name`` for connection ``conn`` in the shared
    registry; answer with :meth:`Hub.claimed <signaling_server.hub.Hub.claimed>`.
    """

    conn: str
    name: str
    #: The executor's record as :meth:`Directory.claim` stores it.
    record: dict
    #: Credential id that will own the name (``None``: an open server, names have no owner).
    owner: str | None
    #: Whether the credential is a token minted for this name (it takes the name from any owner).
    named: bool = False


@dataclass(frozen=True)
class Reserve:
    """
    Action: choose an executor for a ``pair`` and reserve one of its slots
    atomically; answer with :meth:`Hub.reserved <signaling_server.hub.Hub.reserved>`.
    """

    conn: str
    session: str
    requirements: dict
    #: Executor names the client's token allows (``None``: any).
    only: tuple[str, ...] | None
    #: Sessions the credential may hold at once over all instances (``None``: no quota).
    quota: int | None
    credential: str


@dataclass(frozen=True)
class Grant:
    """A reserved slot: the executor, and where its connection is."""

    name: str
    instance: str
    conn: str
    capabilities: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    """Action: free session ``session``'s slot on ``executor`` and its place in ``credential``'s quota."""

    executor: str
    session: str
    credential: str = ""


@dataclass(frozen=True)
class Refresh:
    """Action: an executor's heartbeat: rewrite its record and push its expiry back."""

    name: str
    conn: str
    record: dict


@dataclass(frozen=True)
class Unclaim:
    """Action: executor ``name`` (on ``conn``) left; ``disown`` frees its name for other credentials too."""

    name: str
    conn: str
    disown: bool = False
    owner: str | None = None


@dataclass(frozen=True)
class Survey:
    """
    Action: list every live executor of the cluster for client ``conn``'s
    ``executors`` message; answer with :meth:`Hub.surveyed <signaling_server.hub.Hub.surveyed>`.
    """

    conn: str
    #: The message's ``request`` id, echoed in the reply.
    request: str | None = None


class Directory:
    """
    The state instances share, and the bus between them: the interface the
    application drives. :class:`signaling_server.redis_directory.RedisDirectory`
    implements it on Redis.

    ``claim`` and ``reserve`` answer (the hub waits for them); the other
    actions go through :meth:`submit`, in order, so a ``session`` handed to
    another instance always arrives before the offer that follows it.
    """

    #: This instance's id (unique in the cluster).
    instance: str

    async def start(self, deliver, lost=None) -> None:
        """
        Connect, and call ``deliver(envelope)`` with each :class:`Envelope`
        sent to this instance, and ``lost(refresh)`` for each :class:`Refresh`
        that found its name held by another connection (after Redis lost its
        data, another executor may have taken the name first).
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Stop delivering and disconnect."""
        raise NotImplementedError

    async def claim(self, action: Claim) -> str:
        """``"ok"``, ``"name_taken"``, ``"name_owned"`` or :data:`UNAVAILABLE`."""
        raise NotImplementedError

    async def reserve(self, action: Reserve) -> Grant | tuple[str, str]:
        """A :class:`Grant`, or ``(error code, message)``."""
        raise NotImplementedError

    async def survey(self, action: Survey) -> list | tuple[str, str]:
        """Every live executor as :class:`~signaling_server.registry.ExecutorRecord` s, or ``(error code, message)``."""
        raise NotImplementedError

    def submit(self, action) -> None:
        """Queue a :class:`Forward`, :class:`Release`, :class:`Refresh` or :class:`Unclaim`."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Wait until everything :meth:`submit` queued is written."""
        raise NotImplementedError

    async def tick(self) -> None:
        """Periodic upkeep: keep this instance marked alive, check the connection."""
        raise NotImplementedError

    def health(self) -> tuple[bool, str]:
        """``(healthy, why not)``."""
        raise NotImplementedError


# -- the instance-to-instance wire ------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """One message from instance ``origin`` for connection ``conn`` of the instance it is published to."""

    origin: str
    conn: str
    message: dict
    credential: str = ""


def encode_envelope(origin: str, action: Forward) -> str:
    """The text published for ``action``."""
    body = {"from": origin, "to": action.conn, "message": action.message}
    if action.credential:
        body["credential"] = action.credential
    return json.dumps(body, separators=(",", ":"))


def decode_envelope(data: str | bytes) -> Envelope:
    """Parse what :func:`encode_envelope` wrote; ``ValueError`` on anything else."""
    body = json.loads(data)
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise ValueError("not an envelope")
    origin, conn, credential = body.get("from"), body.get("to"), body.get("credential", "")
    if not all(isinstance(v, str) for v in (origin, conn, credential)):
        raise ValueError("not an envelope")
    return Envelope(origin, conn, body["message"], credential)
