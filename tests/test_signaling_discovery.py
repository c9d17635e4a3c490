"""
Discovery in the signaling hub (the ``executors`` message), without I/O:
what a client is shown, what it is never shown, and who is refused.

The end-to-end test (real processes, ``remotemedia.discover`` and the CLI)
is tests/test_discovery.py.
"""

from __future__ import annotations

import json

import pytest
from hub_world import World, closes, only

from remotemedia.signaling.messages import EXECUTOR_INFO, MAX_SERVER_MESSAGE, TO_PEER, dump, parse
from remotemedia.tokens import mint_client_token, mint_executor_token
from signaling_server.cluster import UNAVAILABLE, Survey
from signaling_server.hub import (
    LISTING_BURST, LISTING_BYTES_BURST, LISTING_BYTES_RATE, LISTING_RATE, POLICY_VIOLATION, Hub, Send,
)
from signaling_server.registry import ExecutorRecord

SECRET = "k" * 40


def listing(world: World, conn: str | None = None, token: str | None = None, request: str = "q") -> tuple[str, dict, list]:
    """Ask ``world``'s hub for the executors; returns the connection, its one reply and all actions."""
    conn = conn or world.connect()
    message = {"type": "executors", "request": request}
    token = token if token is not None else world.token
    if token is not None:
        message["token"] = token
    actions = world.send(conn, message)
    reply = only(actions, conn)
    assert parse(dump(reply), TO_PEER, max_size=MAX_SERVER_MESSAGE) == reply  # what the hub sends, a client accepts
    return conn, reply, actions


def two_executors(world: World) -> tuple[str, str]:
    cpu = world.executor("cpu-1", capacity=2, services=["demo", "transcribe"], version="0.1.0", accept="any",
                         mode="inprocess")
    gpu = world.executor("gpu-1", capacity=4, gpu=True, models=["tiny.en"], services=["demo"])
    return cpu, gpu


def test_a_client_lists_every_executor_by_name_with_what_it_offers_and_how_busy_it_is():
    world = World(token="t")
    cpu, gpu = two_executors(world)
    world.send(gpu, {"type": "heartbeat", "load": 0.25, "sessions": 1})
    world.pair(world.connect(), {"executor": "cpu-1"})
    _, reply, _ = listing(world)
    assert reply == {
        "type": "executors",
        "request": "q",
        "executors": [
            {"name": "cpu-1", "services": ["demo", "transcribe"], "models": [], "gpu": False, "capacity": 2,
             "free": 1, "load": 0.0, "version": "0.1.0", "accept": "any", "mode": "inprocess"},
            {"name": "gpu-1", "services": ["demo"], "models": ["tiny.en"], "gpu": True, "capacity": 4,
             "free": 3, "load": 0.25, "version": "", "accept": "", "mode": ""},
        ],
    }


def test_the_listing_holds_no_address_connection_id_or_credential():
    world = World(token="t")
    cpu, gpu = two_executors(world)
    client = world.connect()
    paired, _ = world.pair(client)
    asker, reply, _ = listing(world)
    assert all(set(entry) == set(EXECUTOR_INFO.fields) for entry in reply["executors"])
    text = dump(reply)
    for secret in (cpu, gpu, client, asker, paired["session"], paired["ticket"], "t", world.executor_token):
        assert json.dumps(secret) not in text


def test_an_empty_server_lists_nothing_and_the_connection_may_pair_afterwards():
    world = World(token="t")
    conn, reply, _ = listing(world)
    assert reply["executors"] == [] and "truncated" not in reply
    world.executor("late")
    assert world.pair(conn)[0]["type"] == "paired"


def test_an_open_server_lists_to_anyone():
    world = World()
    two_executors(world)
    _, reply, _ = listing(world)
    assert [e["name"] for e in reply["executors"]] == ["cpu-1", "gpu-1"]


# -- who is refused ------------------------------------------------------------------


def test_a_registered_executor_may_not_list_and_stays_registered():
    world = World(token="t")
    cpu, _ = two_executors(world)
    actions = world.send(cpu, {"type": "executors", "request": "q"})
    assert world.error_code(actions, cpu) == "not_allowed"
    assert only(actions, cpu)["request"] == "q" and not closes(actions, cpu)
    assert "cpu-1" in world.hub.registry.executors


def test_the_executor_credential_may_not_list():
    world = World(token="t")
    two_executors(world)
    conn = world.connect()
    actions = world.send(conn, {"type": "executors", "token": world.executor_token})
    assert world.error_code(actions, conn) == "wrong_role"
    assert "cannot pair or list executors" in only(actions, conn)["message"]  # says what it was refused
    assert closes(actions, conn)[0].code == POLICY_VIOLATION


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_missing_or_wrong_token_never_sees_the_list(token):
    world = World(token="t")
    two_executors(world)
    conn = world.connect()
    message = {"type": "executors", "request": "q"} | ({"token": token} if token else {})
    actions = world.send(conn, message)
    assert world.error_code(actions, conn) == "unauthorized"
    assert closes(actions, conn)[0].code == POLICY_VIOLATION
    assert "cpu-1" not in dump(only(actions, conn))


# -- scoped tokens: only what the token may use ----------------------------------------------


def scoped(**scope) -> tuple[World, str]:
    world = World(executor_token="exec-t", token_secret=SECRET)
    world.wall = 1_700_000_000.0
    two_executors(world)
    world.executor("bare-1")  # offers no named service
    return world, mint_client_token(SECRET, now=world.wall, **scope)


def names(reply: dict) -> list[str]:
    return [e["name"] for e in reply["executors"]]


def test_a_token_scoped_to_executors_lists_only_those():
    world, token = scoped(executors=["gpu-1", "gone-1"])
    _, reply, _ = listing(world, token=token)
    assert names(reply) == ["gpu-1"]


def test_a_token_scoped_to_services_sees_only_those_services():
    world, token = scoped(services=["transcribe"])  # object sessions still allowed: every executor is usable
    _, reply, _ = listing(world, token=token)
    assert {e["name"]: e["services"] for e in reply["executors"]} == {
        "bare-1": [], "cpu-1": ["transcribe"], "gpu-1": [],
    }


def test_a_services_only_token_lists_only_executors_that_offer_one_of_them():
    world, token = scoped(services=["transcribe"], objects=False)
    _, reply, _ = listing(world, token=token)
    assert {e["name"]: e["services"] for e in reply["executors"]} == {"cpu-1": ["transcribe"]}


def test_a_token_that_expired_while_connected_lists_no_more():
    world, token = scoped(expires_in=60)
    conn, reply, _ = listing(world, token=token)
    assert len(reply["executors"]) == 3
    world.wall += 60
    actions = world.send(conn, {"type": "executors"})
    assert world.error_code(actions, conn) == "token_expired" and closes(actions, conn)


def test_an_executor_token_minted_by_the_secret_may_not_list():
    world, _ = scoped()
    conn = world.connect()
    actions = world.send(conn, {"type": "executors", "token": mint_executor_token(SECRET)})
    assert world.error_code(actions, conn) == "wrong_role"


# -- limits ----------------------------------------------------------------------------


def test_a_listing_too_large_for_one_message_is_cut_and_says_so():
    world = World()
    services = [f"{i:03d}" + "s" * 124 for i in range(256)]  # about 33 KB per executor
    for i in range(12):
        world.executor(f"e{i:02d}", services=services)
    _, reply, _ = listing(world)
    assert reply["truncated"] is True
    assert 0 < len(reply["executors"]) < 12
    assert len(dump(reply)) <= MAX_SERVER_MESSAGE
    assert names(reply) == sorted(names(reply))


def test_one_connection_asking_again_and_again_is_cut_off():
    # The message rate limit (50 a second) would let one connection keep the hub building listings.
    world = World(token="t")
    two_executors(world)
    conn = world.connect()
    for _ in range(LISTING_BURST):
        listing(world, conn)
    actions = world.send(conn, {"type": "executors", "request": "again"})
    assert world.error_code(actions, conn) == "rate_limited"
    assert only(actions, conn)["request"] == "again" and closes(actions, conn)[0].code == POLICY_VIOLATION
    other = world.connect()
    listing(world, other)  # others are still answered
    world.now += LISTING_BURST / LISTING_RATE
    for _ in range(LISTING_BURST):  # a connection that waits is answered again
        listing(world, other)


def test_listings_of_a_large_fleet_are_bounded_over_all_connections():
    world = World()
    services = [f"{i:03d}" + "s" * 124 for i in range(256)]  # about 33 KB per executor: listings cut to the limit
    for i in range(12):
        world.executor(f"e{i:02d}", services=services)
    answered = 0
    while True:  # new connections each time: the per-connection limit is not what stops them
        conn, reply, _ = listing(world)
        if reply["type"] == "error":
            break
        answered += 1
    assert reply["code"] == "unavailable" and "ask again" in reply["message"]
    assert not closes(world.send(conn, {"type": "executors"}), conn)  # told to retry, not cut off
    # The burst is LISTING_BYTES_BURST bytes of listings: about 32 of the largest.
    assert LISTING_BYTES_BURST // (2 * MAX_SERVER_MESSAGE) <= answered <= LISTING_BYTES_BURST // MAX_SERVER_MESSAGE + 1
    world.now += 2 * MAX_SERVER_MESSAGE / LISTING_BYTES_RATE
    assert listing(world)[1]["type"] == "executors"  # the budget refills with time


def test_registration_announcements_reach_the_paired_client_too():
    world = World()
    two_executors(world)
    paired, _ = world.pair(world.connect(), {"executor": "cpu-1"})
    assert paired["capabilities"] == {
        "gpu": False, "models": [], "services": ["demo", "transcribe"],
        "version": "0.1.0", "accept": "any", "mode": "inprocess",
    }


# -- a cluster: the records live in the shared registry -------------------------------------


def test_a_cluster_instance_surveys_the_shared_registry():
    hub = Hub(instance="A")
    conn = hub.open(0.0)
    (survey,) = hub.receive(conn, json.dumps({"type": "executors", "request": "q"}), 0.0)
    assert survey == Survey(conn, "q")
    far = ExecutorRecord.announced("far-1", "conn-on-B", 3, {"services": ["demo"], "version": "0.1.0"},
                                   load=0.5, reported_sessions=1)
    (send,) = hub.surveyed(survey, [far], 0.0)
    assert send == Send(conn, {
        "type": "executors",
        "request": "q",
        "executors": [{"name": "far-1", "services": ["demo"], "models": [], "gpu": False, "capacity": 3,
                       "free": 2, "load": 0.5, "version": "0.1.0", "accept": "", "mode": ""}],
    })


def test_a_cluster_survey_that_redis_cannot_answer_is_an_error_and_a_gone_client_gets_nothing():
    hub = Hub(instance="A")
    conn = hub.open(0.0)
    (survey,) = hub.receive(conn, json.dumps({"type": "executors", "request": "q"}), 0.0)
    (error,) = hub.surveyed(survey, (UNAVAILABLE, "Redis is unreachable; retry shortly"), 0.0)
    assert error.message == {"type": "error", "code": UNAVAILABLE, "message": "Redis is unreachable; retry shortly",
                             "request": "q"}
    hub.close(conn, 0.0)
    assert hub.surveyed(survey, [], 0.0) == []
