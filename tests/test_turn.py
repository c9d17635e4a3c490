"""
ICE servers handed out by the signaling server, with TURN credentials in
coturn's REST API scheme; the TURN URL a peer connection picks; the route a
session reports. No network namespaces here (tests/test_nat_traversal.py has
the lab); the route is checked on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import socket

import pytest
from harness import config_for
from hub_world import World, only

from remotemedia import RemoteProxyClient
from remotemedia.exceptions import RemoteTimeoutError
from remotemedia.signaling.messages import TO_PEER, validate
from remotemedia.transport.ice import order_ice_servers
from signaling_server.__main__ import _config, parse_args
from signaling_server.config import ServerConfig
from signaling_server.turn import ice_servers_for, turn_credentials

SECRET = "coturn-static-auth-secret"
URLS = ("stun:198.19.0.1:3478", "turn:198.19.0.1:3478?transport=udp", "turn:198.19.0.1:3478?transport=tcp")


def test_turn_credentials_follow_coturns_rest_api_scheme():
    username, credential = turn_credentials(SECRET, "gpu-1", 1_700_000_000)
    assert username == "1700000000:gpu-1"
    # What coturn computes with --use-auth-secret --static-auth-secret=SECRET.
    expected = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected


def test_ice_servers_put_stun_apart_and_give_turn_credentials_that_expire_after_the_ttl():
    servers = ice_servers_for(URLS, SECRET, 600, "client-1", 1000.0)
    assert servers[0] == {"urls": ["stun:198.19.0.1:3478"]}
    turn = servers[1]
    assert turn["urls"] == list(URLS[1:])
    assert turn["username"] == "1600:client-1"
    assert (turn["username"], turn["credential"]) == turn_credentials(SECRET, "client-1", 1600)
    # Without a secret the URLs travel alone (a TURN server with static users, configured by each end).
    assert ice_servers_for(URLS[1:], None, 600, "x", 0.0) == [{"urls": list(URLS[1:])}]


def test_the_hub_gives_each_end_of_a_session_its_own_credentials():
    world = World(token="t", ice_servers=URLS, turn_secret=SECRET, turn_ttl=60)
    executor = world.executor("gpu-1")
    client = world.connect()
    paired, actions = world.pair(client)
    session = only(actions, executor)
    for message in (paired, session):
        assert validate(message, TO_PEER)["ice_servers"] == message["ice_servers"]
    expiry = int(world.wall + 60)
    assert session["ice_servers"][1]["username"] == f"{expiry}:gpu-1"
    assert paired["ice_servers"][1]["username"] == f"{expiry}:{client}"


def test_without_ice_servers_the_messages_carry_none():
    world = World()
    executor = world.executor("gpu-1")
    paired, actions = world.pair(world.connect())
    assert "ice_servers" not in paired and "ice_servers" not in only(actions, executor)


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"ice_servers": ("http://turn.example",)}, "stun: or turn: URL"),
        ({"turn_secret": SECRET}, "give the TURN server's URL"),
        ({"ice_servers": URLS, "turn_ttl": 0}, "turn_ttl"),
    ],
)
def test_bad_ice_settings_are_refused_saying_what_to_do(settings, fragment):
    with pytest.raises(ValueError, match=fragment):
        ServerConfig(**settings)


def test_the_command_line_takes_repeated_ice_servers_and_the_turn_secret():
    config = _config(parse_args(["--ice-server", URLS[1], "--ice-server", URLS[2], "--turn-secret", SECRET, "--turn-ttl", "120"]))
    assert config.ice_servers == URLS[1:] and config.turn_secret == SECRET and config.turn_ttl == 120


class _StunAnswer(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)  # any answer will do: the probe asks only whether one comes


async def test_the_first_turn_url_that_answers_over_udp_is_put_first():
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_StunAnswer, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        servers = [{"urls": [f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp"], "username": "u", "credential": "c"}]
        ordered = await order_ice_servers(["stun:127.0.0.1:1", *servers])
        assert [e["urls"][0] for e in ordered] == ["stun:127.0.0.1:1", *servers[0]["urls"]]
        assert all(e["username"] == "u" for e in ordered[1:])
    finally:
        transport.close()


async def test_where_turn_over_udp_does_not_answer_the_tcp_url_is_put_first():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers: as a firewall that drops UDP
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        ordered = await order_ice_servers([f"turn:127.0.0.1:{port}", f"turn:127.0.0.1:{port}?transport=tcp"], timeout=0.2)
        assert [e["urls"][0] for e in ordered] == [f"turn:127.0.0.1:{port}?transport=tcp", f"turn:127.0.0.1:{port}"]
    finally:
        silent.close()


@pytest.fixture(scope="module")
def cluster_executors():
    return (("--name", "route-exec", "--mode", "inprocess"),)


class Echo:
    def ping(self, value):
        return value


async def test_on_one_host_the_route_is_direct_between_host_candidates(cluster):
    async with RemoteProxyClient(config_for(cluster)) as client:
        remote = await client.create_proxy(Echo())
        assert await remote.ping(1) == 1
        route = client.route
        assert route.kind == "direct"
        assert route.local.startswith("host ") and route.remote.startswith("host ") and route.turn is None
        assert str(route).startswith("direct (host ")
    assert client.route is None  # closed


async def test_a_turn_server_that_cannot_be_reached_does_not_stop_a_direct_connection(cluster):
    # No TURN server listens there: gathering goes on without a relay candidate.
    dead = [{"urls": ["turn:127.0.0.1:9?transport=tcp"], "username": "u", "credential": "c"}]
    config = config_for(cluster, ice_servers=dead, connect_timeout=8.0, reconnect=False)
    async with RemoteProxyClient(config) as client:
        # Host candidates still meet on one machine: the session works without the relay.
        assert client.route.kind == "direct"


def _nowhere(sdp: str) -> str:
    """``sdp`` with its one candidate the discard port on loopback: nothing answers, nothing leaves this machine."""
    sdp = "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=candidate"))
    return sdp.replace("a=end-of-candidates\r\n", "") + "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"


async def test_a_connection_with_no_path_names_its_candidates_and_suggests_ice_servers(cluster, monkeypatch):
    # Both descriptions made useless, as if two NATs were between the ends.
    from remotemedia.signaling import SignalingSession
    from remotemedia.transport import peer

    real_description, real_offer = peer.RTCSessionDescription, SignalingSession.send_offer
    monkeypatch.setattr(peer, "RTCSessionDescription", lambda sdp, kind: real_description(_nowhere(sdp) if kind == "answer" else sdp, kind))
    monkeypatch.setattr(SignalingSession, "send_offer", lambda self, sdp: real_offer(self, _nowhere(sdp)))
    config = config_for(cluster, connect_timeout=4.0, reconnect=False)
    with pytest.raises(RemoteTimeoutError) as caught:
        async with RemoteProxyClient(config):
            pass
    message = str(caught.value)
    assert "no network path" in message and "candidates tried" in message and "host 127.0.0.1:9" in message
    assert "ice_servers" in message and "TURN" in message


def test_the_executor_and_the_embedded_server_take_ice_servers_on_their_command_lines():
    from executor.__main__ import executor_config, parse_args as executor_args
    from remotemedia.__main__ import parse_args as remotemedia_args

    args = executor_args(["--signaling", "ws://127.0.0.1:1/ws", "--ice-server", "stun:198.19.0.1:3478"])
    assert executor_config(args, signaling="ws://127.0.0.1:1/ws", token=None, name="x").ice_servers == ("stun:198.19.0.1:3478",)
    serve = remotemedia_args(["serve", "--ice-server", URLS[1], "--turn-secret", SECRET])
    assert serve.ice_server == [URLS[1]] and serve.turn_secret == SECRET
