"""
Discovery end to end: a real signaling server and two real executors as
subprocesses on loopback, asked through ``remotemedia.discover`` and through
``python -m remotemedia executors``. The hub's rules (scopes, refusals, no
addresses) are tested without sockets in tests/test_signaling_discovery.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
from harness import (
    EXECUTOR_TOKEN, ROOT, TOKEN, ExecutorProcess, ServerProcess, client_config, config_for, running_server,
)
from redislab import running_redis

import remotemedia
from remotemedia import AuthenticationError, ExecutorInfo, RemoteProxyClient, SignalingError, discover
from remotemedia.signaling import SignalingClient


@pytest.fixture(scope="module")
def cluster_executors():
    return (
        ("--name", "exec-a", "--mode", "inprocess", "--max-sessions", "4"),
        ("--name", "exec-b", "--mode", "inprocess", "--max-sessions", "2", "--services", "services_sample:SERVICES",
         "--accept", "any"),
    )


@pytest.fixture(scope="module")
def cluster_server_args():
    # Executors report their load in heartbeats: frequent ones, so a test sees a new load soon.
    return ("--signaling-heartbeat-interval", "0.2")


@pytest.fixture(scope="module")
def cluster_env():
    # exec-b imports the sample services from tests/.
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}


class Counter:
    """A remote object that holds a session open."""

    def __init__(self) -> None:
        self.count = 0

    def add(self) -> int:
        self.count += 1
        return self.count


async def listed_until(config, predicate, timeout: float = 15.0) -> list[ExecutorInfo]:
    """Ask again until ``predicate(listing)`` holds (a load arrives with a heartbeat), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        executors = await discover(config)
        if predicate(executors):
            return executors
        if time.monotonic() > deadline:
            raise AssertionError(f"no listing matched within {timeout} s; the last: {executors}")
        await asyncio.sleep(0.1)


async def test_discover_lists_both_executors_with_their_services_and_load(cluster):
    config = config_for(cluster)
    executors = await discover(config)
    assert [e.name for e in executors] == ["exec-a", "exec-b"]
    a, b = executors
    assert set(a.services) == {"demo", "effects", "transcribe"}
    assert "brighten" in b.services
    assert (a.capacity, a.free, a.load, b.capacity, b.free) == (4, 4, 0.0, 2, 2)
    assert (a.version, a.mode, a.accept, b.accept) == (remotemedia.__version__, "inprocess", "python", "any")
    assert a.models == () and a.gpu in (True, False)

    async with RemoteProxyClient(config_for(cluster, requirements={"executor": "exec-a"})) as client:
        counter = await client.create_proxy(Counter())
        assert await counter.add() == 1
        busy = await listed_until(config, lambda listing: listing[0].load > 0)
        assert (busy[0].free, busy[0].load) == (3, pytest.approx(0.25))
        assert (busy[1].free, busy[1].load) == (2, 0.0)
    await listed_until(config, lambda listing: listing[0].load == 0.0 and listing[0].free == 4)


async def test_a_wrong_token_is_refused(cluster):
    with pytest.raises(AuthenticationError, match="wrong token"):
        await discover(client_config(cluster, "not-the-token"))
    with pytest.raises(AuthenticationError, match="no token"):
        await discover(client_config(cluster, None))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REMOTEMEDIA_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "remotemedia", "executors", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_the_cli_prints_a_table(cluster):
    result = run_cli("--signaling", f"ws://127.0.0.1:{cluster.port}", "--token", TOKEN)
    assert result.returncode == 0, result.stderr
    heading, *rows = result.stdout.strip().splitlines()
    assert heading.split() == ["NAME", "SERVICES", "GPU", "FREE/CAP", "LOAD", "VERSION"]
    assert [row.split()[0] for row in rows] == ["exec-a", "exec-b"]
    name, services, gpu, room, load, version = rows[0].split()
    assert (services, room, load, version) == ("demo,effects,transcribe", "4/4", "0.00", remotemedia.__version__)
    assert gpu in ("yes", "no") and "2/2" in rows[1]


def test_the_cli_prints_json_and_refuses_a_wrong_token(cluster):
    url = f"ws://127.0.0.1:{cluster.port}"
    result = run_cli("--signaling", url, "--token", TOKEN, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [e["name"] for e in listed] == ["exec-a", "exec-b"]
    assert set(listed[0]) == {"name", "services", "models", "gpu", "capacity", "free", "load", "version", "accept", "mode"}
    refused = run_cli("--signaling", url, "--token", "wrong")
    assert refused.returncode == 1 and "wrong token" in refused.stderr and not refused.stdout


def test_the_cli_says_when_no_executor_is_listed():
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as server:
        result = run_cli("--signaling", f"ws://127.0.0.1:{server.port}", "--token", TOKEN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NAME", "SERVICES", "GPU", "FREE/CAP", "LOAD", "VERSION"]
    assert "no executor is registered there" in result.stderr


async def test_a_cluster_instance_lists_the_executors_of_every_instance():
    # The records live in Redis: an executor of instance b is listed through instance a, announcements included.
    args = ("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN)
    with running_redis() as redis, contextlib.ExitStack() as stack:
        a, b = (ServerProcess(*args, "--redis", redis.url) for _ in range(2))
        for process in (a, b):
            stack.callback(process.stop)
        for server, name in ((a, "near-1"), (b, "far-1")):
            started = ExecutorProcess(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", name, "--mode", "inprocess")
            stack.callback(started.stop)
        executors = await discover(client_config(a, TOKEN))
        assert [(e.name, e.mode, e.version, e.capacity, e.free) for e in executors] == [
            ("far-1", "inprocess", remotemedia.__version__, 4, 4),
            ("near-1", "inprocess", remotemedia.__version__, 4, 4),
        ]


async def test_an_executors_connection_may_not_list(cluster):
    async with await SignalingClient.connect(cluster.url, token=EXECUTOR_TOKEN) as signaling:
        await signaling.register("probe", 1)
        with pytest.raises(SignalingError) as refused:
            await signaling.executors()
        assert refused.value.code == "not_allowed"
        assert not signaling.closed  # still registered; only the question was refused
    async with await SignalingClient.connect(cluster.url, token=EXECUTOR_TOKEN) as signaling:
        with pytest.raises(SignalingError) as refused:
            await signaling.executors()
        assert refused.value.code == "wrong_role"


# -- mistakes caught before connecting (no server needed) ------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    from remotemedia.__main__ import main

    status = main(["executors", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_the_cli_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(capsys, timeout):
    status, out, err = cli(capsys, "--signaling", "ws://127.0.0.1:9", "--timeout", timeout)
    assert status == 2 and not out
    assert "timeout must be a positive number of seconds" in err and "Traceback" not in err


def test_the_cli_says_a_ca_file_is_for_wss_urls(capsys):
    status, out, err = cli(capsys, "--signaling", "ws://127.0.0.1:9", "--ca-file", "/etc/ca.pem")
    assert status == 2 and not out
    assert "--ca-file" in err and "wss://" in err and "ssl_enabled" not in err  # a flag the CLI does not have


def test_the_cli_dials_the_local_default_server_without_signaling():
    from remotemedia.__main__ import parse_args

    # What `python -m remotemedia serve` (and RemoteExecutorConfig()) use.
    assert parse_args(["executors"]).signaling == "ws://127.0.0.1:50052/ws"


async def test_discover_refuses_bad_arguments_before_connecting():
    with pytest.raises(TypeError, match="RemoteExecutorConfig"):
        await discover("ws://127.0.0.1:9")  # type: ignore[arg-type]
    for timeout in (0, -1.0, float("nan"), "5"):
        with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
            await discover(timeout=timeout)  # type: ignore[arg-type]


async def test_the_timeout_bounds_the_whole_listing_over_several_urls():
    # Servers that accept the connection and never answer: each URL alone would take the whole timeout.
    held = []
    silent = [await asyncio.start_server(lambda _, writer: held.append(writer), "127.0.0.1", 0) for _ in range(2)]
    try:
        urls = tuple(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws" for server in silent)
        with pytest.raises(remotemedia.RemoteTimeoutError, match="did not list executors within 1 s"):
            await discover(remotemedia.RemoteExecutorConfig(signaling_urls=urls), timeout=1.0)
    finally:
        for writer in held:
            writer.close()
        for server in silent:
            server.close()
