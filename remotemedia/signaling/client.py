"""
The Python signaling client, on ``websockets``: one class for both roles.

A client (the SDK) pairs and then negotiates over the session::

    async with await SignalingClient.connect("ws://host:50052/ws", token=token) as signaling:
        session = await signaling.pair({"gpu": True})
        await session.send_offer(pc.localDescription.sdp)
        answer = await session.expect("answer", timeout=10)

An executor registers, heartbeats (a background task does it) and accepts
sessions::

    async with await SignalingClient.connect(url, token=token) as signaling:
        await signaling.register("gpu-1", capacity=4, capabilities={"gpu": True})
        while True:
            session = await signaling.accept()
            offer = await session.expect("offer", timeout=10)
            ...

Every wait has a timeout (:exc:`~remotemedia.exceptions.RemoteTimeoutError`);
the server's errors become :exc:`~remotemedia.exceptions.SignalingError` and
its subclasses, and a connection that closes under a waiting call raises
:exc:`~remotemedia.exceptions.ConnectionLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from typing import Any, Callable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..exceptions import ConnectionLimitError, ConnectionLostError, RemoteTimeoutError, SignalingError, TLSError
from . import messages
from .session import ENDED, SignalingSession, server_error, wait

__all__ = ["SignalingClient"]

logger = logging.getLogger(__name__)

# Codes after which the server closes the connection.
_FATAL = frozenset(
    {"unauthorized", "wrong_role", "token_expired", "rate_limited", "hello_timeout", "heartbeat_timeout", "idle_timeout"}
)

#: What to do about each connection-limit close (remotemedia.signaling.messages.LIMIT_CLOSES).
_LIMIT_ADVICE = {
    "server_full": "it holds as many connections as it allows (--max-connections); try again later, "
    "or ask its operator to raise the limit",
    "too_many_connections": "this address holds as many connections as it allows "
    "(--max-connections-per-address); close connections you do not use (one connection serves "
    "many sessions), or ask its operator to raise the limit",
    "idle_timeout": "the connection neither registered nor held a session for the server's "
    "--idle-timeout; connect again when there is work",
}


async def _speaks_tls(url: str, timeout: float) -> bool:
    """Whether ``url``'s host and port complete a TLS handshake (certificate unchecked: only asking)."""
    parts = urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 80, ssl=context), min(timeout, 5.0)
        )
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


def _settle(future: asyncio.Future | None) -> None:
    """Mark a future's exception as seen when its waiter left by another path."""
    if future is not None and future.done() and not future.cancelled():
        future.exception()


class SignalingClient:
    """
    A connection to the signaling server, as a client or as an executor.

    Create it with :meth:`connect`; use it as an async context manager, or
    call :meth:`close`.
    """

    def __init__(self, ws: ClientConnection, url: str, token: str | None) -> None:
        self._ws = ws
        self.url = url
        self._token = token
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future] = {}
        self._register_waiter: asyncio.Future | None = None
        self._sessions: dict[str, SignalingSession] = {}
        self._accepted: asyncio.Queue = asyncio.Queue()
        self._heartbeat: asyncio.Task | None = None
        self._closed_reason: str | None = None
        self._fatal: SignalingError | None = None
        self._background: set[asyncio.Task] = set()
        #: Name registered as, for an executor.
        self.name: str | None = None
        self._reader = asyncio.create_task(self._read(), name="signaling-client-reader")

    # -- connecting ------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ca_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> SignalingClient:
        """
        Open a connection to the signaling server at ``url`` (``ws://host:port/ws``,
        or ``wss://`` for TLS).

        Over ``wss://`` the server's certificate is verified against the
        system's CAs, or against ``ca_file`` (a PEM file of CA certificates)
        when given; ``ssl_context`` replaces both. Raises :exc:`TLSError`
        when the certificate is not trusted, or when a ``ws://`` URL reached
        a server that speaks only TLS; :exc:`SignalingError` (code
        ``unreachable``) when the server cannot be reached and
        :exc:`RemoteTimeoutError` when it does not answer within ``timeout``
        seconds. The token is presented with the first ``register`` or ``pair``.
        """
        secure = urlsplit(url).scheme == "wss"
        if secure and ssl_context is None:
            try:
                ssl_context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load CA certificates from {ca_file!r}: {exc}; pass a PEM file") from exc
        try:
            ws = await connect(
                url,
                compression=None,  # signaling is small JSON; deflate costs more than it saves
                open_timeout=timeout,
                close_timeout=timeout,
                max_size=messages.MAX_SERVER_MESSAGE,
                ping_interval=20,
                **({"ssl": ssl_context} if secure else {}),
            )
        except (TimeoutError, asyncio.TimeoutError):
            raise RemoteTimeoutError(
                f"signaling server at {url} did not complete the websocket handshake within {timeout:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(
                f"the signaling server at {url} presented a certificate this side does not trust "
                f"({exc.verify_message}); if it is signed by your own CA, pass that CA's certificate "
                "(RemoteExecutorConfig(ca_file=...), $REMOTEMEDIA_CA_FILE, or the executor's --ca-file); "
                "if the host name does not match, dial a name the certificate lists",
                code="untrusted_certificate",
            ) from exc
        except ssl.SSLError as exc:
            raise TLSError(
                f"TLS with the signaling server at {url} failed: {exc}; does it speak TLS "
                "(started with --tls-cert)? Without TLS, use a ws:// URL (ssl_enabled=False)",
                code="tls_failed",
            ) from exc
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            if not secure and not isinstance(exc, (ConnectionRefusedError, InvalidURI)):
                if await _speaks_tls(url, timeout):
                    raise TLSError(
                        f"the signaling server at {url} speaks only TLS and refused plain text; use "
                        "wss:// (RemoteExecutorConfig(ssl_enabled=True), or --signaling wss://...)",
                        code="tls_required",
                    ) from exc
            raise SignalingError(
                f"cannot reach the signaling server at {url}: {exc}; is it running "
                "('./run serve', or 'python -m remotemedia serve --port PORT') and is the URL right?",
                code="unreachable",
            ) from exc
        return cls(ws, url, token)

    @classmethod
    async def connect_any(cls, urls, **options) -> SignalingClient:
        """
        :meth:`connect` to the first of ``urls`` (instances of one signaling
        cluster) that answers, trying them in turn; raises what the last one
        raised when none does. ``options`` go to :meth:`connect`.
        """
        urls = list(urls)
        if not urls:
            raise ValueError("connect_any needs at least one URL")
        for i, url in enumerate(urls):
            try:
                return await cls.connect(url, **options)
            except (SignalingError, RemoteTimeoutError) as exc:
                if i == len(urls) - 1 or isinstance(exc, TLSError):
                    raise
                logger.info("signaling server at %s failed (%s); trying %s", url, exc, urls[i + 1])
        raise AssertionError("unreachable")

    async def __aenter__(self) -> SignalingClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed_reason is not None

    async def close(self) -> None:
        """Close the connection; the server tells the other ends of our sessions. Safe to call twice."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self._ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    # -- executor role ---------------------------------------------------------------

    async def register(
        self,
        name: str,
        capacity: int,
        capabilities: dict | None = None,
        *,
        status: Callable[[], tuple[float, int]] | None = None,
        timeout: float = 10.0,
        direct: list[str] | None = None,
    ) -> dict:
        """
        Register as an executor; returns the server's ``registered`` message.

        A background task then sends ``heartbeat`` every interval the server
        asks for, with ``status()`` as ``(load, sessions)``; by default
        ``sessions`` is the number of open sessions and ``load`` that number
        over ``capacity``. Raises :exc:`SignalingError` (``name_taken``...).
        ``direct``: the addresses of this executor's direct lane, for the clients paired with it.
        """
        message = {"type": "register", "name": name, "capacity": capacity}
        if capabilities is not None:
            message["capabilities"] = capabilities
        if direct:
            message["direct"] = list(direct)
        if self._token is not None:
            message["token"] = self._token
        messages.validate(message, messages.TO_SERVER)  # the caller's mistakes, before the wire
        if self._register_waiter is not None:
            raise RuntimeError("register() or unregister() is already waiting for an answer")
        self._register_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._send(message)
            reply = await wait(self._register_waiter, timeout, f"registering {name!r} with {self.url}")
        finally:
            _settle(self._register_waiter)
            self._register_waiter = None
        self.name = name

        def default_status() -> tuple[float, int]:
            return len(self._sessions) / capacity, len(self._sessions)

        self._heartbeat = asyncio.create_task(
            self._beat(reply["heartbeat_interval"], status or default_status), name="signaling-heartbeat"
        )
        return reply

    async def heartbeat(self, load: float, sessions: int) -> None:
        """Send one heartbeat now (the task started by :meth:`register` sends them anyway)."""
        await self._send({"type": "heartbeat", "load": float(load), "sessions": int(sessions)})

    async def unregister(self, *, timeout: float = 10.0) -> None:
        """Stop taking sessions; the server ends the open ones with ``bye``."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        self._register_waiter = asyncio.get_running_loop().create_future()
        try:
            await self._send({"type": "unregister"})
            await wait(self._register_waiter, timeout, f"unregistering from {self.url}")
        finally:
            _settle(self._register_waiter)
            self._register_waiter = None
        self.name = None

    async def accept(self, timeout: float | None = None) -> SignalingSession:
        """
        The next session the server paired us into (executor role).

        An idle executor waits here as long as it runs, so ``timeout=None``
        is the default; a lost connection ends the wait with
        :exc:`ConnectionLostError`.
        """
        if self.closed and self._accepted.empty():
            raise self._lost("accept()")
        item = await wait(self._accepted.get(), timeout, "waiting for a session")
        if item is ENDED:
            self._accepted.put_nowait(ENDED)
            raise self._lost("accept()")
        return item

    # -- client role -----------------------------------------------------------------

    async def pair(self, requirements: dict | None = None, *, timeout: float = 10.0) -> SignalingSession:
        """
        Ask for an executor; returns the session once the server has paired us.

        ``requirements`` may ask for ``gpu`` (bool), a ``service``, a
        ``model`` or a specific ``executor`` by name. Raises
        :exc:`NoExecutorAvailable` when none matches (the connection stays
        usable, so retrying is fine), :exc:`AuthenticationError` for a
        missing or wrong token.
        """
        request = f"r{next(self._ids)}"
        message: dict[str, Any] = {"type": "pair", "request": request}
        if requirements:
            message["requirements"] = requirements
        if self._token is not None:
            message["token"] = self._token
        messages.validate(message, messages.TO_SERVER)
        future = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        try:
            await self._send(message)
            reply = await wait(future, timeout, f"pairing through {self.url}")
        finally:
            _settle(self._pending.pop(request))
        session = SignalingSession(self, reply)
        self._sessions[session.id] = session
        return session

    async def executors(self, *, timeout: float = 10.0) -> dict:
        """
        Ask which executors this connection's credential may use (discovery);
        returns the server's ``executors`` message: ``executors``, a list of
        dicts (:data:`~remotemedia.signaling.messages.EXECUTOR_INFO`), and
        ``truncated`` when the server cut a long list.

        Raises :exc:`AuthenticationError` for a missing or wrong token and
        :exc:`SignalingError` (``not_allowed``, ``wrong_role``) on an
        executor's connection. :func:`remotemedia.discover` wraps it.
        """
        request = f"r{next(self._ids)}"
        message: dict[str, Any] = {"type": "executors", "request": request}
        if self._token is not None:
            message["token"] = self._token
        future = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        try:
            await self._send(message)
            return await wait(future, timeout, f"listing executors through {self.url}")
        finally:
            _settle(self._pending.pop(request))

    # -- internals -------------------------------------------------------------------

    def _lost(self, what: str) -> Exception:
        if self._fatal is not None:
            return self._fatal
        return ConnectionLostError(
            f"{what}: the connection to the signaling server at {self.url} is closed ({self._closed_reason})"
        )

    async def _send(self, message: dict) -> None:
        if self.closed:
            raise self._lost(f"sending {message['type']!r}")
        try:
            await self._ws.send(messages.dump(message))
        except ConnectionClosed as exc:
            # Let the reader record why (an error the server sent before closing).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
            if self._closed_reason is None:
                self._closed_reason = str(exc)
            raise self._lost(f"sending {message['type']!r}") from exc

    async def _beat(self, interval: float, status: Callable[[], tuple[float, int]]) -> None:
        # A lost connection, or a fatal error the server sent before closing it,
        # ends the beats; whoever waits on the connection hears why.
        with contextlib.suppress(ConnectionLostError, SignalingError):
            while True:
                load, sessions = status()
                await self.heartbeat(load, sessions)
                await asyncio.sleep(interval)

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                try:
                    message = messages.parse(raw, messages.TO_PEER, max_size=messages.MAX_SERVER_MESSAGE)
                except SignalingError as exc:
                    logger.warning("ignoring a bad message from the signaling server: %s", exc)
                    continue
                self._dispatch(message)
        except ConnectionClosed:
            pass
        finally:
            self._closed_reason = self._close_reason()
            code = self._ws.close_code
            if self._fatal is None and code in messages.LIMIT_CLOSES:
                reason = messages.LIMIT_CLOSES[code]
                self._fatal = ConnectionLimitError(
                    f"the signaling server at {self.url} closed the connection ({reason}): {_LIMIT_ADVICE[reason]}",
                    code=reason,
                )
            self._end_all()

    def _close_reason(self) -> str:
        code, reason = self._ws.close_code, self._ws.close_reason
        if code is None or code == 1006:
            return "connection lost"
        return f"closed with code {code}" + (f": {reason}" if reason else "")

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        if kind == "executors":
            future = self._pending.get(message.get("request", ""))
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "paired":
            future = self._pending.get(message.get("request", ""))
            if future is not None and not future.done():
                future.set_result(message)
            else:  # we gave up waiting: free the executor's slot at once
                task = asyncio.create_task(
                    self._send_quietly({"type": "bye", "session": message["session"], "reason": "pairing abandoned"})
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        elif kind in ("registered", "unregistered"):
            if self._register_waiter is not None and not self._register_waiter.done():
                self._register_waiter.set_result(message)
        elif kind == "session":
            session = SignalingSession(self, message)
            self._sessions[session.id] = session
            self._accepted.put_nowait(session)
        elif kind in messages.RELAYED:
            session = self._sessions.get(message["session"])
            if session is None:
                logger.debug("%s for unknown session %s dropped", kind, message["session"])
                return
            if kind == "bye":
                del self._sessions[session.id]
            session._deliver(message)
        elif kind == "error":
            self._on_error(message)

    def _on_error(self, message: dict) -> None:
        error = server_error(message)
        if error.code in _FATAL:
            # The server closes the connection next; later calls raise this.
            self._fatal = error
        if "request" in message:
            future = self._pending.get(message["request"])
            if future is not None and not future.done():
                future.set_exception(error)
            else:
                logger.debug("error for a request no longer waited for: %s", error)
            return
        if "session" in message:
            session = self._sessions.get(message["session"])
            if session is not None:
                session._inbox.put_nowait(message)
            else:
                logger.debug("error for a session already closed: %s", error)
            return
        if self._register_waiter is not None and not self._register_waiter.done():
            self._register_waiter.set_exception(error)
            return
        logger.warning("%s", error)

    def _end_all(self) -> None:
        for future in list(self._pending.values()) + [self._register_waiter]:
            if future is not None and not future.done():
                future.set_exception(self._lost("waiting for the signaling server"))
        for session in list(self._sessions.values()):
            if session.ended is None:
                session.ended = f"signaling connection {self._closed_reason}"
            session._inbox.put_nowait(ENDED)
        self._sessions.clear()
        self._accepted.put_nowait(ENDED)
        if self._heartbeat is not None:
            self._heartbeat.cancel()

    async def _send_quietly(self, message: dict) -> None:
        with contextlib.suppress(ConnectionLostError):
            await self._send(message)
