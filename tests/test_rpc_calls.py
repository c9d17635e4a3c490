"""The call conversation's contract (remotemedia.rpc.calls): every kind and code documented, every body round-trips."""

from __future__ import annotations

import numpy as np
import pytest

from remotemedia import codec
from remotemedia.exceptions import DecodeError
from remotemedia.rpc import calls, protocol, windows
from remotemedia.rpc.calls import BODIES, ErrorCode, Kind


def test_every_kind_and_code_is_documented_in_the_docstring():
    doc = calls.__doc__
    for kind in Kind:
        assert f"\n    {kind.name} " in doc, kind
    for code in ErrorCode:
        assert f"\n    {code.value} " in doc, code


def test_every_kind_has_a_builder_and_a_parser():
    assert set(BODIES) == set(Kind)


def test_one_definition_of_each_shared_name():
    assert protocol.Kind is calls.Kind and protocol.ErrorCode is calls.ErrorCode
    assert protocol.PROTOCOL_VERSION == calls.PROTOCOL_VERSION
    for name in windows.__all__:
        assert getattr(windows, name) is getattr(calls, name)


def test_error_codes_are_their_wire_strings():
    assert ErrorCode.TIMEOUT == "timeout" and "timeout" == ErrorCode.TIMEOUT
    assert str(ErrorCode.NO_METHOD) == "no_method" and f"{ErrorCode.CPU}" == "cpu"
    assert type(calls.error_body(ErrorCode.TIMEOUT, "x")["code"]) is str


def _wire(body):
    # What the peer decodes: the body through the codec.
    return codec.decode(b"".join(bytes(p) for p in codec.encode_parts(body)))


ROUND_TRIPS = [
    (Kind.HELLO, calls.hello_body("t", 1 << 20, 30.0), calls.Hello("t", calls.PROTOCOL_VERSION, 1 << 20, 30.0)),
    (Kind.HELLO, calls.hello_body("t", 1 << 20, None), calls.Hello("t", calls.PROTOCOL_VERSION, 1 << 20, None)),
    (Kind.WELCOME, calls.welcome_body("gpu-1", 4096), calls.Welcome("gpu-1", 4096)),
    (Kind.CALL, calls.call_body(3, "process", [1, "a"], {"k": 2}), calls.Call(3, "process", [1, "a"], {"k": 2})),
    (Kind.CALL, calls.call_body(3, "s", [None], {}, 16, 0), calls.Call(3, "s", [None], {}, 16, 0)),
    (Kind.CALL, calls.call_body(3, "s", [], {"xs": None}, 16, "xs"), calls.Call(3, "s", [], {"xs": None}, 16, "xs")),
    (Kind.RESULT, {"any": [1, 2]}, {"any": [1, 2]}),
    (Kind.ERROR, calls.error_body(ErrorCode.EXCEPTION, "boom", "builtins.ValueError", "tb", "mod"),
     calls.Error(ErrorCode.EXCEPTION, "boom", "builtins.ValueError", "tb", "mod")),
    (Kind.ERROR, calls.error_body(ErrorCode.NO_OBJECT, "gone"), calls.Error(ErrorCode.NO_OBJECT, "gone")),
    (Kind.YIELD, "item", "item"),
    (Kind.END, calls.ends_body(), None),
    (Kind.END, calls.ends_body({"audio": {"end": 3}}), {"audio": {"end": 3}}),
    (Kind.CANCEL, None, None),
    (Kind.CREDIT, calls.credit_body(8), 8),
    (Kind.RELEASE, calls.release_body(5), 5),
    (Kind.PING, calls.ping_body(1.5), 1.5),
    (Kind.PONG, calls.ping_body(None), None),
    (Kind.INPUT, [1, 2], [1, 2]),
    (Kind.INPUT_END, calls.ends_body(), None),
    (Kind.MEDIA, calls.media_slot_body(2), calls.Media(slot=2)),
    (Kind.MEDIA, {"kind": "audio", "format": {}, "start": 0, "pts": 0}, calls.Media(announcement={"kind": "audio", "format": {}, "start": 0, "pts": 0})),
]


@pytest.mark.parametrize("kind, body, parsed", ROUND_TRIPS, ids=lambda v: getattr(v, "name", None))
def test_round_trip(kind, body, parsed):
    assert BODIES[kind].parse(_wire(body)) == parsed


def test_round_trip_covers_every_kind():
    covered = {kind for kind, _, _ in ROUND_TRIPS} | {Kind.CREATE}
    assert covered == set(Kind)


def test_create_bodies():
    create = calls.create_body(pickle=b"\x80\x05pickle")
    assert create.pickled and calls.parse_create(create.body, True) == create
    wasm = {"wasm": {"abi": 1}}
    assert calls.parse_create(_wire(wasm), False) == calls.Create(wasm, False)
    assert calls.parse_created(_wire(calls.created_body(1.0))) == "builtins.float"
    with pytest.raises(TypeError):
        calls.create_body()


def test_large_values_are_not_walked():
    array = np.zeros(1 << 20, dtype=np.uint8)
    call = calls.parse_call(calls.call_body(1, "f", [array], {}))
    assert call.args[0] is array


MALFORMED = [
    (Kind.HELLO, "ticket"),
    (Kind.HELLO, None),
    (Kind.WELCOME, {"executor": "x"}),
    (Kind.WELCOME, {"executor": 1, "max_message_size": 10}),
    (Kind.WELCOME, {"executor": "x", "max_message_size": True}),
    (Kind.CREATE, {"object": b"x"}),
    (Kind.CREATE, b"raw, not pickled"),
    (Kind.CALL, [1, "f", [], {}]),
    (Kind.CALL, {"handle": 1}),
    (Kind.CALL, [1, "f", "args", {}, 0, None]),
    (Kind.CALL, [1, "f", [], [], 0, None]),
    (Kind.CALL, [1, "f", [], {}, -1, None]),
    (Kind.CALL, [1, "f", [], {}, "16", None]),
    (Kind.CALL, [1, "f", [None], {}, 0, 0]),
    (Kind.CALL, [1, "f", [None], {}, 16, 1]),
    (Kind.CALL, [1, "f", [None], {}, 16, 1.5]),
    (Kind.ERROR, "boom"),
    (Kind.ERROR, {"message": "no code"}),
    (Kind.END, [1]),
    (Kind.CREDIT, 0),
    (Kind.CREDIT, -3),
    (Kind.CREDIT, True),
    (Kind.CREDIT, calls.MAX_CREDIT + 1),
    (Kind.CREDIT, "8"),
    (Kind.RELEASE, "5"),
    (Kind.INPUT_END, "end"),
    (Kind.MEDIA, [0]),
    (Kind.MEDIA, {"slot": "0"}),
]


@pytest.mark.parametrize("kind, body", MALFORMED, ids=lambda v: getattr(v, "name", None))
def test_malformed_bodies_are_refused_with_a_reason(kind, body):
    parse = BODIES[kind].parse if kind is not Kind.CREATE else (lambda b: calls.parse_create(b, False))
    with pytest.raises(DecodeError) as info:
        parse(body)
    assert str(info.value)


def test_malformed_bodies_cover_every_kind_with_a_shape():
    # RESULT, YIELD, INPUT carry the caller's values, CANCEL none, PING/PONG read a bad clock as none.
    free = {Kind.RESULT, Kind.YIELD, Kind.INPUT, Kind.CANCEL, Kind.PING, Kind.PONG}
    assert {kind for kind, _ in MALFORMED} | free == set(Kind)
    assert calls.parse_ping("late") is None


def test_a_pickled_create_must_be_bytes():
    with pytest.raises(DecodeError):
        calls.parse_create({"wasm": {}}, True)


def test_credit_within_a_window():
    assert calls.parse_credit(16, calls.INPUT_WINDOW) == 16
    with pytest.raises(DecodeError):
        calls.parse_credit(17, calls.INPUT_WINDOW)


def test_hello_drops_mistyped_fields():
    hello = calls.parse_hello({"ticket": 5, "version": "3", "max_message_size": -1, "timeout": float("inf")})
    assert hello == calls.Hello(None, None, None, None)


def test_unknown_error_code_is_kept():
    error = calls.parse_error({"code": "from_the_future", "message": "m"})
    assert error.code == "from_the_future" and error.type == "" and error.module is None


def test_error_codes_hash_as_their_wire_strings():
    assert ErrorCode.MEMORY in {"memory"} and "cpu" in {ErrorCode.CPU}
    assert {ErrorCode.TIME: 1}.get("time") == 1
