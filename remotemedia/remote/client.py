"""
``RemoteProxyClient``: one session with one executor.

Entering ``async with RemoteProxyClient(config)`` pairs through the
signaling server, opens a WebRTC peer connection with the executor and its
``rpc`` data channel, and presents the session's ticket. ``create_proxy``
uploads an object (cloudpickle) and returns a :class:`RemoteProxy`; leaving
the block releases every remote object (their ``cleanup()`` runs on the
executor) and closes everything.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, AsyncIterator

from ..exceptions import (
    AuthenticationError,
    ConnectionLostError,
    MessageTooLargeError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    SerializationError,
)
from ..rpc import PROTOCOL_VERSION, Kind, Message, RPCProtocol, TooLarge
from ..serialization import dumps_object, loads_object
from ..signaling import SignalingClient, SignalingSession
from ..transport import RPC_LABEL, RPCChannel, make_offer, new_peer_connection, wait_open, watch_bye
from .config import RemoteExecutorConfig
from .proxy import RemoteProxy

__all__ = ["RemoteProxyClient"]

logger = logging.getLogger(__name__)

#: Items a stream may have in flight before the client grants more credit.
STREAM_WINDOW = 16
_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class RemoteProxyClient:
    """
    A live session with one executor (see the module docstring).

    ``config`` defaults to ``RemoteExecutorConfig()``: the embedded server of
    ``python -m remotemedia serve`` on localhost:50052. Entering raises
    :exc:`NoExecutorAvailable`, :exc:`AuthenticationError`,
    :exc:`SignalingError` (server unreachable) or :exc:`RemoteTimeoutError`.
    """

    def __init__(self, config: RemoteExecutorConfig | None = None) -> None:
        if config is None:
            config = RemoteExecutorConfig()
        if not isinstance(config, RemoteExecutorConfig):
            raise TypeError(f"config must be a RemoteExecutorConfig, not {type(config).__name__}")
        self.config = config
        #: Name of the executor serving this session, once connected.
        self.executor: str | None = None
        self._signaling: SignalingClient | None = None
        self._session: SignalingSession | None = None
        self._pc: Any = None
        self._rpc: RPCChannel | None = None
        self._watcher: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        self._proxies: dict[int, RemoteProxy] = {}
        self._lost: str | None = None
        self._closed = False
        self._welcomed = False  # the executor has accepted our ticket

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> RemoteProxyClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        """Pair with an executor and open the session (``async with`` does this)."""
        if self._rpc is not None or self._closed:
            raise RuntimeError("a RemoteProxyClient connects once; make a new one to connect again")
        config, limit = self.config, self.config.connect_timeout
        try:
            self._signaling = await SignalingClient.connect(config.url, token=config.token, timeout=limit)
            self._session = await self._signaling.pair(config.requirements or None, timeout=limit)
            self.executor = self._session.executor
            self._pc = new_peer_connection(config.ice_servers)
            channel = self._pc.createDataChannel(RPC_LABEL)
            await make_offer(self._pc, self._session, limit)
            await wait_open(channel, limit, f"connecting to executor {self.executor!r}")
            self._rpc = RPCChannel(
                channel,
                RPCProtocol(config.max_message_size),
                self._on_event,
                self._on_lost,
                heartbeat_interval=config.heartbeat_interval,
                heartbeat_timeout=config.heartbeat_timeout,
            )
            self._watcher = asyncio.create_task(
                watch_bye(self._session, lambda why: self._on_lost(f"the executor left ({why})")),
                name="remote-signaling-watch",
            )
            welcome = self._expect(0)
            hello = {"ticket": self._session.ticket, "version": PROTOCOL_VERSION, "max_message_size": config.max_message_size}
            try:
                await self._rpc.send(Kind.HELLO, 0, hello)
                body = await self._wait(0, welcome, limit, "the handshake", "connect_timeout")
            finally:
                self._pending.pop(0, None)
            self._rpc.protocol.peer_limit(body["max_message_size"])
            self._welcomed = True
            logger.info("connected to executor %r (session %s)", self.executor, self._session.id)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Release every remote object, then close the connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._rpc is not None and self._lost is None:
            for handle in list(self._proxies):
                try:
                    await self._release(handle)
                except RemoteMediaError as exc:
                    logger.warning("releasing remote object #%d failed: %s", handle, exc)
        self._on_lost("the client closed the session")
        if self._watcher is not None:
            self._watcher.cancel()
        if self._rpc is not None:
            self._rpc.close()
        if self._pc is not None:
            await self._pc.close()
        if self._session is not None:
            await self._session.close("client closed")
        if self._signaling is not None:
            await self._signaling.close()

    # -- the API -----------------------------------------------------------------------

    async def create_proxy(self, obj: Any) -> RemoteProxy:
        """
        Upload ``obj`` to the executor and return a proxy to the remote copy.

        The executor runs ``obj.initialize()`` if it has one. An object that
        cannot be pickled raises :exc:`SerializationError` here, before
        anything is sent; one the executor cannot unpickle (a module missing
        there) raises it naming the module.
        """
        if isinstance(obj, RemoteProxy):
            raise TypeError("this is a proxy already; pass the original object")
        rpc = self._ready()
        data = dumps_object(obj)
        handle = next(self._ids)
        future = self._expect(handle)
        try:
            await rpc.send_pickled(Kind.CREATE, handle, data)
            body = await self._wait(handle, future, self.config.timeout, f"creating {type(obj).__qualname__}")
        finally:
            self._pending.pop(handle, None)
        proxy = RemoteProxy(self, handle, obj, body.get("type", ""))
        self._proxies[handle] = proxy
        return proxy

    async def release(self, proxy: RemoteProxy) -> None:
        """
        Run the remote object's ``cleanup()`` on the executor and free it.

        Leaving the ``async with`` block does this for every proxy still
        alive; releasing twice does nothing.
        """
        if not isinstance(proxy, RemoteProxy) or proxy._client is not self:
            raise TypeError("release() takes a proxy made by this client's create_proxy()")
        await self._release(proxy._handle)

    async def _call(self, handle: int, name: str, args: tuple, kwargs: dict) -> Any:
        rpc = self._ready()
        call_id = next(self._ids)
        future = self._expect(call_id)
        try:
            # args as a list: a tuple costs the codec a nested extension per call.
            await rpc.send(Kind.CALL, call_id, [handle, name, list(args), kwargs, 0], pickle_fallback=True)
            return await self._wait(call_id, future, self.config.timeout, f"remote call {name}()")
        finally:
            self._pending.pop(call_id, None)

    async def _stream(self, handle: int, name: str, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        rpc = self._ready()
        call_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[call_id] = queue
        finished = False
        try:
            await rpc.send(Kind.CALL, call_id, [handle, name, list(args), kwargs, STREAM_WINDOW], pickle_fallback=True)
            consumed = 0
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.config.timeout)
                except asyncio.TimeoutError:
                    raise self._timed_out(f"remote stream {name}()", self.config.timeout, "timeout") from None
                if item is _END:
                    finished = True
                    return
                if isinstance(item, _Failed):
                    finished = True
                    raise item.error
                yield item
                consumed += 1
                if consumed % (STREAM_WINDOW // 2) == 0:
                    await rpc.send(Kind.CREDIT, call_id, STREAM_WINDOW // 2)
        finally:
            self._streams.pop(call_id, None)
            if not finished:
                self._cancel(call_id)

    async def _release(self, handle: int) -> None:
        rpc = self._ready()
        if self._proxies.pop(handle, None) is None:
            return
        call_id = next(self._ids)
        future = self._expect(call_id)
        try:
            await rpc.send(Kind.RELEASE, call_id, handle)
            await self._wait(call_id, future, self.config.timeout, f"releasing remote object #{handle}")
        finally:
            self._pending.pop(call_id, None)

    # -- plumbing ----------------------------------------------------------------------

    def _ready(self) -> RPCChannel:
        if self._lost is not None:
            raise ConnectionLostError(f"the session with executor {self.executor!r} is closed: {self._lost}")
        if self._rpc is None:
            raise RuntimeError("not connected: use `async with RemoteProxyClient(config) as client:`")
        return self._rpc

    def _expect(self, call_id: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        return future

    async def _wait(
        self, call_id: int, future: asyncio.Future, timeout: float, what: str, setting: str = "timeout"
    ) -> Any:
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._cancel(call_id)
            raise self._timed_out(what, timeout, setting) from None

    def _timed_out(self, what: str, timeout: float, setting: str) -> RemoteTimeoutError:
        return RemoteTimeoutError(
            f"{what} on executor {self.executor!r} took longer than {timeout:g} s "
            f"(RemoteExecutorConfig.{setting}); it was cancelled"
        )

    def _cancel(self, call_id: int) -> None:
        if self._rpc is not None and self._lost is None:
            asyncio.ensure_future(self._send_quietly(Kind.CANCEL, call_id))

    async def _send_quietly(self, kind: Kind, call_id: int) -> None:
        try:
            await self._rpc.send(kind, call_id)
        except RemoteMediaError:
            pass

    def _on_event(self, event: Message | TooLarge) -> None:
        if isinstance(event, TooLarge):
            error = MessageTooLargeError(
                f"executor {self.executor!r} sent a message of {event.size} bytes, above this client's "
                f"max_message_size of {event.limit} bytes (RemoteExecutorConfig.max_message_size)",
                size=event.size,
                limit=event.limit,
            )
            self._settle(event.id or 0, error=error)
            return
        kind = event.kind
        if event.pickled and not self._welcomed:
            logger.warning("executor %r sent a pickled %s before the handshake; ignored", self.executor, kind.name)
            return
        try:
            body = loads_object(event.body) if event.pickled else event.body
        except SerializationError as exc:
            self._settle(event.id, error=exc)
            return
        if kind in (Kind.RESULT, Kind.WELCOME):
            self._settle(event.id, value=body)
        elif kind is Kind.ERROR:
            self._settle(event.id, error=self._error(body))
        elif kind is Kind.YIELD:
            queue = self._streams.get(event.id)
            if queue is not None:
                queue.put_nowait(body)
        elif kind is Kind.END:
            queue = self._streams.get(event.id)
            if queue is not None:
                queue.put_nowait(_END)
        else:
            logger.warning("unexpected %s from executor %r", kind.name, self.executor)

    def _settle(self, call_id: int, *, value: Any = None, error: Exception | None = None) -> None:
        future = self._pending.get(call_id)
        if future is not None and not future.done():
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        elif error is not None and call_id in self._streams:
            self._streams[call_id].put_nowait(_Failed(error))

    def _error(self, body: Any) -> Exception:
        if not isinstance(body, dict):
            return RemoteExecutionError(f"executor {self.executor!r} sent a malformed error: {body!r}")
        code, message = body.get("code"), str(body.get("message", ""))
        if code == "too_large":
            return MessageTooLargeError(message)
        if code == "unauthorized":
            return AuthenticationError(f"executor {self.executor!r} refused the session: {message}")
        if code == "serialization":
            module = body.get("module")
            hint = f" (module {module!r} is not installed on the executor; install it there)" if module else ""
            return SerializationError(f"executor {self.executor!r}: {message}{hint}")
        remote_type = str(body.get("type") or code)
        summary = f"{remote_type}: {message}" if code == "exception" else message
        return RemoteExecutionError(
            f"executor {self.executor!r}: {summary}",
            remote_type=remote_type,
            remote_message=message,
            remote_traceback=str(body.get("traceback", "")),
        )

    def _on_lost(self, reason: str) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        error = ConnectionLostError(f"lost the session with executor {self.executor!r}: {reason}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for queue in self._streams.values():
            queue.put_nowait(_Failed(error))
        if self._rpc is not None:
            self._rpc.close(reason)
