"""
Signaling messages as data: every type, its fields, and one validator.

A message is a JSON object with a ``type``. :data:`TO_SERVER` lists what
executors and clients may send, :data:`TO_PEER` what the server sends back;
``signaling_server/PROTOCOL.md`` explains each one. :func:`parse` turns one
websocket text message into a clean ``dict`` that holds only the known fields,
or raises :exc:`~remotemedia.exceptions.SignalingError` with the error code the
server answers with. It is pure (no I/O), so the server, the Python client and
the tests share it.

Unknown fields are dropped rather than refused, so that either end can grow
the protocol without breaking the other; a missing or mistyped known field is
an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..exceptions import SignalingError

__all__ = [
    "MAX_MESSAGE_SIZE",
    "MAX_SERVER_MESSAGE",
    "MAX_REASON",
    "TO_PEER",
    "TO_SERVER",
    "RELAYED",
    "ICE_SERVER",
    "EXECUTOR_INFO",
    "parse",
    "validate",
    "meets",
    "dump",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_SERVER_FULL",
    "CLOSE_ADDRESS_FULL",
    "CLOSE_IDLE_TIMEOUT",
    "LIMIT_CLOSES",
]

#: Default limit on one message, in bytes of UTF-8 (a large SDP offer is ~10 KiB).
MAX_MESSAGE_SIZE = 64 * 1024
#: Largest message the server sends and the Python client accepts (an ``executors``
#: listing of a large fleet is the biggest; the server cuts it to fit).
MAX_SERVER_MESSAGE = 4 * MAX_MESSAGE_SIZE

# -- websocket close codes ---------------------------------------------------------
# The server closes with these; clients turn them into named exceptions
# (remotemedia.signaling.client). 4000-4999 is the range RFC 6455 leaves to
# applications; the last three digits echo the HTTP status of the same idea.

#: A connection that broke the rules (unauthorized, rate_limited, hello_timeout,
#: heartbeat_timeout); an ``error`` message saying which came before the close.
CLOSE_POLICY_VIOLATION = 1008
#: The server holds its most connections (``--max-connections``); try again later.
CLOSE_SERVER_FULL = 4503
#: This address holds its most connections (``--max-connections-per-address``).
CLOSE_ADDRESS_FULL = 4429
#: Authenticated, but neither registered as an executor nor in a session for
#: ``--idle-timeout`` seconds (an ``idle_timeout`` error came first).
CLOSE_IDLE_TIMEOUT = 4408

#: The connection-limit close codes and the error code each stands for.
LIMIT_CLOSES = {
    CLOSE_SERVER_FULL: "server_full",
    CLOSE_ADDRESS_FULL: "too_many_connections",
    CLOSE_IDLE_TIMEOUT: "idle_timeout",
}

#: Message types relayed between the two ends of a session.
RELAYED = frozenset({"offer", "answer", "candidate", "bye"})


class _Type:
    """Base of the field validators: ``check`` returns the clean value or raises."""

    what = "a value"

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError


MAX_REASON = 256
"""The longest ``reason`` a ``bye`` may carry."""


def _shown(value: Any, limit: int = 40) -> str:
    """A value quoted in an error message, cut so the message stays within peers' limits."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _bad(path: str, expected: str, value: Any) -> SignalingError:
    got = "null" if value is None else type(value).__name__
    return SignalingError(f"field {path!r} must be {expected}, not {got}", code="bad_message")


class _Str(_Type):
    def __init__(self, max_len: int, *, empty: bool = False, text: bool = False) -> None:
        self.max_len = max_len
        self.empty = empty
        self.text = text  # free text (SDP) may hold control characters such as CR LF
        self.what = f"a string of at most {max_len} characters"

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise _bad(path, self.what, value)
        if not value and not self.empty:
            raise SignalingError(f"field {path!r} must not be empty", code="bad_message")
        if len(value) > self.max_len:
            raise SignalingError(
                f"field {path!r} is {len(value)} characters long; the limit is {self.max_len}",
                code="bad_message",
            )
        if not self.text and not value.isprintable():
            raise SignalingError(
                f"field {path!r} must not contain control characters", code="bad_message"
            )
        return value


class _Int(_Type):
    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.what = f"an integer from {low} to {high}"

    def check(self, value: Any, path: str) -> int:
        # bool is an int in Python, not in JSON.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _bad(path, self.what, value)
        if not self.low <= value <= self.high:
            raise SignalingError(f"field {path!r} must be {self.what}, not {_shown(value)}", code="bad_message")
        return value


class _Number(_Type):
    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high
        self.what = f"a number from {low:g} to {high:g}"

    def check(self, value: Any, path: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _bad(path, self.what, value)
        # Compare before converting: a JSON integer may be too big for a float.
        if not (self.low <= value <= self.high) or not math.isfinite(value):
            raise SignalingError(f"field {path!r} must be {self.what}, not {_shown(value)}", code="bad_message")
        return float(value)


class _Bool(_Type):
    what = "true or false"

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise _bad(path, self.what, value)
        return value


class _List(_Type):
    def __init__(self, item: _Type, max_items: int) -> None:
        self.item, self.max_items = item, max_items
        self.what = f"a list of at most {max_items} items"

    def check(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise _bad(path, self.what, value)
        if len(value) > self.max_items:
            raise SignalingError(
                f"field {path!r} has {len(value)} items; the limit is {self.max_items}",
                code="bad_message",
            )
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class _Nullable(_Type):
    def __init__(self, inner: _Type) -> None:
        self.inner = inner
        self.what = f"{inner.what} or null"

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


@dataclass(frozen=True)
class Field:
    """One field of an object: its validator and whether it must be present."""

    #: Validator of the value.
    type: _Type
    #: Whether a message without it is refused.
    required: bool = True


class _Object(_Type):
    def __init__(self, fields: dict[str, Field]) -> None:
        self.fields = fields
        self.what = "an object"

    def check(self, value: Any, path: str) -> dict:
        if not isinstance(value, dict):
            raise _bad(path, self.what, value)
        out = {}
        for key, field in self.fields.items():
            where = f"{path}.{key}" if path else key
            if key in value:
                out[key] = field.type.check(value[key], where)
            elif field.required:
                raise SignalingError(f"missing field {where!r}", code="bad_message")
        return out


_NAME = _Str(128)
_ID = _Str(128)
_TOKEN = _Str(4096)  # a signed token with a scope is a few hundred characters
_SDP = _Str(MAX_MESSAGE_SIZE, text=True)

#: What the server's ``accept`` and ``mode`` fields may say (``executor.dispatch.ACCEPTS``
#: and ``executor.session.MODES`` name the same values; the executor checks its own config).
_WORD = _Str(32)

CAPABILITIES = _Object(
    {
        "gpu": Field(_Bool(), required=False),
        "models": Field(_List(_NAME, 256), required=False),
        "services": Field(_List(_NAME, 256), required=False),
        # What discovery shows (``executors``); pairing ignores them.
        "version": Field(_Str(64), required=False),
        "accept": Field(_WORD, required=False),
        "mode": Field(_WORD, required=False),
    }
)

#: One executor as an ``executors`` listing shows it to a client: what it
#: offers and how busy it is, never where it is (no address, no connection id).
EXECUTOR_INFO = _Object(
    {
        "name": Field(_NAME),
        "services": Field(_List(_NAME, 256)),
        "models": Field(_List(_NAME, 256)),
        "gpu": Field(_Bool()),
        "capacity": Field(_Int(1, 100_000)),
        "free": Field(_Int(0, 100_000)),
        "load": Field(_Number(0.0, 1e6)),
        "version": Field(_Str(64, empty=True)),
        "accept": Field(_Str(32, empty=True)),
        "mode": Field(_Str(32, empty=True)),
    }
)

REQUIREMENTS = _Object(
    {
        "gpu": Field(_Bool(), required=False),
        "service": Field(_NAME, required=False),
        "model": Field(_NAME, required=False),
        "executor": Field(_NAME, required=False),
        # A preference, not a requirement: executors to pick only when no other matches.
        "avoid": Field(_List(_NAME, 16), required=False),
    }
)

def meets(requirements: dict, *, name: str, gpu: bool, services, models) -> bool:
    """
    Whether an executor (its ``name``, whether it has a GPU, its services and
    models) satisfies a ``pair`` request's :data:`REQUIREMENTS`: the rule
    pairing applies, and the one a client's placement predicts it with.
    ``avoid`` is a preference, not a requirement, and is not looked at here.
    """
    if requirements.get("gpu") and not gpu:
        return False
    if "service" in requirements and requirements["service"] not in services:
        return False
    if "model" in requirements and requirements["model"] not in models:
        return False
    return "executor" not in requirements or requirements["executor"] == name


# What a browser's RTCIceCandidate.toJSON() gives; null means "end of candidates".
CANDIDATE = _Nullable(
    _Object(
        {
            "candidate": Field(_Str(4096, empty=True)),
            "sdpMid": Field(_Nullable(_Str(256, empty=True)), required=False),
            "sdpMLineIndex": Field(_Nullable(_Int(0, 65535)), required=False),
            "usernameFragment": Field(_Nullable(_Str(256, empty=True)), required=False),
        }
    )
)

#: One STUN or TURN server, as a browser's ``RTCIceServer`` takes it. The
#: signaling server hands these out (``--ice-server``); a TURN server's
#: ``username`` and ``credential`` are time-limited (coturn's REST API scheme:
#: ``signaling_server/turn.py``).
ICE_SERVER = _Object(
    {
        "urls": Field(_List(_Str(1024), 8)),
        "username": Field(_Str(512), required=False),
        "credential": Field(_Str(512), required=False),
    }
)
_ICE_SERVERS = Field(_List(ICE_SERVER, 16), required=False)

_SESSION = Field(_ID)
#: Where an executor takes direct lanes (``HOST:PORT`` each; see
#: :mod:`remotemedia.transport.direct`): announced in ``register``, handed only
#: to the client paired with it in ``paired``, never listed.
_DIRECT = Field(_List(_Str(300), 8), required=False)
_REQUEST = Field(_Str(128, empty=True), required=False)

#: Messages that executors and clients send to the server, by type.
TO_SERVER: dict[str, _Object] = {
    "register": _Object(
        {
            "name": Field(_NAME),
            "capacity": Field(_Int(1, 100_000)),
            "capabilities": Field(CAPABILITIES, required=False),
            "token": Field(_TOKEN, required=False),
            "direct": _DIRECT,
        }
    ),
    "heartbeat": _Object(
        {
            "load": Field(_Number(0.0, 1e6)),
            "sessions": Field(_Int(0, 100_000)),
        }
    ),
    "unregister": _Object({}),
    "pair": _Object(
        {
            "requirements": Field(REQUIREMENTS, required=False),
            "token": Field(_TOKEN, required=False),
            "request": _REQUEST,
        }
    ),
    # Discovery: which executors this client's credential may use (PROTOCOL.md).
    "executors": _Object({"token": Field(_TOKEN, required=False), "request": _REQUEST}),
    "offer": _Object({"session": _SESSION, "sdp": Field(_SDP)}),
    "answer": _Object({"session": _SESSION, "sdp": Field(_SDP)}),
    "candidate": _Object({"session": _SESSION, "candidate": Field(CANDIDATE)}),
    "bye": _Object({"session": _SESSION, "reason": Field(_Str(MAX_REASON, empty=True), required=False)}),
}

#: Messages that the server sends, by type (the Python client validates them).
TO_PEER: dict[str, _Object] = {
    "registered": _Object(
        {
            "name": Field(_NAME),
            "heartbeat_interval": Field(_Number(0.001, 1e6)),
            "heartbeat_timeout": Field(_Number(0.001, 1e6)),
        }
    ),
    "unregistered": _Object({}),
    "paired": _Object(
        {
            "session": _SESSION,
            "executor": Field(_NAME),
            "client": Field(_ID),
            "ticket": Field(_TOKEN),
            "capabilities": Field(CAPABILITIES, required=False),
            "request": _REQUEST,
            "ice_servers": _ICE_SERVERS,
            "direct": _DIRECT,
        }
    ),
    "session": _Object(
        {
            "session": _SESSION,
            "client": Field(_ID),
            "ticket": Field(_TOKEN),
            "requirements": Field(REQUIREMENTS, required=False),
            "ice_servers": _ICE_SERVERS,
        }
    ),
    "executors": _Object(
        {
            "executors": Field(_List(EXECUTOR_INFO, 10_000)),
            # The listing was cut to fit MAX_SERVER_MESSAGE: more executors exist.
            "truncated": Field(_Bool(), required=False),
            "request": _REQUEST,
        }
    ),
    "error": _Object(
        {
            "code": Field(_Str(64)),
            "message": Field(_Str(4096, empty=True, text=True)),
            "session": Field(_ID, required=False),
            "request": _REQUEST,
        }
    ),
    **{kind: TO_SERVER[kind] for kind in sorted(RELAYED)},
}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def validate(message: Any, schemas: dict[str, _Object]) -> dict:
    """
    Check a decoded message against ``schemas``; return it with only known fields.

    Raises :exc:`SignalingError` with code ``bad_message`` (not an object,
    no ``type``, missing or mistyped field) or ``unknown_type``.
    """
    if not isinstance(message, dict):
        raise SignalingError(
            f"a message must be a JSON object, not {type(message).__name__}", code="bad_message"
        )
    kind = message.get("type")
    if not isinstance(kind, str):
        raise SignalingError("a message needs a string field 'type'", code="bad_message")
    schema = schemas.get(kind)
    if schema is None:
        known = ", ".join(sorted(schemas))
        shown = kind if len(kind) <= 40 else kind[:40] + "..."
        raise SignalingError(f"unknown message type {shown!r}; known: {known}", code="unknown_type")
    clean = schema.check(message, "")
    clean["type"] = kind
    return clean


def parse(
    data: str | bytes,
    schemas: dict[str, _Object] = TO_SERVER,
    *,
    max_size: int = MAX_MESSAGE_SIZE,
) -> dict:
    """
    Decode and validate one websocket message.

    ``data`` must be text (the signaling protocol is JSON text; binary frames
    are refused with ``bad_message``). Raises :exc:`SignalingError` with code
    ``too_large``, ``bad_json``, ``bad_message`` or ``unknown_type``.
    """
    if not isinstance(data, str):
        raise SignalingError("messages must be JSON text, not binary", code="bad_message")
    # Each character takes at least one byte, so only near the limit is encoding worth it.
    if len(data) > max_size or (len(data) * 4 > max_size and len(data.encode("utf-8", "surrogatepass")) > max_size):
        raise SignalingError(
            f"message larger than the limit of {max_size} bytes", code="too_large"
        )
    try:
        message = json.loads(data, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise SignalingError(f"message is not valid JSON: {exc}", code="bad_json") from None
    return validate(message, schemas)


def dump(message: dict) -> str:
    """Encode a message as compact JSON text (ASCII only, so sizes are predictable)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)
