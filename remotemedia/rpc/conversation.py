"""
The call conversation's rules, sans-I/O: call ids, credit, which message
settles which call, and which exception an ``ERROR`` becomes.

:mod:`remotemedia.rpc.calls` says what each message holds; this module says
what the ends do with them. It imports no asyncio and sends nothing: it is
fed what arrived and what the caller did, and answers with what that means
(an event, a credit to send back, whether an item may go), so the rules are
tested by feeding it bodies (``tests/test_rpc_conversation.py``).
:class:`~remotemedia.remote.RemoteProxyClient` and the executor's
:class:`~executor.dispatch.Dispatcher` are the I/O around it: futures,
queues, tasks and the connection.

Credit flows the same way in both directions of a stream, so it is written
once, as two halves:

- the end that **sends** items (the executor's ``YIELD``s, the client's
  ``INPUT``s, a relay or media bridge passing inputs on) holds a
  :class:`Credit`: it may send while credit is left, and each ``CREDIT``
  it receives adds to it, never beyond the window;
- the end that **receives** them (the client's stream, the remote method's
  input stream) holds a :class:`Window`: it refuses an item beyond the
  window, and as its reader consumes items it grants them back, half a
  window at a time (one ``CREDIT`` per half window, not one per item).

On the client, :class:`ClientCalls` hands out call ids, keeps each open
stream's credit, and turns each received message into one of the events
below; :func:`exception_for` maps an ``ERROR`` onto the exception the
caller sees (the table of codes is in :mod:`remotemedia.rpc.calls`). On
the executor, :class:`ExecutorCalls` keeps which calls run and each
stream's ``YIELD`` credit, and says what each request asks for (serve it,
stop it, feed it, wake it, or refuse it).
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, NamedTuple

from ..exceptions import (
    AuthenticationError,
    DecodeError,
    MessageTooLargeError,
    RemoteExecutionError,
    RemoteTimeoutError,
    ResourceLimitError,
    SerializationError,
)
from .calls import (
    INPUT_WINDOW,
    STREAM_WINDOW,
    Error,
    ErrorCode,
    Kind,
    parse_credit,
    parse_ends,
    parse_error,
    parse_media,
)

__all__ = [
    "Credit",
    "Window",
    "ClientCalls",
    "Stream",
    "Answer",
    "Failure",
    "SessionEnded",
    "Item",
    "StreamEnd",
    "Announcement",
    "Granted",
    "Ignored",
    "exception_for",
    "LIMIT_CODES",
    "ExecutorCalls",
    "Serve",
    "Stop",
    "Feed",
    "Resume",
    "Refuse",
]


class Credit:
    """
    The sending end's credit: how many more items it may send now.

    ``take()`` before each item (``False``: wait for a ``CREDIT``);
    ``grant(body)`` for each ``CREDIT`` received.
    """

    __slots__ = ("window", "available")

    def __init__(self, window: int) -> None:
        #: The most items that may be in flight.
        self.window = window
        #: Items that may be sent now.
        self.available = window

    def take(self) -> bool:
        """Use one credit for an item about to be sent; ``False`` when none is left."""
        if self.available <= 0:
            return False
        self.available -= 1
        return True

    def grant(self, body: Any) -> int:
        """
        A ``CREDIT`` body arrived: the credits added (0 for a malformed
        grant, or one beyond the window, which a correct peer never sends).
        """
        try:
            n = parse_credit(body, self.window)
        except DecodeError:
            return 0
        added = min(n, self.window - self.available)
        self.available += added
        return added


class Window:
    """
    The receiving end's window: how many items may be held unread, and
    when to grant consumed ones back.

    ``receive()`` for each item that arrives (``False``: the peer sent
    beyond its credit); ``consume()`` for each item the reader takes, which
    returns the credit to send back now (0: none yet).
    """

    __slots__ = ("size", "held", "_step", "_consumed")

    def __init__(self, size: int) -> None:
        #: Items the peer may send ahead of the reader.
        self.size = size
        #: Items received and not consumed yet.
        self.held = 0
        self._step = size // 2 or 1
        self._consumed = 0

    @property
    def initial(self) -> int:
        """The credit the peer starts with (a ``CALL``'s stream credit)."""
        return self.size

    def receive(self) -> bool:
        """One item arrived; ``False`` when it is beyond the window (refuse it)."""
        if self.held >= self.size:
            return False
        self.held += 1
        return True

    def consume(self) -> int:
        """The reader took one item; returns how much credit to grant now."""
        if self.held:
            self.held -= 1
        self._consumed += 1
        return self._step if self._consumed % self._step == 0 else 0


# -- what a received message means to the client ----------------------------------------


class Answer(NamedTuple):
    """A ``RESULT`` (or the ``WELCOME``): the request ``id`` is answered with ``value``."""

    id: int
    value: Any


class Failure(NamedTuple):
    """An ``ERROR`` for ``id`` (``error``), or a message for it that could not be taken (``error`` is ``None``)."""

    id: int
    error: Error | None
    reason: str = ""


class SessionEnded(NamedTuple):
    """The executor is ending the session (``ERROR`` 0, ``session_ended``): ``message`` says why."""

    message: str


class Item(NamedTuple):
    """A ``YIELD``: one item of stream ``id``."""

    id: int
    value: Any


class StreamEnd(NamedTuple):
    """An ``END``: stream ``id`` has no more items; ``ends`` says where its media stops (or ``None``)."""

    id: int
    ends: dict | None


class Announcement(NamedTuple):
    """A ``MEDIA`` announcement for stream ``id`` (the stream's media slot checks it)."""

    id: int
    announcement: dict


class Granted(NamedTuple):
    """A ``CREDIT``: stream ``id`` may send ``n`` more inputs."""

    id: int
    n: int


class Ignored(NamedTuple):
    """A message that settles nothing: for no open stream, or one the executor never sends (``unexpected``)."""

    kind: Kind
    id: int
    unexpected: bool = False


class Stream:
    """One open stream on the client: its window of items, and its input credit when duplex."""

    __slots__ = ("window", "inputs")

    def __init__(self, duplex: bool) -> None:
        #: Items the executor may yield ahead of the caller (``CALL``'s credit).
        self.window = Window(STREAM_WINDOW)
        #: Inputs the client may still send (``None``: not duplex).
        self.inputs = Credit(INPUT_WINDOW) if duplex else None


class ClientCalls:
    """
    The client's side of the conversation for one session: ids and open
    streams, and what each message from the executor means.

    ``welcomed`` is set once the executor has accepted the ``HELLO``: only
    then is an ``ERROR`` 0 the session's end rather than the handshake's
    refusal.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._streams: dict[int, Stream] = {}
        #: The executor has welcomed this session.
        self.welcomed = False

    def new_id(self) -> int:
        """A fresh call id (also an object's handle, for ``CREATE``)."""
        return next(self._ids)

    def open_stream(self, id: int, duplex: bool = False) -> Stream:
        """Stream ``id`` starts (its ``CALL`` carries ``stream.window.initial``)."""
        stream = self._streams[id] = Stream(duplex)
        return stream

    def close_stream(self, id: int) -> None:
        """Stream ``id`` is over (ended, failed, cancelled): later messages for it are ignored."""
        self._streams.pop(id, None)

    def stream(self, id: int) -> Stream | None:
        """Stream ``id``, while open."""
        return self._streams.get(id)

    def receive(self, kind: Kind, id: int, body: Any) -> Any:
        """One message from the executor (its body decoded, or unpickled): what it means."""
        if kind is Kind.RESULT or kind is Kind.WELCOME:
            return Answer(id, body)
        if kind is Kind.YIELD:
            return Item(id, body) if id in self._streams else Ignored(kind, id)
        if kind is Kind.ERROR:
            try:
                error = parse_error(body)
            except DecodeError:
                return Failure(id, None, f"a malformed error: {body!r}")
            if id == 0 and self.welcomed and error.code is ErrorCode.SESSION_ENDED:
                return SessionEnded(error.message)
            return Failure(id, error)
        stream = self._streams.get(id)
        if kind is Kind.END:
            if stream is None:
                return Ignored(kind, id)
            try:
                ends = parse_ends(body)
            except DecodeError:
                ends = None  # no usable end marks: the media is given up, the stream still ends
            return StreamEnd(id, ends)
        if kind is Kind.CREDIT:
            if stream is None or stream.inputs is None:
                return Ignored(kind, id)
            return Granted(id, stream.inputs.grant(body))
        if kind is Kind.MEDIA:
            if stream is None:
                return Ignored(kind, id)
            try:
                media = parse_media(body)
                if media.announcement is None:
                    raise DecodeError(f"malformed media announcement: {body!r}")
            except DecodeError as exc:
                return Failure(id, None, str(exc))
            return Announcement(id, media.announcement)
        return Ignored(kind, id, unexpected=True)


#: Codes that are a limit of the executor's (the client raises :exc:`ResourceLimitError` with ``limit=code``).
LIMIT_CODES = frozenset({ErrorCode.MEMORY, ErrorCode.OBJECTS, ErrorCode.RATE_LIMITED, ErrorCode.CPU, ErrorCode.TIME})


def _hint(remote_type: str, message: str) -> str:
    """What to do about a remote error that a common mistake on the client's side causes."""
    if remote_type.endswith("TypeError") and (
        "requires an object with __aiter__ method, got list" in message
        or "requires an object with __aiter__ method, got tuple" in message
    ):
        return (
            " (a list or tuple is sent whole, as one argument; to stream its items into "
            "the remote method, pass an iterator: remote.method(iter(items)))"
        )
    return ""


def exception_for(error: Error, executor: str | None, annotate: Callable[[str], str] = str) -> Exception:
    """
    The exception a caller sees for ``error`` from ``executor``;
    ``annotate`` names the client's own files in a remote traceback.
    """
    code, message = error.code, error.message
    if code is ErrorCode.TOO_LARGE:
        return MessageTooLargeError(message)
    if code is ErrorCode.TIMEOUT:
        return RemoteTimeoutError(f"executor {executor!r}: {message}")
    if code in LIMIT_CODES:
        return ResourceLimitError(f"executor {executor!r}: {message}", limit=str(code))
    if code is ErrorCode.UNAUTHORIZED:
        return AuthenticationError(f"executor {executor!r} refused the session: {message}")
    if code is ErrorCode.SERIALIZATION:
        hint = f" (module {error.module!r} is not installed on the executor; install it there)" if error.module else ""
        return SerializationError(f"executor {executor!r}: {message}{hint}")
    remote_type = error.type or str(code)
    summary = f"{remote_type}: {message}" if code is ErrorCode.EXCEPTION else message
    return RemoteExecutionError(
        f"executor {executor!r}: {summary}{_hint(remote_type, message)}",
        remote_type=remote_type,
        remote_message=message,
        remote_traceback=annotate(error.traceback),
    )


# -- what a received request means to the executor ----------------------------------------


class Serve(NamedTuple):
    """A ``CREATE``, ``CALL`` or ``RELEASE`` with a fresh id: start serving it."""

    id: int


class Stop(NamedTuple):
    """A ``CANCEL``: stop call ``id`` (and wake a method blocked on its input stream)."""

    id: int


class Feed(NamedTuple):
    """An ``INPUT`` (``end`` false) or ``INPUT_END`` for running call ``id``: to its input stream."""

    id: int
    end: bool


class Resume(NamedTuple):
    """A ``CREDIT`` that lets stream ``id`` yield again."""

    id: int


class Refuse(NamedTuple):
    """A request that is answered with an ``ERROR`` of ``code`` and nothing else."""

    id: int
    code: ErrorCode
    reason: str


class ExecutorCalls:
    """
    The executor's side of the conversation for one session: the calls
    running, each stream's ``YIELD`` credit, and what each request means.

    :meth:`receive` decides; the caller starts and cancels the work, and
    calls :meth:`finished` when a call is over (its id may then be used again).
    """

    def __init__(self) -> None:
        self._running: set[int] = set()
        self._yields: dict[int, Credit] = {}

    def running(self, id: int) -> bool:
        """Whether call ``id`` is being served."""
        return id in self._running

    def open_stream(self, id: int, credit: int) -> Credit:
        """Call ``id`` streams, starting with its ``CALL``'s ``credit``: take one before each ``YIELD``."""
        yields = self._yields[id] = Credit(credit)
        return yields

    def finished(self, id: int) -> None:
        """Call ``id`` is over: later ``CREDIT``s and inputs for it are ignored."""
        self._running.discard(id)
        self._yields.pop(id, None)

    def receive(self, kind: Kind, id: int, body: Any) -> Any:
        """One request from the client (its body as received): what to do."""
        if kind is Kind.CALL or kind is Kind.CREATE or kind is Kind.RELEASE:
            if id in self._running:
                return Refuse(id, ErrorCode.BAD_REQUEST, f"call id {id} is already in use")
            self._running.add(id)
            return Serve(id)
        if kind is Kind.CANCEL:
            return Stop(id)
        if kind is Kind.CREDIT:
            yields = self._yields.get(id)
            return Resume(id) if yields is not None and yields.grant(body) else Ignored(kind, id)
        if kind is Kind.INPUT or kind is Kind.INPUT_END:
            # Inputs of a call that is over (it failed, or was cancelled) are dropped.
            return Feed(id, kind is Kind.INPUT_END) if id in self._running else Ignored(kind, id)
        return Refuse(id, ErrorCode.BAD_REQUEST, f"a {kind.name} is not a request")
