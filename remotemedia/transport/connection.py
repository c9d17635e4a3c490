"""
What the RPC runs over: a *connection* (:class:`RPCConnection`), and the
*lane* that made it (:class:`Lane`: the connection with whatever came with
it, such as a peer connection and its media slots).

The call conversation (:class:`~remotemedia.remote.RemoteProxyClient`, the
executor's :class:`~executor.session.ExecutorSession`) sees only
:class:`RPCConnection`; each side opens its lane through one factory
(:func:`open_lane` on the client, :func:`accept_lane` on the executor). Today
there is one lane, :class:`DataChannelLane` (the ``rpc`` data channel of an
aiortc peer connection), and :class:`~remotemedia.transport.direct.DirectLane`
(a TCP stream straight to the executor, when it offers one and the client
reaches it; media slots then ride a peer connection opened alongside). Each
is one class implementing :class:`RPCConnection` and :class:`Lane`, and one
branch in each factory.

Set-up on each side:

- client (offers): a peer connection with the ICE servers in order, the
  ``rpc`` data channel and ``media_tracks`` media slots in the first offer,
  the answer applied, the channel awaited open, then the RPC channel and a
  watch on the signaling session for the executor's ``bye``;
- executor (answers): the same, mirrored; its media slots join the client's
  transceivers before the answer, and a session that ends (a ``bye``) while
  the channel is awaited stops the wait at once.

A factory that fails closes what it had made, so a caller has nothing to
clean up unless it got a lane back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

from ..exceptions import ConnectionLostError
from ..rpc import Kind, RPCProtocol
from ..rpc.protocol import Event
from ..signaling import SignalingSession
from .datachannel import RPCChannel
from .ice import Route, first_turn, order_ice_servers, selected_route
from .peer import RPC_LABEL, close_peer_connection, make_answer, make_offer, new_peer_connection, wait_open, watch_bye
from .tracks import MediaSlot, add_slots, answer_slots, listen_slots

__all__ = ["RPCConnection", "Lane", "DataChannelLane", "open_lane", "accept_lane", "opened_or_ended"]

logger = logging.getLogger(__name__)


@runtime_checkable
class RPCConnection(Protocol):
    """
    A reliable, ordered connection carrying RPC messages, with heartbeats.

    It is built with two callbacks, called on the event loop: ``on_event``
    with every :class:`~remotemedia.rpc.Message`, :class:`~remotemedia.rpc.TooLarge`
    or :class:`~remotemedia.rpc.Rejected` except pings and pongs (answered
    inside), and ``on_lost(reason)`` once, when the connection breaks, the
    peer goes silent for the heartbeat timeout, or breaks the protocol.
    :class:`~remotemedia.transport.RPCChannel` is the data-channel one.
    """

    #: The sans-I/O RPC core: framing, chunking, the peer's size limit.
    protocol: RPCProtocol
    #: Why the connection is unusable, once it is; ``None`` while it works.
    lost: str | None
    #: Round-trip time of the last answered heartbeat, in seconds (``None`` before one).
    rtt: float | None

    async def send(self, kind: Kind, id: int, body: Any = None, *, pickle_fallback: bool = False) -> None:
        """Send one message, waiting while the send buffer is full; :exc:`ConnectionLostError` once lost."""

    async def send_pickled(self, kind: Kind, id: int, data: bytes) -> None:
        """Send one message whose body is cloudpickle bytes already."""

    async def write(self, payloads: list[bytes]) -> None:
        """Write the encoded chunks of one message back to back (as :meth:`RPCProtocol.send_raw` makes them)."""

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait, at most ``timeout`` seconds, until everything sent has left: before closing on purpose."""

    def close(self, reason: str = "closed by this end") -> None:
        """Stop the heartbeat, close, and drop the callbacks; ``on_lost`` is called if it was not yet. Safe twice."""


class Lane:
    """
    One lane to the peer: its :class:`RPCConnection` and what came with it.

    :meth:`close` ends everything the lane made; it is bounded in time (a
    TURN allocation over a broken route is not waited for) and safe to call twice.
    """

    #: The connection the RPC runs over.
    rpc: RPCConnection
    #: The media slots negotiated with the connection (none for a lane without media).
    slots: list[MediaSlot]
    #: Which lane this is: ``"datachannel"`` or ``"direct"``.
    name: str = "datachannel"

    @property
    def route(self) -> Route | None:
        """How the lane's packets go (``direct``, ``stun``, ``relay``), ``None`` where that is not known."""
        return None

    async def close(self, reason: str = "closed by this end") -> None:
        """Close the connection and everything the lane made."""
        raise NotImplementedError


class DataChannelLane(Lane):
    """The RPC over the ``rpc`` data channel of an aiortc peer connection, with media slots."""

    def __init__(self, pc: Any, rpc: RPCChannel, slots: list[MediaSlot], watcher: asyncio.Task, turn: str | None) -> None:
        self.pc = pc
        self.rpc = rpc
        self.slots = slots
        self._watcher: asyncio.Task | None = watcher
        self._turn = turn

    @property
    def route(self) -> Route | None:
        return selected_route(self.pc, self._turn) if self.pc is not None else None

    async def close(self, reason: str = "closed by this end") -> None:
        for slot in self.slots:
            slot.close()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self.rpc.close(reason)
        pc, self.pc = self.pc, None
        if pc is not None:
            # Bounded: releasing a TURN allocation over a broken route takes ~30 s (see close_peer_connection).
            await close_peer_connection(pc)

    @classmethod
    async def connect(
        cls,
        session: SignalingSession,
        *,
        ice_servers: Iterable[str | dict],
        media_tracks: int,
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        on_bye: Callable[[str], None],
        heartbeat_interval: float,
        heartbeat_timeout: float,
        timeout: float,
        what: str,
    ) -> DataChannelLane:
        """The client's side: offer, and wait (at most ``timeout`` s) for the channel to open."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        servers = await order_ice_servers(ice_servers)
        pc = new_peer_connection(servers)
        slots: list[MediaSlot] = []
        try:
            channel = pc.createDataChannel(RPC_LABEL)
            # Every slot's tracks are in the first offer: no frame waits for a renegotiation.
            slots = add_slots(pc, media_tracks)
            await make_offer(pc, session, max(0.1, deadline - loop.time()))
            listen_slots(pc, slots)
            await wait_open(channel, max(0.1, deadline - loop.time()), what, pc)
        except BaseException:
            await _abandon(pc, slots)
            raise
        rpc = RPCChannel(
            channel, protocol, on_event, on_lost, heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout
        )
        watcher = asyncio.create_task(watch_bye(session, on_bye), name="rpc-signaling-watch")
        return cls(pc, rpc, slots, watcher, first_turn(servers))

    @classmethod
    async def accept(
        cls,
        session: SignalingSession,
        *,
        ice_servers: Iterable[str | dict],
        protocol: RPCProtocol,
        on_event: Callable[[Event], None],
        on_lost: Callable[[str], None],
        on_bye: Callable[[str], None],
        heartbeat_interval: float,
        heartbeat_timeout: float,
        timeout: float,
        ended: asyncio.Event,
    ) -> DataChannelLane | None:
        """
        The executor's side: answer, and wait (``timeout`` s for each step) for the channel to open.

        Returns ``None`` when ``ended`` is set first (the client said bye):
        the session's slot is then freed at once, not after the timeout.
        Raises :exc:`asyncio.TimeoutError` when the offer or the channel does not come in time.
        """
        servers = await order_ice_servers(ice_servers)
        pc = new_peer_connection(servers)
        opened: asyncio.Future = asyncio.get_running_loop().create_future()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == RPC_LABEL and not opened.done():
                opened.set_result(channel)

        slots: list[MediaSlot] = []
        watcher: asyncio.Task | None = None

        def add_slots_to(pc: Any) -> None:
            # Our tracks join the client's transceivers before the answer: media needs no renegotiation.
            slots.extend(answer_slots(pc))

        try:
            await make_answer(pc, session, timeout, add_slots_to)
            # Only now: before, the offer is read by make_answer itself.
            watcher = asyncio.create_task(watch_bye(session, on_bye), name=f"rpc-signaling-watch-{session.id}")
            if not await opened_or_ended(opened, ended, timeout):
                if ended.is_set():
                    await _abandon(pc, slots, watcher)
                    return None
                raise asyncio.TimeoutError()
        except BaseException:
            await _abandon(pc, slots, watcher)
            raise
        rpc = RPCChannel(
            opened.result(), protocol, on_event, on_lost, heartbeat_interval=heartbeat_interval, heartbeat_timeout=heartbeat_timeout
        )
        return cls(pc, rpc, slots, watcher, first_turn(servers))


async def opened_or_ended(opened: asyncio.Future, ended: asyncio.Event, timeout: float) -> bool:
    """Wait, at most ``timeout`` s, for ``opened`` to be done or ``ended`` to be set; whether ``opened`` is done."""
    waiting = asyncio.ensure_future(ended.wait())
    try:
        await asyncio.wait({opened, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    return opened.done()


async def _abandon(pc: Any, slots: list[MediaSlot], watcher: asyncio.Task | None = None) -> None:
    """Close what a factory made before it failed."""
    for slot in slots:
        slot.close()
    if watcher is not None:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    await close_peer_connection(pc)


async def open_lane(
    session: SignalingSession,
    *,
    ice_servers: Iterable[str | dict],
    media_tracks: int,
    protocol: RPCProtocol,
    on_event: Callable[[Event], None],
    on_lost: Callable[[str], None],
    on_bye: Callable[[str], None],
    heartbeat_interval: float,
    heartbeat_timeout: float,
    timeout: float,
    what: str,
    lane: str = "datachannel",
    ssl_context: Any = None,
) -> Lane:
    """
    The client's lane to the executor paired in ``session``, open within ``timeout`` seconds.

    ``ice_servers`` in the order to use them; ``media_tracks`` media slots;
    ``protocol`` the RPC core to run (the lane owns it from now on);
    ``on_event``/``on_lost``: see :class:`RPCConnection`; ``on_bye(reason)``
    when the signaling server says the executor left; ``what`` names the
    connection in errors. Raises :exc:`~remotemedia.exceptions.RemoteTimeoutError`
    (with what ICE tried) or the signaling session's errors.

    ``lane``: ``"auto"`` takes the direct lane when the executor announced
    one and it connects (``ssl_context`` for TLS), else the data channel;
    ``"direct"`` fails rather than fall back; ``"datachannel"`` never dials.

    The one place a client chooses its lane.
    """
    if lane != "datachannel" and (session.direct or lane == "direct"):
        if not session.direct:
            raise ConnectionLostError(
                f"{what}: lane='direct', but executor {session.executor!r} offers no direct lane "
                "(start it with --direct HOST:PORT), or use lane='auto'"
            )
        from .direct import DirectLane  # it builds on this module

        return await DirectLane.connect(
            session,
            required=lane == "direct",
            addresses=list(session.direct),
            ssl_context=ssl_context,
            ice_servers=ice_servers,
            media_tracks=media_tracks,
            protocol=protocol,
            on_event=on_event,
            on_lost=on_lost,
            on_bye=on_bye,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            timeout=timeout,
            what=what,
        )
    return await DataChannelLane.connect(
        session,
        ice_servers=ice_servers,
        media_tracks=media_tracks,
        protocol=protocol,
        on_event=on_event,
        on_lost=on_lost,
        on_bye=on_bye,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        timeout=timeout,
        what=what,
    )


async def accept_lane(
    session: SignalingSession,
    *,
    ice_servers: Iterable[str | dict],
    protocol: RPCProtocol,
    on_event: Callable[[Event], None],
    on_lost: Callable[[str], None],
    on_bye: Callable[[str], None],
    heartbeat_interval: float,
    heartbeat_timeout: float,
    timeout: float,
    ended: asyncio.Event,
    direct: asyncio.Future | None = None,
) -> Lane | None:
    """
    The executor's lane to the client paired in ``session``; ``None`` if
    ``ended`` is set before it opens (the session ended: a bye).

    The arguments are :func:`open_lane`'s; the media slots are as many as
    the client offered. ``timeout`` bounds the wait for the offer, then for
    the connection: :exc:`asyncio.TimeoutError` after it. ``direct``: the
    door's future for this session's knock (see :class:`~remotemedia.transport.direct.DirectDoor`),
    when this executor offers a direct lane: the RPC then runs on whichever
    lane the client speaks first.

    The one place an executor takes a lane.
    """
    if direct is not None:
        from .direct import DirectLane  # it builds on this module

        return await DirectLane.accept(
            session,
            direct=direct,
            ice_servers=ice_servers,
            protocol=protocol,
            on_event=on_event,
            on_lost=on_lost,
            on_bye=on_bye,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            timeout=timeout,
            ended=ended,
        )
    return await DataChannelLane.accept(
        session,
        ice_servers=ice_servers,
        protocol=protocol,
        on_event=on_event,
        on_lost=on_lost,
        on_bye=on_bye,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        timeout=timeout,
        ended=ended,
    )
