"""
Graceful drain: SIGTERM makes an executor take no new sessions, lets its
open ones run up to ``--drain-timeout``, then ends them with reason
``draining``, so a client with ``reconnect=True`` moves to another executor;
a second SIGTERM ends at once. Real processes on loopback; the class below
lives in this test module, so cloudpickle sends it by value.
"""

from __future__ import annotations

import signal
import subprocess

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, client_config, running_cluster, running_executor, wait_until

from remotemedia import RemoteProxyClient


pytestmark = pytest.mark.timeout(150)


class Counter:
    """Remote state: a fresh one after a move shows the move happened."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, amount: int) -> int:
        self.total += amount
        return self.total


def sessions_args(name: str, drain: str) -> tuple[str, ...]:
    return ("--name", name, "--max-sessions", "4", "--drain-timeout", drain)


async def test_a_draining_executor_ends_its_sessions_and_the_client_moves():
    with running_cluster(TOKEN, sessions_args("drain-a", "3")) as (server, (first,)):
        config = client_config(server, TOKEN, reconnect=True, heartbeat_interval=0.5, heartbeat_timeout=5.0)
        async with RemoteProxyClient(config) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(1) == 1 and client.executor == "drain-a"
            with running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, *sessions_args("drain-c", "3")) as second:
                await wait_until(lambda: server.health()["executors"] == 2, timeout=30)
                first.proc.send_signal(signal.SIGTERM)
                await wait_until(lambda: "draining" in first.log(), timeout=30)
                # Until the timeout, the open session goes on...
                assert await counter.add(1) == 2
                # ...then it ends with reason "draining", and the client moves on its own.
                await wait_until(lambda: client.executor == second.name, timeout=60)
                assert await counter.add(5) == 5  # a fresh object on the other executor
                assert first.proc.wait(30) == 0


async def test_a_second_sigterm_ends_at_once():
    with running_cluster(TOKEN, sessions_args("drain-b", "600")) as (server, (executor,)):
        async with RemoteProxyClient(client_config(server, TOKEN, reconnect=False)) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(1) == 1
            executor.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: "draining" in executor.log(), timeout=30)
            executor.proc.send_signal(signal.SIGTERM)
            try:
                executor.proc.wait(30)  # not the 600 s of the drain timeout
            except subprocess.TimeoutExpired:
                pytest.fail("a second SIGTERM did not end the executor")
