"""
The call conversation's contract: every message kind, every body, every
error code, and the figures both ends must agree on.

A :class:`~remotemedia.remote.RemoteProxyClient` (C) and an executor (E)
speak it over one connection (the ``rpc`` data channel); the executor's
worker process speaks it too, relayed. :mod:`remotemedia.rpc.protocol`
frames and encodes the messages; this module says what their bodies hold.
Each body has one builder and one parser here, and nothing builds or
parses a body anywhere else. A parser refuses a malformed body with
:exc:`~remotemedia.exceptions.DecodeError`, whose message says what was
wrong; the receiver answers it with an ``ERROR`` of code ``bad_request``.

The conversation (``id`` is the message's id; ``-`` means no body)::

    kind       from  id         body
    HELLO      C     0          {ticket, version, max_message_size, timeout}
    WELCOME    E     0          {executor, max_message_size}
    CREATE     C     handle     cloudpickle bytes of the object (the pickled flag), or
                                {"wasm": {...}}: a WASM node as data (remotemedia.wasm.spec)
    CALL       C     call       [handle, method, args, kwargs, credit, where]
    RESULT     E     call       the value (for CREATE: {type: qualified name}; for RELEASE: None)
    ERROR      E     call       {code, type, message, traceback[, module]}
    YIELD      E     call       one item of a streamed call
    END        E     call       -, or {kind: end, ...}: where each kind of media stops
    CANCEL     C     call       -  (stop the call or the stream)
    CREDIT     both  call       n: n more items (YIELD from E; INPUT from C) may come
    RELEASE    C     call       handle (the object's cleanup() runs; RESULT None)
    PING       both  seq        t (the sender's clock), answered by
    PONG       both  seq        t (the PING's, echoed)
    INPUT      C     call       one item of a streamed call's input stream
    INPUT_END  C     call       -, or {kind: end, ...} like END
    MEDIA      C     call       {slot}: the call's frames take that media slot (before its CALL)
    MEDIA      both  call       {kind, format, start, pts}: a kind of frame starts on the slot

A ``CALL``'s ``credit`` is 0 for a plain call (answered by ``RESULT`` or
``ERROR``) and :data:`STREAM_WINDOW` for a streamed one: the executor may
``YIELD`` that many items before the client grants more (``CREDIT``, half
a window at a time). ``where`` is ``None``, or the position (an int) or
name (a str) of the argument the client streams (a duplex stream): the
client sends it as ``INPUT`` items, at most :data:`INPUT_WINDOW` ahead of
what the remote method has read, then ``INPUT_END``; the executor grants
input credit back as the method reads. Ids are the client's call ids;
``CREATE``'s id becomes the object's handle. ``RESULT`` or ``ERROR`` ends
a call; ``END`` or ``ERROR`` ends a stream. ``ERROR`` with id 0 and code
``session_ended`` is the executor ending the session (the message says why).
:mod:`remotemedia.rpc.conversation` holds these rules as code (ids, credit,
which message settles which call), for both ends.

A streamed call's audio and video frames can travel on media tracks (see
:mod:`remotemedia.transport.tracks`); both ends then wait up to
:data:`MEDIA_DRAIN` seconds after the stream's end for frames still on
their way, and keep at most :data:`MAX_WAITING_FRAMES` for a slow consumer.
A ``YIELD`` of ``{"type": "interrupted", ...}`` (:func:`is_interrupted`: a
reply cut by barge-in) voids the media the call yielded before it: the
executor drops what still waits for its tracks rather than send it.

The ``code`` of an ``ERROR`` (:class:`ErrorCode`) says what went wrong, for
the client to map onto an exception:

    code            meaning                                           client raises
    bad_request     a malformed or unexpected request                 RemoteExecutionError
    unauthorized    wrong or missing ticket, or another version       AuthenticationError
    too_large       a message above max_message_size                 MessageTooLargeError
    timeout         a call ran past its timeout                       RemoteTimeoutError
    memory          the session's worker ran out of its memory limit  ResourceLimitError
    objects         the session holds as many objects as it may       ResourceLimitError
    serialization   an object or value could not be (un)pickled       SerializationError
    exception       the remote code raised                            RemoteExecutionError
    rate_limited    the peer sends faster than the receiver lets it   ResourceLimitError
    session_ended   the executor is ending the session (ERROR 0)      ConnectionLostError
    no_object       no object with that handle                        RemoteExecutionError
    no_method       no such public method                             RemoteExecutionError
    cpu             a WASM node's call used its whole fuel            ResourceLimitError
    time            a WASM node's call ran past its time limit        ResourceLimitError
    not_accepted    the executor does not take this kind of object    RemoteExecutionError
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from ..exceptions import DecodeError

__all__ = [
    "PROTOCOL_VERSION",
    "STREAM_WINDOW",
    "INPUT_WINDOW",
    "MEDIA_DRAIN",
    "MAX_WAITING_FRAMES",
    "MAX_CREDIT",
    "INTERRUPTED",
    "PAUSED",
    "RESUMED",
    "FINAL",
    "Kind",
    "ErrorCode",
    "Hello",
    "Welcome",
    "Create",
    "Call",
    "Error",
    "Media",
    "Body",
    "BODIES",
    "hello_body",
    "parse_hello",
    "welcome_body",
    "parse_welcome",
    "create_body",
    "parse_create",
    "created_body",
    "parse_created",
    "call_body",
    "parse_call",
    "error_body",
    "parse_error",
    "ends_body",
    "parse_ends",
    "credit_body",
    "parse_credit",
    "release_body",
    "parse_release",
    "ping_body",
    "parse_ping",
    "media_slot_body",
    "media_announcement",
    "parse_media",
    "is_interrupted",
]

#: Version sent in ``HELLO``; an executor refuses a client that speaks another.
PROTOCOL_VERSION = 3

#: Items a streamed call may have in flight towards the client before the
#: client grants more credit (it grants half a window at a time).
STREAM_WINDOW = 16

#: Inputs the client may send ahead of what the remote method has consumed;
#: the executor grants them back as the method reads (and relays obey it too).
INPUT_WINDOW = 16

#: Seconds either end waits, after a stream's end, for media frames still on
#: their way on the tracks (a lost frame never comes).
MEDIA_DRAIN = 2.0

#: Frames from a media track that may wait for a slow consumer on either end;
#: later ones are dropped (a track cannot be told to wait).
MAX_WAITING_FRAMES = 64

#: The largest ``CREDIT`` one message may grant.
MAX_CREDIT = 1 << 16

#: The ``type`` of a streamed call's item that cuts it (barge-in): its media queued before it is void.
INTERRUPTED = "interrupted"
#: The ``type``s of a live service's items that hold its reply audio (speech started over it) and let it go on.
PAUSED, RESUMED = "paused", "resumed"


class Kind(enum.IntEnum):
    """Message kinds (the module docstring says who sends which, with what body)."""

    HELLO = 1
    WELCOME = 2
    CREATE = 3
    CALL = 4
    RESULT = 5
    ERROR = 6
    YIELD = 7
    END = 8
    CANCEL = 9
    CREDIT = 10
    RELEASE = 11
    PING = 12
    PONG = 13
    INPUT = 14
    INPUT_END = 15
    MEDIA = 16


#: What the executor ends a call with (``RESULT``, ``ERROR``) or a stream (``END``, ``ERROR``).
FINAL = frozenset({Kind.RESULT, Kind.ERROR, Kind.END})


class ErrorCode(str, enum.Enum):
    """
    The ``code`` of an ``ERROR`` body (the table in the module docstring).

    A ``str``: ``ErrorCode.TIMEOUT == "timeout"``, so a code compares equal
    to its name on the wire.
    """

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OBJECTS = "objects"
    SERIALIZATION = "serialization"
    EXCEPTION = "exception"
    RATE_LIMITED = "rate_limited"
    SESSION_ENDED = "session_ended"
    NO_OBJECT = "no_object"
    NO_METHOD = "no_method"
    CPU = "cpu"
    TIME = "time"
    NOT_ACCEPTED = "not_accepted"

    def __str__(self) -> str:
        return self.value

    # Hashed as its string, so that a set or dict of wire strings finds it.
    __hash__ = str.__hash__


def _bad(what: str, body: Any) -> DecodeError:
    shown = repr(body)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    return DecodeError(f"a malformed {what} body: {shown}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value):
        return value
    return None


# -- HELLO / WELCOME ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's ``HELLO``: who it is and what it takes."""

    #: The session's ticket, as the signaling server gave it (``None`` when missing or not a string).
    ticket: str | None
    #: The protocol version the client speaks (``None`` when missing or not an int).
    version: int | None
    #: The largest message the client accepts, in bytes (``None``: not said).
    max_message_size: int | None = None
    #: The client's call timeout in seconds (``None``: not said).
    timeout: float | None = None


def hello_body(ticket: str, max_message_size: int, timeout: float | None, version: int = PROTOCOL_VERSION) -> dict:
    """The ``HELLO`` body."""
    return {"ticket": ticket, "version": version, "max_message_size": max_message_size, "timeout": timeout}


def parse_hello(body: Any) -> Hello:
    """
    A ``HELLO`` body; mistyped fields read as missing (the executor refuses
    a missing ticket or version as ``unauthorized``, not as ``bad_request``).
    """
    if not isinstance(body, dict):
        raise _bad("HELLO", body)
    ticket, version, limit = body.get("ticket"), body.get("version"), body.get("max_message_size")
    return Hello(
        ticket if isinstance(ticket, str) else None,
        version if _is_int(version) else None,
        limit if _is_int(limit) and limit > 0 else None,
        _positive_number(body.get("timeout")),
    )


@dataclass(frozen=True, slots=True)
class Welcome:
    """The executor's ``WELCOME``: the session is authenticated."""

    #: The executor's registered name.
    executor: str
    #: The largest message the executor accepts, in bytes.
    max_message_size: int


def welcome_body(executor: str, max_message_size: int) -> dict:
    """The ``WELCOME`` body."""
    return {"executor": executor, "max_message_size": max_message_size}


def parse_welcome(body: Any) -> Welcome:
    """A ``WELCOME`` body."""
    if not isinstance(body, dict):
        raise _bad("WELCOME", body)
    executor, limit = body.get("executor"), body.get("max_message_size")
    if not isinstance(executor, str) or not _is_int(limit) or limit <= 0:
        raise _bad("WELCOME", body)
    return Welcome(executor, limit)


# -- CREATE ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Create:
    """A ``CREATE``: an object to build, as cloudpickle bytes or a WASM node's data."""

    #: The body: cloudpickle bytes when :attr:`pickled`, else ``{"wasm": {...}}``.
    body: Any
    #: The body is cloudpickle bytes (the message's pickled flag).
    pickled: bool

    @property
    def wasm(self) -> bool:
        """A WASM node as data (:mod:`remotemedia.wasm.spec` builds it)."""
        return not self.pickled


def create_body(*, pickle: bytes | None = None, wasm: Any = None) -> Create:
    """The ``CREATE`` for an object's cloudpickle bytes, or for a :class:`~remotemedia.wasm.spec.WasmSpec`."""
    if (pickle is None) == (wasm is None):
        raise TypeError("create_body() takes pickle= or wasm=, not both")
    if pickle is not None:
        return Create(pickle, True)
    from ..wasm.spec import create_body as wasm_body  # the spec's own fields are its module's

    return Create(wasm_body(wasm), False)


def parse_create(body: Any, pickled: bool) -> Create:
    """A ``CREATE`` body (a WASM node's fields are checked when it is built: :func:`remotemedia.wasm.spec.spec_from_body`)."""
    if pickled:
        if not isinstance(body, bytes):
            raise _bad("CREATE", body)
        return Create(body, True)
    if not (isinstance(body, dict) and len(body) == 1 and "wasm" in body):
        raise DecodeError('CREATE carries the object as cloudpickle bytes, or a WASM node as {"wasm": {...}}')
    return Create(body, False)


def created_body(obj: Any) -> dict:
    """The ``RESULT`` body of a ``CREATE``: the object's qualified type name."""
    cls = type(obj)
    return {"type": f"{cls.__module__}.{cls.__qualname__}"}


def parse_created(body: Any) -> str:
    """The qualified type name in a ``CREATE``'s ``RESULT``."""
    if not isinstance(body, dict) or not isinstance(body.get("type", ""), str):
        raise _bad("RESULT of a CREATE", body)
    return body.get("type", "")


# -- CALL -----------------------------------------------------------------------------


class Call(NamedTuple):
    """
    A ``CALL``: a method of an object, its arguments, and how it is answered.

    A named tuple, not a dataclass: one is made per call, and a tuple is the
    cheapest immutable record (a third of a frozen dataclass's cost).
    """

    #: The object's handle (its ``CREATE``'s id).
    handle: int
    #: The method's name.
    method: str
    #: Positional arguments (the streamed one, if any, is ``None``).
    args: list
    #: Keyword arguments (the streamed one, if any, is ``None``).
    kwargs: dict
    #: 0: a plain call, answered by ``RESULT``; else a stream's initial credit of ``YIELD`` items.
    credit: int = 0
    #: Where the streamed input goes: an argument's position or name; ``None``: no input stream.
    where: int | str | None = None


def call_body(handle: int, method: str, args: list, kwargs: dict, credit: int = 0, where: int | str | None = None) -> list:
    """The ``CALL`` body (a list, not a tuple: a tuple costs the codec a nested extension per call)."""
    return [handle, method, args, kwargs, credit, where]


def parse_call(body: Any) -> Call:
    """A ``CALL`` body (the arguments themselves are not looked into)."""
    if not (isinstance(body, (list, tuple)) and len(body) == 6):
        raise DecodeError("a CALL body is [handle, method, args, kwargs, stream credit, streamed input]")
    handle, method, args, kwargs, credit, where = body
    if not isinstance(args, (list, tuple)) or not isinstance(kwargs, dict):
        raise DecodeError("a CALL's arguments are a list and a dict")
    if not _is_int(credit) or not 0 <= credit <= MAX_CREDIT:
        raise DecodeError(f"a CALL's stream credit is an int from 0 to {MAX_CREDIT}, not {credit!r}")
    if where is not None:
        if not credit:
            raise DecodeError("only a streamed call (`async for`) can take an input stream")
        if not ((_is_int(where) and 0 <= where < len(args)) or isinstance(where, str)):
            raise DecodeError(f"the streamed input's position {where!r} is not among the arguments")
    # handle and method are checked against the session's objects (no_object, no_method).
    return Call(handle, method, args if isinstance(args, list) else list(args), kwargs, credit, where)


# -- ERROR ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Error:
    """An ``ERROR``: what went wrong."""

    #: What kind of failure: an :class:`ErrorCode`, or the string an unknown code came as.
    code: ErrorCode | str
    #: What happened, for a person.
    message: str
    #: The remote exception's qualified type name (``""`` for the executor's own refusals).
    type: str = ""
    #: The remote traceback (``""`` when there is none).
    traceback: str = ""
    #: The module whose absence made unpickling fail, if that was it.
    module: str | None = None


def error_body(code: ErrorCode | str, message: str, type: str = "", traceback: str = "", module: str | None = None) -> dict:
    """The ``ERROR`` body."""
    body = {"code": str(code), "type": type, "message": message, "traceback": traceback}
    if module:
        body["module"] = module
    return body


def parse_error(body: Any) -> Error:
    """An ``ERROR`` body; an unknown code is kept as a string (a newer peer's)."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        raise _bad("ERROR", body)
    code = body["code"]
    module = body.get("module")
    return Error(
        ErrorCode._value2member_map_.get(code, code),
        str(body.get("message", "")),
        str(body.get("type") or ""),
        str(body.get("traceback") or ""),
        module if isinstance(module, str) and module else None,
    )


def is_interrupted(item: Any) -> bool:
    """Whether a yielded ``item`` is :data:`INTERRUPTED`'s: the media yielded before it is not to be played."""
    return isinstance(item, dict) and item.get("type") == INTERRUPTED


# -- END / INPUT_END, CREDIT, RELEASE, PING / PONG --------------------------------------


def ends_body(ends: dict | None = None) -> dict | None:
    """The body of ``END`` or ``INPUT_END``: ``None``, or where each kind of media stops."""
    return ends


def parse_ends(body: Any) -> dict | None:
    """The body of ``END`` or ``INPUT_END``."""
    if body is not None and not isinstance(body, dict):
        raise _bad("END", body)
    return body


def credit_body(n: int) -> int:
    """The ``CREDIT`` body: ``n`` more items may come."""
    return n


def parse_credit(body: Any, limit: int = MAX_CREDIT) -> int:
    """A ``CREDIT`` body: an int from 1 to ``limit`` (the receiver's window)."""
    if not _is_int(body) or not 0 < body <= limit:
        raise DecodeError(f"a CREDIT grants 1 to {limit} items, not {body!r}")
    return body


def release_body(handle: int) -> int:
    """The ``RELEASE`` body: the handle of the object to release."""
    return handle


def parse_release(body: Any) -> int:
    """A ``RELEASE`` body (whether the handle exists is the object table's to say)."""
    if not _is_int(body):
        raise _bad("RELEASE", body)
    return body


def ping_body(t: float | None) -> float | None:
    """The body of ``PING`` (the sender's clock) or ``PONG`` (the ``PING``'s, echoed)."""
    return t


def parse_ping(body: Any) -> float | None:
    """The body of ``PING`` or ``PONG``: a clock reading, or ``None`` for anything else."""
    return body if isinstance(body, float) else None


# -- MEDIA ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Media:
    """A ``MEDIA``: the call takes a slot, or a kind of frame starts."""

    #: The slot the call's frames take (``None``: this is an announcement).
    slot: int | None = None
    #: ``{kind, format, start, pts}``, checked by the slot (:meth:`~remotemedia.transport.tracks.MediaSlot.begin_receiving`).
    announcement: dict | None = None


def media_slot_body(slot: int) -> dict:
    """The ``MEDIA`` body that takes media slot ``slot`` for a call."""
    return {"slot": slot}


def media_announcement(kind: str, format: dict, start: Any, pts: int) -> dict:
    """
    The ``MEDIA`` body that announces a kind of frame on a call's slot: its
    format (see :func:`remotemedia.transport.media.describe`), the first
    frame's timestamp and its RTP ``pts``. The receiving slot checks each
    field (:meth:`remotemedia.transport.media.Incoming.begin`).
    """
    return {"kind": kind, "format": format, "start": start, "pts": pts}


def parse_media(body: Any) -> Media:
    """A ``MEDIA`` body: a slot request, or an announcement (a dict without ``slot``)."""
    if not isinstance(body, dict):
        raise DecodeError("a MEDIA message carries a plain dict")
    if "slot" in body:
        slot = body["slot"]
        if not _is_int(slot):
            raise DecodeError(f"media slot {slot!r} does not exist")
        return Media(slot=slot)
    return Media(announcement=body)


# -- every body, as data ----------------------------------------------------------------


def _value(body: Any) -> Any:
    return body


def _none(body: Any) -> None:
    return None


@dataclass(frozen=True)
class Body:
    """How one kind's body is built and parsed (for tests and tools; code calls the functions)."""

    #: Builds the body from its parts.
    build: Callable[..., Any]
    #: Parses a received body, raising :exc:`DecodeError` when malformed.
    parse: Callable[[Any], Any]


#: Every kind's builder and parser. Bodies that are the caller's own values
#: (``RESULT``, ``YIELD``, ``INPUT``) are not looked into: a large array is
#: never walked.
BODIES: dict[Kind, Body] = {
    Kind.HELLO: Body(hello_body, parse_hello),
    Kind.WELCOME: Body(welcome_body, parse_welcome),
    Kind.CREATE: Body(lambda data: create_body(pickle=data).body, lambda body: parse_create(body, True)),
    Kind.CALL: Body(call_body, parse_call),
    Kind.RESULT: Body(_value, _value),
    Kind.ERROR: Body(error_body, parse_error),
    Kind.YIELD: Body(_value, _value),
    Kind.END: Body(ends_body, parse_ends),
    Kind.CANCEL: Body(lambda: None, _none),
    Kind.CREDIT: Body(credit_body, parse_credit),
    Kind.RELEASE: Body(release_body, parse_release),
    Kind.PING: Body(ping_body, parse_ping),
    Kind.PONG: Body(ping_body, parse_ping),
    Kind.INPUT: Body(_value, _value),
    Kind.INPUT_END: Body(ends_body, parse_ends),
    Kind.MEDIA: Body(media_slot_body, parse_media),
}
