"""
An executor outlives its signaling server: killed and restarted on the same
port, the server sees the executor register again by itself, and sessions
paired before go on peer to peer all along. Real processes on loopback; the
class below lives in this test module, so cloudpickle sends it by value.
"""

from __future__ import annotations

import logging

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, config_for, running_executor, running_server, wait_until

from remotemedia import RemoteProxyClient
from signaling_server import ServerConfig, start_server
from signaling_server.app import SERVER_KEY


#: Logged by the executor when its first attempt to register again fails (the server is down).
RETRYING = "registering again failed"


class Counter:
    """Remote state that shows the session never restarted."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, amount: int) -> int:
        self.total += amount
        return self.total


@pytest.mark.timeout(120)
async def test_an_executor_registers_again_with_a_restarted_server():
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as first, running_executor(
        first.url, "--executor-token", EXECUTOR_TOKEN, "--name", "exec-a"
    ) as executor:
        first.kill()
        # Down long enough for at least one refused attempt: the backoff path runs.
        await wait_until(lambda: RETRYING in executor.log(), timeout=30)
        with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, port=first.port) as second:
            await wait_until(lambda: second.health()["executors"] == 1, timeout=30)
            assert executor.alive
            async with RemoteProxyClient(config_for(second)) as client:
                counter = await client.create_proxy(Counter())
                assert client.executor == "exec-a"
                assert await counter.add(2) == 2
        assert executor.stop() == 0


@pytest.mark.timeout(120)
async def test_a_session_outlives_its_signaling_server_and_the_new_one_learns_of_it(caplog):
    caplog.set_level(logging.WARNING, logger="remotemedia.transport.peer")
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as first, running_executor(
        first.url, "--executor-token", EXECUTOR_TOKEN, "--name", "exec-b", "--max-sessions", "4"
    ) as executor:
        async with RemoteProxyClient(config_for(first)) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(1) == 1

            first.kill()
            await wait_until(lambda: "signaling ended" in caplog.text, timeout=30)  # the client noticed
            await wait_until(lambda: RETRYING in executor.log(), timeout=30)  # so did the executor
            # Calls flow peer to peer: they need no signaling server.
            for expected in range(2, 7):
                assert await counter.add(1) == expected

            # In this process, to read what the new server knows of the executor.
            config = ServerConfig(token=TOKEN, executor_token=EXECUTOR_TOKEN, signaling_heartbeat_interval=0.5, signaling_heartbeat_timeout=5.0)
            second = await start_server(config, host="127.0.0.1", port=first.port)
            try:
                executors = second.app[SERVER_KEY].hub.registry.executors
                await wait_until(lambda: "exec-b" in executors, timeout=30)
                # The session paired through the old server counts in the executor's load.
                await wait_until(lambda: executors["exec-b"].reported_sessions == 1, timeout=30)
                assert executors["exec-b"].load > 0
                assert await counter.add(1) == 7

                async with RemoteProxyClient(config_for(second)) as newcomer:
                    other = await newcomer.create_proxy(Counter())
                    assert await other.add(5) == 5
                    assert await counter.add(1) == 8
                    await wait_until(lambda: executors["exec-b"].reported_sessions == 2, timeout=30)
                await client.close()
                await wait_until(lambda: executors["exec-b"].reported_sessions == 0, timeout=30)
                assert executor.alive
            finally:
                await second.close()
        assert executor.stop() == 0


@pytest.mark.timeout(120)
def test_an_executor_refused_by_a_restarted_server_exits_1_with_the_reason():
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as first, running_executor(first.url, "--executor-token", EXECUTOR_TOKEN) as executor:
        first.kill()
        # Back with another token: retrying cannot help, so the executor gives up.
        with running_server("--token", TOKEN, "--executor-token", "another-token", port=first.port):
            assert executor.proc.wait(60) == 1
        log = executor.log()
    assert "remotemedia-executor: " in log and "token" in log
