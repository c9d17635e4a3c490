"""
The aiohttp application around the hub: ``/ws``, ``/healthz`` and ``/metrics``.

This module only moves messages: each websocket's text goes to
:meth:`Hub.receive <signaling_server.hub.Hub.receive>`, and the actions that
come back are queued on the target connections. Every connection has its own
bounded outbox and writer task, so a slow or stuck peer never delays anyone
else; a peer whose outbox fills up is disconnected rather than allowed to
hold memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry

from remotemedia.signaling.messages import LIMIT_CLOSES, dump

from .cluster import Claim, Directory, Envelope, Refresh, Reserve, Survey
from .config import ServerConfig
from .hub import Close, Hub, Send
from .limits import ConnectionLimits, ensure_file_descriptors
from .metrics import CONTENT_TYPE_LATEST, HubCollector, render
from .web import add_web_demo

__all__ = ["SignalingServer", "RunningServer", "create_app", "start_server", "SERVER_KEY"]

logger = logging.getLogger(__name__)

#: Websocket-level ping interval; a peer that stops answering pings is closed.
PING_INTERVAL = 20.0
_GOING_AWAY = 1001
#: Seconds between two warnings about connections refused at a limit.
REFUSAL_WARNING_PERIOD = 60.0


@dataclass(eq=False)
class _Peer:
    ws: web.WebSocketResponse
    outbox: asyncio.Queue
    transport: asyncio.BaseTransport | None = None
    writer: asyncio.Task | None = None
    aborted: bool = False
    #: The close the hub asked for, reached by the writer after what was queued before it.
    close: Close | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)


class SignalingServer:
    """The request handlers and the background tick of one signaling server."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        # -- cluster (--redis): the shared registry and the bus between instances --
        self.directory: Directory | None = None
        if self.config.redis is not None:
            from .redis_directory import RedisDirectory  # redis is imported only by clusters

            self.directory = RedisDirectory(self.config.redis, heartbeat_timeout=self.config.signaling_heartbeat_timeout)
        self._requests: set[asyncio.Task] = set()  # Claim and Reserve under way
        self._upkeep: asyncio.Task | None = None
        # -- end cluster --
        self.hub = Hub(self.config, instance=self.directory.instance if self.directory else None)
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.limits = ConnectionLimits(self.config.max_connections, self.config.max_connections_per_address)
        self.metrics_registry.register(HubCollector(self.hub, self.limits))
        self._peers: dict[str, _Peer] = {}
        self._refusals_warned: dict[str, float] = {}
        self._ticker: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        if self.config.open_to_executors:
            logger.warning(
                "no credentials configured: anyone who can reach this server can register executors "
                "(and so receive clients' objects and send them results) and pair with them; off localhost, "
                "pass --executor-token and --token (or --token-secret)"
            )
        elif self.config.executor_token is None and self.config.token_secret is None:
            logger.warning(
                "no executor credential configured (--executor-token or --token-secret): no executor can "
                "register, since the client token (--token) never may"
            )
        ensure_file_descriptors(self.config.max_connections)
        self._ticker = asyncio.create_task(self._tick_forever(), name="signaling-tick")
        if self.directory is not None:
            await self.directory.start(self._deliver, self._lost)
            self._upkeep = asyncio.create_task(self._upkeep_forever(), name="signaling-directory")
            logger.info("instance %s of a cluster sharing %s", self.directory.instance, self.config.redis)

    async def on_shutdown(self, app: web.Application) -> None:
        tasks = [task for task in (self._ticker, self._upkeep, *self._requests) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: redis-py can swallow a cancellation that lands inside a command.
            await asyncio.wait(tasks, timeout=5.0)
        for peer in list(self._peers.values()):
            with contextlib.suppress(Exception):
                await peer.ws.close(code=_GOING_AWAY, message=b"server shutting down")
        if self.directory is not None:
            await asyncio.sleep(0)  # the closed connections' last actions (Unclaim, Release) are queued
            await self.directory.close()

    async def _tick_forever(self) -> None:
        config = self.config
        period = min(1.0, config.signaling_heartbeat_timeout / 4, config.hello_timeout / 4, config.idle_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            self._apply(self.hub.tick(loop.time()))

    # -- cluster ---------------------------------------------------------------------

    async def _upkeep_forever(self) -> None:
        while True:
            await self.directory.tick()
            await asyncio.sleep(1.0)

    def _deliver(self, envelope: Envelope) -> None:
        now = asyncio.get_running_loop().time()
        self._apply(
            self.hub.deliver(envelope.origin, envelope.conn, envelope.message, now, credential=envelope.credential)
        )

    def _lost(self, refresh: Refresh) -> None:
        self._apply(self.hub.lost(refresh.conn, refresh.name, asyncio.get_running_loop().time()))

    def _request(self, action: Claim | Reserve | Survey) -> None:
        task = asyncio.create_task(self._answer(action))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _answer(self, action: Claim | Reserve | Survey) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(action, Claim):
            outcome = await self.directory.claim(action)
            self._apply(self.hub.claimed(action.conn, outcome, loop.time()))
        elif isinstance(action, Survey):
            outcome = await self.directory.survey(action)
            self._apply(self.hub.surveyed(action, outcome, loop.time()))
        else:
            outcome = await self.directory.reserve(action)
            self._apply(self.hub.reserved(action, outcome, loop.time()))

    # -- handlers --------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /ws``: one signaling connection (closed at once beyond the connection limits)."""
        address = request.remote
        refused = self.limits.admit(address)
        if refused is not None:
            # Accepted only to be closed with a code that says why: a client
            # can tell "full" from "down", and a browser sees the code too.
            self._log_refusal(address, LIMIT_CLOSES[refused])
            # A flooder need not answer the close: wait for it only briefly.
            ws = web.WebSocketResponse(compress=False, timeout=1.0)
            await ws.prepare(request)
            await ws.close(code=refused, message=LIMIT_CLOSES[refused].encode())
            return ws
        try:
            return await self._serve_websocket(request)
        finally:
            self.limits.release(address)

    def _log_refusal(self, address: str | None, reason: str) -> None:
        # A flood is thousands of refusals: one warning a minute per reason, the rest at debug.
        now = asyncio.get_running_loop().time()
        if now - self._refusals_warned.get(reason, -REFUSAL_WARNING_PERIOD) >= REFUSAL_WARNING_PERIOD:
            self._refusals_warned[reason] = now
            logger.warning(
                "connection from %s refused: %s (%d refused so far; open: %d in all, %d from that address)",
                address, reason, self.limits.refused[reason], self.limits.open, self.limits.count(address),
            )
        else:
            logger.debug("connection from %s refused: %s", address, reason)

    async def _serve_websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(
            compress=False,  # JSON signaling gains nothing from deflate, and it costs CPU
            heartbeat=PING_INTERVAL,
            # Messages up to this size reach the hub, which answers "too_large"
            # and keeps the connection; aiohttp closes with 1009 above it.
            max_msg_size=4 * self.config.max_message_size,
        )
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        conn = self.hub.open(loop.time())
        peer = _Peer(ws, asyncio.Queue(self.config.outbox_size), request.transport)
        peer.writer = asyncio.create_task(self._write(conn, peer), name=f"signaling-writer-{conn}")
        self._peers[conn] = peer
        logger.debug("connection %s opened from %s", conn, request.remote)
        try:
            # Reading stops when the peer goes, or when the hub closes the
            # connection: then this task, not the writer, does the closing
            # handshake. Closed from another task while this one reads,
            # aiohttp drops the TCP connection at once, and a peer still
            # sending gets a reset that discards the error sent just before.
            reading = asyncio.create_task(self._read(conn, peer, ws), name=f"signaling-reader-{conn}")
            closing = asyncio.create_task(peer.closing.wait())
            try:
                await asyncio.wait({reading, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reading, closing):
                    task.cancel()
                await asyncio.gather(reading, closing, return_exceptions=True)
        finally:
            del self._peers[conn]
            self._apply(self.hub.close(conn, loop.time()))
            # Let queued messages (an error before a close) go out, briefly.
            with contextlib.suppress(asyncio.QueueFull):
                peer.outbox.put_nowait(None)
            if not peer.writer.done():
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(peer.writer), 1.0)
                peer.writer.cancel()
            if peer.close is not None:
                await ws.close(code=peer.close.code, message=peer.close.reason.encode())
            else:
                await ws.close()
            logger.debug("connection %s closed (code %s)", conn, ws.close_code)
        return ws

    async def _read(self, conn: str, peer: _Peer, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                self._apply(self.hub.receive(conn, msg.data, loop.time()))
                if peer.outbox.qsize() > self.config.outbox_size // 2:
                    # Answers to this peer pile up: read nothing more from
                    # it until they are out, so a fast sender is slowed
                    # down by its own replies instead of being dropped.
                    await self._drain(conn, peer)
            else:  # ERROR: aiohttp closes the socket itself (1009 for a huge message)
                logger.debug("connection %s: %s", conn, ws.exception())
                return

    async def healthz(self, request: web.Request) -> web.Response:
        """``GET /healthz``: liveness and the registry's size; ``degraded`` and why when Redis fails."""
        body = self.hub.health()
        if self.directory is not None:
            healthy, why = self.directory.health()
            if not healthy:
                body["status"], body["problem"] = "degraded", why
        return web.json_response(body)

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: Prometheus text format."""
        return web.Response(body=render(self.metrics_registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- actions ---------------------------------------------------------------------

    def _apply(self, actions: list) -> None:
        for action in actions:
            if not isinstance(action, (Send, Close)):
                if isinstance(action, (Claim, Reserve, Survey)):
                    self._request(action)
                else:
                    self.directory.submit(action)
                continue
            peer = self._peers.get(action.conn)
            if peer is None or peer.aborted:
                continue  # it went away meanwhile; its own close() already ran
            item = dump(action.message) if isinstance(action, Send) else action
            try:
                peer.outbox.put_nowait(item)
            except asyncio.QueueFull:
                logger.warning("connection %s is not reading its messages; closing it", action.conn)
                self._abort(peer)

    def _abort(self, peer: _Peer) -> None:
        # A peer that does not read would not read a close frame either: drop
        # the TCP connection, and the reader loop ends the connection's state.
        peer.aborted = True
        if peer.writer is not None:
            peer.writer.cancel()
        if peer.transport is not None:
            peer.transport.abort()

    async def _drain(self, conn: str, peer: _Peer) -> None:
        try:
            await asyncio.wait_for(peer.outbox.join(), PING_INTERVAL)
        except asyncio.TimeoutError:
            logger.warning("connection %s is not reading its messages; closing it", conn)
            self._abort(peer)

    async def _write(self, conn: str, peer: _Peer) -> None:
        try:
            while True:
                item = await peer.outbox.get()
                peer.outbox.task_done()
                if item is None:  # the reader is done
                    return
                if isinstance(item, Close):
                    peer.close = item  # the connection's handler closes it (see websocket())
                    peer.closing.set()
                    return
                await peer.ws.send_str(item)
        except (ConnectionError, RuntimeError) as exc:
            # The transport closed under us; the reader loop sees it too.
            logger.debug("connection %s: send failed: %s", conn, exc)


#: Key of the :class:`SignalingServer` in the application.
SERVER_KEY = web.AppKey("signaling_server", SignalingServer)


def create_app(config: ServerConfig | None = None) -> web.Application:
    """An aiohttp application serving the signaling protocol with ``config``."""
    server = SignalingServer(config)
    app = web.Application()
    app[SERVER_KEY] = server
    app.router.add_get("/ws", server.websocket)
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/metrics", server.metrics)
    if server.config.web_root is not None:
        add_web_demo(app, Path(server.config.web_root))
    app.on_startup.append(server.on_startup)
    app.on_shutdown.append(server.on_shutdown)
    return app


@dataclass
class RunningServer:
    """A signaling server listening in this process; :meth:`close` stops it."""

    #: The application (``app[SERVER_KEY]`` is the :class:`SignalingServer`).
    app: web.Application
    #: Address it listens on.
    host: str
    #: Port it listens on (the real one when 0 was asked for).
    port: int
    _runner: web.AppRunner = field(repr=False)
    #: Whether it speaks TLS (then only TLS): ``wss://`` and ``https://``.
    tls: bool = False

    @property
    def url(self) -> str:
        """The websocket URL clients and executors dial."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/ws"

    @property
    def page_url(self) -> str:
        """The browser demo page's address (served when ``ServerConfig.web_root`` is set, the default)."""
        # A wildcard address is opened on this host as localhost, where browsers allow the camera.
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    async def close(self) -> None:
        """Close every connection and stop listening."""
        await self._runner.cleanup()


async def start_server(
    config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 50052
) -> RunningServer:
    """
    Start a signaling server in the running event loop (``port=0`` picks a free
    port). With ``config.tls_cert`` it speaks only TLS; a certificate or key
    that cannot be loaded raises ``ValueError`` before anything listens.
    """
    config = config or ServerConfig()
    ssl_context = config.ssl_context()
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError:
        await runner.cleanup()
        raise
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    return RunningServer(app=app, host=host, port=sock.getsockname()[1], _runner=runner, tls=ssl_context is not None)
