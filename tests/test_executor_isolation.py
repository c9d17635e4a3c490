"""
Sessions in ``process`` mode attacked by the code they upload, end to end:
a real signaling server and executors as subprocesses on loopback. Each
attack is one a client can make with nothing but ``create_proxy``; each test
asserts that it fails, or hurts only the attacker's own session.

Protections the machine cannot provide (see executor/isolation.py) make the
tests that need them skip, naming what is missing; the executor's log says
the same at start. The executors run with every protection, and once more
without namespaces, so that the users alone are tested too.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, running_executor, running_server, wait_until

from remotemedia import ConnectionLostError, RemoteExecutorConfig, RemoteProxyClient, ResourceLimitError

pytestmark = pytest.mark.timeout(180)

EXECUTORS = {
    "all": [],
    "booted": ["--no-fork-server"],
    "users": ["--isolation", "user,nodump,cgroup"],
    "memory": ["--memory-limit", "300"],
    "memory-booted": ["--memory-limit", "300", "--no-fork-server"],
    "none": ["--isolation", "none"],
}


class Attacker:
    """Uploaded code that tries to reach beyond its session (sent by value: this module is the test's)."""

    def __init__(self) -> None:
        self.kept = None

    def where(self) -> dict:
        return {"pid": int(os.environ.get("REMOTEMEDIA_WORKER_PID", os.getpid())), "uid": os.getuid()}

    def keep(self, secret: str) -> int:
        """Hold ``secret`` in memory; its address in this process."""
        self.kept = secret.encode()
        return id(self.kept) + sys.getsizeof(b"") - 1  # where a bytes object's data begins (CPython)

    def read_memory(self, pid: int, address: int, size: int) -> str:
        try:
            with open(f"/proc/{pid}/mem", "rb") as memory:
                memory.seek(address)
                return memory.read(size).decode(errors="replace")
        except OSError as exc:
            return f"refused: {exc!r}"

    def read_file(self, path: str) -> str:
        try:
            return Path(path).read_bytes().decode(errors="replace")
        except OSError as exc:
            return f"refused: {exc!r}"

    def kill(self, pid: int) -> str:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            return f"refused: {exc!r}"
        return "killed"

    def environment(self) -> dict:
        return dict(os.environ)

    def leave_children(self, tag: str) -> None:
        """Start sleepers that leave this process's group and session, orphaned, one of them double-forked."""
        subprocess.Popen(["sleep", tag], start_new_session=True)
        subprocess.Popen(["sh", "-c", f"sleep {tag} & exit 0"], start_new_session=True).wait()

    def map_shared(self, megabytes: int) -> int:
        """Touch ``megabytes`` through a shared anonymous mapping (which RLIMIT_DATA does not count)."""
        size = megabytes * 2**20
        shared = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        for offset in range(0, size, mmap.PAGESIZE):
            shared[offset] = 1
        self.kept = shared
        return megabytes


@pytest.fixture(scope="module")
def server():
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def executors(server):
    """Executors started on first use, by name (a key of ``EXECUTORS``), with the token in their environment."""
    started = {}
    with contextlib.ExitStack() as stack:

        def get(name: str):
            if name not in started:
                started[name] = stack.enter_context(
                    running_executor(
                        server.url, "--name", f"iso-{name}", "--max-sessions", "4", *EXECUTORS[name],
                        env={"REMOTEMEDIA_TOKEN": TOKEN, "REMOTEMEDIA_EXECUTOR_TOKEN": EXECUTOR_TOKEN},
                    )
                )
            return started[name]

        yield get


def confined_by(executor) -> set[str]:
    """The protections the executor says it uses (its first log lines)."""
    for line in executor.log().splitlines():
        if "workers are confined by: " in line:
            return set(line.split("workers are confined by: ", 1)[1].replace("nothing", "").split(", ")) - {""}
    raise AssertionError(f"the executor did not say how it confines workers:\n{executor.log()}")


def need(executor, *any_of: str) -> None:
    """Skip unless the executor uses one of ``any_of``, quoting its log's reason."""
    if not confined_by(executor) & set(any_of):
        reasons = [line for line in executor.log().splitlines() if "isolation: no " in line]
        pytest.skip(f"this machine offers none of {', '.join(any_of)}: {' / '.join(reasons)}")


def connect(server, executor, **overrides) -> RemoteProxyClient:
    settings = {
        "host": "127.0.0.1", "port": server.port, "auth_token": TOKEN, "timeout": 30.0,
        "heartbeat_timeout": 15.0, "requirements": {"executor": executor.name},
    }
    settings.update(overrides)
    return RemoteProxyClient(RemoteExecutorConfig(**settings))


def processes_with(text: str) -> list[int]:
    """Pids of the processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


# Forked by the fork server (the default), booted in bubblewrap, and without namespaces.
VARIANTS = pytest.mark.parametrize(
    "variant", ["all", "booted", "users"], ids=["all-protections", "booted-in-bubblewrap", "users-without-namespaces"]
)


@VARIANTS
async def test_a_session_cannot_read_another_sessions_worker_memory_or_environment(server, executors, variant):
    executor = executors(variant)
    need(executor, "user", "namespaces")
    secret = f"secret-{uuid.uuid4().hex}"
    async with connect(server, executor) as victim_client, connect(server, executor) as attacker_client:
        victim = await victim_client.create_proxy(Attacker())
        address = await victim.keep(secret)
        victim_pid = (await victim.where())["pid"]
        attacker = await attacker_client.create_proxy(Attacker())
        assert (await attacker.where())["pid"] != victim_pid
        stolen = await attacker.read_memory(victim_pid, address, len(secret))
        assert stolen.startswith("refused") and secret not in stolen
        environ = await attacker.read_file(f"/proc/{victim_pid}/environ")
        assert environ.startswith("refused")
        # The victim's session is untouched.
        assert (await victim.where())["pid"] == victim_pid


@VARIANTS
async def test_a_session_cannot_kill_the_executor_or_another_sessions_worker(server, executors, variant):
    executor = executors(variant)
    need(executor, "user", "namespaces")
    async with connect(server, executor) as victim_client, connect(server, executor) as attacker_client:
        victim = await victim_client.create_proxy(Attacker())
        victim_pid = (await victim.where())["pid"]
        attacker = await attacker_client.create_proxy(Attacker())
        for target in (executor.proc.pid, victim_pid):
            assert (await attacker.kill(target)).startswith("refused")
        # The machine's init, or bubblewrap's in a PID namespace (whose end would end the session's processes).
        assert (await attacker.kill(1)).startswith("refused")
        assert executor.alive
        assert (await victim.where())["pid"] == victim_pid


async def test_the_parent_a_worker_sees_cannot_be_killed(server, executors):
    executor = executors("all")
    need(executor, "user", "namespaces")

    class Orphan(Attacker):
        def kill_parent(self) -> str:
            return self.kill(os.getppid())

    async with connect(server, executor) as client:
        remote = await client.create_proxy(Orphan())
        assert (await remote.kill_parent()).startswith("refused")
        assert await remote.where()
    assert executor.alive


@VARIANTS
async def test_processes_a_session_forks_end_with_it(server, executors, variant):
    executor = executors(variant)
    need(executor, "cgroup", "namespaces", "user")
    tag = f"600.{uuid.uuid4().int % 10**9}"  # a sleep of 600 s whose command line only these hold
    async with connect(server, executor) as client:
        remote = await client.create_proxy(Attacker())
        await remote.leave_children(tag)
        await wait_until(lambda: len(processes_with(tag)) == 2, timeout=10)
    await wait_until(lambda: processes_with(tag) == [], timeout=20)
    assert executor.alive


@pytest.mark.parametrize("variant", ["memory", "memory-booted"])
async def test_a_shared_mapping_cannot_pass_the_memory_limit(server, executors, variant):
    executor = executors(variant)
    need(executor, "cgroup")
    async with connect(server, executor) as bystander:
        other = await bystander.create_proxy(Attacker())
        async with connect(server, executor, reconnect=False) as client:
            remote = await client.create_proxy(Attacker())
            # The worker is killed by the cgroup (its session ends), or the mapping fails: never 600 MB in a 300 MB cap.
            with pytest.raises((ConnectionLostError, ResourceLimitError, OSError)) as info:
                await remote.map_shared(600)
            assert "memory" in str(info.value) or "SIGKILL" in str(info.value)
        assert (await other.where())["pid"]  # the other session goes on
    assert executor.alive
    await wait_until(lambda: "perhaps for memory" in executor.log(), timeout=10)


@pytest.mark.parametrize("variant", ["all", "booted", "none"])
async def test_a_worker_never_sees_the_token_or_the_executors_environment(server, executors, variant):
    executor = executors(variant)  # given the token through REMOTEMEDIA_TOKEN, like a careful operator
    async with connect(server, executor) as client:
        remote = await client.create_proxy(Attacker())
        environment = await remote.environment()
        assert "REMOTEMEDIA_TOKEN" not in environment and "REMOTEMEDIA_EXECUTOR_TOKEN" not in environment
        assert not any(TOKEN in value or EXECUTOR_TOKEN in value for value in environment.values())
        if confined_by(executor) & {"user", "namespaces"}:
            for pid in (executor.proc.pid, 1):
                seen = await remote.read_file(f"/proc/{pid}/environ")
                assert TOKEN not in seen and EXECUTOR_TOKEN not in seen
        # Its home and temporary folder are its own.
        assert environment["HOME"] == environment["TMPDIR"] and Path(environment["HOME"]).is_dir()


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "booted"])
async def test_workers_read_the_executors_model_cache_and_cannot_write_it(server, tmp_path, forked):
    cache = tmp_path / "hf"
    (cache / "hub").mkdir(parents=True)
    (cache / "hub" / "model.bin").write_text("weights")
    cache.chmod(0o777)  # even so: a session must not plant a model for the next
    flags = [] if forked else ["--no-fork-server"]
    with running_executor(server.url, "--name", f"iso-cache-{forked}", *flags, env={"REMOTEMEDIA_TOKEN": TOKEN, "REMOTEMEDIA_EXECUTOR_TOKEN": EXECUTOR_TOKEN, "HF_HOME": str(cache)}) as executor:
        need(executor, "namespaces")

        class Reader(Attacker):
            def plant(self) -> str:
                home = os.environ["HF_HOME"]
                try:
                    Path(home, "hub", "model.bin").write_text("tampered")
                except OSError as exc:
                    return f"refused: {exc!r}"
                return "planted"

        async with connect(server, executor) as client:
            remote = await client.create_proxy(Reader())
            assert await remote.read_file(str(cache / "hub" / "model.bin")) == "weights"
            assert (await remote.plant()).startswith("refused")
    assert (cache / "hub" / "model.bin").read_text() == "weights"


async def test_the_executor_says_whether_it_forks_workers(executors):
    assert "workers are forked by a fork server" in executors("all").log()
    assert "fork server" not in executors("booted").log()


async def test_the_executor_says_at_start_how_workers_are_confined(executors):
    executor = executors("users")
    log = executor.log()
    assert "workers are confined by: " in log
    assert "isolation: no namespaces (turned off (--isolation))" in log
    assert "sees every process on the machine" in log


@pytest.mark.parametrize("variant", ["all", "booted"])
async def test_each_worker_runs_as_a_user_of_its_own(server, executors, variant):
    executor = executors(variant)
    need(executor, "user")
    async with connect(server, executor) as one, connect(server, executor) as two:
        first = await (await one.create_proxy(Attacker())).where()
        second = await (await two.create_proxy(Attacker())).where()
        assert first["uid"] != second["uid"]
        assert 0 not in (first["uid"], second["uid"]) and os.getuid() not in (first["uid"], second["uid"])


# -- the confinement itself, without an executor ---------------------------------------


def test_a_workers_environment_is_an_allowlist(monkeypatch):
    from executor.isolation import Confinement

    monkeypatch.setenv("REMOTEMEDIA_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    confinement = Confinement.probe(wanted=())
    try:
        lease = confinement.lease()
        env = lease.environment()
        lease.release_now()
    finally:
        confinement.close()
    assert "REMOTEMEDIA_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["LANG"] == "C.UTF-8" and env["HOME"] == env["TMPDIR"]
    assert not Path(env["HOME"]).exists()  # removed with the lease


def test_protections_turned_off_are_reported_missing():
    from executor.isolation import PROTECTIONS, Confinement

    confinement = Confinement.probe(wanted=())
    try:
        assert confinement.active == [] and set(confinement.missing) == set(PROTECTIONS)
        lines = confinement.describe()
        assert lines[0] == "workers are confined by: nothing"
        assert all(line.startswith("isolation: no ") for line in lines[1:]) and len(lines) == 5
    finally:
        confinement.close()


async def test_a_lease_takes_a_uid_and_a_cgroup_and_gives_both_back():
    from executor.isolation import Confinement

    confinement = Confinement.probe(300, wanted=("user", "cgroup", "namespaces"))
    try:
        if not {"user", "cgroup"} <= set(confinement.active):
            pytest.skip(f"this machine lacks: {confinement.missing}")
        first, second = confinement.lease(), confinement.lease()
        assert first.uid != second.uid
        assert (first.cgroup / "cgroup.procs").exists()
        limit = first.cgroup / ("memory.limit_in_bytes" if (first.cgroup / "memory.limit_in_bytes").exists() else "memory.max")
        assert int(limit.read_text()) == 300 * 2**20
        cgroup, home, uid = first.cgroup, first.home, first.uid
        await first.release()
        assert not cgroup.exists() and not home.exists()
        third = confinement.lease()
        assert third.uid == uid  # its processes are all gone: the uid is free again
        await second.release()
        await third.release()
    finally:
        confinement.close()
