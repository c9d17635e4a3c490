"""The signaling message table and session tickets, as pure functions."""

from __future__ import annotations

import json

import pytest

from remotemedia.exceptions import SignalingError
from remotemedia.signaling.messages import MAX_MESSAGE_SIZE, RELAYED, TO_PEER, TO_SERVER, dump, parse, validate
from remotemedia.signaling.ticket import make_ticket, verify_ticket

EXAMPLES_TO_SERVER = {
    "register": {
        "type": "register",
        "name": "gpu-1",
        "capacity": 4,
        "capabilities": {"gpu": True, "models": ["tiny.en"], "services": ["edges"]},
        "token": "t",
    },
    "heartbeat": {"type": "heartbeat", "load": 0.25, "sessions": 1},
    "unregister": {"type": "unregister"},
    "pair": {"type": "pair", "requirements": {"gpu": True, "service": "s", "model": "m", "executor": "e"}, "token": "t", "request": "r"},
    "offer": {"type": "offer", "session": "s", "sdp": "v=0\r\na=x\r\n"},
    "answer": {"type": "answer", "session": "s", "sdp": "v=0\r\n"},
    "candidate": {
        "type": "candidate",
        "session": "s",
        "candidate": {"candidate": "candidate:1", "sdpMid": None, "sdpMLineIndex": 0, "usernameFragment": "u"},
    },
    "bye": {"type": "bye", "session": "s", "reason": ""},
}

EXAMPLES_TO_PEER = {
    "registered": {"type": "registered", "name": "e", "heartbeat_interval": 5.0, "heartbeat_timeout": 15.0},
    "unregistered": {"type": "unregistered"},
    "paired": {
        "type": "paired",
        "session": "s",
        "executor": "e",
        "client": "c",
        "ticket": "v1.x",
        "capabilities": {"gpu": False, "models": [], "services": []},
        "request": "r",
    },
    "session": {"type": "session", "session": "s", "client": "c", "ticket": "v1.x", "requirements": {"gpu": True}},
    "error": {"type": "error", "code": "no_executor", "message": "none\nat all", "request": "r"},
}


def code_of(data, schemas=TO_SERVER, **kwargs) -> str:
    with pytest.raises(SignalingError) as info:
        parse(data, schemas, **kwargs)
    assert str(info.value)
    return info.value.code


def test_every_type_has_an_example():
    assert set(EXAMPLES_TO_SERVER) == set(TO_SERVER)
    assert set(EXAMPLES_TO_PEER) | RELAYED == set(TO_PEER)


@pytest.mark.parametrize("message", list(EXAMPLES_TO_SERVER.values()), ids=list(EXAMPLES_TO_SERVER))
def test_messages_to_the_server_round_trip(message):
    assert parse(dump(message)) == message


@pytest.mark.parametrize("message", list(EXAMPLES_TO_PEER.values()), ids=list(EXAMPLES_TO_PEER))
def test_messages_to_peers_round_trip(message):
    assert parse(dump(message), TO_PEER) == message


def test_dump_is_compact_json():
    text = dump({"type": "pair", "request": "é"})
    assert text == '{"type":"pair","request":"\\u00e9"}'
    with pytest.raises(ValueError):
        dump({"type": "heartbeat", "load": float("nan")})


def test_unknown_fields_are_dropped_and_optional_ones_may_be_absent():
    clean = parse('{"type": "pair", "future": 1, "requirements": {"gpu": true, "colour": "red"}}')
    assert clean == {"type": "pair", "requirements": {"gpu": True}}
    assert parse('{"type": "register", "name": "e", "capacity": 1}') == {"type": "register", "name": "e", "capacity": 1}


def test_candidate_may_be_null_and_its_optional_fields_null():
    assert parse('{"type": "candidate", "session": "s", "candidate": null}')["candidate"] is None
    clean = parse('{"type": "candidate", "session": "s", "candidate": {"candidate": "", "sdpMid": null, "sdpMLineIndex": null}}')
    assert clean["candidate"] == {"candidate": "", "sdpMid": None, "sdpMLineIndex": None}


@pytest.mark.parametrize(
    "data, code",
    [
        ("", "bad_json"),
        ("{", "bad_json"),
        ("NaN", "bad_json"),
        ('{"type": "heartbeat", "load": -Infinity, "sessions": 0}', "bad_json"),
        ("[" * 50_000, "bad_json"),
        ("1", "bad_message"),
        ('{"type": ["pair"]}', "bad_message"),
        ('{"type": "' + "x" * 100 + '"}', "unknown_type"),
        ('{"type": "heartbeat", "load": true, "sessions": 0}', "bad_message"),
        ('{"type": "heartbeat", "load": 2e6, "sessions": 0}', "bad_message"),
        ('{"type": "register", "name": "' + "n" * 129 + '", "capacity": 1}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 100001}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 1, "capabilities": {"models": ["a", 1]}}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 1, "capabilities": {"services": ' + json.dumps(["s"] * 257) + "}}", "bad_message"),
        ('{"type": "pair", "requirements": {"gpu": 1}}', "bad_message"),
        ('{"type": "candidate", "session": "s", "candidate": {"candidate": "c", "sdpMLineIndex": -1}}', "bad_message"),
        ('{"type": "bye"}', "bad_message"),
        ('{"type": "offer", "session": "", "sdp": "v=0"}', "bad_message"),
        ('{"type": "offer", "session": "s", "sdp": ""}', "bad_message"),
        (b"{}", "bad_message"),
        (bytearray(b"{}"), "bad_message"),
    ],
)
def test_bad_messages_get_their_code(data, code):
    assert code_of(data) == code


def test_size_limit_counts_utf8_bytes():
    body = '{"type": "offer", "session": "s", "sdp": "%s"}'
    small = body % ("é" * 100)
    assert parse(small, max_size=300)["sdp"] == "é" * 100
    # 100 characters of two bytes each: over a 150-byte limit though under 150 characters.
    assert len(body % ("é" * 60)) < 150
    assert code_of(body % ("é" * 60), max_size=150) == "too_large"
    assert code_of("x" * (MAX_MESSAGE_SIZE + 1)) == "too_large"


def test_errors_name_the_field():
    with pytest.raises(SignalingError, match="capabilities.gpu"):
        parse('{"type": "register", "name": "e", "capacity": 1, "capabilities": {"gpu": "yes"}}')
    with pytest.raises(SignalingError, match="missing field 'capacity'"):
        parse('{"type": "register", "name": "e"}')


def test_validate_takes_decoded_messages():
    assert validate({"type": "unregister", "x": 1}, TO_SERVER) == {"type": "unregister"}
    with pytest.raises(SignalingError):
        validate({"type": "registered"}, TO_SERVER)  # a server message is not one a peer may send


# -- tickets -------------------------------------------------------------------------


def test_ticket_verifies_for_the_same_names_only():
    ticket = make_ticket("secret", "sess", "client", "exec")
    assert ticket.startswith("v1.")
    assert verify_ticket("secret", ticket, "sess", "client", "exec")
    for args in (
        ("other", ticket, "sess", "client", "exec"),
        ("secret", ticket, "sess2", "client", "exec"),
        ("secret", ticket, "sess", "client2", "exec"),
        ("secret", ticket, "sess", "client", "exec2"),
        ("secret", ticket[:-1] + ("A" if ticket[-1] != "A" else "B"), "sess", "client", "exec"),
        ("secret", "", "sess", "client", "exec"),
        ("secret", None, "sess", "client", "exec"),
        ("secret", "v1.é", "sess", "client", "exec"),
    ):
        assert not verify_ticket(*args), args


def test_names_cannot_be_shifted_between_fields():
    assert make_ticket("k", "ab", "c", "e") != make_ticket("k", "a", "bc", "e")


def test_open_server_signs_with_the_empty_secret():
    assert make_ticket(None, "s", "c", "e") == make_ticket("", "s", "c", "e")
    assert verify_ticket(None, make_ticket("", "s", "c", "e"), "s", "c", "e")
