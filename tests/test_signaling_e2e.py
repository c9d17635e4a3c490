"""
End to end: the real signaling server as a subprocess, executors and clients
played by raw websocket clients.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import ROOT, running_server, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from remotemedia.signaling.ticket import verify_ticket

TIMEOUT = 5.0


@pytest.fixture
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def shared_server():
    """One server for tests that leave no state behind (they pair with requirements nobody meets)."""
    with running_server() as srv:
        yield srv


def ws_connect(server):
    return connect(server.url, compression=None, open_timeout=TIMEOUT, max_size=2**22)


async def send(ws, message) -> None:
    await ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))


async def recv(ws, timeout: float = TIMEOUT) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def expect_error(ws, code: str) -> dict:
    message = await recv(ws)
    assert message["type"] == "error", message
    assert message["code"] == code, message
    assert message["message"]
    return message


async def expect_closed(ws, code: int, timeout: float = TIMEOUT) -> None:
    """Drain the socket until the server closes it; check the close code."""
    async def drain():
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()

    await asyncio.wait_for(drain(), timeout)
    assert ws.close_code == code


async def register(ws, name: str, capacity: int = 4, token: str | None = None, **caps) -> dict:
    message = {"type": "register", "name": name, "capacity": capacity}
    if caps:
        message["capabilities"] = caps
    if token is not None:
        message["token"] = token
    await send(ws, message)
    reply = await recv(ws)
    assert reply["type"] == "registered", reply
    assert reply["name"] == name
    return reply


async def pair(client, executor_ws=None, requirements=None, token=None) -> tuple[dict, dict | None]:
    """Pair; returns (paired, session) where session is what ``executor_ws`` got."""
    message = {"type": "pair", "request": "r1"}
    if requirements is not None:
        message["requirements"] = requirements
    if token is not None:
        message["token"] = token
    await send(client, message)
    paired = await recv(client)
    assert paired["type"] == "paired", paired
    assert paired["request"] == "r1"
    session = None
    if executor_ws is not None:
        session = await recv(executor_ws)
        assert session["type"] == "session"
        assert session["session"] == paired["session"]
    return paired, session


async def still_served(server) -> None:
    """Another connection can register, pair and relay: the server still serves."""
    name = f"probe-{random.getrandbits(32)}"
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, name, capacity=1, models=[name])
        paired, session = await pair(client, executor, {"model": name})
        await send(client, {"type": "offer", "session": paired["session"], "sdp": "v=0"})
        assert (await recv(executor))["sdp"] == "v=0"


# -- pairing -------------------------------------------------------------------------


async def test_pairing_tells_both_ends_with_the_same_signed_ticket():
    with running_server("--token", "s3cret", "--executor-token", "exec-s3cret") as server:
        async with ws_connect(server) as executor, ws_connect(server) as client:
            await register(executor, "gpu-1", capacity=2, token="exec-s3cret", gpu=True)
            paired, session = await pair(client, executor, token="s3cret")
            assert paired["executor"] == "gpu-1"
            assert paired["capabilities"] == {"gpu": True, "models": [], "services": []}
            assert session["client"] == paired["client"]
            assert session["ticket"] == paired["ticket"]
            # Signed with the server's own secret, not with a token either end holds.
            for secret in ("s3cret", "exec-s3cret", None):
                assert not verify_ticket(secret, paired["ticket"], paired["session"], paired["client"], "gpu-1")
            assert server.health() == {"status": "ok", "executors": 1, "sessions": 1}


async def test_the_executor_with_most_free_capacity_is_chosen(server):
    async with ws_connect(server) as small, ws_connect(server) as big, ws_connect(server) as client:
        await register(small, "small", capacity=2)
        await register(big, "big", capacity=4)
        chosen = []
        for _ in range(6):
            paired, _ = await pair(client)
            chosen.append(paired["executor"])
            # Drain the session message of whichever executor got it.
            await recv(big if paired["executor"] == "big" else small)
        # big: 4 free vs 2 -> big, big (3 vs 2 -> big; 2 vs 2 tie -> earlier registered, small)...
        assert chosen.count("big") == 4 and chosen.count("small") == 2
        assert chosen[0] == "big"
        assert server.health()["sessions"] == 6


async def test_exhausted_capacity_says_no_executor_and_keeps_the_socket(server):
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, "only", capacity=1)
        paired, _ = await pair(client, executor)
        await send(client, {"type": "pair", "request": "again"})
        error = await expect_error(client, "no_executor")
        assert error["request"] == "again"
        assert "capacity" in error["message"]
        # Free the slot; the same socket pairs again.
        await send(client, {"type": "bye", "session": paired["session"]})
        bye = await recv(executor)
        assert bye == {"type": "bye", "session": paired["session"]}
        await pair(client, executor)


async def test_no_executor_at_all_says_how_to_start_one(server):
    async with ws_connect(server) as client:
        await send(client, {"type": "pair"})
        error = await expect_error(client, "no_executor")
        assert "python -m executor" in error["message"]
        await still_served(server)


@pytest.mark.parametrize(
    "requirements, expected",
    [
        ({"gpu": True}, "gpu-box"),
        ({"service": "edges"}, "svc-box"),
        ({"model": "tiny.en"}, "gpu-box"),
        ({"executor": "plain"}, "plain"),
        ({"gpu": True, "service": "edges"}, None),
        ({"model": "missing"}, None),
    ],
)
async def test_requirements_match_capabilities(server, requirements, expected):
    async with ws_connect(server) as plain, ws_connect(server) as gpu, ws_connect(server) as svc, ws_connect(
        server
    ) as client:
        await register(plain, "plain", capacity=8)
        await register(gpu, "gpu-box", capacity=1, gpu=True, models=["tiny.en"])
        await register(svc, "svc-box", capacity=1, services=["edges", "blur"])
        await send(client, {"type": "pair", "requirements": requirements})
        reply = await recv(client)
        if expected is None:
            assert reply["type"] == "error" and reply["code"] == "no_executor"
            assert "matches" in reply["message"]
        else:
            assert reply["type"] == "paired" and reply["executor"] == expected
            ws = {"plain": plain, "gpu-box": gpu, "svc-box": svc}[expected]
            session = await recv(ws)
            assert session["requirements"] == requirements


# -- relay ---------------------------------------------------------------------------


async def test_offer_answer_candidates_and_bye_are_relayed_both_ways(server):
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, "e", capacity=1)
        paired, _ = await pair(client, executor)
        sid = paired["session"]
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n" + "a=x\r\n" * 100
        await send(client, {"type": "offer", "session": sid, "sdp": sdp, "extra": "dropped"})
        assert await recv(executor) == {"type": "offer", "session": sid, "sdp": sdp}
        await send(executor, {"type": "answer", "session": sid, "sdp": "v=0 answer"})
        assert await recv(client) == {"type": "answer", "session": sid, "sdp": "v=0 answer"}
        candidate = {"candidate": "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
        await send(client, {"type": "candidate", "session": sid, "candidate": candidate})
        assert (await recv(executor))["candidate"] == candidate
        await send(executor, {"type": "candidate", "session": sid, "candidate": None})
        assert await recv(client) == {"type": "candidate", "session": sid, "candidate": None}
        await send(executor, {"type": "bye", "session": sid, "reason": "done"})
        assert await recv(client) == {"type": "bye", "session": sid, "reason": "done"}
        await wait_until(lambda: server.health()["sessions"] == 0)
        # The session is gone: relaying into it is refused.
        await send(client, {"type": "offer", "session": sid, "sdp": "v=0"})
        await expect_error(client, "unknown_session")


async def test_relay_into_a_foreign_session_is_refused(server):
    async with ws_connect(server) as executor, ws_connect(server) as client, ws_connect(server) as intruder:
        await register(executor, "e", capacity=2)
        paired, _ = await pair(client, executor)
        await pair(intruder, executor)
        await send(intruder, {"type": "offer", "session": paired["session"], "sdp": "v=0 evil"})
        error = await expect_error(intruder, "unknown_session")
        assert error["session"] == paired["session"]
        # Nothing reached the executor of that session: its next message is ours.
        await send(client, {"type": "offer", "session": paired["session"], "sdp": "v=0 good"})
        assert (await recv(executor))["sdp"] == "v=0 good"


async def test_client_disconnect_sends_bye_to_the_executor(server):
    async with ws_connect(server) as executor:
        await register(executor, "e", capacity=2)
        async with ws_connect(server) as client:
            paired, _ = await pair(client, executor)
        bye = await recv(executor)
        assert bye["type"] == "bye" and bye["session"] == paired["session"]
        assert "client disconnected" in bye["reason"]
        await wait_until(lambda: server.health() == {"status": "ok", "executors": 1, "sessions": 0})


async def test_executor_disconnect_sends_bye_to_its_clients(server):
    async with ws_connect(server) as client:
        async with ws_connect(server) as executor:
            await register(executor, "e", capacity=2)
            paired, _ = await pair(client, executor)
        bye = await recv(client)
        assert bye["type"] == "bye" and bye["session"] == paired["session"]
        assert "'e' disconnected" in bye["reason"]
        await wait_until(lambda: server.health() == {"status": "ok", "executors": 0, "sessions": 0})
        await send(client, {"type": "pair"})
        await expect_error(client, "no_executor")


async def test_unregister_ends_sessions_and_keeps_the_connection(server):
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, "e", capacity=2)
        paired, _ = await pair(client, executor)
        await send(executor, {"type": "unregister"})
        assert (await recv(executor))["type"] == "unregistered"
        bye = await recv(client)
        assert bye["type"] == "bye" and "unregistered" in bye["reason"]
        await register(executor, "e", capacity=2)


# -- heartbeats and timeouts ---------------------------------------------------------


async def test_silent_executor_is_dropped_and_its_sessions_get_bye():
    with running_server("--heartbeat-timeout", "0.6") as server:
        async with ws_connect(server) as executor, ws_connect(server) as client:
            reply = await register(executor, "mute", capacity=1)
            assert reply["heartbeat_timeout"] == 0.6 and reply["heartbeat_interval"] == pytest.approx(0.2)
            paired, _ = await pair(client, executor)
            bye = await recv(client)
            assert bye["type"] == "bye" and bye["session"] == paired["session"]
            assert "heartbeat" in bye["reason"]
            # The executor receives the session's end, then its own error.
            await expect_error(executor, "heartbeat_timeout")
            await expect_closed(executor, 1008)
            assert server.health()["executors"] == 0


async def test_heartbeats_keep_an_executor_registered():
    with running_server("--heartbeat-timeout", "0.6") as server:
        async with ws_connect(server) as executor:
            await register(executor, "alive", capacity=1)
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                await send(executor, {"type": "heartbeat", "load": 0.0, "sessions": 0})
                # Waiting for a message that must not come is the pacing.
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(executor.recv(), 0.1)
            assert server.health()["executors"] == 1


async def test_connection_that_never_says_hello_is_closed():
    with running_server("--hello-timeout", "0.5") as server:
        async with ws_connect(server) as idle:
            await expect_error(idle, "hello_timeout")
            await expect_closed(idle, 1008)
        await still_served(server)


# -- tokens --------------------------------------------------------------------------


@pytest.fixture(params=["flag", "env"])
def token_server(request):
    if request.param == "flag":
        ctx = running_server("--token", "s3cret", "--executor-token", "exec-s3cret")
    else:
        ctx = running_server(env={"REMOTEMEDIA_TOKEN": "s3cret", "REMOTEMEDIA_EXECUTOR_TOKEN": "exec-s3cret"})
    with ctx as srv:
        yield srv


@pytest.mark.parametrize(
    "first",
    [
        {"type": "pair"},
        {"type": "pair", "token": "wrong"},
        {"type": "register", "name": "e", "capacity": 1},
        {"type": "register", "name": "e", "capacity": 1, "token": "s3cre"},
        {"type": "heartbeat", "load": 0, "sessions": 0},
        {"type": "offer", "session": "x", "sdp": "v=0"},
        "not json",
    ],
)
async def test_token_server_refuses_anything_but_a_right_token_first(token_server, first):
    async with ws_connect(token_server) as ws:
        await send(ws, first)
        await expect_error(ws, "unauthorized")
        await expect_closed(ws, 1008)
    assert token_server.health()["executors"] == 0


async def test_token_server_accepts_the_right_token(token_server):
    async with ws_connect(token_server) as executor, ws_connect(token_server) as client:
        await register(executor, "e", capacity=1, token="exec-s3cret")
        await send(executor, {"type": "heartbeat", "load": 0.5, "sessions": 0})  # no token needed now
        await pair(client, executor, token="s3cret")


# -- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, code",
    [
        ("{not json", "bad_json"),
        ('{"type": "pair", "x": NaN}', "bad_json"),
        ("[1, 2]", "bad_message"),
        ('"pair"', "bad_message"),
        ("3", "bad_message"),
        ("{}", "bad_message"),
        ('{"type": 7}', "bad_message"),
        ('{"type": "teleport"}', "unknown_type"),
        ('{"type": "register", "capacity": 1}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": "1"}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": true}', "bad_message"),
        ('{"type": "register", "name": "e", "capacity": 0}', "bad_message"),
        ('{"type": "register", "name": "a\\u0000b", "capacity": 1}', "bad_message"),
        ('{"type": "pair", "requirements": {"gpu": "yes"}}', "bad_message"),
        ('{"type": "offer", "session": "s"}', "bad_message"),
        ('{"type": "candidate", "session": "s", "candidate": 5}', "bad_message"),
        (b"\x00\x01binary", "bad_message"),
        ("x" * 70_000, "too_large"),
        ('{"type": "offer", "session": "nope", "sdp": "v=0"}', "unknown_session"),
    ],
)
async def test_bad_input_gets_an_error_and_the_socket_stays_open(shared_server, message, code):
    async with ws_connect(shared_server) as ws:
        await send(ws, message)
        await expect_error(ws, code)
        # Still open and usable on the same socket.
        await send(ws, {"type": "pair", "requirements": {"model": "nobody-has-this"}})
        await expect_error(ws, "no_executor")
    await still_served(shared_server)


async def test_role_misuse_is_not_allowed(server):
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, "e", capacity=1)
        await send(executor, {"type": "pair"})
        await expect_error(executor, "not_allowed")
        await send(executor, {"type": "register", "name": "e2", "capacity": 1})
        await expect_error(executor, "not_allowed")
        await send(client, {"type": "register", "name": "e", "capacity": 1})
        await expect_error(client, "name_taken")
        await send(client, {"type": "pair"})
        await recv(client)
        await send(client, {"type": "heartbeat", "load": 0, "sessions": 0})
        await expect_error(client, "not_allowed")


async def test_a_huge_message_closes_only_that_socket(server):
    async with ws_connect(server) as ws:
        await send(ws, "x" * 300_000)
        await expect_closed(ws, 1009)
    await still_served(server)


async def test_flooding_is_rate_limited():
    with running_server("--rate-limit", "5", "--rate-burst", "10") as server:
        async with ws_connect(server) as ws:
            for _ in range(30):
                try:
                    await send(ws, {"type": "pair"})
                except ConnectionClosed:
                    break
            codes = []
            with pytest.raises(ConnectionClosed):
                while True:
                    codes.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["code"])
            assert codes.count("no_executor") == 10
            assert codes[-1] == "rate_limited"
            assert ws.close_code == 1008
        await still_served(server)


async def test_too_many_sessions_per_client():
    with running_server("--max-sessions-per-client", "2") as server:
        async with ws_connect(server) as executor, ws_connect(server) as client:
            await register(executor, "e", capacity=10)
            await pair(client, executor)
            await pair(client, executor)
            await send(client, {"type": "pair"})
            await expect_error(client, "too_many_sessions")


def _malformed(rng: random.Random) -> str | bytes:
    valid = [
        {"type": "register", "name": "e", "capacity": 1, "capabilities": {"gpu": True}},
        {"type": "heartbeat", "load": 0.1, "sessions": 1},
        {"type": "pair", "requirements": {"gpu": True}, "request": "r"},
        {"type": "offer", "session": "s", "sdp": "v=0"},
        {"type": "answer", "session": "s", "sdp": "v=0"},
        {"type": "candidate", "session": "s", "candidate": {"candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0}},
        {"type": "bye", "session": "s"},
        {"type": "unregister"},
    ]
    junk = [None, True, -1, 2**70, 1.5, "", "\x00\x1f", "é" * 50, [], [None], {}, {"a": {"b": []}}, "x" * 5000]
    kind = rng.randrange(9)
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(1, 300)))
    if kind == 2:
        return json.dumps(rng.choice(junk))
    if kind == 3:
        return "[" * rng.randrange(1000, 50_000)
    if kind == 4:  # a field deleted
        message = dict(rng.choice(valid))
        del message[rng.choice([k for k in message if k != "type"] or ["type"])]
        return json.dumps(message)
    if kind == 5:  # a field replaced by junk
        message = dict(rng.choice(valid))
        message[rng.choice(list(message))] = rng.choice(junk)
        return json.dumps(message)
    if kind == 6:  # relay into a random session
        return json.dumps({"type": rng.choice(["offer", "answer", "bye"]), "session": str(rng.getrandbits(64)), "sdp": "v=0"})
    if kind == 7:  # truncated JSON
        text = json.dumps(rng.choice(valid))
        return text[: rng.randrange(1, len(text))]
    return "x" * rng.randrange(65_537, 200_000)  # too large


async def test_randomized_malformed_messages_leave_the_server_serving():
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    with running_server("--rate-limit", "100000", "--rate-burst", "100000") as server:
        sent = closes = 0
        while sent < 600:
            async with ws_connect(server) as ws:
                try:
                    # Half the connections are executors, half clients.
                    if rng.random() < 0.5:
                        await send(ws, {"type": "register", "name": f"fuzz-{sent}", "capacity": 2})
                    else:
                        await send(ws, {"type": "pair"})
                    for _ in range(100):
                        await send(ws, _malformed(rng))
                        sent += 1
                    # Everything sent gets an answer before this one does.
                    await send(ws, {"type": "offer", "session": "probe", "sdp": "v=0"})
                    while (await recv(ws)).get("session") != "probe":
                        pass
                except ConnectionClosed:
                    closes += 1
        print(f"{sent} messages sent, {closes} connections closed by the server")
        assert server.alive
        assert "Traceback" not in server.log()
        health = server.health()
        assert health["status"] == "ok"
        await still_served(server)
        _, _, metrics = server.get("/metrics")
        assert 'remotemedia_signaling_errors_total{code="bad_json"}' in metrics


# -- health, metrics and the process -------------------------------------------------


async def test_metrics_count_what_happened(server):
    async with ws_connect(server) as executor, ws_connect(server) as client:
        await register(executor, "e", capacity=3)
        paired, _ = await pair(client, executor)
        await send(client, {"type": "offer", "session": paired["session"], "sdp": "v=0"})
        await recv(executor)
        await send(client, "nope")
        await expect_error(client, "bad_json")
        status, content_type, body = server.get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    lines = set(body.splitlines())
    assert "remotemedia_signaling_executors 1.0" in lines
    assert "remotemedia_signaling_sessions 1.0" in lines
    assert "remotemedia_signaling_capacity 3.0" in lines
    assert "remotemedia_signaling_pairings_total 1.0" in lines
    assert 'remotemedia_signaling_relayed_messages_total{type="offer"} 1.0' in lines
    assert 'remotemedia_signaling_relayed_messages_total{type="answer"} 0.0' in lines
    assert 'remotemedia_signaling_errors_total{code="bad_json"} 1.0' in lines


def test_sigterm_stops_the_server_cleanly():
    with running_server() as server:
        assert server.health() == {"status": "ok", "executors": 0, "sessions": 0}
        assert server.stop() == 0


def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "signaling_server", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_bad_settings_are_refused():
    result = subprocess.run(
        [sys.executable, "-m", "signaling_server", "--heartbeat-timeout", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert "heartbeat_timeout" in result.stderr or "heartbeat_interval" in result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "remotemedia-signaling"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert "--token" in result.stdout and "REMOTEMEDIA_TOKEN" in result.stdout
