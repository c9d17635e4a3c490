"""
One client's session on the executor: a peer connection, the ``rpc`` data
channel, and the session's objects.

Nothing from the client is unpickled before its ``HELLO`` has shown the
session's ticket: the one the signaling server gave this executor, signed with
the token the executor shares with the server. The ticket travels over the
DTLS data channel whose fingerprint came through the same authenticated
signaling, so a peer that has it is the client that was paired.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

from remotemedia.exceptions import MessageTooLargeError, RemoteMediaError
from remotemedia.rpc import PROTOCOL_VERSION, Kind, Message, RPCProtocol, TooLarge
from remotemedia.signaling import SignalingSession
from remotemedia.signaling.ticket import verify_ticket
from remotemedia.transport import RPC_LABEL, RPCChannel, make_answer, new_peer_connection, watch_bye

from .objects import ObjectTable, RemoteCallError, error_body

__all__ = ["SessionSettings", "ExecutorSession", "DEFAULT_MAX_MESSAGE_SIZE"]

logger = logging.getLogger(__name__)

#: Largest message an executor accepts from a client unless told otherwise (64 MiB).
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024 * 1024


@dataclass
class SessionSettings:
    """What every session of one executor shares."""

    #: The executor's registered name (the ticket names it).
    executor: str
    #: The signaling token, which also signs tickets (``None`` for an open server).
    token: str | None = None
    #: Largest message accepted from a client, in bytes.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Seconds between data-channel pings.
    heartbeat_interval: float = 1.0
    #: Seconds of silence after which the client is taken for dead.
    heartbeat_timeout: float = 5.0
    #: Seconds to wait for the offer, for the data channel to open, and for the client's HELLO.
    connect_timeout: float = 15.0
    #: STUN/TURN servers for this side's peer connections.
    ice_servers: list = field(default_factory=list)


class ExecutorSession:
    """Serves one paired client until it leaves, goes silent or breaks the protocol."""

    def __init__(self, signaling: SignalingSession, settings: SessionSettings) -> None:
        self.signaling = signaling
        self.settings = settings
        self.objects = ObjectTable(signaling.id)
        self.authenticated = False
        self._refused = False
        self._rpc: RPCChannel | None = None
        self._tasks: dict[int, asyncio.Task] = {}
        self._credits: dict[int, asyncio.Semaphore] = {}
        self._done = asyncio.Event()
        self._why = ""

    async def run(self) -> None:
        """Negotiate, serve, and free everything of the session, whatever happens."""
        pc = new_peer_connection(self.settings.ice_servers)
        opened: asyncio.Future = asyncio.get_running_loop().create_future()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == RPC_LABEL and not opened.done():
                opened.set_result(channel)

        watcher = None
        try:
            await make_answer(pc, self.signaling, self.settings.connect_timeout)
            # Only now: before, the offer is read by make_answer itself.
            watcher = asyncio.create_task(watch_bye(self.signaling, lambda why: self._end(f"the client left ({why})")))
            channel = await asyncio.wait_for(opened, self.settings.connect_timeout)
            self._rpc = RPCChannel(
                channel,
                RPCProtocol(self.settings.max_message_size),
                self._on_event,
                self._end,
                heartbeat_interval=self.settings.heartbeat_interval,
                heartbeat_timeout=self.settings.heartbeat_timeout,
            )
            # A peer that connects but never authenticates must not hold a slot.
            limit = self.settings.connect_timeout
            asyncio.get_running_loop().call_later(
                limit, lambda: self.authenticated or self._end(f"no HELLO within {limit:g} s")
            )
            await self._done.wait()
        except (asyncio.TimeoutError, RemoteMediaError) as exc:
            self._why = self._why or f"setup failed: {exc or type(exc).__name__}"
        except Exception as exc:  # a malformed offer makes aiortc raise all sorts
            logger.warning("session %s: setup failed", self.signaling.id, exc_info=True)
            self._why = self._why or f"setup failed: {type(exc).__name__}: {exc}"
        finally:
            if watcher is not None:
                watcher.cancel()
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            await self.objects.close()
            if self._rpc is not None:
                self._rpc.close()
            await pc.close()
            await self.signaling.close(self._why[:200])
            logger.info("session %s ended: %s", self.signaling.id, self._why or "done")

    def _end(self, why: str) -> None:
        if not self._done.is_set():
            self._why = why
            self._done.set()

    # -- requests ----------------------------------------------------------------------

    def _on_event(self, event: Message | TooLarge) -> None:
        if self._refused:
            return
        if isinstance(event, TooLarge):
            self._reply_later(self._refuse_too_large(event))
            return
        kind = event.kind
        if kind is Kind.HELLO:
            self._hello(event)
        elif not self.authenticated:
            # Nothing, above all nothing pickled, is looked at before HELLO.
            self._reply_later(self._refuse(event.id, "a request came before authentication: send HELLO with the session ticket first"))
        elif kind in (Kind.CREATE, Kind.CALL, Kind.RELEASE):
            self._tasks[event.id] = asyncio.create_task(self._serve(event))
        elif kind is Kind.CANCEL:
            task = self._tasks.get(event.id)
            if task is not None:
                task.cancel()
        elif kind is Kind.CREDIT:
            credits = self._credits.get(event.id)
            if credits is not None and isinstance(event.body, int) and 0 < event.body <= 1 << 16:
                for _ in range(event.body):
                    credits.release()
        else:
            logger.warning("session %s: unexpected %s from the client", self.signaling.id, kind.name)

    def _hello(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        ticket = body.get("ticket")
        s = self.signaling
        why = None
        if not isinstance(ticket, str) or not hmac.compare_digest(ticket.encode(), s.ticket.encode()):
            why = "wrong session ticket"
        elif not verify_ticket(self.settings.token, ticket, s.id, s.client, self.settings.executor):
            # The server signed it, but not with our secret: a configuration mistake, say so.
            why = (
                "the executor cannot verify this session's ticket: its token differs from the signaling "
                "server's (start both with the same --token or REMOTEMEDIA_TOKEN)"
            )
        elif body.get("version") != PROTOCOL_VERSION:
            why = f"protocol version {body.get('version')!r} is not {PROTOCOL_VERSION} (upgrade remotemedia on both ends)"
        if why is not None:
            self._reply_later(self._refuse(0, why))
            return
        self.authenticated = True
        limit = body.get("max_message_size")
        if isinstance(limit, int) and limit > 0:
            self._rpc.protocol.peer_limit(limit)
        self._reply_later(
            self._send(Kind.WELCOME, 0, {"executor": self.settings.executor, "max_message_size": self.settings.max_message_size})
        )

    async def _serve(self, message: Message) -> None:
        try:
            if message.kind is Kind.CREATE:
                obj = await self.objects.create(message.id, self._body_bytes(message))
                await self._send(Kind.RESULT, message.id, {"type": f"{type(obj).__module__}.{type(obj).__qualname__}"})
            elif message.kind is Kind.RELEASE:
                await self.objects.release(await self._body(message))
                await self._send(Kind.RESULT, message.id, None)
            else:
                await self._call(message)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            await self._error(message.id, exc)
        finally:
            self._tasks.pop(message.id, None)
            self._credits.pop(message.id, None)

    async def _call(self, message: Message) -> None:
        body = await self._body(message)
        if not (isinstance(body, (list, tuple)) and len(body) == 5):
            raise RemoteCallError("a CALL body is [handle, method, args, kwargs, stream credit]")
        handle, name, args, kwargs, credit = body
        method = self.objects.method(handle, name)
        if not credit:
            result = await self.objects.call(method, tuple(args), dict(kwargs))
            await self._send(Kind.RESULT, message.id, result)
            return
        credits = self._credits[message.id] = asyncio.Semaphore(int(credit))
        items = self.objects.stream(method, tuple(args), dict(kwargs))
        try:
            async for item in items:
                await credits.acquire()  # the client has room for one more
                await self._send(Kind.YIELD, message.id, item)
        finally:
            await items.aclose()
        await self._send(Kind.END, message.id)

    async def _body(self, message: Message) -> Any:
        # Only reached once authenticated (see _on_event).
        return await self.objects.load(message.body) if message.pickled else message.body

    @staticmethod
    def _body_bytes(message: Message) -> bytes:
        if not message.pickled:
            raise RemoteCallError("CREATE carries the object as cloudpickle bytes")
        return message.body

    # -- replies -------------------------------------------------------------------------

    async def _send(self, kind: Kind, id: int, body: Any = None) -> None:
        try:
            await self._rpc.send(kind, id, body, pickle_fallback=True)
        except MessageTooLargeError as exc:
            await self._error(id, RemoteCallError(f"the reply is too large for the client: {exc}", "too_large"))

    async def _error(self, id: int, exc: BaseException) -> None:
        if self._rpc is None or self._rpc.lost is not None:
            return
        body = error_body(exc)
        if body["code"] == "exception":
            logger.info("session %s: call %d raised %s: %s", self.signaling.id, id, body["type"], body["message"])
        try:
            await self._rpc.send(Kind.ERROR, id, body)
        except RemoteMediaError as send_failed:
            logger.debug("session %s: error reply for %d not sent: %s", self.signaling.id, id, send_failed)

    async def _refuse(self, id: int, why: str) -> None:
        """Tell the client why, then end the session."""
        if self._refused or self._done.is_set():
            return
        self._refused = True  # answer once; whatever else the peer sends is ignored
        logger.warning("session %s: refused: %s", self.signaling.id, why)
        await self._error(id, RemoteCallError(why, "unauthorized"))
        await self._rpc.drain()
        self._end(f"refused: {why}")

    async def _refuse_too_large(self, event: TooLarge) -> None:
        await self._error(
            event.id or 0,
            RemoteCallError(
                f"a message of {event.size} bytes is above this executor's limit of {event.limit} bytes "
                f"(the executor's --max-message-size)",
                "too_large",
            ),
        )

    def _reply_later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
