"""
What keeps one session's worker process (``process`` mode) away from the
others and from the executor, probed once when the executor starts.

Each protection is used when the machine offers it, and the executor says at
start which ones it lacks (:meth:`Confinement.describe`) instead of
pretending. They are independent, so that each missing one weakens only its
own promise:

``user``
    Each worker runs as a uid of its own (a block of uids claimed per
    executor, see :class:`_UidBlock`), with no groups: it cannot read another
    worker's memory or environment (``/proc/PID/mem``, ``/proc/PID/environ``),
    signal it or the executor, or write the executor's files. Needs root.
``nodump``
    ``PR_SET_DUMPABLE 0`` and ``PR_SET_NO_NEW_PRIVS`` in the worker: even a
    process of the same uid cannot ptrace it or read its memory, and no
    set-uid program gives it privileges back. Always on (Linux).
``cgroup``
    A memory cgroup per worker, joined before any client code runs:
    ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (v1) or
    ``memory.max`` and ``memory.swap.max`` (v2) cap everything the session
    touches, shared and anonymous mappings included (``RLIMIT_DATA`` alone
    misses ``MAP_SHARED``); at teardown every process in it is killed, forked
    or double-forked ones too. Needs a writable memory cgroup.
``namespaces``
    Debian's ``bubblewrap`` puts the worker in PID, IPC and mount namespaces
    with its own ``/proc``: it sees no other process, cannot name the
    executor's pid, and when it ends the kernel ends every process it left.

Without ``cgroup``, teardown kills the worker's uid as a whole
(``setpriv --reuid UID kill -KILL -1``), or its process group without
``user``. Whatever the machine, a worker's environment is
:data:`WORKER_ENVIRONMENT` of the executor's (never its token) and a home of
its own.

Workers are forked by :mod:`executor.forkserver`, which applies the same
protections with system calls, or booted (``python -m executor.sandbox`` in
bubblewrap) when it cannot run. Measured here (``benchmarks/bench_setup.py``,
2 shared cores): a booted worker answers its first request after 0.22-0.65 s
depending on the load, the protections adding no more than that noise; a
forked one with all of them after 49 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .forkserver import ForkServer

__all__ = [
    "Confinement",
    "Lease",
    "WORKER_ENVIRONMENT",
    "model_cache",
    "PROTECTIONS",
    "enter",
]

logger = logging.getLogger(__name__)

#: The protections, in the order the executor reports them.
PROTECTIONS = ("user", "nodump", "cgroup", "namespaces")
#: The only variables of the executor's environment a worker sees (no token, no secrets).
WORKER_ENVIRONMENT = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHASHSEED", "VIRTUAL_ENV",
    "REMOTEMEDIA_LOG_LEVEL", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
)
# Workers' uids: blocks of _BLOCK above _UID_BASE, one block per executor,
# claimed with a lock file so that two executors on one machine never share a uid.
_UID_BASE = 1_000_000_000
_BLOCK = 4096
_LOCKS = Path(tempfile.gettempdir()) / "remotemedia-uids"
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class _Cgroups:
    """Where the executor makes its workers' memory cgroups."""

    #: A directory of the executor's own, under its memory cgroup.
    root: Path
    #: 1 or 2.
    version: int

    def make(self, name: str, memory_limit: int | None) -> Path:
        path = self.root / name
        path.mkdir()
        if memory_limit:
            limit = str(memory_limit * 1024 * 1024)
            if self.version == 1:
                (path / "memory.limit_in_bytes").write_text(limit)
                # Memory and swap together: swapping out does not lift the cap.
                with contextlib.suppress(OSError):
                    (path / "memory.memsw.limit_in_bytes").write_text(limit)
            else:
                (path / "memory.max").write_text(limit)
                with contextlib.suppress(OSError):
                    (path / "memory.swap.max").write_text("0")
        return path


class _UidBlock:
    """A block of uids no other executor on this machine uses; one per worker at a time."""

    def __init__(self) -> None:
        _LOCKS.mkdir(mode=0o755, exist_ok=True)
        for block in range(256):
            lock = os.open(_LOCKS / f"{block}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock)
                continue
            self._lock = lock  # held (and the block ours) until the executor ends
            self.first = _UID_BASE + block * _BLOCK
            self._free = list(range(self.first + _BLOCK - 1, self.first - 1, -1))
            return
        raise OSError(errno.EAGAIN, f"every block of worker uids under {_LOCKS} is taken")

    def take(self) -> int:
        if not self._free:
            raise OSError(errno.EAGAIN, f"all {_BLOCK} worker uids are in use")
        return self._free.pop()

    def give_back(self, uid: int) -> None:
        self._free.append(uid)


@dataclass
class Confinement:
    """What this machine lets the executor do to confine its workers (see the module docstring)."""

    #: MB each worker may use (``None``: no cap).
    memory_limit: int | None = None
    #: The protections that could not be had, each with the reason.
    missing: dict[str, str] = field(default_factory=dict)
    _uids: _UidBlock | None = None
    _cgroups: _Cgroups | None = None
    _bwrap: str | None = None
    _flags: list[str] = field(default_factory=list)
    #: Forks workers from a warm interpreter, when it runs (see :mod:`executor.forkserver`).
    spawner: ForkServer | None = None
    _homes: Path | None = None
    _count: int = 0

    @classmethod
    def probe(cls, memory_limit: int | None = None, *, wanted: tuple[str, ...] = PROTECTIONS) -> Confinement:
        """Try each protection in ``wanted`` on this machine; ``missing`` says why one cannot be had."""
        found = cls(memory_limit)
        if not sys.platform.startswith("linux"):
            found.missing.update({name: f"only on Linux, not {sys.platform}" for name in PROTECTIONS})
            return found
        # Namespaces first: they can show a worker the Python files that its user could not reach.
        for name in ("namespaces", "nodump", "cgroup", "user"):
            if name not in wanted:
                found.missing[name] = "turned off (--isolation)"
                continue
            try:
                getattr(found, f"_probe_{name}")()
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                found.missing[name] = str(exc)
        for stale in Path(tempfile.gettempdir()).glob("remotemedia-workers-*-*"):  # of executors killed
            pid = stale.name.split("-")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(stale, ignore_errors=True)
        found._homes = Path(tempfile.mkdtemp(prefix=f"remotemedia-workers-{os.getpid()}-"))
        os.chmod(found._homes, 0o711)  # workers reach their own home, list nobody's
        return found

    def _probe_user(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("needs root to run workers as users of their own (workers share the executor's user)")
        hidden = sorted({str(folder) for folder in map(_hidden_ancestor, _python_paths()) if folder is not None})
        if hidden and self._bwrap is None:
            raise RuntimeError(
                f"Python's files are in {', '.join(hidden)}, which other users cannot enter, and without "
                f"bubblewrap they cannot be shown to the workers alone (make them readable, or install bubblewrap)"
            )
        uids = _UidBlock()
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # The proof: an interpreter of a worker's user, confined as a worker, imports a compiled module.
            check = [setpriv, f"--reuid={uids.first}", f"--regid={uids.first}", "--clear-groups", sys.executable, "-c", "import mmap"]
            done = subprocess.run(self.command(check), capture_output=True, timeout=30, cwd=os.getcwd())
            if done.returncode != 0:
                raise RuntimeError(f"a worker's user cannot run Python here: {done.stderr.decode(errors='replace').strip()[-300:]}")
        self._uids = uids

    def _probe_nodump(self) -> None:
        ctypes.CDLL(None, use_errno=True).prctl  # noqa: B018 (the lookup is the probe)

    def _probe_cgroup(self) -> None:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                base, version = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), 1
                break
        else:
            base, version = Path("/sys/fs/cgroup") / self._unified_path().lstrip("/"), 2
            if "memory" not in (base / "cgroup.controllers").read_text().split():
                raise RuntimeError("the cgroup v2 hierarchy does not delegate the memory controller here")
        _remove_stale(base)
        root = base / f"remotemedia-{os.getpid()}"
        try:
            root.mkdir()
            if version == 2:
                (root / "cgroup.subtree_control").write_text("+memory")
        except OSError as exc:
            with contextlib.suppress(OSError):
                root.rmdir()
            raise RuntimeError(f"cannot make memory cgroups under {base}: {exc.strerror or exc}") from None
        self._cgroups = _Cgroups(root, version)

    @staticmethod
    def _unified_path() -> str:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
        raise RuntimeError("no memory cgroup (neither v1 nor v2) for this process")

    def _probe_namespaces(self) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise RuntimeError("bubblewrap is not installed (apt-get install bubblewrap)")
        flags = self._bwrap_flags()
        done = subprocess.run([bwrap, *flags, "--", "/bin/true"], capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"bubblewrap cannot make namespaces here: {done.stderr.decode(errors='replace').strip()}")
        self._bwrap = bwrap
        self._flags = flags

    @staticmethod
    def _bwrap_flags() -> list[str]:
        # The whole file system as it is (the worker's user decides what it may
        # touch); new PID and IPC namespaces with a /proc of their own.
        flags = ["--dev-bind", "/", "/", "--unshare-pid", "--unshare-ipc", "--proc", "/proc", "--die-with-parent"]
        # A folder other users cannot enter (root's home, where pyenv puts
        # Python) is replaced by an empty one that holds only Python's files:
        # the worker's user reaches those, and nothing else of it.
        paths = _python_paths()
        for hidden in sorted({folder for folder in map(_hidden_ancestor, paths) if folder is not None}):
            flags += ["--tmpfs", str(hidden)]
            made = set()
            for path in paths:
                if hidden in path.parents:
                    # The folders on the way, enterable (bubblewrap would make them 0700).
                    for folder in reversed(path.parents):
                        if hidden in folder.parents and folder not in made:
                            made.add(folder)
                            flags += ["--perms", "0755", "--dir", str(folder)]
                    flags += ["--ro-bind", str(path), str(path)]
        cache = model_cache()
        if cache is not None and _hidden_ancestor(cache) is None:
            flags += ["--ro-bind", str(cache), str(cache)]  # read-only even where its modes let workers write
        return flags

    @property
    def active(self) -> list[str]:
        """The protections in force."""
        return [name for name in PROTECTIONS if name not in self.missing]

    def describe(self) -> list[str]:
        """One line for what is in force, one per missing protection with what that means."""
        lines = [f"workers are confined by: {', '.join(self.active) or 'nothing'}"]
        meaning = {
            "user": "every worker runs as the executor's user: a session's code can read other sessions' workers and signal the executor",
            "nodump": "a worker's memory is readable by processes of its user",
            "cgroup": "a session's shared mappings escape --memory-limit, and processes it forks outlive it unless killed with its user",
            "namespaces": "a session's code sees every process on the machine",
        }
        for name, why in self.missing.items():
            lines.append(f"isolation: no {name} ({why}): {meaning[name]}")
        return lines

    def lease(self) -> Lease:
        """What one new worker gets: a uid, a cgroup, a home; give it back with :meth:`Lease.release`."""
        self._count += 1
        uid = self._uids.take() if self._uids is not None else None
        lease = Lease(self, uid)
        try:
            if self._cgroups is not None:
                lease.cgroup = self._cgroups.make(f"worker-{self._count}", self.memory_limit)
            lease.home = Path(tempfile.mkdtemp(prefix="w", dir=self._homes))
            if uid is not None:
                os.chown(lease.home, uid, uid)
        except OSError:
            lease.release_now()
            raise
        return lease

    def fork_request(self, lease: Lease) -> dict:
        """What the fork server needs to confine a worker of ``lease`` as bubblewrap and :func:`enter` would."""
        hidden: dict[str, list[str]] = {}
        for path in _python_paths():
            folder = _hidden_ancestor(path)
            if folder is not None:
                hidden.setdefault(str(folder), []).append(str(path))
        return {
            "env": lease.environment(),
            "uid": lease.uid,
            "cgroup": str(lease.cgroup) if lease.cgroup is not None else None,
            "namespaces": self._bwrap is not None,
            "hidden": sorted(hidden.items()),
            "readonly": [str(cache)] if (cache := model_cache()) is not None and _hidden_ancestor(cache) is None else [],
        }

    async def start_spawner(self) -> None:
        """Start the fork server (workers then start in milliseconds); logs and goes on without it if it fails."""
        from .forkserver import ForkServer

        spawner = ForkServer()
        env = {name: os.environ[name] for name in WORKER_ENVIRONMENT if name in os.environ}
        try:
            await spawner.start(env)
            # Proof that it confines as this executor must: a worker forked, confined, and ended.
            lease = self.lease()
            ours, theirs = socket.socketpair()
            try:
                trial = await spawner.spawn(theirs.fileno(), {**self.fork_request(lease), "check": True})
                status = await asyncio.wait_for(trial.wait(), 30)
            finally:
                ours.close()
                theirs.close()
                await lease.release()
            if status != 0:
                raise OSError(f"a worker forked by it could not be confined (status {status}; see the log above)")
        except (OSError, asyncio.TimeoutError) as exc:
            logger.warning("no fork server (%s): each worker boots its own interpreter (about 0.2 s of CPU)", exc)
            await spawner.close()
            return
        self.spawner = spawner
        logger.info("workers are forked by a fork server (pid %d)", spawner.pid)

    async def stop_spawner(self) -> None:
        """Stop the fork server, if it runs."""
        if self.spawner is not None:
            await self.spawner.close()
            self.spawner = None

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` wrapped in bubblewrap when namespaces are in force."""
        return [self._bwrap, *self._flags, "--", *argv] if self._bwrap else argv

    def close(self) -> None:
        """Remove what :meth:`probe` made (once every lease is released)."""
        if self._cgroups is not None:
            with contextlib.suppress(OSError):
                self._cgroups.root.rmdir()
        if self._homes is not None:
            shutil.rmtree(self._homes, ignore_errors=True)


@dataclass
class Lease:
    """One worker's share of the confinement."""

    confinement: Confinement
    #: The uid it runs as (``None``: the executor's).
    uid: int | None
    #: Its memory cgroup, if any.
    cgroup: Path | None = None
    #: Its home and temporary directory, removed at teardown.
    home: Path | None = None
    #: Its process group (the worker's pid; it starts a session of its own), for want of the above.
    group: int | None = None
    _released: bool = False

    def argv(self) -> list[str]:
        """The arguments that tell ``executor.sandbox`` to :func:`enter` this lease."""
        args = []
        if self.uid is not None:
            args += ["--uid", str(self.uid)]
        if self.cgroup is not None:
            args += ["--cgroup", str(self.cgroup)]
        return args

    def environment(self) -> dict[str, str]:
        """The worker's whole environment: :data:`WORKER_ENVIRONMENT` from ours, and its own home."""
        env = {name: os.environ[name] for name in WORKER_ENVIRONMENT if name in os.environ}
        if self.home is not None:
            env["HOME"] = env["TMPDIR"] = str(self.home)
        cache = model_cache()
        if cache is not None:
            env["HF_HOME"] = str(cache)  # the executor's models, not an empty cache in the worker's home
        return env

    def kill_all(self) -> None:
        """SIGKILL every process the worker left (cgroup, else its uid, else its process group)."""
        if self.cgroup is not None:
            procs = self.cgroup / "cgroup.procs"
            for _ in range(100):  # each round kills what the last round's victims had forked
                try:
                    pids = [int(p) for p in procs.read_text().split()]
                except OSError:
                    return
                if not pids:
                    return
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        elif self.uid is not None:
            # Every process of the uid, from a process of the uid: kill(-1) reaches exactly those.
            setpriv = shutil.which("setpriv")
            if setpriv is not None:
                subprocess.run(
                    [setpriv, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "kill", "-KILL", "-1"],
                    capture_output=True, timeout=10,
                )
        elif self.group is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.group, signal.SIGKILL)

    async def release(self) -> None:
        """After the worker ended: kill what it left, remove its cgroup and home, free its uid."""
        if self._released:
            return
        self.kill_all()
        if self.cgroup is not None:
            for _ in range(200):  # the killed take a moment to leave the cgroup
                try:
                    self.cgroup.rmdir()
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        break
                    await asyncio.sleep(0.01)
                    self.kill_all()
            else:
                logger.warning("cgroup %s still has processes; left in place, its uid retired", self.cgroup)
                self._released = True
                self._clean_home()
                return  # its uid stays taken: something of it may still run
        self.release_now()

    def release_now(self) -> None:
        """Free the lease without waiting (nothing ran under it, or all of it is gone)."""
        if self._released:
            return
        self._released = True
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
        self._clean_home()
        if self.uid is not None and self.confinement._uids is not None:
            self.confinement._uids.give_back(self.uid)

    def _clean_home(self) -> None:
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)


def _remove_stale(base: Path) -> None:
    """The cgroups of executors that died without removing theirs (killed), and what still runs in them."""
    for root in base.glob("remotemedia-*"):
        pid = root.name.rpartition("-")[2]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        for cgroup in [*root.iterdir(), root]:
            if cgroup.is_dir():
                Lease(Confinement(), None, cgroup).kill_all()
                with contextlib.suppress(OSError):
                    cgroup.rmdir()


def model_cache() -> Path | None:
    """The executor's Hugging Face cache, which its workers read (only read: see the README), if it exists."""
    folder = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(folder).resolve() if os.path.isdir(folder) else None


def _python_paths() -> list[Path]:
    """
    The folders a worker reads: its interpreter's installation, its import
    path, the working folder, and the model cache.
    """
    found = {Path(p).resolve() for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, os.getcwd())}
    found.update(Path(p).resolve() for p in sys.path if p and os.path.isdir(p))
    # This project's packages: an editable install finds them through an
    # import hook, not sys.path (a clone in a folder only root enters, say).
    import remotemedia

    found.update(Path(module.__file__).resolve().parent for module in (remotemedia, sys.modules[__package__]))
    # A folder other users cannot enter is never shown whole (a checkout's
    # secrets, root's home): only what a worker needs inside it.
    found = {p for p in found if _enterable(p)}
    if model_cache() is not None:
        found.add(model_cache())
    # Only the outermost of nested folders (a bind mount brings the ones inside along).
    return sorted(p for p in found if not any(q in p.parents for q in found))


def _enterable(folder: Path) -> bool:
    """Whether users other than its owner and group may enter ``folder``."""
    try:
        return bool(folder.stat().st_mode & 0o001)
    except OSError:
        return False


def _hidden_ancestor(path: Path) -> Path | None:
    """The outermost folder on the way to ``path`` that other users cannot enter, if any."""
    for folder in (*reversed(path.parents), path):
        try:
            if not folder.stat().st_mode & 0o001:
                return folder if folder != path else None
        except OSError:
            return None
    return None


def enter(uid: int | None, cgroup: str | None) -> None:
    """
    In the worker, before anything of the client runs: join ``cgroup``, become
    ``uid`` with no groups, and make the process undumpable with no new
    privileges. Raises :exc:`OSError` when a step fails (the worker must not
    run half-confined).
    """
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write("0")  # this process, whatever its pid in a PID namespace
    libc = ctypes.CDLL(None, use_errno=True)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for option, value in ((_PR_SET_DUMPABLE, 0), (_PR_SET_NO_NEW_PRIVS, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl({option}) failed: {os.strerror(error)}")
