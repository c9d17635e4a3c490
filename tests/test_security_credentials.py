"""
Security regressions, credentials half, with the real processes: the
attacks of issue 17 made by an outsider who holds a client's token.

- impersonation: a client token registering an executor (with a huge
  capacity and a GPU, to win every pairing) is refused; every session goes
  to the real executor and nothing runs in the victim's process;
- name hijack while the real executor is away (its heartbeats stopped) is
  refused, for a client credential and for another executor credential, and
  across a restart of the server for a name minted into the executor's token;
- an expired token, a service outside the token's scope and a quota beyond
  its sessions are refused with named errors;
- ``allow_pickled_results=False``: a result that only unpickling could
  restore raises, and nothing is unpickled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from harness import ROOT, running_executor, running_server, wait_until
from harness import TOKEN as CLIENT_TOKEN

from remotemedia import NoExecutorAvailable, RemoteExecutorConfig, RemoteProxyClient
from remotemedia.exceptions import (
    PermissionDeniedError,
    PickleRefusedError,
    QuotaExceededError,
    SignalingError,
    TokenExpiredError,
)
from remotemedia.signaling import SignalingClient
from remotemedia.tokens import mint_client_token, mint_executor_token

SECRET = "security-test-secret-" + "x" * 20
TIMEOUT = 15.0


class Trap:
    """Unpickling this creates the file at ``path``: proof that the sender's code ran here."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class Vault:
    """A victim's object: state worth stealing, and methods that return plain values or a trap."""

    def __init__(self) -> None:
        self.key = "victim-private-key"

    def sign(self, text: str) -> str:
        return f"{text}:{len(self.key)}"

    def trap(self, path: str) -> Trap:
        return Trap(path)


def config(server, token, **overrides) -> RemoteExecutorConfig:
    settings = {"host": "127.0.0.1", "port": server.port, "auth_token": token, "timeout": TIMEOUT, "connect_timeout": TIMEOUT}
    settings.update(overrides)
    return RemoteExecutorConfig(**settings)


@pytest.fixture(scope="module")
def cluster_executors():
    """One real executor, ``real``, registered with the ``cluster`` (tests/conftest.py)."""
    return (("--name", "real", "--max-sessions", "8"),)


@pytest.fixture(scope="module")
def cluster_server_args():
    """The ``cluster``'s server also signs tokens (its client and executor credentials differ anyway)."""
    return ("--token-secret", SECRET)


# -- impersonation -------------------------------------------------------------------------


async def test_a_client_token_cannot_pose_as_an_executor_and_no_code_runs_in_victims(cluster, tmp_path):
    marker = tmp_path / "impostor-ran-code.txt"
    for token in (CLIENT_TOKEN, mint_client_token(SECRET)):
        async with await SignalingClient.connect(cluster.url, token=token) as impostor:
            with pytest.raises(PermissionDeniedError) as info:
                await impostor.register("gpu-1", capacity=100_000, capabilities={"gpu": True}, timeout=TIMEOUT)
            assert info.value.code == "wrong_role"
            assert "client credential cannot register" in str(info.value)
            with pytest.raises(PermissionDeniedError):  # closed: it can accept no session either
                await impostor.accept(timeout=TIMEOUT)
    assert cluster.health()["executors"] == 1
    # Every victim is served by the real executor, and gets plain values back.
    for _ in range(3):
        async with RemoteProxyClient(config(cluster, CLIENT_TOKEN)) as client:
            assert client.executor == "real"
            vault = await client.create_proxy(Vault())
            assert await vault.sign("hello") == "hello:18"
    assert not marker.exists()


def test_an_executor_process_started_with_the_client_token_is_refused(cluster):
    result = subprocess.run(
        [sys.executable, "-m", "executor", "--signaling", cluster.url, "--token", CLIENT_TOKEN, "--name", "gpu-1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")},
    )
    assert result.returncode == 1
    assert "client credential cannot register" in result.stderr


# -- name hijack -----------------------------------------------------------------------------


async def test_a_name_cannot_be_hijacked_while_its_executor_is_away(tmp_path):
    owner = mint_executor_token(SECRET)
    with running_server(
        "--token", CLIENT_TOKEN, "--token-secret", SECRET, "--heartbeat-timeout", "2"
    ) as server, running_executor(
        server.url, "--executor-token", owner, "--name", "gpu-1", "--mode", "inprocess"
    ) as executor:
        os.kill(executor.proc.pid, signal.SIGSTOP)  # frozen: its heartbeats stop, the server drops it
        try:
            await wait_until(lambda: server.health()["executors"] == 0, timeout=20)
            # A client credential cannot take the name...
            async with await SignalingClient.connect(server.url, token=CLIENT_TOKEN) as thief:
                with pytest.raises(PermissionDeniedError):
                    await thief.register("gpu-1", capacity=100_000, timeout=TIMEOUT)
            # ...nor another executor credential, nor one minted for another name.
            for other, code in ((mint_executor_token(SECRET), "name_owned"), (mint_executor_token(SECRET, name="evil"), "forbidden")):
                async with await SignalingClient.connect(server.url, token=other) as thief:
                    with pytest.raises(SignalingError) as info:
                        await thief.register("gpu-1", capacity=100_000, timeout=TIMEOUT)
                    assert info.value.code == code
            # A client asking for gpu-1 meanwhile is told it is not there, not handed to a thief.
            async with await SignalingClient.connect(server.url, token=CLIENT_TOKEN) as victim:
                with pytest.raises(NoExecutorAvailable):
                    await victim.pair({"executor": "gpu-1"}, timeout=TIMEOUT)
        finally:
            os.kill(executor.proc.pid, signal.SIGCONT)
        # The real one comes back under its name.
        await wait_until(lambda: server.health()["executors"] == 1, timeout=30)
        async with RemoteProxyClient(config(server, CLIENT_TOKEN, requirements={"executor": "gpu-1"})) as client:
            assert client.executor == "gpu-1"
            assert await (await client.create_proxy(Vault())).sign("back") == "back:18"


async def test_a_name_minted_into_the_executors_token_survives_a_server_restart():
    # The scenario: the real gpu-1 reconnecting to a restarted server, which remembers nothing.
    server_args = ("--token", CLIENT_TOKEN, "--token-secret", SECRET)
    owner = mint_executor_token(SECRET, name="gpu-1")
    with running_server(*server_args) as first, running_executor(first.url, "--executor-token", owner, "--name", "gpu-1") as executor:
        first.kill()
        with running_server(*server_args, port=first.port) as second:
            for thief, code in ((CLIENT_TOKEN, "wrong_role"), (mint_executor_token(SECRET, name="evil"), "forbidden")):
                async with await SignalingClient.connect(second.url, token=thief) as impostor:
                    with pytest.raises(SignalingError) as info:
                        await impostor.register("gpu-1", capacity=100_000, capabilities={"gpu": True}, timeout=TIMEOUT)
                    assert info.value.code == code
            await wait_until(lambda: second.health()["executors"] == 1, timeout=30)
            async with RemoteProxyClient(config(second, CLIENT_TOKEN, requirements={"executor": "gpu-1"})) as client:
                assert await (await client.create_proxy(Vault())).sign("x") == "x:18"
            assert executor.alive


# -- scoped, expiring client tokens ------------------------------------------------------------


async def test_an_expired_token_is_refused(cluster):
    token = mint_client_token(SECRET, expires_in=5, now=time.time() - 60)
    with pytest.raises(TokenExpiredError, match="expired"):
        async with RemoteProxyClient(config(cluster, token)):
            pass


async def test_a_service_outside_the_tokens_scope_is_refused(cluster):
    token = mint_client_token(SECRET, services=["effects"], objects=False)
    async with await SignalingClient.connect(cluster.url, token=token) as client:
        with pytest.raises(PermissionDeniedError, match="'transcribe'"):
            await client.pair({"service": "transcribe"}, timeout=TIMEOUT)
        session = await client.pair({"service": "effects"}, timeout=TIMEOUT)  # the connection stays usable
        assert session.executor == "real"
        await session.close()
    # No Python objects either: nothing this token sends is unpickled on an executor.
    with pytest.raises(PermissionDeniedError, match="named services only"):
        async with RemoteProxyClient(config(cluster, token)):
            pass


async def test_the_session_quota_is_enforced_over_connections(cluster):
    token = mint_client_token(SECRET, max_sessions=1)
    async with RemoteProxyClient(config(cluster, token)) as first:
        assert await (await first.create_proxy(Vault())).sign("a") == "a:18"
        with pytest.raises(QuotaExceededError, match="1 open sessions"):
            async with RemoteProxyClient(config(cluster, token)):
                pass
    await wait_until(lambda: cluster.health()["sessions"] == 0, timeout=10)
    async with RemoteProxyClient(config(cluster, token)) as second:  # the slot came back
        assert await (await second.create_proxy(Vault())).sign("b") == "b:18"


# -- refusing pickled results ----------------------------------------------------------------------


async def test_a_client_that_refuses_pickles_unpickles_nothing(cluster, tmp_path):
    marker = tmp_path / "unpickled.txt"
    async with RemoteProxyClient(config(cluster, CLIENT_TOKEN, allow_pickled_results=False)) as client:
        vault = await client.create_proxy(Vault())
        with pytest.raises(PickleRefusedError, match="allow_pickled_results"):
            await vault.trap(str(marker))
        assert not marker.exists()
        assert await vault.sign("still") == "still:18"  # plain values still come back
    # The default trusts the executors the server admits: the same result is unpickled.
    async with RemoteProxyClient(config(cluster, CLIENT_TOKEN)) as client:
        await (await client.create_proxy(Vault())).trap(str(marker))
    assert marker.exists()
