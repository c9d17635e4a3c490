"""
Across NATs and firewalls, in the network lab of tests/netlab.py: a client
and an executor each behind its own symmetric NAT, the signaling server and
coturn on the "public" network. The signaling server hands both ends TURN
URLs over UDP and TCP with credentials minted from coturn's shared secret
(``--ice-server``, ``--turn-secret``); nothing in the client's code names a
TURN server.

The client runs inside its namespace (tests/nat_client.py) and prints what
it saw as JSON. Every test builds its own lab and always tears it down.
Without root, ``ip``, ``iptables`` or ``turnserver`` these tests are skipped,
saying which; with ``REMOTEMEDIA_REQUIRE_NETLAB=1`` (set by ``./run test``
where it could install them) they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
from harness import EXECUTOR_TOKEN, ROOT, TOKEN, ManagedProcess
from netlab import PUBLIC_IP, Lab, Turn, unavailable

_WHY = unavailable()
if _WHY is not None and os.environ.get("REMOTEMEDIA_REQUIRE_NETLAB") == "1":
    raise RuntimeError(f"REMOTEMEDIA_REQUIRE_NETLAB=1, yet {_WHY}")
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")

#: The client's settings; heartbeats as in tests/test_remote_reconnect.py.
CLIENT = {"auth_token": TOKEN, "timeout": 20.0, "connect_timeout": 15.0, "heartbeat_interval": 0.5, "heartbeat_timeout": 3.0}


@contextlib.contextmanager
def nat_lab(*, turn: bool = True, stun: bool = False, symmetric: bool = True):
    """
    A lab (its NATs ``symmetric`` or not), coturn, a signaling server handing out its
    TURN URLs (with ``turn``) or its STUN URL (with ``stun``), and an executor behind natB.
    """
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(Lab(symmetric=symmetric))
        server_args = ["--host", PUBLIC_IP, "--port", "0", "--token", TOKEN, "--executor-token", EXECUTOR_TOKEN]
        relay = None
        if turn or stun:
            relay = Turn(lab)  # coturn answers STUN too
        if stun:
            server_args += ["--ice-server", relay.stun_url]
        if turn:
            for url in relay.urls("udp", "tcp"):
                server_args += ["--ice-server", url]
            server_args += [f"--turn-secret={relay.secret}"]  # "=": a urlsafe secret may begin with "-"
        server = ManagedProcess(
            "signaling_server", server_args, "remotemedia-signaling listening on ", command_prefix=tuple(lab.exec_prefix("pub"))
        )
        stack.callback(server.stop)
        port = int(server.ready.rsplit(":", 1)[1].split("/")[0])
        executor = ManagedProcess(
            "executor",
            ["--signaling", f"ws://{PUBLIC_IP}:{port}/ws", "--executor-token", EXECUTOR_TOKEN, "--name", "natted",
             "--mode", "inprocess"],
            "remotemedia-executor ",
            command_prefix=tuple(lab.exec_prefix("executor")),
        )
        stack.callback(executor.stop)
        yield lab, relay, port, executor


def client_settings(port: int, **overrides) -> dict:
    return {"host": PUBLIC_IP, "port": port, **CLIENT, **overrides}


def run_client(lab: Lab, scenario: str, settings: dict, *, role: str = "client", timeout: float = 90) -> dict:
    """Run tests/nat_client.py in ``role``'s namespace; its last JSON line."""
    done = subprocess.run(
        [*lab.exec_prefix(role), sys.executable, "tests/nat_client.py", scenario, json.dumps(settings)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the client printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return json.loads(lines[-1])


def check_session(seen: dict) -> None:
    assert "error" not in seen, seen["error"]
    assert seen["answer"] == "through the NATs"
    assert seen["doubled"] == [2 * i for i in range(20)]
    assert seen["audio_samples"] == 8000  # 0.5 s at 16 kHz, every sample back over the audio track


def test_behind_two_nats_a_session_relays_through_turn_over_udp():
    with nat_lab() as (lab, turn, port, executor):
        seen = run_client(lab, "session", client_settings(port, media_tracks=1))
        check_session(seen)
        assert seen["route"] == "relay", seen["detail"]
        assert "transport=udp" in seen["detail"]
        assert "ALLOCATE" in turn.log() and "success" in turn.log()


def test_where_udp_is_blocked_the_session_relays_through_turn_over_tcp():
    with nat_lab() as (lab, turn, port, executor):
        lab.block_udp("client")
        lab.block_udp("executor")
        seen = run_client(lab, "session", client_settings(port, media_tracks=1))
        check_session(seen)
        assert seen["route"] == "relay", seen["detail"]
        assert "transport=tcp" in seen["detail"]


def test_on_one_network_the_route_is_direct_though_turn_is_offered():
    with nat_lab() as (lab, turn, port, executor):
        # The client beside the executor, on its LAN: host candidates meet.
        seen = run_client(lab, "connect", client_settings(port), role="executor")
        assert seen["route"] == "direct", seen


def test_behind_nats_that_keep_ports_stun_alone_connects():
    with nat_lab(turn=False, stun=True, symmetric=False) as (lab, turn, port, executor):
        seen = run_client(lab, "connect", client_settings(port))
        assert seen["route"] == "stun", seen


def test_without_turn_a_connection_fails_within_connect_timeout_naming_the_candidates():
    with nat_lab(turn=False) as (lab, turn, port, executor):
        seen = run_client(lab, "connect", client_settings(port, connect_timeout=6.0, reconnect=False))
        assert seen.get("error_type") == "RemoteTimeoutError", seen
        error = seen["error"]
        assert "candidates tried" in error and "host 198.18.1.2" in error, error
        assert "ice_servers" in error and "TURN" in error
        # Bounded by connect_timeout (the set-up's one budget), with room for a loaded machine.
        assert seen["elapsed_s"] < 6.0 + 4.0, seen


def test_a_route_broken_mid_session_is_noticed_and_reconnects_through_turn_over_tcp():
    with nat_lab() as (lab, turn, port, executor):
        process = lab.popen(
            "client",
            [sys.executable, "tests/nat_client.py", "reconnect", json.dumps(client_settings(port))],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        ready = json.loads(process.stdout.readline() or "{}")
        assert ready.get("route") == "relay" and "transport=udp" in ready["detail"], (ready, process.stderr.read()[-3000:] if not ready else "")
        lab.block_udp("client")  # a firewall rule added mid-session: only TCP passes now
        process.stdin.write("go\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=90)
        seen = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        assert "error" not in seen, (seen, err[-3000:])
        assert seen["reconnects"] == 1
        assert seen["route"] == "relay" and "transport=tcp" in seen["detail"], seen
        # Noticed by the heartbeat (3 s), not by aiortc's consent checks (25-36 s); room for a loaded machine.
        assert seen["noticed_s"] < CLIENT["heartbeat_timeout"] + 5.0, seen
