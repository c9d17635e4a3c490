"""
The signaling hub without I/O: events in, actions out, time passed by hand.

The pieces it is built from have their own files: test_signaling_registry.py
(choosing executors), test_token_bucket.py (the rate limit) and
test_signaling_config.py (ServerConfig's validation).
"""

from __future__ import annotations

import json

import pytest
from hub_world import World, closes, only, sent

from signaling_server.hub import POLICY_VIOLATION, Close, Send
from remotemedia.signaling.ticket import verify_ticket


# -- registration ------------------------------------------------------------------


def test_register_answers_with_the_heartbeat_settings():
    world = World(signaling_heartbeat_interval=2.0, signaling_heartbeat_timeout=7.0)
    conn = world.connect()
    reply = only(world.send(conn, {"type": "register", "name": "gpu-1", "capacity": 3}), conn)
    assert reply == {"type": "registered", "name": "gpu-1", "heartbeat_interval": 2.0, "heartbeat_timeout": 7.0}
    record = world.hub.registry.executors["gpu-1"]
    assert (record.capacity, record.gpu, record.models, record.services) == (3, False, (), ())
    assert world.hub.health() == {"status": "ok", "executors": 1, "sessions": 0}


def test_register_keeps_capabilities():
    world = World()
    world.executor("e", gpu=True, models=["tiny.en"], services=["edges"])
    assert world.hub.registry.executors["e"].capabilities() == {
        "gpu": True,
        "models": ["tiny.en"],
        "services": ["edges"],
    }


def test_duplicate_name_is_taken_and_the_connection_may_retry():
    world = World()
    world.executor("e")
    other = world.connect()
    assert world.error_code(world.send(other, {"type": "register", "name": "e", "capacity": 1}), other) == "name_taken"
    assert only(world.send(other, {"type": "register", "name": "f", "capacity": 1}), other)["type"] == "registered"


@pytest.mark.parametrize(
    "setup, message",
    [
        ("executor", {"type": "register", "name": "again", "capacity": 1}),
        ("executor", {"type": "pair"}),
        ("client", {"type": "register", "name": "x", "capacity": 1}),
        ("client", {"type": "heartbeat", "load": 0, "sessions": 0}),
        ("client", {"type": "unregister"}),
        ("anonymous", {"type": "heartbeat", "load": 0, "sessions": 0}),
        ("anonymous", {"type": "unregister"}),
    ],
)
def test_messages_outside_the_role_are_not_allowed(setup, message):
    world = World()
    if setup == "executor":
        conn = world.executor("e")
    else:
        conn = world.connect()
        if setup == "client":
            world.pair(conn)
    actions = world.send(conn, message)
    assert world.error_code(actions, conn) == "not_allowed"
    assert not closes(actions, conn)


# -- pairing -----------------------------------------------------------------------


def test_pair_tells_the_executor_first_and_both_get_the_same_ticket():
    world = World(token="s3cret")
    executor = world.executor("gpu-1", gpu=True)
    client = world.connect()
    paired, actions = world.pair(client, request="abc")
    assert [a.conn for a in actions] == [executor, client]
    session = only(actions, executor)
    assert session["type"] == "session" and paired["type"] == "paired"
    assert session["session"] == paired["session"]
    assert session["client"] == paired["client"] == client
    assert paired["executor"] == "gpu-1"
    assert paired["request"] == "abc"
    assert paired["capabilities"]["gpu"] is True
    assert session["ticket"] == paired["ticket"]
    # Signed with the hub's own secret, derived from no token anyone holds.
    for secret in ("s3cret", "exec-s3cret", None):
        assert not verify_ticket(secret, paired["ticket"], paired["session"], client, "gpu-1")
    assert "requirements" not in session
    assert world.hub.stats.pairings_total == 1


def test_requirements_reach_the_executor():
    world = World()
    executor = world.executor("svc", services=["edges"])
    _, actions = world.pair(world.connect(), {"service": "edges"})
    assert only(actions, executor)["requirements"] == {"service": "edges"}


def test_choice_is_by_free_capacity_over_a_sequence():
    world = World()
    world.executor("small", capacity=2)
    world.executor("big", capacity=4)
    client = world.connect()
    chosen = [world.pair(client)[0]["executor"] for _ in range(6)]
    assert chosen == ["big", "big", "small", "big", "small", "big"]
    assert world.error_code(world.send(client, {"type": "pair"}), client) == "no_executor"


def test_equal_free_capacity_goes_to_the_lower_load():
    world = World()
    a = world.executor("a", capacity=2)
    b = world.executor("b", capacity=2)
    world.send(a, {"type": "heartbeat", "load": 0.8, "sessions": 0})
    world.send(b, {"type": "heartbeat", "load": 0.2, "sessions": 0})
    assert world.pair(world.connect())[0]["executor"] == "b"


@pytest.mark.parametrize(
    "requirements, expected",
    [
        ({}, "plain"),
        ({"gpu": True}, "gpu"),
        ({"gpu": False}, "plain"),
        ({"service": "edges"}, "svc"),
        ({"model": "tiny.en"}, "gpu"),
        ({"executor": "svc"}, "svc"),
        ({"gpu": True, "model": "tiny.en"}, "gpu"),
        ({"gpu": True, "service": "edges"}, None),
        ({"service": "nope"}, None),
    ],
)
def test_requirements_match_capabilities(requirements, expected):
    world = World()
    world.executor("plain", capacity=8)
    world.executor("gpu", capacity=1, gpu=True, models=["tiny.en"])
    world.executor("svc", capacity=1, services=["edges"])
    client = world.connect()
    reply, _ = world.pair(client, requirements)
    if expected is None:
        assert reply["code"] == "no_executor"
        assert "matches the requirements" in reply["message"]
    else:
        assert reply["executor"] == expected


def test_no_executor_explains_why_and_keeps_the_connection():
    world = World()
    client = world.connect()
    reply, actions = world.pair(client, request="r7")
    assert reply["code"] == "no_executor" and reply["request"] == "r7"
    assert "no executor is registered" in reply["message"]
    assert not closes(actions, client)
    world.executor("e", capacity=1)
    paired, _ = world.pair(client)
    reply, _ = world.pair(client)
    assert reply["code"] == "no_executor" and "at capacity" in reply["message"]
    # A bye frees the slot and the same connection pairs again.
    world.send(client, {"type": "bye", "session": paired["session"]})
    assert world.pair(client)[0]["type"] == "paired"


def test_too_many_sessions_per_client():
    world = World(max_sessions_per_client=2)
    world.executor("e", capacity=10)
    client = world.connect()
    world.pair(client)
    world.pair(client)
    reply, _ = world.pair(client, request="x")
    assert reply["code"] == "too_many_sessions" and reply["request"] == "x"


# -- relay -------------------------------------------------------------------------


def paired_world(**config):
    world = World(**config)
    executor = world.executor("e", capacity=4)
    client = world.connect()
    paired, _ = world.pair(client)
    return world, executor, client, paired["session"]


@pytest.mark.parametrize("direction", ["to_executor", "to_client"])
@pytest.mark.parametrize(
    "message",
    [
        {"type": "offer", "sdp": "v=0\r\n"},
        {"type": "answer", "sdp": "v=0\r\n"},
        {"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 10.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}},
        {"type": "candidate", "candidate": None},
    ],
)
def test_relay_forwards_known_fields_both_ways(direction, message):
    world, executor, client, sid = paired_world()
    source, target = (client, executor) if direction == "to_executor" else (executor, client)
    actions = world.send(source, {**message, "session": sid, "extra": "dropped"})
    assert sent(actions, source) == []
    assert only(actions, target) == {**message, "session": sid}
    assert world.hub.stats.relayed_total[message["type"]] == 1


@pytest.mark.parametrize("by", ["client", "executor"])
def test_bye_is_forwarded_and_frees_the_session(by):
    world, executor, client, sid = paired_world()
    source, target = (client, executor) if by == "client" else (executor, client)
    actions = world.send(source, {"type": "bye", "session": sid, "reason": "done"})
    assert only(actions, target) == {"type": "bye", "session": sid, "reason": "done"}
    assert world.hub.health()["sessions"] == 0
    assert world.hub.registry.executors["e"].free == 4
    # Now the session is unknown to both.
    actions = world.send(target, {"type": "offer", "session": sid, "sdp": "v=0"})
    assert world.error_code(actions, target) == "unknown_session"


def test_relay_into_a_foreign_or_unknown_session_gets_the_same_error():
    world, executor, client, sid = paired_world()
    intruder = world.connect()
    world.pair(intruder)
    foreign = world.send(intruder, {"type": "offer", "session": sid, "sdp": "v=0"})
    unknown = world.send(intruder, {"type": "offer", "session": "no-such", "sdp": "v=0"})
    assert only(foreign, intruder)["code"] == only(unknown, intruder)["code"] == "unknown_session"
    assert only(foreign, intruder)["session"] == sid
    assert sent(foreign, executor) == [] and sent(foreign, client) == []
    anonymous = world.connect()
    assert world.error_code(world.send(anonymous, {"type": "bye", "session": sid}), anonymous) == "unknown_session"
    assert world.hub.health()["sessions"] == 2


# -- disconnects, unregister, heartbeats -------------------------------------------


def test_client_disconnect_byes_each_of_its_sessions():
    world = World()
    executor = world.executor("e", capacity=4)
    client = world.connect()
    sessions = {world.pair(client)[0]["session"] for _ in range(3)}
    actions = world.hub.close(client, world.now)
    byes = sent(actions, executor)
    assert {m["session"] for m in byes} == sessions
    assert all(m["type"] == "bye" and m["reason"] == "client disconnected" for m in byes)
    assert world.hub.health() == {"status": "ok", "executors": 1, "sessions": 0}
    assert world.hub.close(client, world.now) == []  # twice is harmless


def test_executor_disconnect_byes_its_clients_and_unregisters_it():
    world, executor, client, sid = paired_world()
    actions = world.hub.close(executor, world.now)
    bye = only(actions, client)
    assert bye["type"] == "bye" and bye["session"] == sid and "disconnected" in bye["reason"]
    assert world.hub.health() == {"status": "ok", "executors": 0, "sessions": 0}
    assert world.hub.connection_count == 1


def test_unregister_ends_sessions_and_allows_registering_again():
    world, executor, client, sid = paired_world()
    actions = world.send(executor, {"type": "unregister"})
    assert only(actions, client)["type"] == "bye"
    assert only(actions, executor) == {"type": "unregistered"}
    assert world.hub.health()["executors"] == 0
    again = world.send(executor, {"type": "register", "name": "e", "capacity": 1})
    assert only(again, executor)["type"] == "registered"


def test_silent_executor_is_dropped_on_tick():
    world, executor, client, sid = paired_world(signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=3.0)
    world.now = 2.9
    assert world.hub.tick(world.now) == []
    world.now = 3.5
    actions = world.hub.tick(world.now)
    bye = only(actions, client)
    assert bye["type"] == "bye" and "heartbeats" in bye["reason"]
    assert only(actions, executor)["code"] == "heartbeat_timeout"
    assert closes(actions, executor) == [Close(executor, POLICY_VIOLATION, "heartbeat_timeout")]
    assert world.hub.health() == {"status": "ok", "executors": 0, "sessions": 0}
    # It is closing: what it sends now is ignored, and its close is quiet.
    assert world.send(executor, {"type": "heartbeat", "load": 0, "sessions": 0}) == []
    assert world.hub.close(executor, world.now) == []


def test_heartbeats_keep_an_executor_alive_and_update_its_load():
    world = World(signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=3.0)
    executor = world.executor("e")
    for step in range(1, 10):
        world.now = step * 2.0
        world.send(executor, {"type": "heartbeat", "load": 0.5, "sessions": 2})
        assert world.hub.tick(world.now) == []
    record = world.hub.registry.executors["e"]
    assert (record.load, record.reported_sessions) == (0.5, 2)


def test_any_valid_message_is_a_sign_of_life():
    world, executor, client, sid = paired_world(signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=3.0)
    world.now = 2.0
    world.send(executor, {"type": "answer", "session": sid, "sdp": "v=0"})
    world.now = 4.0
    assert world.hub.tick(world.now) == []


def test_invalid_messages_are_no_sign_of_life():
    world = World(signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=3.0)
    executor = world.executor("e")
    world.now = 2.0
    world.send(executor, "not json")
    world.now = 3.5
    assert world.hub.tick(world.now) != []


def test_anonymous_connection_is_closed_after_the_hello_timeout():
    world = World(hello_timeout=5.0)
    idle = world.connect()
    client = world.connect()
    world.pair(client)  # identified, though no executor answered
    world.now = 4.0
    assert world.hub.tick(world.now) == []
    world.now = 5.5
    actions = world.hub.tick(world.now)
    assert only(actions, idle)["code"] == "hello_timeout"
    assert closes(actions, idle) and not sent(actions, client)
    assert not sent(world.hub.tick(world.now + 100), idle)  # once


# -- tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        {"type": "pair"},
        {"type": "pair", "token": "wrong"},
        {"type": "register", "name": "e", "capacity": 1},
        {"type": "register", "name": "e", "capacity": 1, "token": "s3cre"},
        {"type": "offer", "session": "s", "sdp": "v=0"},
        {"type": "heartbeat", "load": 0, "sessions": 0},
        "{broken",
        b"binary",
        {"type": "register", "name": "e", "capacity": "1", "token": "s3cret"},
    ],
)
def test_with_a_token_anything_but_the_right_token_first_is_refused(first):
    world = World(token="s3cret")
    conn = world.connect()
    actions = world.send(conn, first)
    assert world.error_code(actions, conn) == "unauthorized"
    assert closes(actions, conn) == [Close(conn, POLICY_VIOLATION, "unauthorized")]
    assert world.send(conn, {"type": "pair", "token": "s3cret"}) == []
    assert world.hub.health()["executors"] == 0


def test_unauthorized_pair_echoes_its_request():
    world = World(token="s3cret")
    conn = world.connect()
    actions = world.send(conn, {"type": "pair", "token": "no", "request": "r1"})
    assert only(actions, conn)["request"] == "r1"


def test_the_right_token_is_needed_only_once():
    world = World(token="s3cret")
    executor = world.executor("e")
    # Later messages carry none.
    assert world.send(executor, {"type": "heartbeat", "load": 0, "sessions": 0}) == []
    client = world.connect()
    paired = only(world.send(client, {"type": "pair", "token": "s3cret"}), client)
    assert paired["type"] == "paired"
    actions = world.send(client, {"type": "offer", "session": paired["session"], "sdp": "v=0"})
    assert only(actions, executor)["type"] == "offer"


def test_open_server_needs_no_token_and_ignores_one():
    world = World()
    conn = world.connect()
    actions = world.send(conn, {"type": "register", "name": "e", "capacity": 1, "token": "whatever"})
    assert only(actions, conn)["type"] == "registered"


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, code",
    [
        ("{nope", "bad_json"),
        ("NaN", "bad_json"),
        ('{"type": "pair", "x": Infinity}', "bad_json"),
        ("[" * 60_000, "bad_json"),
        ("[]", "bad_message"),
        ("null", "bad_message"),
        ('"pair"', "bad_message"),
        ("{}", "bad_message"),
        ('{"type": null}', "bad_message"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"type": "register", "name": "e"}', "bad_message"),
        ('{"type": "register", "name": "", "capacity": 1}', "bad_message"),
        ('{"type": "register", "name": "a\\nb", "capacity": 1}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 1.0}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": false}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": -3}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 1, "capabilities": {"models": "x"}}', "bad_message"),
        ('{"type": "pair", "requirements": []}', "bad_message"),
        ('{"type": "offer", "session": 5, "sdp": "v=0"}', "bad_message"),
        ('{"type": "candidate", "session": "s"}', "bad_message"),
        ('{"type": "candidate", "session": "s", "candidate": {"sdpMid": "0"}}', "bad_message"),
        (b'{"type": "pair"}', "bad_message"),
        ("x" * (64 * 1024 + 1), "too_large"),
        ('{"type": "offer", "session": "s", "sdp": "' + "é" * 33_000 + '"}', "too_large"),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_stays(data, code):
    world = World()
    conn = world.connect()
    actions = world.send(conn, data)
    assert world.error_code(actions, conn) == code
    assert not closes(actions, conn)
    assert world.hub.stats.errors_total[code] == 1
    assert world.pair(conn)[0]["code"] == "no_executor"  # still served


def test_heartbeat_fields_are_checked():
    world = World()
    executor = world.executor("e")
    for bad in ({"load": -1, "sessions": 0}, {"load": 0}, {"load": "1", "sessions": 0}, {"load": 0, "sessions": -1}):
        actions = world.send(executor, {"type": "heartbeat", **bad})
        assert world.error_code(actions, executor) == "bad_message"


# -- rate limit --------------------------------------------------------------------


def test_flooding_connection_is_closed():
    world = World(rate_limit=10.0, rate_burst=5)
    conn = world.connect()
    for _ in range(5):
        assert world.pair(conn)[0]["code"] == "no_executor"
    actions = world.send(conn, {"type": "pair"})
    assert world.error_code(actions, conn) == "rate_limited"
    assert closes(actions, conn)
    assert world.send(conn, {"type": "pair"}) == []


def test_rate_limit_refills_with_time():
    world = World(rate_limit=10.0, rate_burst=2)
    conn = world.connect()
    for step in range(50):
        world.now = step * 0.1  # exactly the allowed rate
        assert world.pair(conn)[0]["code"] == "no_executor"


# -- more choice, relay and lifecycle rules ------------------------------------------


def test_equal_free_capacity_and_load_goes_to_the_earlier_registration():
    world = World()
    first = world.executor("first", capacity=3)
    second = world.executor("second", capacity=3)
    world.send(first, {"type": "heartbeat", "load": 0.5, "sessions": 0})
    world.send(second, {"type": "heartbeat", "load": 0.5, "sessions": 0})
    client = world.connect()
    assert world.pair(client)[0]["executor"] == "first"
    assert world.pair(client)[0]["executor"] == "second"  # now "first" has less free room
    # Load decides only between equal free capacity: more room beats a lower load.
    world.send(first, {"type": "heartbeat", "load": 0.0, "sessions": 1})
    world.executor("roomy", capacity=9)
    world.send(world.hub.registry.executors["roomy"].conn, {"type": "heartbeat", "load": 99.0, "sessions": 0})
    assert world.pair(client)[0]["executor"] == "roomy"


def test_pairing_counts_and_relay_counts_by_type():
    world, executor, client, sid = paired_world()
    world.pair(client)
    for kind in ("offer", "offer", "answer"):
        world.send(client, {"type": kind, "session": sid, "sdp": "v=0"})
    world.send(executor, {"type": "candidate", "session": sid, "candidate": None})
    world.send(client, {"type": "offer", "session": "nope", "sdp": "v=0"})  # not relayed
    stats = world.hub.stats
    assert stats.pairings_total == 2
    assert stats.relayed_total == {"offer": 2, "answer": 1, "candidate": 1}
    assert stats.errors_total == {"unknown_session": 1}
    assert stats.connections_total == 2


def test_executor_disconnect_byes_every_client_of_every_session():
    world = World()
    executor = world.executor("e", capacity=4)
    other = world.executor("other", capacity=1)
    c1, c2 = world.connect(), world.connect()
    s1 = world.pair(c1, {"executor": "e"})[0]["session"]
    s2 = world.pair(c2, {"executor": "e"})[0]["session"]
    s3 = world.pair(c2, {"executor": "e"})[0]["session"]
    kept = world.pair(c1, {"executor": "other"})[0]["session"]
    actions = world.hub.close(executor, world.now)
    assert [m["session"] for m in sent(actions, c1)] == [s1]
    assert {m["session"] for m in sent(actions, c2)} == {s2, s3}
    assert all(m["type"] == "bye" for m in sent(actions, c1) + sent(actions, c2))
    assert sent(actions, other) == [] and not any(isinstance(a, Close) for a in actions)
    assert set(world.hub.registry.sessions) == {kept}
    # The clients' slots are free again: c2 may open sessions up to its limit anew.
    assert world.hub.health() == {"status": "ok", "executors": 1, "sessions": 1}


def test_unregister_byes_clients_with_a_reason():
    world, executor, client, sid = paired_world()
    actions = world.send(executor, {"type": "unregister"})
    assert [a.conn for a in actions] == [client, executor]  # the byes go out before the answer
    bye = only(actions, client)
    assert bye == {"type": "bye", "session": sid, "reason": "executor 'e' unregistered"}
    actions = world.send(client, {"type": "offer", "session": sid, "sdp": "v=0"})
    assert world.error_code(actions, client) == "unknown_session"


def test_receive_and_close_on_an_unknown_connection_do_nothing():
    world = World()
    assert world.hub.receive("ghost", json.dumps({"type": "pair"}), 0.0) == []
    assert world.hub.close("ghost", 0.0) == []
    assert world.hub.stats.errors_total == {}


def test_refused_connection_is_forgotten_on_close():
    world = World(token="s")
    conn = world.connect()
    world.send(conn, {"type": "pair", "token": "x"})
    assert world.hub.connection_count == 1
    assert world.hub.tick(world.now + 1000) == []  # already closing: no second hello_timeout
    assert world.hub.close(conn, world.now) == []
    assert world.hub.connection_count == 0


def test_heartbeat_timeout_is_reported_once_and_the_name_is_free_again():
    world = World(signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=2.0)
    executor = world.executor("e")
    world.now = 2.0
    assert world.hub.tick(world.now) == []  # exactly at the limit: still alive
    world.now = 2.5
    actions = world.hub.tick(world.now)
    assert [type(a) for a in actions] == [Send, Close]
    assert actions[1] == Close(executor, POLICY_VIOLATION, "heartbeat_timeout")
    assert world.hub.tick(world.now + 10) == []
    world.executor("e")  # a fresh connection may take the name


def test_token_server_with_a_missing_token_on_register_closes():
    world = World(token="s")
    conn = world.connect()
    actions = world.send(conn, {"type": "register", "name": "e", "capacity": 1})
    message = only(actions, conn)
    assert message["code"] == "unauthorized" and "no token" in message["message"]
    assert actions[-1] == Close(conn, POLICY_VIOLATION, "unauthorized")
    assert world.hub.stats.errors_total == {"unauthorized": 1}


def test_authenticated_connection_bad_json_is_not_unauthorized():
    world = World(token="s")
    executor = world.executor("e")
    actions = world.send(executor, "{oops")
    assert world.error_code(actions, executor) == "bad_json"
    assert not closes(actions, executor)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "register", "name": "e", "capacity": "4"},
        {"type": "register", "name": "e", "capacity": True},
        {"type": "register", "name": "e", "capacity": 0},
        {"type": "register", "name": "e", "capacity": 100_001},
        {"type": "register", "name": "bell\x07", "capacity": 1},
        {"type": "register", "name": "tab\there", "capacity": 1},
        {"type": "register", "name": "n" * 129, "capacity": 1},
        {"type": "register", "capacity": 1},
        {"type": "register", "name": "e", "capacity": 1, "capabilities": {"gpu": "yes"}},
        {"type": "pair", "request": 7},
        {"type": "pair", "requirements": {"executor": ""}},
        {"type": "bye"},
        {"type": "offer", "session": "s"},
    ],
)
def test_mistyped_fields_are_bad_messages(message):
    world = World()
    conn = world.connect()
    actions = world.send(conn, message)
    assert world.error_code(actions, conn) == "bad_message"
    assert not closes(actions, conn)
    assert world.hub.health()["executors"] == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"load": -1, "sessions": 0},
        {"load": True, "sessions": 0},
        {"load": 1e7, "sessions": 0},
        {"load": 0.5, "sessions": 1.5},
        {"sessions": 0},
    ],
)
def test_bad_heartbeats_leave_the_executor_registered(fields):
    world = World()
    executor = world.executor("e")
    world.send(executor, {"type": "heartbeat", "load": 0.25, "sessions": 1})
    actions = world.send(executor, {"type": "heartbeat", **fields})
    assert world.error_code(actions, executor) == "bad_message"
    assert not closes(actions, executor)
    assert world.hub.registry.executors["e"].load == 0.25  # the bad one changed nothing


def test_errors_are_counted_by_code():
    world = World()
    conn = world.connect()
    for data in ("{", "{", "[]", '{"type": "x"}', "x" * (64 * 1024 + 1), b"{}"):
        world.send(conn, data)
    assert world.hub.stats.errors_total == {"bad_json": 2, "bad_message": 2, "unknown_type": 1, "too_large": 1}


def test_max_message_size_setting_is_used():
    world = World(max_message_size=100)
    conn = world.connect()
    big = json.dumps({"type": "pair", "request": "r" * 100})
    assert world.error_code(world.send(conn, big), conn) == "too_large"
    assert world.pair(conn, request="r" * 20)[0]["code"] == "no_executor"


def test_rate_limit_refills_after_the_burst():
    world = World(rate_limit=4.0, rate_burst=2)
    conn = world.connect()
    world.pair(conn)
    world.pair(conn)
    world.now = 0.25  # one token back
    assert world.pair(conn)[0]["code"] == "no_executor"
    actions = world.send(conn, {"type": "pair"})  # none left at the same instant
    assert world.error_code(actions, conn) == "rate_limited"
    assert actions[-1] == Close(conn, POLICY_VIOLATION, "rate_limited")
    world.now = 100.0
    assert world.send(conn, {"type": "pair"}) == []  # closed for good


def test_too_many_sessions_keeps_the_connection_and_a_bye_makes_room():
    world = World(max_sessions_per_client=1)
    world.executor("e", capacity=5)
    client = world.connect()
    sid = world.pair(client)[0]["session"]
    reply, actions = world.pair(client)
    assert reply["code"] == "too_many_sessions" and not closes(actions, client)
    assert world.hub.health()["sessions"] == 1
    world.send(client, {"type": "bye", "session": sid})
    assert world.pair(client)[0]["type"] == "paired"


# -- what the hub sends is what a peer accepts ---------------------------------------


def assert_valid_to_peer(actions):
    from remotemedia.signaling.messages import TO_PEER, dump, parse

    for action in actions:
        if isinstance(action, Send):
            assert parse(dump(action.message), TO_PEER) == action.message


def test_every_message_of_a_full_exchange_is_valid_for_peers():
    world = World(token="s", signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=2.0, hello_timeout=1.0)
    out = []
    executor = world.connect()
    out += world.send(executor, {"type": "register", "name": "gpu-1", "capacity": 2, "token": "exec-s",
                                 "capabilities": {"gpu": True, "models": ["m"], "services": ["x"]}})
    client = world.connect()
    out += world.send(client, {"type": "pair", "token": "s", "request": "r", "requirements": {"gpu": True}})
    sid = sent(out, client)[-1]["session"]
    out += world.send(client, {"type": "offer", "session": sid, "sdp": "v=0\r\n"})
    out += world.send(executor, {"type": "answer", "session": sid, "sdp": "v=0\r\n"})
    out += world.send(executor, {"type": "candidate", "session": sid, "candidate": None})
    out += world.send(client, {"type": "pair", "requirements": {"model": "zz"}, "request": "r2"})
    out += world.send(client, {"type": "offer", "session": "unknown", "sdp": "v=0"})
    out += world.send(client, "{")
    out += world.send(world.connect(), {"type": "pair", "token": "bad", "request": "r3"})
    world.connect()
    world.now = 5.0
    out += world.hub.tick(world.now)
    assert {m["type"] for a in out if isinstance(a, Send) for m in [a.message]} == {
        "registered", "session", "paired", "offer", "answer", "candidate", "error", "bye",
    }
    assert_valid_to_peer(out)


def test_bye_for_a_long_escaped_executor_name_is_valid_for_peers():
    world = World()
    executor = world.executor("\\" * 128)
    client = world.connect()
    world.pair(client)
    assert_valid_to_peer(world.hub.close(executor, world.now))


def test_error_for_a_huge_integer_is_valid_for_peers():
    world = World()
    conn = world.connect()
    actions = world.send(conn, '{"type": "register", "name": "e", "capacity": 1' + "0" * 4200 + "}")
    assert world.error_code(actions, conn) == "bad_message"
    assert_valid_to_peer(actions)


def test_heartbeat_with_an_integer_load_too_big_for_a_float_is_a_bad_message():
    world = World()
    executor = world.executor("e")
    actions = world.send(executor, '{"type": "heartbeat", "load": 1' + "0" * 400 + ', "sessions": 0}')
    assert world.error_code(actions, executor) == "bad_message"


# -- idle timeout ------------------------------------------------------------------


def test_an_authenticated_connection_holding_nothing_is_closed_after_the_idle_timeout():
    from remotemedia.signaling.messages import CLOSE_IDLE_TIMEOUT

    world = World(idle_timeout=10.0, signaling_heartbeat_interval=100.0, signaling_heartbeat_timeout=1000.0)
    executor = world.executor("e", capacity=1)
    unlucky = world.connect()
    world.pair(world.connect())  # takes the only slot...
    assert world.pair(unlucky)[0]["code"] == "no_executor"  # ...so this one holds nothing
    world.now = 1.0
    assert world.hub.tick(world.now) == []  # first seen idle here
    world.now = 11.0
    assert world.hub.tick(world.now) == []
    world.now = 11.5
    actions = world.hub.tick(world.now)
    assert only(actions, unlucky)["code"] == "idle_timeout"
    assert [c.code for c in closes(actions, unlucky)] == [CLOSE_IDLE_TIMEOUT]
    assert not sent(actions, executor)  # a registered executor is never idle
    assert world.hub.stats.errors_total["idle_timeout"] == 1


def test_a_session_keeps_a_client_busy_and_its_end_starts_the_idle_clock():
    world = World(idle_timeout=10.0, signaling_heartbeat_interval=100.0, signaling_heartbeat_timeout=1000.0)
    world.executor("e")
    client = world.connect()
    paired, _ = world.pair(client)
    for world.now in (5.0, 20.0, 40.0):
        assert world.hub.tick(world.now) == []  # in a session: never idle
    world.send(client, {"type": "bye", "session": paired["session"]})
    assert world.hub.tick(world.now) == []  # idle from here
    world.now = 45.0
    world.pair(client)  # busy again before the limit
    world.now = 100.0
    assert world.hub.tick(world.now) == []


def test_an_executor_that_unregisters_and_stays_is_closed_when_idle():
    world = World(idle_timeout=10.0, signaling_heartbeat_interval=100.0, signaling_heartbeat_timeout=1000.0)
    executor = world.executor("e")
    world.send(executor, {"type": "unregister"})
    world.hub.tick(world.now)
    world.now = 10.5
    assert only(world.hub.tick(world.now), executor)["code"] == "idle_timeout"
