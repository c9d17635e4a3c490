"""
The hub as one instance of a cluster, with no Redis and no sockets: what it
asks of the shared state (Claim, Reserve, Release, Refresh, Unclaim), what it
forwards to other instances, and what it does with their answers.
"""

from __future__ import annotations

import json

from signaling_server.cluster import (
    UNAVAILABLE,
    Claim,
    Forward,
    Grant,
    Refresh,
    Release,
    Reserve,
    Unclaim,
    decode_envelope,
    encode_envelope,
)
from signaling_server.hub import Hub, Send


def hub(instance: str = "A") -> Hub:
    return Hub(instance=instance)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def sent(actions, conn):
    return [a.message for a in actions if isinstance(a, Send) and a.conn == conn]


def register(h: Hub, name: str = "exec-1", capacity: int = 2) -> str:
    conn = h.open(0.0)
    actions = h.receive(conn, json.dumps({"type": "register", "name": name, "capacity": capacity}), 0.0)
    (claim,) = of(actions, Claim)
    assert claim.name == name and claim.record["instance"] == h.instance and claim.record["capacity"] == capacity
    assert sent(h.claimed(conn, "ok", 0.0), conn)[0]["type"] == "registered"
    return conn


def test_a_registration_waits_for_the_shared_claim():
    h = hub()
    conn = h.open(0.0)
    (claim,) = h.receive(conn, json.dumps({"type": "register", "name": "x", "capacity": 1}), 0.0)
    assert isinstance(claim, Claim) and claim.owner is None
    assert "x" not in h.registry.executors
    (error,) = sent(h.claimed(conn, "name_taken", 0.0), conn)
    assert error["code"] == "name_taken"
    assert "x" not in h.registry.executors


def test_an_unreachable_registry_refuses_with_a_code_that_says_so():
    h = hub()
    conn = h.open(0.0)
    h.receive(conn, json.dumps({"type": "register", "name": "x", "capacity": 1}), 0.0)
    (error,) = sent(h.claimed(conn, UNAVAILABLE, 0.0), conn)
    assert error["code"] == "unavailable" and "Redis" in error["message"]


def test_a_claim_answered_after_the_connection_left_gives_the_name_back():
    h = hub()
    conn = h.open(0.0)
    h.receive(conn, json.dumps({"type": "register", "name": "x", "capacity": 1}), 0.0)
    h.close(conn, 0.0)
    assert h.claimed(conn, "ok", 0.0) == [Unclaim("x", conn)]


def test_heartbeats_refresh_the_shared_record():
    h = hub()
    conn = register(h)
    (refresh,) = h.receive(conn, json.dumps({"type": "heartbeat", "load": 0.5, "sessions": 1}), 1.0)
    assert isinstance(refresh, Refresh) and refresh.record["load"] == 0.5 and refresh.record["reported"] == 1


def test_a_client_pairs_with_an_executor_of_another_instance_and_they_relay():
    a, b = hub("A"), hub("B")
    executor = register(b)
    client = a.open(0.0)
    (reserve,) = a.receive(client, json.dumps({"type": "pair", "request": "r1"}), 0.0)
    assert isinstance(reserve, Reserve) and reserve.quota is None
    actions = a.reserved(reserve, Grant("exec-1", "B", executor, {"gpu": False}), 0.0)
    (forward,) = of(actions, Forward)
    assert forward.instance == "B" and forward.conn == executor and forward.message["type"] == "session"
    (paired,) = sent(actions, client)
    assert paired["request"] == "r1" and paired["ticket"] == forward.message["ticket"]

    # Instance B hands the session to its executor, and learns where the client is.
    (to_executor,) = b.deliver("A", executor, forward.message, 0.0, credential=forward.credential)
    assert to_executor == Send(executor, forward.message)
    session = paired["session"]

    offer = {"type": "offer", "session": session, "sdp": "v=0"}
    (out,) = a.receive(client, json.dumps(offer), 0.0)
    assert out == Forward("B", executor, offer)
    assert b.deliver("A", executor, offer, 0.0) == [Send(executor, offer)]

    answer = {"type": "answer", "session": session, "sdp": "v=0"}
    (back,) = b.receive(executor, json.dumps(answer), 0.0)
    assert back == Forward("A", client, answer)
    assert a.deliver("B", client, answer, 0.0) == [Send(client, answer)]

    # The client leaves: the executor hears bye through its instance, and the slot is freed.
    actions = a.close(client, 0.0)
    bye = of(actions, Forward)[0]
    assert bye.instance == "B" and bye.message["type"] == "bye"
    assert of(actions, Release) == [Release("exec-1", session, reserve.credential)]
    assert b.deliver("A", executor, bye.message, 0.0) == [Send(executor, bye.message)]
    assert not b.registry.sessions and not b.registry.executors["exec-1"].sessions


def test_an_executor_that_leaves_says_bye_to_clients_on_other_instances():
    a, b = hub("A"), hub("B")
    executor = register(b)
    client = a.open(0.0)
    (reserve,) = a.receive(client, json.dumps({"type": "pair"}), 0.0)
    forward = of(a.reserved(reserve, Grant("exec-1", "B", executor), 0.0), Forward)[0]
    b.deliver("A", executor, forward.message, 0.0)
    actions = b.close(executor, 0.0)
    (bye,) = of(actions, Forward)
    assert bye.instance == "A" and bye.conn == client and bye.message["type"] == "bye"
    assert of(actions, Release)[0].session == forward.message["session"]
    assert of(actions, Unclaim) == [Unclaim("exec-1", executor, owner="open")]
    (to_client,) = a.deliver("B", client, bye.message, 0.0)
    assert to_client.message["type"] == "bye" and not a.registry.sessions


def test_a_session_for_an_executor_gone_meanwhile_is_answered_with_bye():
    b = hub("B")
    executor = register(b)
    b.close(executor, 0.0)
    session = {"type": "session", "session": "s1", "client": "c1", "ticket": "t"}
    actions = b.deliver("A", executor, session, 0.0, credential="cred")
    assert of(actions, Forward)[0].message == {"type": "bye", "session": "s1", "reason": "executor disconnected"}
    assert of(actions, Release) == [Release("exec-1", "s1", "cred")]


def test_a_reservation_answered_after_the_client_left_is_freed():
    a = hub()
    client = a.open(0.0)
    (reserve,) = a.receive(client, json.dumps({"type": "pair"}), 0.0)
    a.close(client, 0.0)
    assert a.reserved(reserve, Grant("exec-1", "B", "e"), 0.0) == [Release("exec-1", reserve.session, reserve.credential)]


def test_a_refused_reservation_is_the_clients_error():
    a = hub()
    client = a.open(0.0)
    (reserve,) = a.receive(client, json.dumps({"type": "pair", "request": "r"}), 0.0)
    (error,) = sent(a.reserved(reserve, (UNAVAILABLE, "Redis is down"), 0.0), client)
    assert error == {"type": "error", "code": "unavailable", "message": "Redis is down", "request": "r"}


def test_messages_for_sessions_unknown_here_are_dropped():
    a = hub()
    client = a.open(0.0)
    assert a.deliver("B", client, {"type": "answer", "session": "nope", "sdp": "x"}, 0.0) == []


def test_the_envelope_round_trips():
    action = Forward("B", "conn", {"type": "offer", "session": "s", "sdp": "v=0"}, "cred")
    envelope = decode_envelope(encode_envelope("A", action))
    assert (envelope.origin, envelope.conn, envelope.message, envelope.credential) == ("A", "conn", action.message, "cred")


def test_an_executor_whose_name_went_to_another_connection_is_dropped():
    h = hub()
    conn = register(h)
    actions = h.lost(conn, "exec-1", 1.0)
    assert "exec-1" not in h.registry.executors
    assert sent(actions, conn)[0]["code"] == "name_taken"
    assert not of(actions, Unclaim)  # the record is the other connection's
    assert h.lost(conn, "exec-1", 1.0) == []


def test_a_pairing_through_another_instance_hands_out_ice_servers_too():
    from signaling_server.config import ServerConfig

    config = ServerConfig(ice_servers=("turn:turn.example.org:3478?transport=udp",), turn_secret="t" * 32)
    a, b = Hub(config, instance="A", wall_clock=lambda: 1000.0), hub("B")
    executor = register(b)
    client = a.open(0.0)
    (reserve,) = a.receive(client, json.dumps({"type": "pair"}), 0.0)
    actions = a.reserved(reserve, Grant("exec-1", "B", executor, {"gpu": False}), 0.0)
    (forward,) = of(actions, Forward)
    (paired,) = sent(actions, client)
    for message, name in ((forward.message, "exec-1"), (paired, client)):
        (server,) = message["ice_servers"]
        assert server["urls"] == ["turn:turn.example.org:3478?transport=udp"]
        assert server["username"].endswith(f":{name}")  # each end its own credentials
