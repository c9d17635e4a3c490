"""
:class:`remotemedia.SessionPool`'s lending rules that need no executor: which
loans may share a session (the credentials are part of the key), and the
checks of its arguments. The sessions are stand-ins that count what is done
to them; ``tests/test_session_pool.py`` runs the pool against real executors.
"""

from __future__ import annotations

import dataclasses

import pytest

from remotemedia import RemoteExecutorConfig, SessionPool
from remotemedia.remote import pool as pool_module


class FakeClient:
    """What the pool uses of a :class:`RemoteProxyClient`, with no network."""

    def __init__(self, config: RemoteExecutorConfig, media_tracks: int = 0) -> None:
        self.config = config
        self.media_tracks = media_tracks
        self.executor = "fake"
        self.usable = False
        self.idle = True
        #: The token the session presented when it connected.
        self.presented: str | None = None

    async def connect(self) -> None:
        self.presented = self.config.token  # what RemoteProxyClient.connect reads, here too
        self.usable = True

    async def release_all(self) -> None:
        pass

    async def close(self) -> None:
        self.usable = False


@pytest.fixture
def fake_clients(monkeypatch):
    monkeypatch.setattr(pool_module, "RemoteProxyClient", FakeClient)
    monkeypatch.delenv("REMOTEMEDIA_TOKEN", raising=False)
    monkeypatch.delenv("REMOTEMEDIA_CA_FILE", raising=False)


async def test_configs_with_different_tokens_never_share_a_session(fake_clients):
    alice = RemoteExecutorConfig(auth_token="alice")
    bob = dataclasses.replace(alice, auth_token="bob")
    async with SessionPool() as pool:
        async with pool.session(alice) as first:
            pass
        async with pool.session(bob) as second:
            assert second is not first and second.presented == "bob"
        async with pool.session(alice) as again:
            assert again is first  # alice's own session is still lent to alice


async def test_a_token_from_the_environment_is_part_of_the_key(fake_clients, monkeypatch):
    # auth_token=None reads $REMOTEMEDIA_TOKEN when the session connects: equal
    # configs, different users. The session opened with one token is never lent
    # to a borrower whose config would present another.
    config = RemoteExecutorConfig()
    async with SessionPool() as pool:
        monkeypatch.setenv("REMOTEMEDIA_TOKEN", "alice")
        async with pool.session(config) as first:
            assert first.presented == "alice"
        monkeypatch.setenv("REMOTEMEDIA_TOKEN", "bob")
        async with pool.session(config) as second:
            assert second is not first and second.presented == "bob"
        monkeypatch.setenv("REMOTEMEDIA_TOKEN", "alice")
        async with pool.session(config) as third:
            assert third is first
        assert pool.opened == 2 and pool.reused == 1


async def test_shared_loans_share_only_within_one_key(fake_clients):
    alice = RemoteExecutorConfig(auth_token="alice")
    bob = dataclasses.replace(alice, auth_token="bob")
    async with SessionPool() as pool:
        async with pool.session(alice, shared=True) as first:
            async with pool.session(alice, shared=True) as second:
                assert second is first
            async with pool.session(bob, shared=True) as third:
                assert third is not first


async def test_acquire_refuses_what_is_not_a_config(fake_clients):
    async with SessionPool() as pool:
        with pytest.raises(TypeError, match="RemoteExecutorConfig"):
            await pool.acquire("ws://localhost:50052")  # type: ignore[arg-type]


async def test_giving_a_session_back_twice_is_ignored(fake_clients, caplog):
    config = RemoteExecutorConfig()
    async with SessionPool() as pool:
        client = await pool.acquire(config)
        await pool.give_back(client)
        await pool.give_back(client)  # a mistake: ignored, said so
        assert "not lent" in caplog.text
        again = await pool.acquire(config)
        assert again is client
        third = await pool.acquire(config)
        assert third is not client  # still lent once: a second borrower gets its own
        await pool.give_back(third)
        await pool.give_back(again)
        assert client.usable and len(pool) == 2


async def test_the_pool_never_shows_a_token(fake_clients, monkeypatch):
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "secret-from-env")
    async with SessionPool() as pool:
        async with pool.session(RemoteExecutorConfig()):
            shown = repr(pool) + repr(pool._entries)
    assert "secret-from-env" not in shown


def test_threads_asking_at_once_get_one_default_pool(monkeypatch):
    import threading

    from remotemedia import default_pool

    monkeypatch.setattr(pool_module, "_default", None)
    start = threading.Barrier(8)
    pools = []

    def ask() -> None:
        start.wait()
        pools.append(default_pool())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pools) == 8 and len({id(pool) for pool in pools}) == 1
