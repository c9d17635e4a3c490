"""
``RemoteProxyClient``: one session with one executor.

Entering ``async with RemoteProxyClient(config)`` pairs through the
signaling server, opens a WebRTC peer connection with the executor and its
``rpc`` data channel, and presents the session's ticket. ``create_proxy``
uploads an object (cloudpickle) and returns a :class:`RemoteProxy`; leaving
the block releases every remote object (their ``cleanup()`` runs on the
executor) and closes everything.

Streams are duplex: in ``async for out in remote.stream(inputs)``, an
argument that is an iterator or an async iterable is fed to the remote
method item by item while its outputs come back, each way under credit
flow control (a bounded number of items in flight), so a slow remote
method slows the producer and memory stays bounded on both ends.

With ``RemoteProxyClient(config, media_tracks=N)``, the connection also
has N media slots (an audio and a video track each way, negotiated up
front), and ``async for out in remote.stream(frames).over_tracks()`` sends
and receives the stream's audio and video frames on one of them: Opus and
VP8 in real time, formats and timestamps restored (see
:mod:`remotemedia.transport.tracks`).

With ``RemoteExecutorConfig(reconnect=True)`` (the default), losing the
executor (it died, the network broke, its heartbeat stopped) fails the
calls in flight with :exc:`ConnectionLostError`, then pairs again, with
another executor if that one is gone, and re-creates every remote object
from the form it was uploaded in: proxies keep working, and new calls wait
for the reconnection. With ``reconnect=False`` the client stays closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from collections.abc import AsyncIterable, Iterator
from typing import Any, AsyncIterator

from ..aio import Backoff, Tasks
from ..exceptions import (
    AuthenticationError,
    ConnectionLostError,
    MessageTooLargeError,
    PickleRefusedError,
    RemoteExecutionError,
    RemoteMediaError,
    RemoteTimeoutError,
    SerializationError,
    TLSError,
)
from ..rpc import Kind, Message, Rejected, RPCProtocol, TooLarge, calls
from ..rpc.calls import MAX_WAITING_FRAMES, MEDIA_DRAIN
from ..rpc.conversation import Announcement, Answer, ClientCalls, Credit, Failure, Granted, Item, SessionEnded, StreamEnd, exception_for
from ..serialization import dumps_object, loads_object
from ..signaling import SignalingClient, SignalingSession
from ..transport.connection import Lane, RPCConnection, open_lane
from ..transport.ice import Route
from ..transport.media import kind_of
from ..transport.tracks import MAX_SLOTS as MAX_MEDIA_SLOTS, MediaSlot
from .config import RemoteExecutorConfig
from .proxy import RemoteProxy
from .tracebacks import SourceMap

__all__ = ["RemoteProxyClient"]

logger = logging.getLogger(__name__)

#: Longest pause between two reconnection attempts, in seconds.
MAX_BACKOFF = 2.0
_END = object()
_MEDIA_DONE = object()


class _Frame:
    # A frame that came on a media track: it took no stream credit.
    __slots__ = ("frame",)

    def __init__(self, frame: Any) -> None:
        self.frame = frame


def _is_input_stream(value: Any) -> bool:
    # Iterators (generators, iter(...)) and async iterables stream; containers travel whole.
    return isinstance(value, (AsyncIterable, Iterator))


class _InputActivity:
    """
    When a duplex stream's inputs last moved, for its timeout: a stream
    whose own source is idle (a pause in speech) is waiting on the caller,
    not on the executor, and that wait is not the executor's to time out.
    """

    def __init__(self) -> None:
        self.waiting = False  # the feeder awaits the caller's source
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def recent(self, timeout: float) -> bool:
        """Whether the source is being waited on, or an input moved within ``timeout`` seconds."""
        return self.waiting or time.monotonic() - self.last < timeout


def _split_input(args: tuple, kwargs: dict) -> tuple[list, dict, int | str | None, Any]:
    """The arguments with the input stream taken out, where it was, and the stream itself."""
    found = [(i, v) for i, v in enumerate(args) if _is_input_stream(v)]
    found += [(k, v) for k, v in kwargs.items() if _is_input_stream(v)]
    if not found:
        return list(args), kwargs, None, None
    if len(found) > 1:
        raise TypeError(
            "a remote call can stream one input; these arguments are all iterators or async "
            f"iterables: {', '.join(str(w) for w, _ in found)} (pass the others as lists)"
        )
    where, source = found[0]
    args, kwargs = list(args), dict(kwargs)
    if isinstance(where, int):
        args[where] = None
    else:
        kwargs[where] = None
    return args, kwargs, where, source


def _is_wasm_node(obj: Any) -> bool:
    """A WasmNode itself (a subclass may carry Python state: it is pickled)."""
    # Looked up, not imported: a client that never made a WasmNode needs no wasmtime.
    module = sys.modules.get("remotemedia.nodes.wasm")
    return module is not None and type(obj) is module.WasmNode


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

    def __init__(self, config: RemoteExecutorConfig | None = None, *, media_tracks: int = 0) -> None:
        if config is None:
            config = RemoteExecutorConfig()
        if not isinstance(config, RemoteExecutorConfig):
            raise TypeError(f"config must be a RemoteExecutorConfig, not {type(config).__name__}")
        if isinstance(media_tracks, bool) or not isinstance(media_tracks, int) or not 0 <= media_tracks <= MAX_MEDIA_SLOTS:
            raise ValueError(f"media_tracks must be an int from 0 to {MAX_MEDIA_SLOTS}, not {media_tracks!r}")
        self.config = config
        #: Streams that can carry audio and video frames on media tracks at once (see :meth:`RemoteCall.over_tracks`).
        self.media_tracks = media_tracks
        #: Name of the executor serving this session, once connected.
        self.executor: str | None = None
        self._signaling: SignalingClient | None = None
        self._session: SignalingSession | None = None
        self._lane: Lane | None = None  # the connection and what came with it (peer connection, media slots)
        self._rpc: RPCConnection | None = None
        self._calls = ClientCalls()  # ids, open streams and their credit: the conversation's rules
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        self._input_credits: dict[int, asyncio.Event] = {}  # set when a duplex stream is granted input credit
        self._proxies: dict[int, RemoteProxy] = {}
        self._cancels = Tasks()  # CANCELs of timed-out calls, being sent
        self._sources = SourceMap()  # code uploaded, to name files in remote tracebacks
        self._slots: list[MediaSlot] = []
        self._media_calls: dict[int, MediaSlot] = {}
        # What each live proxy's object was uploaded as: re-created from this on reconnection.
        self._uploads: dict[int, tuple[Any, bool]] = {}  # handle: (CREATE body, pickled)
        self._lost: str | None = None
        self._closed = False
        self._generation = 0  # of the connection; events of an older one are ignored
        self._reconnecting: asyncio.Task | None = None
        #: How many times the session was re-established after a loss.
        self.reconnects = 0

    @property
    def _welcomed(self) -> bool:
        # The executor has accepted our ticket (the conversation's state: an ERROR 0 means the session's end only then).
        return self._calls.welcomed

    @_welcomed.setter
    def _welcomed(self, welcomed: bool) -> None:
        self._calls.welcomed = welcomed

    @property
    def lane(self) -> str | None:
        """
        Which lane the calls take: ``"direct"`` (a TCP connection straight to
        the executor) or ``"datachannel"`` (WebRTC); ``None`` while not
        connected. See :attr:`RemoteExecutorConfig.lane`.
        """
        return self._lane.name if self._lane is not None else None

    def _direct_tls(self) -> Any:
        """The direct lane's TLS context: with ``wss://`` signaling the direct lane is TLS too."""
        if not any(url.startswith("wss://") for url in self.config.urls):
            return None
        return self.config.ssl_context() or ssl.create_default_context()

    @property
    def route(self) -> Route | None:
        """
        How this session's packets go: ``route.kind`` is ``"direct"``,
        ``"stun"`` (through a NAT mapping) or ``"relay"`` (through a TURN
        server), from the candidate pair ICE selected; ``None`` while not
        connected. See :class:`remotemedia.transport.ice.Route`.
        """
        return self._lane.route if self._lane is not None else None

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
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise

    async def _open(self, avoid: list[str] | None = None) -> None:
        """Pair, negotiate, and authenticate one connection (a first one, or after a loss)."""
        config, limit = self.config, self.config.connect_timeout
        # One budget for the whole set-up: a connection that cannot be made fails within connect_timeout.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit

        def left() -> float:
            return max(0.1, deadline - loop.time())

        if self._signaling is None or self._signaling.closed:
            self._signaling = await SignalingClient.connect_any(
                config.urls, token=config.token, timeout=limit, ssl_context=config.ssl_context()
            )
        requirements = dict(config.requirements)
        if avoid:
            requirements["avoid"] = avoid[-16:]
        self._session = await self._signaling.pair(requirements or None, timeout=left())
        self.executor = self._session.executor
        generation = self._generation + 1
        # The config's own servers first, then those the signaling server hands out (--ice-server).
        self._lane = await open_lane(
            self._session,
            ice_servers=[*config.ice_servers, *self._session.ice_servers],
            media_tracks=self.media_tracks,
            protocol=RPCProtocol(config.max_message_size),
            on_event=lambda event: self._on_event(event, generation),
            on_lost=lambda why: self._on_lost(why, generation),
            on_bye=lambda why: self._on_lost(f"the executor left ({why})", generation),
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            timeout=left(),
            what=f"connecting to executor {self.executor!r}",
            lane=config.lane,
            ssl_context=self._direct_tls(),
        )
        # Nothing of the new lane has run yet (no await since it was made): its events count from here.
        self._generation = generation
        self._lost = None
        self._welcomed = False
        self._rpc, self._slots = self._lane.rpc, self._lane.slots
        hello = calls.hello_body(self._session.ticket, config.max_message_size, config.timeout)
        body = await self._request(Kind.HELLO, 0, hello, "the handshake", limit, "connect_timeout")
        self._rpc.protocol.peer_limit(calls.parse_welcome(body).max_message_size)
        self._welcomed = True
        logger.info("connected to executor %r (session %s, route %s)", self.executor, self._session.id, self.route)

    async def _request(
        self, kind: Kind, id: int, body: Any, what: str, timeout: float, setting: str = "timeout", *, pickled: bool = False
    ) -> Any:
        """Send one request on the current connection and wait for its answer."""
        future = self._expect(id)
        try:
            if pickled:
                await self._rpc.send_pickled(kind, id, body)
            else:
                await self._rpc.send(kind, id, body, pickle_fallback=True)
            return await self._wait(id, future, timeout, what, setting)
        finally:
            self._pending.pop(id, None)

    async def _teardown(self) -> None:
        """Close the current connection's pieces (not the signaling client)."""
        lane, session = self._lane, self._session
        self._lane = self._rpc = self._session = None
        self._slots, self._media_calls = [], {}
        if lane is not None:
            await lane.close()  # bounded in time (see Lane.close)
        if session is not None:
            await session.close("client closed")

    async def _reconnect(self) -> None:
        """Pair again and re-create every remote object; on failure, stay closed saying why."""
        lost, budget = self._lost, max(self.config.connect_timeout, 2 * self.config.heartbeat_timeout)
        deadline = asyncio.get_running_loop().time() + budget
        backoff, before = Backoff(0.1, MAX_BACKOFF), self.executor
        # The lost executor may be frozen yet still registered: prefer any other.
        avoid = [before] if before else []
        while True:
            try:
                await self._teardown()
                await self._open(avoid)
                for handle, (data, pickled) in list(self._uploads.items()):
                    await self._request(
                        Kind.CREATE, handle, data, f"re-creating remote object #{handle}", self.config.timeout, pickled=pickled
                    )
                self.reconnects += 1
                logger.info("reconnected: executor %r -> %r, %d objects re-created", before, self.executor, len(self._uploads))
                return
            except asyncio.CancelledError:
                raise
            except (AuthenticationError, TLSError) as exc:  # retrying would meet the same refusal
                self._lost = f"{lost}; reconnecting was refused: {exc}"
                return
            except (RemoteMediaError, OSError) as exc:
                if self.executor and self.executor not in avoid:
                    avoid.append(self.executor)  # it did not answer either
                if asyncio.get_running_loop().time() + backoff.delay > deadline:
                    self._lost = f"{lost}; reconnecting failed for {budget:g} s: {exc}"
                    logger.warning("giving up reconnecting: %s", exc)
                    await self._teardown()
                    return
                logger.info("reconnecting failed (%s); retrying in %.1f s", exc, backoff.delay)
                await asyncio.sleep(backoff.next())

    async def close(self) -> None:
        """Release every remote object, then close the connection; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            await asyncio.gather(self._reconnecting, return_exceptions=True)
        if self._rpc is not None and self._lost is None:
            # Released one by one, and waited for: cleanup() has run when close() returns.
            for handle in list(self._proxies):
                self._proxies.pop(handle, None)
                self._uploads.pop(handle, None)
                try:
                    await self._request(
                        Kind.RELEASE, self._calls.new_id(), calls.release_body(handle), f"releasing remote object #{handle}", self.config.timeout
                    )
                except RemoteMediaError as exc:
                    logger.warning("releasing remote object #%d failed: %s", handle, exc)
        self._on_lost("the client closed the session", self._generation)
        await self._cancels.wait(1.0)  # last words, not waited for long
        await self._cancels.close()
        await self._teardown()
        if self._signaling is not None:
            await self._signaling.close()

    # -- the API -----------------------------------------------------------------------

    async def create_proxy(self, obj: Any) -> RemoteProxy:
        """
        Upload ``obj`` to the executor and return a proxy to the remote copy.

        The executor runs ``obj.initialize()`` if it has one. An object that
        cannot be pickled raises :exc:`SerializationError` here, before
        anything is sent; one the executor cannot unpickle (a module missing
        there) raises it naming the module. A
        :class:`~remotemedia.nodes.WasmNode` travels as data instead (its
        module's bytes and settings), never pickled, so executors started
        with ``--accept wasm`` take it.
        """
        if isinstance(obj, RemoteProxy):
            raise TypeError("this is a proxy already; pass the original object")
        # A WASM node travels as data, never as a pickle (executors started with --accept wasm take only that).
        create = calls.create_body(wasm=obj.spec) if _is_wasm_node(obj) else calls.create_body(pickle=dumps_object(obj))
        data, pickled = create.body, create.pickled
        await self._ready()
        handle = self._calls.new_id()
        body = await self._request(Kind.CREATE, handle, data, f"creating {type(obj).__qualname__}", self.config.timeout, pickled=pickled)
        self._sources.add(obj)
        proxy = RemoteProxy(self, handle, obj, calls.parse_created(body))
        self._proxies[handle] = proxy
        if self.config.reconnect:
            self._uploads[handle] = (data, pickled)
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

    # For remotemedia.remote.pool, which lends one session to run after run.
    @property
    def usable(self) -> bool:
        """Whether the session is open and its connection up (not closed, lost, or reconnecting)."""
        return not self._closed and self._lost is None and self._rpc is not None

    @property
    def idle(self) -> bool:
        """Whether no call or stream is in flight."""
        return not self._pending and not self._streams

    async def release_all(self) -> None:
        """Release every remote object still alive (their ``cleanup()`` runs); the session stays open."""
        for handle in list(self._proxies):
            await self._release(handle)

    async def _call(self, handle: int, name: str, args: tuple, kwargs: dict) -> Any:
        if any(_is_input_stream(v) for v in (*args, *kwargs.values())):
            raise TypeError(
                f"`await remote.{name}(...)` got an iterator or async iterable argument, which only a "
                f"streamed call can feed: use `async for out in remote.{name}(...)`, or pass a list"
            )
        await self._ready()
        body = calls.call_body(handle, name, list(args), kwargs)
        return await self._request(Kind.CALL, self._calls.new_id(), body, f"remote call {name}()", self.config.timeout)

    async def _stream(self, handle: int, name: str, args: tuple, kwargs: dict, *, media: bool = False) -> AsyncIterator[Any]:
        args, kwargs, where, source = _split_input(args, kwargs)
        rpc = await self._ready()
        call_id = self._calls.new_id()
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[call_id] = queue
        stream = self._calls.open_stream(call_id, duplex=source is not None)
        slot = self._take_slot(call_id, queue) if media else None
        finished = False
        feeder = None
        try:
            if slot is not None:
                await rpc.send(Kind.MEDIA, call_id, calls.media_slot_body(slot.index))
            body = calls.call_body(handle, name, args, kwargs, stream.window.initial, where)
            await rpc.send(Kind.CALL, call_id, body, pickle_fallback=True)
            inputs = None
            if source is not None:
                inputs = _InputActivity()
                granted = self._input_credits[call_id] = asyncio.Event()
                feeder = asyncio.create_task(
                    self._feed(rpc, call_id, source, stream.inputs, granted, queue, slot, inputs), name=f"remote-feed-{name}"
                )
            ended = False  # END came; media frames may still be on their way
            while True:
                timeout = MEDIA_DRAIN if ended else self.config.timeout
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    if ended:
                        logger.warning("remote stream %s(): media frames were lost on the way; ending without them", name)
                        slot.give_up()
                        continue
                    if inputs is not None and inputs.recent(self.config.timeout):
                        # Quiet because its inputs are (a microphone in a pause, a
                        # text source between replies): not a stuck executor.
                        continue
                    raise self._timed_out(f"remote stream {name}()", self.config.timeout, "timeout") from None
                if item is _END:
                    if slot is None or not slot.receiving:
                        finished = True
                        return
                    ended = True
                    continue
                if item is _MEDIA_DONE:
                    if ended:
                        finished = True
                        return
                    continue
                if isinstance(item, _Failed):
                    finished = True
                    raise item.error
                if isinstance(item, _Frame):
                    slot.waiting -= 1
                    yield item.frame
                    continue
                yield item
                grant = stream.window.consume()
                if grant:
                    await rpc.send(Kind.CREDIT, call_id, calls.credit_body(grant))
        finally:
            self._calls.close_stream(call_id)
            self._streams.pop(call_id, None)
            self._input_credits.pop(call_id, None)
            if self._media_calls.pop(call_id, None) is not None:
                slot.free()
            if feeder is not None:
                feeder.cancel()
            if not finished:
                self._cancel(call_id)

    def _take_slot(self, call_id: int, queue: asyncio.Queue) -> MediaSlot | None:
        """A free media slot for this call, or ``None``: then its frames go on the data channel."""
        for slot in self._slots:
            if slot.owner is None:
                slot.take(call_id, lambda frame: self._track_frame(slot, frame, queue), lambda: queue.put_nowait(_MEDIA_DONE))
                slot.waiting = slot.dropped = 0
                self._media_calls[call_id] = slot
                return slot
        if self.media_tracks:
            logger.info("all %d media slots are in use: this stream's frames go on the data channel", len(self._slots))
        return None

    @staticmethod
    def _track_frame(slot: MediaSlot, frame: Any, queue: asyncio.Queue) -> None:
        # Real-time frames cannot be slowed down: past a backlog, a slow consumer loses the newest.
        if slot.waiting >= MAX_WAITING_FRAMES:
            slot.dropped += 1
            if slot.dropped in (1, 100, 10000):
                logger.warning("the stream's consumer is slower than real time; %d frames dropped", slot.dropped)
            return
        slot.waiting += 1
        queue.put_nowait(_Frame(frame))

    async def _feed(
        self,
        rpc: RPCConnection,
        call_id: int,
        source: Any,
        credit: Credit,
        granted: asyncio.Event,
        queue: asyncio.Queue,
        slot: MediaSlot | None,
        activity: _InputActivity,
    ) -> None:
        """Send the inputs of a duplex stream as the executor grants credit, then their end; mark ``activity`` as they move."""

        async def send(item: Any) -> None:
            if slot is not None and kind_of(item) is not None:
                # Paced by the track (real time); the data channel announces each kind's first frame.
                await slot.send(item, lambda announcement: rpc.send(Kind.MEDIA, call_id, announcement))
            else:
                while not credit.take():
                    granted.clear()
                    await granted.wait()
                await rpc.send(Kind.INPUT, call_id, item, pickle_fallback=True)

        try:
            if isinstance(source, AsyncIterable):
                iterator = aiter(source)
                while True:
                    activity.waiting = True
                    try:
                        item = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    finally:
                        activity.waiting = False
                        activity.touch()
                    await send(item)
                    activity.touch()
            else:
                for item in source:
                    await send(item)
                    activity.touch()
            if slot is not None:
                await slot.finish_sending(lambda ends: rpc.send(Kind.INPUT_END, call_id, ends))
            else:
                await rpc.send(Kind.INPUT_END, call_id, calls.ends_body())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the caller's own iterator failed, or an input cannot be sent
            self._cancel(call_id)  # the remote method would wait for inputs forever
            queue.put_nowait(_Failed(exc))

    async def _release(self, handle: int) -> None:
        if self._proxies.pop(handle, None) is None:
            return
        self._uploads.pop(handle, None)
        try:
            await self._ready()
        except ConnectionLostError:
            return  # the session ended, and the remote object with it: nothing is left to release
        await self._request(
            Kind.RELEASE, self._calls.new_id(), calls.release_body(handle), f"releasing remote object #{handle}", self.config.timeout
        )

    async def wait_reconnection(self) -> ConnectionLostError | None:
        """
        Wait for a reconnection under way (if any) to end.

        Returns ``None`` when the session is usable, else the
        :exc:`ConnectionLostError` that says why it is not (e.g. reconnecting
        gave up: no executor was left). A caller whose call failed with
        "reconnecting" uses it to report how that ended.
        """
        try:
            await self._ready()
        except ConnectionLostError as exc:
            return exc
        return None

    # -- plumbing ----------------------------------------------------------------------

    async def _ready(self) -> RPCConnection:
        """The connection, once usable: waits for a reconnection under way."""
        reconnecting = self._reconnecting
        if reconnecting is not None and not reconnecting.done():
            # wait(), not shield(): close() cancelling the reconnection must not cancel this caller.
            await asyncio.wait({reconnecting})
        if self._closed:
            raise ConnectionLostError(f"the client is closed (the session with executor {self.executor!r}: {self._lost})")
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
        except RemoteMediaError:
            raise  # the executor's own answer (RemoteTimeoutError is a TimeoutError too)
        except asyncio.TimeoutError:
            self._cancel(call_id)
            raise self._timed_out(what, timeout, setting) from None

    def _timed_out(self, what: str, timeout: float, setting: str) -> RemoteTimeoutError:
        return RemoteTimeoutError(
            f"{what} on executor {self.executor!r} took longer than {timeout:g} s "
            f"(RemoteExecutorConfig.{setting}); it was cancelled"
        )

    def _cancel(self, call_id: int) -> None:
        rpc = self._rpc
        if rpc is not None and self._lost is None:
            # Kept, and ended by close(): a timeout while closing logs nothing.
            self._cancels.spawn(self._send_quietly(rpc, Kind.CANCEL, call_id))

    @staticmethod
    async def _send_quietly(rpc: RPCConnection, kind: Kind, call_id: int) -> None:
        try:
            await rpc.send(kind, call_id)
        except (RemoteMediaError, ConnectionError):
            pass  # the connection went: the executor ends the call with it

    def _on_event(self, event: Message | TooLarge | Rejected, generation: int) -> None:
        if generation != self._generation:
            return  # from a connection already replaced
        if isinstance(event, Rejected):
            logger.warning("executor %r sent a message this client cannot take: %s", self.executor, event.reason)
            self._settle(event.id, error=RemoteExecutionError(f"executor {self.executor!r} sent a bad message: {event.reason}"))
            return
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
        if event.pickled and not self.config.allow_pickled_results:
            # Refused before any byte of it is looked at: unpickling would run the executor's code here.
            self._settle(
                event.id,
                error=PickleRefusedError(
                    f"executor {self.executor!r} sent a {kind.name.lower()} that only unpickling can restore, and "
                    "this client refuses pickles (RemoteExecutorConfig(allow_pickled_results=False)); return values "
                    "the codec carries (numbers, strings, bytes, lists, dicts, numpy arrays, frames), or allow "
                    "pickled results from executors you trust"
                ),
            )
            return
        try:
            body = loads_object(event.body) if event.pickled else event.body
        except SerializationError as exc:
            self._settle(event.id, error=exc)
            return
        meaning = self._calls.receive(kind, event.id, body)
        what = type(meaning)
        if what is Answer:
            self._settle(meaning.id, value=meaning.value)
        elif what is Item:
            self._streams[meaning.id].put_nowait(meaning.value)
        elif what is Failure:
            if meaning.error is None:
                error = RemoteExecutionError(f"executor {self.executor!r} sent {meaning.reason}")
            else:
                error = exception_for(meaning.error, self.executor, self._sources.annotate)
            self._settle(meaning.id, error=error)
        elif what is StreamEnd:
            slot = self._media_calls.get(meaning.id)
            if slot is not None:
                slot.end_receiving(meaning.ends)
            self._streams[meaning.id].put_nowait(_END)
        elif what is Granted:
            granted = self._input_credits.get(meaning.id)
            if meaning.n and granted is not None:
                granted.set()
        elif what is Announcement:
            slot = self._media_calls.get(meaning.id)
            if slot is not None:
                try:
                    slot.begin_receiving(meaning.announcement)
                except ValueError as exc:
                    self._settle(meaning.id, error=RemoteExecutionError(f"executor {self.executor!r} sent {exc}"))
        elif what is SessionEnded:
            # The executor is ending the session, and says why (a crash, a stuck call, shutdown).
            self._on_lost(f"the executor ended the session: {meaning.message}", generation)
        elif meaning.unexpected:
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

    def _on_lost(self, reason: str, generation: int) -> None:
        if self._lost is not None or generation != self._generation:
            return
        self._lost = reason
        reconnecting = self._reconnecting is not None and not self._reconnecting.done()
        # A loss during a reconnection is that reconnection's to retry.
        again = self.config.reconnect and self._welcomed and not self._closed and not reconnecting
        note = "; reconnecting (calls made from now on wait for it)" if again else ""
        error = ConnectionLostError(f"lost the session with executor {self.executor!r}: {reason}{note}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for queue in self._streams.values():
            queue.put_nowait(_Failed(error))
        if self._rpc is not None:
            self._rpc.close(reason)
        if again:
            logger.warning("lost executor %r (%s); reconnecting", self.executor, reason)
            self._reconnecting = asyncio.ensure_future(self._reconnect())
