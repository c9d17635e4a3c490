"""
Who may do what on the signaling server (signaling_server.auth, through the
hub): separate credentials per role, executor names bound to credentials,
scoped and expiring client tokens, session quotas. No sockets, no sleeps.
"""

from __future__ import annotations

import json

import pytest

from remotemedia.exceptions import (
    AuthenticationError,
    PermissionDeniedError,
    QuotaExceededError,
    TokenExpiredError,
)
from remotemedia.signaling.session import server_error
from remotemedia.signaling.ticket import verify_ticket
from remotemedia.tokens import mint_client_token, mint_executor_token
from signaling_server.config import ServerConfig
from signaling_server.hub import POLICY_VIOLATION, Close, Hub, Send

SECRET = "k" * 40
NOW = 1_700_000_000.0


class World:
    """A hub, its clocks, and peers that speak to it."""

    def __init__(self, **config) -> None:
        self.wall = NOW
        self.now = 0.0
        self.hub = Hub(ServerConfig(**config), wall_clock=lambda: self.wall)

    def send(self, conn, message) -> list:
        return self.hub.receive(conn, json.dumps(message), self.now)

    def register(self, name, token=None, conn=None, **extra):
        conn = conn or self.hub.open(self.now)
        message = {"type": "register", "name": name, "capacity": 4, **extra}
        if token is not None:
            message["token"] = token
        return conn, self.send(conn, message)

    def pair(self, token=None, conn=None, **requirements):
        conn = conn or self.hub.open(self.now)
        message = {"type": "pair", "request": "r"}
        if token is not None:
            message["token"] = token
        if requirements:
            message["requirements"] = requirements
        return conn, self.send(conn, message)


def reply(actions, conn) -> dict:
    messages = [a.message for a in actions if isinstance(a, Send) and a.conn == conn]
    assert len(messages) == 1, actions
    return messages[0]


def closed(actions, conn) -> bool:
    return any(isinstance(a, Close) and a.conn == conn and a.code == POLICY_VIOLATION for a in actions)


def refused(actions, conn, code, *, close) -> str:
    message = reply(actions, conn)
    assert (message["type"], message["code"]) == ("error", code), message
    assert closed(actions, conn) is close
    return message["message"]


# -- separate credentials ----------------------------------------------------------------


def test_a_client_token_can_never_register():
    world = World(token="client-t", executor_token="exec-t")
    conn, actions = world.register("gpu-1", "client-t", capabilities={"gpu": True})
    text = refused(actions, conn, "wrong_role", close=True)
    assert "client credential cannot register" in text and "--executor-token" in text
    assert world.hub.health()["executors"] == 0


def test_a_single_token_setup_runs_but_refuses_its_executors_saying_what_to_add():
    world = World(token="only-one")
    conn, actions = world.register("gpu-1", "only-one")
    text = refused(actions, conn, "wrong_role", close=True)
    assert "no executor credential configured" in text and "--executor-token" in text
    # Clients still authenticate with it (and find no executor).
    client, actions = world.pair("only-one")
    assert refused(actions, client, "no_executor", close=False)


def test_an_executor_credential_cannot_pair():
    world = World(token="client-t", executor_token="exec-t")
    conn, actions = world.pair("exec-t")
    assert "executor credential cannot pair" in refused(actions, conn, "wrong_role", close=True)


def test_each_role_with_its_own_credential_and_a_ticket_no_credential_can_mint():
    world = World(token="client-t", executor_token="exec-t", token_secret=SECRET)
    executor, actions = world.register("gpu-1", "exec-t")
    assert reply(actions, executor)["type"] == "registered"
    client, actions = world.pair("client-t")
    paired = reply(actions, client)
    assert reply(actions, executor)["ticket"] == paired["ticket"]
    for secret in ("client-t", "exec-t", SECRET, None):
        assert not verify_ticket(secret, paired["ticket"], paired["session"], client, "gpu-1")


def test_two_hubs_sign_with_different_secrets():
    tickets = []
    for _ in range(2):
        world = World(executor_token="exec-t")
        world.register("gpu-1", "exec-t")
        client, actions = world.pair()
        tickets.append(reply(actions, client)["ticket"])
    assert tickets[0] != tickets[1]


def test_a_server_with_only_an_executor_credential_is_open_to_clients_only():
    world = World(executor_token="exec-t")
    conn, actions = world.register("gpu-1")
    assert "no token" in refused(actions, conn, "unauthorized", close=True)
    conn, actions = world.register("gpu-1", "guess")
    refused(actions, conn, "unauthorized", close=True)
    world.register("gpu-1", "exec-t")
    client, actions = world.pair(token="anything")
    assert reply(actions, client)["type"] == "paired"
    # An anonymous client is still a client.
    _, actions = world.register("gpu-2", conn=client)
    refused(actions, client, "not_allowed", close=False)


def test_a_server_with_no_credential_at_all_is_open_to_both_roles():
    world = World()
    executor, actions = world.register("gpu-1")
    assert reply(actions, executor)["type"] == "registered"
    client, actions = world.pair()
    assert reply(actions, client)["type"] == "paired"


@pytest.mark.parametrize(
    "kwargs",
    [{"token": "same", "executor_token": "same"}, {"executor_token": ""}, {"token_secret": "short"}, {"token_secret": 5}],
)
def test_server_config_refuses_unsafe_credentials(kwargs):
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)


# -- signed executor tokens and executor names -----------------------------------------------


def test_a_signed_client_token_cannot_register_either():
    world = World(token_secret=SECRET)
    conn, actions = world.register("gpu-1", mint_client_token(SECRET))
    refused(actions, conn, "wrong_role", close=True)


def test_an_executor_token_for_a_name_registers_only_that_name():
    world = World(token_secret=SECRET)
    token = mint_executor_token(SECRET, name="gpu-1")
    conn, actions = world.register("gpu-2", token)
    assert "for the name 'gpu-1'" in refused(actions, conn, "forbidden", close=False)
    _, actions = world.register("gpu-1", token, conn=conn)
    assert reply(actions, conn)["type"] == "registered"


def test_a_name_stays_with_its_credential_through_a_reconnection_window():
    world = World(token_secret=SECRET, signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=2.0)
    owner, other = mint_executor_token(SECRET), mint_executor_token(SECRET)
    first, _ = world.register("gpu-1", owner)
    world.hub.close(first, world.now)  # the executor lost its connection
    conn, actions = world.register("gpu-1", other)
    assert "belongs to another executor credential" in refused(actions, conn, "name_owned", close=False)
    # A client asking for it by name meanwhile is not handed to anyone else.
    client, actions = world.pair(mint_client_token(SECRET), executor="gpu-1")
    refused(actions, client, "no_executor", close=False)
    again, actions = world.register("gpu-1", owner)
    assert reply(actions, again)["type"] == "registered"


def test_a_name_freed_by_missed_heartbeats_is_still_owned():
    world = World(token_secret=SECRET, signaling_heartbeat_interval=1.0, signaling_heartbeat_timeout=2.0)
    owner, other = mint_executor_token(SECRET), mint_executor_token(SECRET)
    world.register("gpu-1", owner)
    world.now = 10.0
    world.hub.tick(world.now)
    assert world.hub.health()["executors"] == 0
    conn, actions = world.register("gpu-1", other)
    refused(actions, conn, "name_owned", close=False)


def test_unregistering_gives_the_name_up():
    world = World(token_secret=SECRET)
    owner, other = mint_executor_token(SECRET), mint_executor_token(SECRET)
    conn, _ = world.register("gpu-1", owner)
    assert reply(world.send(conn, {"type": "unregister"}), conn)["type"] == "unregistered"
    taker, actions = world.register("gpu-1", other)
    assert reply(actions, taker)["type"] == "registered"


def test_a_token_minted_for_the_name_takes_it_from_a_nameless_owner():
    world = World(token_secret=SECRET)
    first, _ = world.register("gpu-1", mint_executor_token(SECRET))
    world.hub.close(first, world.now)
    conn, actions = world.register("gpu-1", mint_executor_token(SECRET, name="gpu-1"))
    assert reply(actions, conn)["type"] == "registered"


def test_a_live_name_is_taken_whoever_asks():
    world = World(executor_token="exec-t")
    world.register("gpu-1", "exec-t")
    conn, actions = world.register("gpu-1", "exec-t")
    refused(actions, conn, "name_taken", close=False)


# -- scoped, expiring client tokens --------------------------------------------------------------


def scoped_world(**scope):
    world = World(executor_token="exec-t", token_secret=SECRET)
    world.register("cpu-1", "exec-t", capabilities={"services": ["demo", "transcribe"]})
    world.register("gpu-1", "exec-t", capabilities={"gpu": True, "services": ["demo", "transcribe"]})
    return world, mint_client_token(SECRET, now=NOW, **scope)


def test_an_expired_token_is_refused_and_the_connection_closed():
    world, token = scoped_world(expires_in=60)
    world.wall = NOW + 61
    conn, actions = world.pair(token)
    assert "expired" in refused(actions, conn, "token_expired", close=True)


def test_a_token_that_expires_while_connected_pairs_no_more():
    world, token = scoped_world(expires_in=60)
    conn, actions = world.pair(token)
    assert reply(actions, conn)["type"] == "paired"
    world.wall = NOW + 60
    _, actions = world.pair(conn=conn)
    refused(actions, conn, "token_expired", close=True)


def test_a_service_outside_the_scope_is_forbidden_and_the_connection_stays():
    world, token = scoped_world(services=["demo"], objects=False)
    conn, actions = world.pair(token, service="transcribe")
    assert "does not allow the service 'transcribe'" in refused(actions, conn, "forbidden", close=False)
    _, actions = world.pair(conn=conn)  # an object session: Python objects are not in the scope
    assert "named services only" in refused(actions, conn, "forbidden", close=False)
    _, actions = world.pair(conn=conn, service="demo")
    assert reply([a for a in actions if a.conn == conn], conn)["type"] == "paired"


def test_gpu_and_executors_outside_the_scope_are_forbidden():
    world, token = scoped_world(gpu=False, executors=["cpu-1"])
    conn, actions = world.pair(token, gpu=True)
    assert "GPU" in refused(actions, conn, "forbidden", close=False)
    _, actions = world.pair(conn=conn, executor="gpu-1")
    assert "'gpu-1'" in refused(actions, conn, "forbidden", close=False)


def test_the_allowed_executors_limit_the_choice():
    world, token = scoped_world(executors=["gpu-1"])
    conn = None
    for _ in range(4):  # gpu-1 fills up; cpu-1, with more free slots, is never chosen
        conn, actions = world.pair(token, conn=conn)
        assert reply([a for a in actions if a.conn == conn], conn)["executor"] == "gpu-1"
    _, actions = world.pair(conn=conn)
    assert "matching executors are at capacity" in refused(actions, conn, "no_executor", close=False)


def test_a_quota_counts_open_sessions_over_all_connections_of_the_token():
    world, token = scoped_world(max_sessions=2)
    a, actions = world.pair(token)
    first = reply([x for x in actions if x.conn == a], a)["session"]
    b, _ = world.pair(token)
    c, actions = world.pair(token)
    assert "2 open sessions" in refused(actions, c, "quota_exceeded", close=False)
    # Another token has its own quota.
    d, actions = world.pair(mint_client_token(SECRET, now=NOW, max_sessions=2))
    assert reply([x for x in actions if x.conn == d], d)["type"] == "paired"
    world.send(a, {"type": "bye", "session": first})  # a slot comes back
    _, actions = world.pair(conn=c)
    assert reply([x for x in actions if x.conn == c], c)["type"] == "paired"
    world.hub.close(b, world.now)  # so does a disconnect's
    _, actions = world.pair(conn=c)
    assert reply([x for x in actions if x.conn == c], c)["type"] == "paired"
    _, actions = world.pair(conn=c)
    refused(actions, c, "quota_exceeded", close=False)


def test_a_token_signed_with_another_secret_is_unauthorized():
    world, _ = scoped_world()
    conn, actions = world.pair(mint_client_token("x" * 40))
    assert "signature" in refused(actions, conn, "unauthorized", close=True)


# -- what the client raises ------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, cls",
    [
        ("unauthorized", AuthenticationError),
        ("token_expired", TokenExpiredError),
        ("wrong_role", PermissionDeniedError),
        ("forbidden", PermissionDeniedError),
        ("quota_exceeded", QuotaExceededError),
    ],
)
def test_each_refusal_is_a_named_error_on_the_client(code, cls):
    error = server_error({"type": "error", "code": code, "message": "why"})
    assert type(error) is cls and error.code == code and "why" in str(error)
