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
    "executors": {"type": "executors", "token": "t", "request": "r"},
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
    "executors": {
        "type": "executors",
        "executors": [
            {"name": "gpu-1", "services": ["edges"], "models": [], "gpu": True, "capacity": 4, "free": 3,
             "load": 0.25, "version": "0.1.0", "accept": "python", "mode": "process"},
        ],
        "truncated": False,
        "request": "r",
    },
    "error": {"type": "error", "code": "no_executor", "message": "none\nat all", "request": "r"},
}


def test_register_may_announce_what_discovery_shows():
    message = {
        "type": "register", "name": "e", "capacity": 1,
        "capabilities": {"version": "0.1.0", "accept": "wasm", "mode": "inprocess", "models": ["tiny.en"]},
    }
    assert parse(dump(message)) == message


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


# -- more parsing rules --------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000,
        '{"a":' * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"type": "pair", "x": NaN}',
        '{"type": "pair", "x": Infinity}',
        '{"type": "pair", "x": -Infinity}',
        '{"type": "pair"} trailing',
        "{'type': 'pair'}",
    ],
    ids=["open-lists", "open-objects", "closed-lists", "nan", "inf", "-inf", "trailing", "single-quotes"],
)
def test_not_json_or_too_deep_is_bad_json_not_a_crash(data):
    if len(data) > MAX_MESSAGE_SIZE:
        assert code_of(data, max_size=len(data)) == "bad_json"
    else:
        assert code_of(data) == "bad_json"


def test_unknown_fields_are_dropped_at_every_level():
    raw = {
        "type": "register",
        "name": "e",
        "capacity": 2,
        "capabilities": {"gpu": False, "models": [], "future": {"x": 1}},
        "extra": [1, 2],
    }
    assert parse(json.dumps(raw)) == {"type": "register", "name": "e", "capacity": 2, "capabilities": {"gpu": False, "models": []}}
    raw = {"type": "candidate", "session": "s", "candidate": {"candidate": "c", "sdpMid": "0", "other": 1}}
    assert parse(json.dumps(raw))["candidate"] == {"candidate": "c", "sdpMid": "0"}


def test_candidate_object_keeps_its_known_fields():
    candidate = {
        "candidate": "candidate:842163049 1 udp 1677729535 203.0.113.1 46154 typ srflx",
        "sdpMid": "0",
        "sdpMLineIndex": 65535,
        "usernameFragment": "abcd",
    }
    clean = parse(json.dumps({"type": "candidate", "session": "s", "candidate": candidate}))
    assert clean == {"type": "candidate", "session": "s", "candidate": candidate}


@pytest.mark.parametrize(
    "candidate",
    [
        {"sdpMid": "0"},
        {"candidate": None},
        {"candidate": "c", "sdpMLineIndex": 65536},
        {"candidate": "c", "sdpMLineIndex": True},
        {"candidate": "c", "sdpMid": 0},
        {"candidate": "c\r\n"},
        "candidate:1",
        [],
    ],
)
def test_bad_candidates(candidate):
    assert code_of(json.dumps({"type": "candidate", "session": "s", "candidate": candidate})) == "bad_message"


def test_sdp_may_hold_line_breaks_but_names_may_not():
    sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\ta=x\r\n"
    assert parse(json.dumps({"type": "offer", "session": "s", "sdp": sdp}))["sdp"] == sdp
    assert parse(json.dumps({"type": "answer", "session": "s", "sdp": sdp}), TO_PEER)["sdp"] == sdp
    assert code_of(json.dumps({"type": "offer", "session": "s\r\n", "sdp": sdp})) == "bad_message"
    assert code_of(json.dumps({"type": "register", "name": "a\r\nb", "capacity": 1})) == "bad_message"
    assert code_of(json.dumps({"type": "pair", "request": "r\n"})) == "bad_message"


@pytest.mark.parametrize("char, width", [("a", 1), ("é", 2), ("€", 3), ("😀", 4)])
def test_size_limit_is_in_utf8_bytes_at_the_boundary(char, width):
    # Raw (unescaped) text, as a browser sends it.
    head, tail = '{"type":"offer","session":"s","sdp":"', '"}'
    count = 40
    text = head + char * count + tail
    size = len(head) + len(tail) + width * count
    assert len(text.encode("utf-8")) == size
    assert parse(text, max_size=size)["sdp"] == char * count
    assert code_of(text, max_size=size - 1) == "too_large"


def test_default_size_limit_boundary():
    head, tail = '{"type":"offer","session":"s","sdp":"', '"}'
    fill = MAX_MESSAGE_SIZE - len(head) - len(tail)
    assert parse(head + "x" * fill + tail)["sdp"] == "x" * fill
    assert code_of(head + "x" * (fill + 1) + tail) == "too_large"
    # Under the limit in characters, over it in bytes.
    wide = head + "é" * (fill // 2 + 1) + tail
    assert len(wide) < MAX_MESSAGE_SIZE < len(wide.encode("utf-8"))
    assert code_of(wide) == "too_large"


def test_unknown_type_names_the_known_ones_and_trims_a_long_type():
    with pytest.raises(SignalingError) as info:
        parse(json.dumps({"type": "t" * 100}))
    assert info.value.code == "unknown_type"
    assert "'" + "t" * 40 + "...'" in str(info.value) and "t" * 41 not in str(info.value)
    assert all(kind in str(info.value) for kind in TO_SERVER)


def test_peer_only_types_are_unknown_to_the_server_and_vice_versa():
    assert code_of(json.dumps(EXAMPLES_TO_PEER["paired"])) == "unknown_type"
    assert code_of(json.dumps(EXAMPLES_TO_SERVER["register"]), TO_PEER) == "unknown_type"
    # Relayed types are valid in both directions.
    for kind in RELAYED:
        assert parse(dump(EXAMPLES_TO_SERVER[kind]), TO_PEER) == EXAMPLES_TO_SERVER[kind]


@pytest.mark.parametrize("kind", sorted(TO_SERVER))
def test_dump_is_compact_ascii_and_parse_accepts_it(kind):
    message = EXAMPLES_TO_SERVER[kind]
    text = dump(message)
    assert text.isascii()
    assert ": " not in text and ", " not in text
    assert json.loads(text) == message
    assert parse(text) == message
    assert json.loads(dump(parse(text))) == message  # key order aside, stable


def test_dump_escapes_non_ascii_so_the_size_is_the_length():
    text = dump({"type": "offer", "session": "s", "sdp": "😀é\r\n"})
    assert len(text) == len(text.encode("utf-8"))
    assert parse(text)["sdp"] == "😀é\r\n"


def test_parse_returns_a_new_dict_and_validate_refuses_non_objects():
    raw = {"type": "heartbeat", "load": 1, "sessions": 0, "x": 1}
    clean = validate(raw, TO_SERVER)
    assert clean == {"type": "heartbeat", "load": 1.0, "sessions": 0}
    assert isinstance(clean["load"], float)
    assert "x" in raw  # the input is not modified
    for value in (None, [], "pair", 3):
        with pytest.raises(SignalingError) as info:
            validate(value, TO_SERVER)
        assert info.value.code == "bad_message"


def test_integer_too_big_for_a_float_is_a_bad_message():
    assert code_of('{"type": "heartbeat", "load": 1' + "0" * 400 + ', "sessions": 0}') == "bad_message"


# -- more on tickets -------------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        {"secret": "secreT"},
        {"secret": ""},
        {"secret": None},
        {"session": "sess "},
        {"client": "Client"},
        {"executor": ""},
    ],
)
def test_ticket_rejects_any_changed_name_or_secret(changed):
    names = {"secret": "secret", "session": "sess", "client": "client", "executor": "exec"}
    ticket = make_ticket(**names)
    assert verify_ticket(ticket=ticket, **names)
    assert not verify_ticket(ticket=ticket, **{**names, **changed})


@pytest.mark.parametrize("ticket", [None, 1, b"", ["v1.x"]])
def test_ticket_of_another_type_is_rejected(ticket):
    assert verify_ticket("k", ticket, "s", "c", "e") is False


def test_bytes_of_the_right_ticket_are_rejected():
    ticket = make_ticket("k", "s", "c", "e")
    assert verify_ticket("k", ticket, "s", "c", "e") is True
    assert verify_ticket("k", ticket.encode(), "s", "c", "e") is False


def test_ticket_format():
    ticket = make_ticket("k", "s", "c", "e")
    version, _, mac = ticket.partition(".")
    assert version == "v1"
    assert len(mac) == 43  # SHA-256, URL-safe base64 without padding
    assert set(mac) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert make_ticket("k", "s", "c", "e") == ticket  # deterministic
    assert not verify_ticket("k", "v2." + mac, "s", "c", "e")
    assert not verify_ticket("k", mac, "s", "c", "e")


def test_secret_none_and_empty_secret_are_the_same_signer():
    for secret in (None, ""):
        ticket = make_ticket(secret, "s", "c", "e")
        assert verify_ticket(None, ticket, "s", "c", "e")
        assert verify_ticket("", ticket, "s", "c", "e")
        assert not verify_ticket("x", ticket, "s", "c", "e")
