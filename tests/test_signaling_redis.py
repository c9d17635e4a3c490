"""
Several signaling instances sharing a real Redis: a client of one instance
pairs with an executor of another, capacity holds under concurrent pairings
through three instances, an instance killed under its executors and clients,
Redis stopped and restarted. Every process (redis-server, the instances, the
executors) is started here on free ports and always stopped. The class below
lives in this test module, so cloudpickle sends it by value.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter as Tally

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, ExecutorProcess, ServerProcess, client_config, wait_until
from redislab import running_redis

from remotemedia import ConnectionLostError, RemoteExecutorConfig, RemoteProxyClient
from remotemedia.exceptions import NoExecutorAvailable, SignalingError
from remotemedia.signaling import SignalingClient

#: Quick expiry of silent executors, yet patient enough for a loaded machine.
SERVER_ARGS = ("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, "--heartbeat-timeout", "3")

pytestmark = pytest.mark.timeout(150)


class Counter:
    """Remote state that shows a session never restarted."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, amount: int) -> int:
        self.total += amount
        return self.total


@pytest.fixture
def redis():
    with running_redis() as server:
        yield server


@contextlib.contextmanager
def instances(redis, count: int, *extra: str):
    """``count`` signaling instances sharing ``redis``, always stopped."""
    with contextlib.ExitStack() as stack:
        started = []
        for _ in range(count):
            server = ServerProcess(*SERVER_ARGS, "--redis", redis.url, *extra)
            stack.callback(server.stop)
            started.append(server)
        yield started


@contextlib.contextmanager
def executor(*urls: str, name: str, sessions: int = 4):
    process = ExecutorProcess(
        ",".join(urls), "--executor-token", EXECUTOR_TOKEN, "--name", name, "--max-sessions", str(sessions)
    )
    try:
        yield process
    finally:
        process.stop()


def config_for(*servers, **overrides) -> RemoteExecutorConfig:
    urls = tuple(server.url for server in servers)
    return client_config(servers[0], TOKEN, signaling_urls=urls, **overrides)


async def test_a_client_of_one_instance_uses_an_executor_of_another(redis):
    with instances(redis, 2) as (a, b), executor(a.url, name="exec-a"):
        assert a.health()["executors"] == 1 and b.health()["executors"] == 0
        async with RemoteProxyClient(config_for(b)) as client:
            counter = await client.create_proxy(Counter())
            assert client.executor == "exec-a"
            assert [await counter.add(1) for _ in range(3)] == [1, 2, 3]
        # The slot is free again: a second client through the other instance pairs too.
        async with RemoteProxyClient(config_for(a)) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(5) == 5


async def test_capacity_is_never_exceeded_through_three_instances(redis):
    executors, capacity, clients, per_client = 6, 4, 30, 10  # 300 pairings for 24 slots
    with instances(redis, 3) as servers:
        registered = []
        try:
            for i in range(executors):
                signaling = await SignalingClient.connect(servers[i % 3].url, token=EXECUTOR_TOKEN)
                registered.append(signaling)
                await signaling.register(f"cap-{i}", capacity)
            connections = [
                await SignalingClient.connect(servers[i % 3].url, token=TOKEN) for i in range(clients)
            ]

            async def pair(signaling):
                try:
                    return (await signaling.pair(timeout=60)).executor
                except NoExecutorAvailable:
                    return None

            results = await asyncio.gather(*(pair(c) for c in connections for _ in range(per_client)))
            paired = Tally(name for name in results if name is not None)
            assert sum(paired.values()) == executors * capacity, paired  # every slot served...
            assert max(paired.values()) == capacity, paired  # ...and none beyond its capacity
            # The executors were told of exactly as many sessions.
            for signaling in registered:
                for _ in range(capacity):
                    await signaling.accept(timeout=30)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(signaling.accept(), 0.5)
            for connection in connections:
                await connection.close()
        finally:
            for signaling in registered:
                await signaling.close()


async def test_an_instance_killed_under_its_executor_and_client(redis):
    with instances(redis, 2) as (a, b), executor(a.url, b.url, name="exec-k") as process:
        async with RemoteProxyClient(config_for(a, b)) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(1) == 1
            a.kill()
            # The executor registers again through the other instance...
            await wait_until(lambda: b.health()["executors"] == 1, timeout=30)
            # ...while the running session goes on peer to peer.
            assert await counter.add(1) == 2
            # New pairings (through the survivor, the first URL being dead) work.
            async with RemoteProxyClient(config_for(a, b)) as other:
                fresh = await other.create_proxy(Counter())
                assert other.executor == "exec-k"
                assert await fresh.add(7) == 7
        assert process.alive


async def test_redis_stopped_and_restarted(redis):
    with instances(redis, 2) as (a, b), executor(a.url, name="exec-r"):
        signaling = await SignalingClient.connect(b.url, token=TOKEN)
        try:
            session = await signaling.pair(timeout=15)
            await session.close("checked")
            redis.stop()
            # New pairings are refused with a code that says why, quickly (no hang).
            with pytest.raises(SignalingError) as refused:
                await signaling.pair(timeout=15)
            assert refused.value.code == "unavailable"
            await wait_until(lambda: b.health()["status"] == "degraded", timeout=15)
            assert "Redis" in b.health()["problem"]

            redis.start()  # empty: it kept nothing
            await wait_until(lambda: b.health()["status"] == "ok", timeout=15)

            # The executor's record comes back with its next heartbeat.
            async def pairs() -> bool:
                try:
                    await (await signaling.pair(timeout=15)).close("done")
                except (NoExecutorAvailable, SignalingError):
                    return False
                return True

            deadline = asyncio.get_running_loop().time() + 20
            while not await pairs():
                assert asyncio.get_running_loop().time() < deadline, "pairing did not recover"
                await asyncio.sleep(0.2)
        finally:
            await signaling.close()


@pytest.mark.timeout(240)
async def test_a_rolling_restart_of_executors_under_calling_clients(redis):
    names = ("roll-0", "roll-1", "roll-2")
    args = ("--mode", "inprocess", "--drain-timeout", "1")
    async with contextlib.AsyncExitStack() as stack:
        servers = stack.enter_context(instances(redis, 2))
        urls = [server.url for server in servers]

        def start(i: int) -> ExecutorProcess:
            process = ExecutorProcess(
                ",".join(urls[i % 2:] + urls[: i % 2]), "--executor-token", EXECUTOR_TOKEN,
                "--name", names[i], "--max-sessions", "8", *args,
            )
            stack.callback(process.stop)
            return process

        executors = [start(i) for i in range(3)]
        registered = lambda: sum(server.health()["executors"] for server in servers)  # noqa: E731
        await wait_until(lambda: registered() == 3, timeout=30)
        clients = []
        for i in range(10):
            config = config_for(*(servers[i % 2:] + servers[: i % 2]), reconnect=True, timeout=20.0)
            client = await stack.enter_async_context(RemoteProxyClient(config))
            clients.append((client, await client.create_proxy(Counter())))
        outcomes: Tally = Tally()
        stop = asyncio.Event()

        async def keep_calling(counter) -> None:
            while not stop.is_set():
                try:
                    # Every call ends: a result or ConnectionLostError, never a hang.
                    await asyncio.wait_for(counter.add(1), 60)
                    outcomes["ok"] += 1
                except ConnectionLostError:
                    outcomes["lost"] += 1
                await asyncio.sleep(0.05)

        callers = [asyncio.create_task(keep_calling(counter)) for _, counter in clients]
        try:
            for i in range(3):
                executors[i].proc.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(executors[i].proc.wait, 60) == 0
                executors[i] = start(i)
                await wait_until(lambda: registered() == 3, timeout=60)
        finally:
            stop.set()
            await asyncio.gather(*callers)
        assert outcomes["ok"] > 0
        # Every client ends on a live executor, and calls there.
        for client, counter in clients:
            assert client.executor in names
            await counter.add(1)


async def test_the_shared_choice_follows_the_standalone_rule(redis):
    from signaling_server.cluster import Claim, Grant, Release, Reserve
    from signaling_server.redis_directory import RedisDirectory

    directory = RedisDirectory(redis.url, heartbeat_timeout=30)
    await directory.start(lambda envelope: None)
    try:
        def record(conn, capacity, caps, load=0.0):
            return {"instance": directory.instance, "conn": conn, "capacity": capacity,
                    "capabilities": caps, "load": load, "reported": 0}

        plain = {"gpu": False, "models": [], "services": []}
        assert await directory.claim(Claim("c1", "small", record("c1", 1, plain), "owner-a")) == "ok"
        assert await directory.claim(Claim("c2", "big", record("c2", 5, plain), "owner-a")) == "ok"
        gpu = {"gpu": True, "models": ["whisper"], "services": ["demo"]}
        assert await directory.claim(Claim("c3", "gpu", record("c3", 2, gpu), "owner-a")) == "ok"
        # Names are owned by their credential, and held while their instance lives.
        assert await directory.claim(Claim("c9", "big", record("c9", 1, plain), "owner-b")) == "name_owned"
        assert await directory.claim(Claim("c9", "big", record("c9", 1, plain), "owner-a")) == "name_taken"

        async def reserve(session, requirements=None, only=None, quota=None, credential="cred"):
            return await directory.reserve(Reserve("client", session, requirements or {}, only, quota, credential))

        # Most free slots first; the requirements and the token's executors filter.
        assert (await reserve("s1")).name == "big"
        assert (await reserve("s2", {"gpu": True})).name == "gpu"
        assert (await reserve("s3", {"service": "demo"})).name == "gpu"
        assert (await reserve("s4", {"model": "whisper"})) == (
            "no_executor", (await reserve("s4", {"model": "whisper"}))[1]
        )
        assert (await reserve("s5", only=("small",))).name == "small"
        assert (await reserve("s6", {"avoid": ["big"]})).name == "big"  # the only one with room left
        code, message = await reserve("s7", {"service": "tts"})
        assert code == "no_executor" and "matches" in message
        # A quota counts the credential's sessions over all instances.
        assert isinstance(await reserve("q1", quota=1, credential="q"), Grant)
        assert (await reserve("q2", quota=1, credential="q"))[0] == "quota_exceeded"
        directory.submit(Release("big", "q1", "q"))
        await directory.flush()
        assert isinstance(await reserve("q3", quota=1, credential="q"), Grant)
    finally:
        await directory.close()


async def test_the_embedded_server_joins_a_cluster_and_an_instance_stopped_lets_its_executor_move(redis):
    from harness import ServeProcess

    with instances(redis, 1) as (plain,):
        serve = ServeProcess("--redis", redis.url, "--token", TOKEN, "--executor-token", EXECUTOR_TOKEN)
        try:
            # A client of the plain instance uses the embedded executor of `remotemedia serve`.
            async with RemoteProxyClient(config_for(plain, requirements={"executor": serve.executor})) as client:
                counter = await client.create_proxy(Counter())
                assert await counter.add(2) == 2
        finally:
            assert serve.stop() == 0
    with instances(redis, 2) as (a, b), executor(a.url, b.url, name="exec-t"):
        async with RemoteProxyClient(config_for(a, b)) as client:
            counter = await client.create_proxy(Counter())
            assert await counter.add(1) == 1
            assert a.stop() == 0  # SIGTERM: it closes its connections, which move
            await wait_until(lambda: b.health()["executors"] == 1, timeout=30)
            assert await counter.add(1) == 2  # peer to peer all along


async def test_a_refresh_that_finds_its_name_taken_reports_it(redis):
    import redis.asyncio as aioredis

    from signaling_server.cluster import Claim, Refresh
    from signaling_server.redis_directory import PREFIX, RedisDirectory

    lost = []
    first = RedisDirectory(redis.url, heartbeat_timeout=30)
    second = RedisDirectory(redis.url, heartbeat_timeout=30)
    await first.start(lambda envelope: None, lost.append)
    await second.start(lambda envelope: None)
    try:
        def record(directory, conn):
            return {"instance": directory.instance, "conn": conn, "capacity": 1,
                    "capabilities": {"gpu": False}, "load": 0.0, "reported": 0}

        assert await first.claim(Claim("c1", "dup", record(first, "c1"), None)) == "ok"
        first.submit(Refresh("dup", "c1", record(first, "c1")))
        await first.flush()
        assert lost == []
        # Redis loses the record (a restart); another instance's executor takes the name.
        client = aioredis.Redis.from_url(redis.url)
        await client.delete(PREFIX + "exec:dup")
        await client.aclose()
        assert await second.claim(Claim("c2", "dup", record(second, "c2"), None)) == "ok"
        refresh = Refresh("dup", "c1", record(first, "c1"))
        first.submit(refresh)
        await first.flush()
        assert lost == [refresh]
    finally:
        await first.close()
        await second.close()
