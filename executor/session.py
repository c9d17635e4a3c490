"""
One client's session on the executor: a peer connection, the ``rpc`` data
channel, and the session's objects.

Nothing from the client is unpickled before its ``HELLO`` has shown the
session's ticket: the one the signaling server sent this executor in
``session``, over the executor's own connection, authenticated with the
executor credential. The server signs tickets with a secret it shows no one;
the executor needs no secret, only the word of the server it registered with,
and admits exactly the ticket it was told about. The ticket travels over the
DTLS data channel whose fingerprint came through the same authenticated
signaling, so a peer that has it is the client that was paired. On the
direct lane (:mod:`remotemedia.transport.direct`) the executor's door admits
a TCP connection only with a session's ticket (over TLS where signaling is
``wss://``), and the session then checks the ``HELLO`` on it exactly as on the
data channel.

After that the session's requests go to a :class:`~executor.dispatch.Dispatcher`:
in the executor itself (``inprocess`` mode), or, still encoded, to the
session's own worker process (``process`` mode, the default; see
:mod:`executor.sandbox`), which is then the only place anything from the
client is unpickled.

A session bounds what its client can make it hold or spend (issue 18):
compressed bodies are inflated within a per-second budget
(:class:`~remotemedia.rpc.compression.InflateBudget`), requests relayed to
the worker obey input credit and a byte bound
(:class:`~executor.relay.RelayGuard`), and a message it cannot take (an
unexpected kind, an undecodable body, over a budget) gets an ``ERROR``
reply and a log line; after :data:`MAX_STRIKES` of those the session ends.
When it ends, everything it held is let go by reference counting, at once:
no reference cycle is left for the garbage collector.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from remotemedia.aio import Tasks
from remotemedia.exceptions import DecodeError, RemoteMediaError
from remotemedia.rpc import PROTOCOL_VERSION, ErrorCode, InflateBudget, Kind, Message, Raw, Rejected, RPCProtocol, TooLarge, calls, peek
from remotemedia.signaling import SignalingSession
from remotemedia.transport.connection import Lane, RPCConnection, accept_lane
from remotemedia.transport.door import DirectDoor
from remotemedia.transport.tracks import MediaSlot

from .dispatch import Dispatcher, Limits, pickle_refused, too_large_error
from .isolation import Confinement
from .media import MediaBridge
from .peer_session import PeerSession, SessionOver
from .objects import CLEANUP_TIMEOUT, ObjectTable, RemoteCallError, error_body
from .process import WorkerProcess
from .relay import Refusal, RelayGuard

if TYPE_CHECKING:  # executor.py imports this module
    from .executor import ExecutorConfig

__all__ = ["SessionSettings", "ExecutorSession", "ticket_problem", "DEFAULT_MAX_MESSAGE_SIZE", "MODES", "MAX_STRIKES"]

logger = logging.getLogger(__name__)

#: Largest message an executor accepts from a client unless told otherwise (64 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: Execution modes: where a session's objects run.
MODES = ("process", "inprocess")
# What a process-mode session passes to its worker without decoding.
_RELAYED = frozenset({Kind.CREATE, Kind.CALL, Kind.RELEASE, Kind.CANCEL, Kind.CREDIT, Kind.INPUT, Kind.INPUT_END})
#: Messages a session refuses (unexpected, undecodable, over a budget) before it ends the session.
MAX_STRIKES = 16


@dataclass(frozen=True)
class SessionSettings:
    """
    What every session of one executor shares: the executor's config, read
    through rather than copied (so a session sees exactly what the executor was
    given), and how ``process`` mode confines its workers.
    """

    #: The executor's settings (``executor.executor.ExecutorConfig``).
    config: ExecutorConfig
    #: How ``process`` mode confines each session's worker (``None``: not at all).
    confinement: Confinement | None = None
    #: Where clients dial direct lanes (``None``: the executor offers none).
    door: DirectDoor | None = None

    @property
    def executor(self) -> str:
        """The executor's registered name (the ticket names it)."""
        return self.config.name

    @property
    def max_message_size(self) -> int:
        """Largest message accepted from a client, in bytes."""
        return self.config.max_message_size

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between data-channel pings."""
        return self.config.heartbeat_interval

    @property
    def heartbeat_timeout(self) -> float:
        """Seconds of data-channel silence after which the client is taken for dead."""
        return self.config.heartbeat_timeout

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for the offer, for the data channel to open, and for the client's HELLO."""
        return self.config.connect_timeout

    @property
    def ice_servers(self) -> tuple:
        """STUN/TURN servers for this side's peer connections."""
        return self.config.ice_servers

    @property
    def mode(self) -> str:
        """``"process"``: each session's objects run in a worker process of their own;
        ``"inprocess"``: in the executor (trusted code; lowest latency; shared models)."""
        return self.config.mode

    @property
    def limits(self) -> Limits:
        """The executor's own limits (its call timeout is lowered to the client's, if shorter)."""
        return self.config.limits


def ticket_problem(settings: SessionSettings, session: SignalingSession, ticket: Any) -> str | None:
    """
    Why ``ticket``, shown by a peer of ``session``, does not let it in (``None`` when it does).

    The only ticket accepted is the one the signaling server sent with
    ``session`` on this executor's authenticated connection.
    """
    if not isinstance(ticket, str) or not hmac.compare_digest(ticket.encode(), session.ticket.encode()):
        return "wrong session ticket"
    return None


class ExecutorSession(PeerSession):
    """Serves one paired client until it leaves, goes silent or breaks the protocol."""

    def __init__(self, signaling: SignalingSession, settings: SessionSettings, worker: WorkerProcess | None = None) -> None:
        """``worker``: a worker process started ahead of time (``process`` mode), or ``None`` to start one."""
        super().__init__(signaling, settings)
        self._spare = worker
        self.authenticated = False
        self._refused = False
        self._lane: Lane | None = None
        self._rpc: RPCConnection | None = None
        self._dispatcher: Dispatcher | None = None  # inprocess mode, once authenticated
        self._worker: WorkerProcess | None = None  # process mode
        self._slots: list[MediaSlot] = []
        self._bridges: dict[int, MediaBridge] = {}
        self._guard: RelayGuard | None = None  # process mode
        self._strikes = 0
        self._hello_timer: asyncio.TimerHandle | None = None
        self._replies = Tasks()  # replies being sent; cancelled at teardown
        # Encodes what a bridge passes to the worker (a local socket: no compression), and decodes what it must look into.
        self._worker_codec = RPCProtocol(settings.max_message_size, compress=False)
        # From the start: the client may knock on the executor's door (the direct lane) with this session's ticket
        # while a worker still boots.
        self._direct = settings.door.expect(signaling.ticket) if settings.door is not None else None

    async def _serve(self) -> None:
        if self.settings.mode == "process":
            worker, self._spare = self._spare, None
            if worker is None or not worker.alive:
                if worker is not None:
                    await worker.close(1.0)
                # Booting now, while ICE and DTLS negotiate.
                worker = WorkerProcess(confinement=self.settings.confinement)
                self._worker = worker
                await worker.start()
            self._worker = worker
            self._worker.bind(self._relay_reply, self._end)
            self._guard = RelayGuard()
        inflate = InflateBudget(self.settings.limits.inflate_rate, largest=self.settings.max_message_size)
        door = self.settings.door
        # The executor's own servers first, then those the signaling server handed out (--ice-server).
        self._lane = await accept_lane(
            self.signaling,
            ice_servers=[*self.settings.ice_servers, *self.signaling.ice_servers],
            protocol=RPCProtocol(self.settings.max_message_size, relay=_RELAYED if self._worker else frozenset(), inflate=inflate),
            on_event=self._on_event,
            on_lost=self._end,
            on_bye=lambda why: self._end(f"the client left ({why})"),
            heartbeat_interval=self.settings.heartbeat_interval,
            heartbeat_timeout=self.settings.heartbeat_timeout,
            timeout=self.settings.connect_timeout,
            # A bye (or anything else that ends the session) stops the wait at once: the slot is freed now.
            ended=self._done,
            direct=self._direct,
        )
        if door is not None:
            door.forget(self.signaling.ticket)  # chosen: a later knock is refused
        if self._lane is None:
            raise SessionOver()
        self._rpc, self._slots = self._lane.rpc, self._lane.slots
        # Operators see how each session goes (a relay costs the TURN server's bandwidth).
        logger.info("session %s: %s lane, route %s", self.signaling.id, self._lane.name, self._lane.route)
        # A peer that connects but never authenticates must not hold a slot.
        self._hello_timer = asyncio.get_running_loop().call_later(self.settings.connect_timeout, self._no_hello)
        await self._done.wait()

    async def _teardown(self) -> None:
        if self.settings.door is not None:
            self.settings.door.forget(self.signaling.ticket)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        for bridge in list(self._bridges.values()):
            bridge.close()
        for slot in self._slots:
            slot.close()
        await self._say_why(self._why or "the executor is stopping")
        if self._spare is not None:  # given but not used
            await self._spare.close(1.0)
        if self._dispatcher is not None:
            await self._dispatcher.close()
        if self._worker is not None:
            # Cleanups run in the worker; it is killed if they take too long.
            await self._worker.close(2 * CLEANUP_TIMEOUT)
        if self._lane is not None:
            await self._lane.close()  # bounded: the slot is freed even when TURN is unreachable
        await self._replies.close()
        # What holds our bound methods goes, so nothing is left for the garbage collector.
        self._dispatcher = self._worker = self._guard = self._lane = None
        self._bridges.clear()
        self._slots = []

    def _no_hello(self) -> None:
        if not self.authenticated:
            self._end(f"no HELLO within {self.settings.connect_timeout:g} s")

    # -- requests ----------------------------------------------------------------------

    def _on_event(self, event: Message | TooLarge | Raw) -> None:
        if self._refused or self._ending:
            return
        if isinstance(event, TooLarge):
            self._reply_later(self._error(event.id or 0, too_large_error(event)))
            return
        if not self.authenticated and not (isinstance(event, Message) and event.kind is Kind.HELLO):
            # Nothing, above all nothing pickled, is looked at before HELLO.
            self._reply_later(self._refuse(event.id, "a request came before authentication: send HELLO with the session ticket first"))
        elif isinstance(event, Rejected):
            self._strike(event.id, event.code, event.reason)
        elif event.kind is Kind.HELLO:
            if self.authenticated:
                self._strike(event.id, ErrorCode.BAD_REQUEST, "a second HELLO: the session is authenticated already")
            else:
                self._hello(event)
        elif event.pickled and not self.settings.limits.unpickles:
            # --accept wasm: refused here, before a relay to the worker (which refuses too).
            self._reply_later(self._error(event.id, pickle_refused(event.kind, self.settings.limits.accept)))
        elif event.kind is Kind.MEDIA:
            self._media(event)
        elif event.kind not in _RELAYED:
            self._strike(event.id, ErrorCode.BAD_REQUEST, f"a {event.kind.name} is not something a client sends")
        elif event.id in self._bridges and event.kind in (Kind.INPUT, Kind.INPUT_END, Kind.CANCEL):
            bridge = self._bridges[event.id]
            if event.kind is Kind.INPUT:
                if self._guarded(event, 0) is None:
                    bridge.client_input(event)
            elif event.kind is Kind.INPUT_END:
                bridge.client_end(self._plain_body(event))
            else:
                self._pass_on(event)
                bridge.close()
        else:
            refusal = self._guarded(event, len(event.data) if isinstance(event, Raw) else 0)
            if refusal is None:
                self._pass_on(event)

    def _guarded(self, event: Message | Raw, size: int) -> Refusal | None:
        """Asks the relay guard (process mode) whether ``event`` may go on; answers the client when not."""
        if self._guard is None:
            return None
        refusal = self._guard.request(event.kind, event.id, size, self._worker.backlog)
        if refusal is not None and not refusal.quiet:
            if refusal.cancel:
                self._to_method(Kind.CANCEL, event.id, None)
            self._strike(event.id, refusal.code, refusal.reason)
        return refusal

    def _strike(self, id: int, code: str, reason: str) -> None:
        """Answer a message the session will not take; end the session after :data:`MAX_STRIKES` of them."""
        self._strikes += 1
        logger.warning("session %s: refused a message (%d of %d): %s", self.signaling.id, self._strikes, MAX_STRIKES, reason)
        self._reply_later(self._error(id, RemoteCallError(reason, code)))
        if self._strikes >= MAX_STRIKES:
            self._end(f"the client sent {self._strikes} messages the executor refused (the last: {reason})")

    def _pass_on(self, event: Message | Raw) -> None:
        """A request to the session's objects: to the worker still encoded, or to the dispatcher."""
        if isinstance(event, Raw):
            self._worker.send(event.data)
        else:
            self._dispatcher.handle(event)

    def _plain_body(self, event: Message | Raw) -> Any:
        """The body of a relayed message that is not pickled (``None`` for pickled or bad ones)."""
        if isinstance(event, Raw):
            try:
                event = self._worker_codec.decode(event.data)
            except DecodeError:
                return None
        return None if not isinstance(event, Message) or event.pickled else event.body

    # -- media ---------------------------------------------------------------------------

    def _media(self, message: Message) -> None:
        """``MEDIA``: a call takes a slot (``{slot}``, before its ``CALL``), or announces a kind of frame."""
        id = message.id
        try:
            media = calls.parse_media(None if message.pickled else message.body)
        except DecodeError as exc:
            self._reply_later(self._error(id, RemoteCallError(str(exc))))
            return
        if media.slot is None:
            bridge = self._bridges.get(id)
            if bridge is not None:
                try:
                    bridge.announce(media.announcement)
                except ValueError as exc:
                    self._reply_later(self._error(id, RemoteCallError(str(exc))))
            return
        index = media.slot
        if not 0 <= index < len(self._slots):
            why = f"media slot {index!r} does not exist (the session has {len(self._slots)})"
        elif self._slots[index].owner is not None or id in self._bridges:
            why = f"media slot {index} is in use by call {self._slots[index].owner}"
        else:
            self._bridges[id] = MediaBridge(
                id,
                self._slots[index],
                lambda kind, body: self._to_method(kind, id, body),
                self._pass_on,
                lambda kind, body: self._bridge_send(kind, id, body),
                lambda: self._bridges.pop(id, None),
            )
            return
        self._reply_later(self._error(id, RemoteCallError(why)))

    async def _bridge_send(self, kind: Kind, id: int, body: Any) -> None:
        if kind is Kind.CREDIT and self._guard is not None:
            self._guard.granted(id, body)  # the bridge lets the client send more
        await self._rpc.send(kind, id, body)

    def _to_method(self, kind: Kind, id: int, body: Any) -> None:
        if self._ending:
            return
        if self._worker is not None:
            self._worker.send(self._worker_codec.encode(kind, id, body))
        else:
            self._dispatcher.handle(Message(kind, id, body))

    def _hello(self, message: Message) -> None:
        try:
            hello = calls.parse_hello(message.body)
        except DecodeError:
            hello = calls.Hello(None, None)  # refused below: no ticket
        s = self.signaling
        why = ticket_problem(self.settings, s, hello.ticket)
        if why is None and hello.version != PROTOCOL_VERSION:
            why = f"protocol version {hello.version!r} is not {PROTOCOL_VERSION} (upgrade remotemedia on both ends)"
        if why is not None:
            self._reply_later(self._refuse(0, why))
            return
        self.authenticated = True
        if hello.max_message_size is not None:
            self._rpc.protocol.peer_limit(hello.max_message_size)
        limits = self.settings.limits
        timeout = hello.timeout
        if timeout is not None:
            shorter = timeout if limits.call_timeout is None else min(timeout, limits.call_timeout)
            limits = dataclasses.replace(limits, call_timeout=shorter)
        if self._worker is not None:
            # Its replies go to the client as it made them: compressed only where the lane compresses.
            protocol = self._rpc.protocol
            self._worker.configure(s.id, self.settings.max_message_size, protocol.send_limit, limits, protocol.compress)
        else:
            self._dispatcher = Dispatcher(ObjectTable(s.id), self._send, limits, self._end)
        self._reply_later(
            self._send(Kind.WELCOME, 0, calls.welcome_body(self.settings.executor, self.settings.max_message_size))
        )

    # -- replies -------------------------------------------------------------------------

    async def _send(self, kind: Kind, id: int, body: Any = None) -> None:
        bridge = self._bridges.get(id)
        if bridge is not None:
            bridge.output(kind, lambda: body, lambda: self._rpc.send(kind, id, body, pickle_fallback=True))
            return
        await self._rpc.send(kind, id, body, pickle_fallback=True)

    async def _relay_reply(self, data: bytes) -> None:
        try:
            kind, id = peek(data)
        except DecodeError:
            logger.warning("session %s: the worker sent %d bytes that are not a message; dropped", self.signaling.id, len(data))
            return
        if self._guard is not None:
            self._guard.reply(kind, id)
            if kind == Kind.CREDIT and id not in self._bridges:
                self._guard.granted(id, self._plain_body(Raw(Kind.CREDIT, id, data)))
        if self._bridges:
            bridge = self._bridges.get(id)
            if bridge is not None and kind in Kind._value2member_map_:
                bridge.output(Kind(kind), lambda: self._plain_body(Raw(Kind(kind), id, data)), lambda: self._write_reply(data))
                return
        await self._write_reply(data)

    async def _write_reply(self, data: bytes) -> None:
        # The worker checked the client's limit already; what fails here cannot be answered.
        if self._rpc is None or self._rpc.lost is not None:
            return
        try:
            await self._rpc.write(self._rpc.protocol.send_raw(data))
        except (RemoteMediaError, ValueError) as exc:
            logger.warning("session %s: a reply from the worker was not sent: %s", self.signaling.id, exc)

    async def _error(self, id: int, exc: BaseException) -> None:
        if self._rpc is None or self._rpc.lost is not None:
            return
        body = error_body(exc)
        if body["code"] == ErrorCode.EXCEPTION:
            logger.info("session %s: call %d raised %s: %s", self.signaling.id, id, body["type"], body["message"])
        try:
            await self._rpc.send(Kind.ERROR, id, body)
        except RemoteMediaError as send_failed:
            logger.debug("session %s: error reply for %d not sent: %s", self.signaling.id, id, send_failed)

    async def _say_why(self, why: str) -> None:
        """Tell an authenticated client, before the teardown, why its session ends (ERROR 0, ``session_ended``)."""
        if not self.authenticated or self._refused or self._rpc is None or self._rpc.lost is not None:
            return
        try:
            await self._rpc.send(Kind.ERROR, 0, calls.error_body(ErrorCode.SESSION_ENDED, why[:1000]))
            await self._rpc.drain(0.5)
        except RemoteMediaError:
            pass

    async def _refuse(self, id: int, why: str) -> None:
        """Tell the client why, then end the session."""
        if self._refused or self._done.is_set():
            return
        self._refused = True  # answer once; whatever else the peer sends is ignored
        logger.warning("session %s: refused: %s", self.signaling.id, why)
        await self._error(id, RemoteCallError(why, ErrorCode.UNAUTHORIZED))
        await self._rpc.drain()
        self._end(f"refused: {why}")

    def _reply_later(self, coro: Any) -> None:
        """Send a reply without waiting for it; kept, and cancelled at teardown if still under way."""
        self._replies.spawn(coro)
