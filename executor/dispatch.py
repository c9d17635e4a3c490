"""
Serving an authenticated client's requests against a session's objects.

The :class:`Dispatcher` takes the decoded ``CREATE``, ``CALL``,
``RELEASE``, ``CANCEL``, ``CREDIT`` and ``INPUT`` messages of one session
and answers them through ``send``. It is the same code in both execution
modes: in ``inprocess`` mode it runs in the executor, fed by the data
channel; in ``process`` mode it runs in the session's worker process, fed
through a socket by the executor (see :mod:`executor.sandbox`).

It enforces the session's :class:`Limits`: a call that runs past the call
timeout is cancelled and answered with a ``timeout`` error. Async code
stops there; sync code cannot be interrupted, so when the worker thread is
still busy with it the session is declared stuck (``on_stuck``), which ends
it: in ``process`` mode that stops the worker process, so a runaway loop
takes down its own session and nothing else.

It also enforces what the executor accepts (:data:`ACCEPTS`, ``--accept``):
with ``wasm`` every pickled message is answered with a ``not_accepted``
error before anything loads it, and a ``CREATE`` may only carry a WASM
node as data (:mod:`remotemedia.wasm.spec`), which it builds here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from remotemedia.aio import Tasks
from remotemedia.exceptions import DecodeError, MessageTooLargeError, RemoteMediaError
from remotemedia.rpc import ErrorCode, Kind, Message, Rejected, TooLarge, calls
from remotemedia.rpc.conversation import ExecutorCalls, Feed, Refuse, Resume, Serve, Stop
from remotemedia.rpc.compression import DEFAULT_INFLATE_RATE
from remotemedia.serialization import loads_object
from remotemedia.wasm.spec import spec_from_body

from .inputs import InputStream
from .objects import ObjectTable, RemoteCallError, error_body

__all__ = ["Dispatcher", "Limits", "too_large_error", "ACCEPTS", "not_accepted", "pickle_refused"]

logger = logging.getLogger(__name__)

Send = Callable[[Kind, int, Any], Awaitable[None]]

#: What an executor takes from clients (``--accept``): ``"python"`` (pickled
#: Python objects, the default), ``"wasm"`` (WASM nodes only, sent as data:
#: nothing is ever unpickled) or ``"any"`` (both).
ACCEPTS = ("python", "wasm", "any")


@dataclass(frozen=True)
class Limits:
    """
    What one session may use. An executor's come from its config
    (``ExecutorConfig.limits``, checked there); they cross to the worker
    process as :meth:`to_dict`.
    """

    #: Seconds one call (a create, a plain call, a release) may run; ``None``: no limit.
    call_timeout: float | None = None
    #: Objects one session may hold at once.
    max_objects: int = 64
    #: The worker process's memory cap in MB (named in out-of-memory errors); ``None``: no cap.
    memory_limit: int | None = None
    #: Bytes per second of compressed bodies one session may have inflated (``--inflate-rate``).
    inflate_rate: int = DEFAULT_INFLATE_RATE
    #: What the session may create (one of :data:`ACCEPTS`).
    accept: str = "python"

    def to_dict(self) -> dict:
        """For the worker process's settings message."""
        return {
            "call_timeout": self.call_timeout,
            "max_objects": self.max_objects,
            "memory_limit": self.memory_limit,
            "inflate_rate": self.inflate_rate,
            "accept": self.accept,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Limits:
        """The inverse of :meth:`to_dict`."""
        return cls(
            data.get("call_timeout"),
            int(data.get("max_objects", 64)),
            data.get("memory_limit"),
            int(data.get("inflate_rate", DEFAULT_INFLATE_RATE)),
            # A missing "accept" is the strictest, never the most open.
            data.get("accept", "wasm"),
        )

    @property
    def unpickles(self) -> bool:
        """Whether pickled bodies may be loaded (``--accept python`` or ``any``)."""
        return self.accept in ("python", "any")


def not_accepted(what: str, accept: str) -> RemoteCallError:
    """The error that refuses ``what`` (``"a pickled object"``, ``"a WASM node"``) on an executor started with ``--accept accept``."""
    takes = {"wasm": "only WASM nodes", "python": "only Python objects"}.get(accept, accept)
    other = "a WASM node (remotemedia.nodes.WasmNode), which travels as data" if accept == "wasm" else "a Python object"
    return RemoteCallError(
        f"this executor takes {takes} (started with --accept {accept}): {what} is refused; send {other}, "
        f"or use an executor started with --accept any",
        ErrorCode.NOT_ACCEPTED,
    )


def pickle_refused(kind: Kind, accept: str) -> RemoteCallError:
    """The error that answers a pickled ``kind`` message on an executor that loads no pickle."""
    what = {
        Kind.CREATE: "a pickled Python object",
        Kind.CALL: "a call with pickled arguments (values the codec cannot carry)",
        Kind.INPUT: "a pickled stream input",
    }.get(kind, f"a pickled {kind.name}")
    return not_accepted(what, accept)


def _forget_frames(exc: BaseException | None) -> None:
    """
    Drop the tracebacks of an error that has been answered.

    ``asyncio.wait_for`` keeps the error in a task that its own frame
    holds, and that frame is in the error's traceback: a cycle, which would
    keep every frame of the failed call (the whole upload it was loading,
    say) until a full garbage collection. Without tracebacks it is freed
    at once.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__


class _Stuck(RemoteCallError):
    """A timed-out call whose sync code still holds the worker thread."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message, ErrorCode.TIMEOUT)
        self.why = why


def too_large_error(event: TooLarge) -> RemoteCallError:
    """The error that answers a message above this executor's limit."""
    return RemoteCallError(
        f"a message of {event.size} bytes is above this executor's limit of {event.limit} bytes "
        f"(the executor's --max-message-size)",
        ErrorCode.TOO_LARGE,
    )


class Dispatcher:
    """Answers one session's requests (see the module docstring)."""

    def __init__(self, objects: ObjectTable, send: Send, limits: Limits, on_stuck: Callable[[str], None]) -> None:
        self.objects = objects
        self.limits = limits
        self._transport = send
        self._on_stuck = on_stuck
        self._calls = ExecutorCalls()  # running calls and their credit: the conversation's rules
        self._tasks: dict[int, asyncio.Task] = {}
        self._granted: dict[int, asyncio.Event] = {}  # set when a stream is granted YIELD credit
        self._inputs: dict[int, InputStream] = {}
        self._replies = Tasks()  # error and credit replies sent by tasks of their own: ended by close()

    def handle(self, event: Message | TooLarge | Rejected) -> None:
        """One request from the client; the answer is sent by a task of its own."""
        if isinstance(event, TooLarge):
            self._later(self._error(event.id or 0, too_large_error(event)))
            return
        if isinstance(event, Rejected):
            logger.warning("refused a message from the client: %s", event.reason)
            self._later(self._error(event.id, RemoteCallError(event.reason, event.code)))
            return
        kind, id = event.kind, event.id
        if event.pickled and not self.limits.unpickles:
            # Nothing pickled is loaded here, whatever it is for (see ACCEPTS).
            self._later(self._error(id, pickle_refused(kind, self.limits.accept)))
            return
        action = self._calls.receive(kind, id, event.body)
        what = type(action)
        if what is Serve:
            self._tasks[id] = asyncio.create_task(self._serve(event))
        elif what is Feed:
            self._input(event, action.end)
        elif what is Resume:
            self._granted[id].set()
        elif what is Stop:
            stream = self._inputs.get(id)
            if stream is not None:
                stream.cancel()  # wakes a sync generator blocked on its next input
            task = self._tasks.get(id)
            if task is not None:
                task.cancel()
        elif what is Refuse:
            logger.warning("refused a %s from the client: %s", kind.name, action.reason)
            self._later(self._error(id, RemoteCallError(action.reason, action.code)))

    async def close(self) -> None:
        """Stop every call and release every object (their ``cleanup()`` runs)."""
        for stream in self._inputs.values():
            stream.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._replies.close()
        await self.objects.close()

    # -- requests ----------------------------------------------------------------------

    async def _serve(self, message: Message) -> None:
        try:
            if message.kind is Kind.CREATE:
                await self._create(message)
            elif message.kind is Kind.RELEASE:
                handle = calls.parse_release(await self._body(message))
                await self._limited(self.objects.release(handle), "releasing an object", sync=True)
                await self._send(Kind.RESULT, message.id, None)
            else:
                await self._call(message)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if isinstance(exc, DecodeError):  # a malformed body: the client's fault, said as such
                exc = RemoteCallError(str(exc), ErrorCode.BAD_REQUEST)
            await self._error(message.id, exc)
            if isinstance(exc, _Stuck):
                # After the reply, so the client learns why its session ends.
                self._on_stuck(exc.why)
            _forget_frames(exc)
        finally:
            self._calls.finished(message.id)
            self._tasks.pop(message.id, None)
            self._granted.pop(message.id, None)
            stream = self._inputs.pop(message.id, None)
            if stream is not None:
                stream.end()

    async def _create(self, message: Message) -> None:
        create = calls.parse_create(message.body, message.pickled)
        build = loads_object
        if create.pickled:
            if not self.limits.unpickles:
                raise pickle_refused(Kind.CREATE, self.limits.accept)
        else:
            if self.limits.accept == "python":
                raise not_accepted("a WASM node", self.limits.accept)
            build = functools.partial(_build_wasm, call_timeout=self.limits.call_timeout)
        held = self.objects.held
        if held >= self.limits.max_objects:
            raise RemoteCallError(
                f"this session already holds {held} objects, the executor's limit (--max-objects "
                f"{self.limits.max_objects}); release some with client.release(proxy)",
                ErrorCode.OBJECTS,
            )
        obj = await self._limited(self.objects.create(message.id, create.body, build), "creating the object", sync=True)
        await self._send(Kind.RESULT, message.id, calls.created_body(obj))

    async def _call(self, message: Message) -> None:
        call = calls.parse_call(await self._body(message))
        name, credit, where = call.method, call.credit, call.where
        method = self.objects.method(call.handle, name)
        args, kwargs = call.args, call.kwargs
        if where is not None:
            stream = self._input_stream(message.id)
            if isinstance(where, int):
                args = list(args)
                args[where] = stream
            else:
                kwargs = {**kwargs, where: stream}
        if not credit:
            is_sync = not asyncio.iscoroutinefunction(method)
            result = await self._limited(self.objects.call(method, tuple(args), kwargs), f"{name}()", sync=is_sync)
            await self._send(Kind.RESULT, message.id, result)
            return
        credits = self._calls.open_stream(message.id, credit)
        granted = self._granted[message.id] = asyncio.Event()
        items = self.objects.stream(method, tuple(args), kwargs)
        try:
            async for item in items:
                while not credits.take():  # the client has room for one more
                    granted.clear()
                    await granted.wait()
                await self._send(Kind.YIELD, message.id, item)
        finally:
            await items.aclose()
        await self._send(Kind.END, message.id, calls.ends_body())

    def _input_stream(self, id: int) -> InputStream:
        # Made by whichever comes first: the call's task, or its first input
        # (which can arrive before the task has read the call's body).
        stream = self._inputs.get(id)
        if stream is None:
            stream = self._inputs[id] = InputStream(lambda n: self._grant(id, n))
        return stream

    def _input(self, message: Message, end: bool) -> None:
        stream = self._input_stream(message.id)
        if end:
            stream.end()
            return
        try:
            item = message.body
            if message.pickled:
                # Loaded in order on the loop: inputs are usually small, and order matters.
                item = loads_object(item)
            stream.put(item)
        except Exception as exc:
            task = self._tasks.get(message.id)
            if task is not None:
                task.cancel()
            self._later(self._error(message.id, RemoteCallError(f"bad input: {exc}")))

    def _grant(self, id: int, n: int) -> None:
        if self._calls.running(id):
            self._later(self._send(Kind.CREDIT, id, calls.credit_body(n)))

    async def _limited(self, work: Awaitable[Any], what: str, *, sync: bool) -> Any:
        limit = self.limits.call_timeout
        if limit is None:
            return await work
        try:
            return await asyncio.wait_for(work, limit)
        except asyncio.TimeoutError:
            message = (
                f"{what} ran past the call timeout of {limit:g} s (the shorter of the client's "
                f"RemoteExecutorConfig.timeout and the executor's --call-timeout)"
            )
            if sync and self.objects.busy:
                raise _Stuck(
                    message + "; its code cannot be interrupted, so the session is ended",
                    f"{what} ran past the call timeout of {limit:g} s in code that cannot be interrupted",
                ) from None
            raise RemoteCallError(message, ErrorCode.TIMEOUT) from None

    async def _body(self, message: Message) -> Any:
        # Only reached once the session is authenticated (the caller's duty).
        return await self.objects.load(message.body) if message.pickled else message.body

    # -- replies -------------------------------------------------------------------------

    async def _send(self, kind: Kind, id: int, body: Any = None) -> None:
        try:
            await self._transport(kind, id, body)
        except MessageTooLargeError as exc:
            await self._error(id, RemoteCallError(f"the reply is too large for the client: {exc}", ErrorCode.TOO_LARGE))

    async def _error(self, id: int, exc: BaseException) -> None:
        if isinstance(exc, MemoryError) and self.limits.memory_limit:
            exc = RemoteCallError(
                f"the session ran out of memory: this executor caps each session's worker at "
                f"{self.limits.memory_limit} MB (--memory-limit); {type(exc).__name__}: {exc}",
                ErrorCode.MEMORY,
            )
        body = error_body(exc)
        if body["code"] == ErrorCode.EXCEPTION:
            logger.info("call %d raised %s: %s", id, body["type"], body["message"])
        try:
            await self._transport(Kind.ERROR, id, body)
        except RemoteMediaError as send_failed:
            logger.debug("error reply for %d not sent: %s", id, send_failed)

    def _later(self, coro: Any) -> None:
        self._replies.spawn(coro)


def _build_wasm(body: Any, call_timeout: float | None) -> Any:
    """A WASM node from its ``CREATE`` body (on the worker thread: compiling takes a while)."""
    from remotemedia.nodes.wasm import WasmNode  # wasmtime loads only where WASM nodes run

    try:
        spec = spec_from_body(body)
    except ValueError as exc:
        raise RemoteCallError(f"the WASM node cannot be built: {exc}") from None
    if call_timeout is not None and spec.time_limit > 0.9 * call_timeout:
        # Interrupted by its own deadline (a ResourceLimitError, the session goes on)
        # before the call timeout, which would end a session stuck in sync code.
        spec = dataclasses.replace(spec, time_limit=0.9 * call_timeout)
    try:
        return WasmNode.from_spec(spec)
    except ValueError as exc:
        raise RemoteCallError(f"the WASM node cannot be built: {exc}") from None
