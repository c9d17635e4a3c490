"""
A fork server for worker processes (``process`` mode): one process that has
imported everything a worker needs forks each new worker, so that a session
does not pay for an interpreter's boot.

Booting ``python -m executor.sandbox`` costs about 0.2 s of CPU (the
interpreter, asyncio, numpy, av, cloudpickle); with two cores and 25 clients
connecting at once, those boots alone take seconds. A fork costs a few
milliseconds, and the pages the workers share stay shared until written.

``python -m executor.forkserver FD`` is started once by the executor (as the
executor's user, with the workers' clean environment). On the socket ``FD``
the executor sends, per worker, a JSON request and the worker's end of its
socket pair (``SCM_RIGHTS``); the server answers ``{"id", "pid"}`` and, when
that process ends, ``{"ended": pid, "status": code}`` (negative: killed by
that signal, as :mod:`asyncio.subprocess` says it). The forked process
confines itself as a worker started by bubblewrap would be (see
:mod:`executor.isolation`): a new session; with ``namespaces``, new PID,
IPC and mount namespaces, a small init as pid 1 that ends with the worker
(the kernel then ends everything left in the namespace), a ``/proc`` of its
own and the hidden folders replaced; then :func:`~executor.isolation.enter`
and the worker's own code. Every frame is a 4-byte big-endian length and
JSON.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
from pathlib import Path

__all__ = ["ForkServer", "main"]

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG = 1


# -- the executor's side -------------------------------------------------------------


class _Child:
    """A forked worker, as the executor sees it (what :class:`asyncio.subprocess.Process` offers)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = asyncio.Event()

    async def wait(self) -> int:
        await self._ended.wait()
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)  # its init, then the kernel, end the rest

    def _end(self, status: int) -> None:
        self.returncode = status
        self._ended.set()


class ForkServer:
    """The executor's handle on the fork server; :meth:`spawn` forks a worker."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._sock: socket.socket | None = None
        self._reading: asyncio.Task | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._children: dict[int, _Child] = {}
        self._early: dict[int, int] = {}  # statuses that came before their pid was handed out
        self._ids = 0
        self._closing = False

    @property
    def pid(self) -> int | None:
        """The fork server's process id, once started."""
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        """Started and still serving."""
        return self._process is not None and self._process.returncode is None and not self._reading.done()

    async def start(self, env: dict[str, str], ready_timeout: float = 30.0) -> None:
        """Start the server with ``env``; returns once it has imported what workers need."""
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "executor.forkserver", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
            )
        finally:
            theirs.close()
        self._sock = ours
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        first = await asyncio.wait_for(_read_json(reader), ready_timeout)
        if first != {"ready": True}:
            raise OSError(f"the fork server did not start: {first!r}")
        self._reading = asyncio.create_task(self._read(reader), name="fork-server")

    async def spawn(self, fd: int, request: dict) -> _Child:
        """Fork a worker that serves the socket ``fd`` (duplicated over), confined as ``request`` says."""
        if not self.alive:
            raise OSError("the fork server is not running")
        self._ids += 1
        id = self._ids
        future = asyncio.get_running_loop().create_future()
        self._waiting[id] = future
        body = json.dumps({**request, "id": id}).encode()
        # One sendmsg: the descriptor travels with the first byte of its own frame. Requests are
        # small and answered at once, so the socket's buffer does not fill.
        socket.send_fds(self._sock, [_LENGTH.pack(len(body)) + body], [fd])
        try:
            pid = await asyncio.wait_for(future, 30)
        finally:
            self._waiting.pop(id, None)
        child = self._children[pid] = _Child(pid)
        if pid in self._early:
            child._end(self._early.pop(pid))
        return child

    async def close(self) -> None:
        """Stop the server (the workers it forked are the executor's to end)."""
        self._closing = True
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except asyncio.TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while (message := await _read_json(reader)) is not None:
            if "ended" in message:
                child = self._children.pop(message["ended"], None)
                if child is not None:
                    child._end(message["status"])
                else:
                    self._early[message["ended"]] = message["status"]
            elif "pid" in message:
                future = self._waiting.get(message["id"])
                if future is not None and not future.done():
                    if message["pid"] > 0:
                        future.set_result(message["pid"])
                    else:
                        future.set_exception(OSError(message.get("error", "the fork failed")))
        if not self._closing:
            logger.warning("the fork server ended; workers are booted one by one from now on")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(OSError("the fork server ended"))
        # Their ends cannot be told any more: ask the kernel (in this task, which close() ends).
        await asyncio.gather(*(_poll_end(child) for child in list(self._children.values())))


async def _poll_end(child: _Child) -> None:
    while Path(f"/proc/{child.pid}").exists() and "Z" not in _state(child.pid):
        await asyncio.sleep(0.2)
    child._end(-signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


async def _read_json(reader: asyncio.StreamReader) -> dict | None:
    try:
        head = await reader.readexactly(_LENGTH.size)
        return json.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


# -- the server's side ----------------------------------------------------------------


def _send(sock: socket.socket, message: dict) -> None:
    body = json.dumps(message).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _libc_call(name: str, *args) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}{args!r}: {os.strerror(error)}")


def _mount(source: str | None, target: str, kind: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda text: None if text is None else text.encode()  # noqa: E731
    _libc_call("mount", encode(source), encode(target), encode(kind), ctypes.c_ulong(flags), encode(data))


def _pass_on(status: int) -> int:
    """A child's wait status as an exit code: its own, or 128 + the signal that killed it."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _namespaces(hidden: list[list], readonly: list[str]) -> None:
    """In the forked child: new namespaces, and an init (pid 1) that ends when the worker does."""
    _libc_call("unshare", _CLONE_NEWPID | _CLONE_NEWIPC | _CLONE_NEWNS)
    init = os.fork()
    if init:  # outside: wait for the namespace's init, and end as it does
        _, status = os.waitpid(init, 0)
        os._exit(_pass_on(status))
    _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for folder, paths in hidden:  # as bubblewrap's --tmpfs and --ro-bind (see isolation._bwrap_flags)
        # Held open: once the tmpfs covers the folder, the paths are reached only through these.
        sources = [os.open(path, os.O_PATH) for path in paths]
        _mount("tmpfs", folder, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
        for path, source in zip(paths, sources):
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{source}", path, None, _MS_BIND | _MS_REC)
            _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_REC)
            os.close(source)
    for path in readonly:  # as bubblewrap's --ro-bind of a path onto itself
        _mount(path, path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_REC)
    worker = os.fork()
    if worker:  # pid 1: reap whatever is orphaned here, and end with the worker
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == worker:
                os._exit(_pass_on(status))
    _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(request: dict, fd: int) -> int:
    """In the forked process: confine it (see the module docstring), then serve as a worker."""
    from .isolation import enter
    from .sandbox import main

    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if request.get("namespaces"):
        try:
            _namespaces(request.get("hidden", []), request.get("readonly", []))
        except OSError as exc:
            print(f"executor.forkserver: cannot make the worker's namespaces: {exc}", file=sys.stderr)
            return 4
    os.environ.clear()
    os.environ.update(request["env"])
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()  # else every worker draws the fork server's numbers
    try:
        enter(request.get("uid"), request.get("cgroup"))
        if request.get("check"):
            os.listdir(os.path.dirname(os.__file__))  # Python's own files, as the worker's user
            return 0
    except OSError as exc:
        print(f"executor.forkserver: cannot confine the worker: {exc}", file=sys.stderr)
        return 4  # sandbox.EXIT_BAD_START
    return main([str(fd)])  # enter() again with nothing to join: the prctl calls only


def _serve(sock: socket.socket) -> None:
    # Warm: everything a worker imports before it reads its first request.
    import executor.sandbox  # noqa: F401

    # A child's end wakes the loop (its status goes to the executor at once).
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send(sock, {"ready": True})
    while True:
        readable, _, _ = select.select([sock, wake_read], [], [], 5.0)
        if wake_read in readable:
            os.read(wake_read, 4096)
        if sock in readable:
            head, fds, _, _ = socket.recv_fds(sock, _LENGTH.size, 1)
            if not head:
                return  # the executor is gone
            body = b""
            size = _LENGTH.unpack(head)[0]
            while len(body) < size:
                body += sock.recv(size - len(body))
            request = json.loads(body)
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                _send(sock, {"id": request["id"], "pid": -1, "error": str(exc)})
                continue
            if pid == 0:
                sock.close()
                os.close(wake_read)
                os.close(wake_write)
                code = 1
                try:
                    code = _child(request, fds[0])
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            _send(sock, {"id": request["id"], "pid": pid})
        while True:  # reap, and tell
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            _send(sock, {"ended": pid, "status": os.waitstatus_to_exitcode(status)})


def main(argv: list[str] | None = None) -> int:
    """Serve fork requests on the socket whose descriptor is the first argument, until it closes."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m executor.forkserver FD (started by the executor, not by hand)", file=sys.stderr)
        return 2
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        _serve(socket.socket(fileno=int(argv[0])))
    except (ConnectionError, BrokenPipeError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
