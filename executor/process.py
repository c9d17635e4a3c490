"""
The executor's handle on one session's worker process (``process`` mode).

:class:`WorkerProcess` starts a worker (forked by :mod:`executor.forkserver`,
else ``python -m executor.sandbox`` booted) with one end of a socket pair,
passes it the client's requests as they arrive and hands its replies to
``on_reply``. It is started ahead of its session (see :mod:`executor.pool`)
or when the session starts, while ICE and DTLS negotiate; it learns its
settings once the client has authenticated. See :mod:`executor.sandbox` for
the other side.

Each worker is confined by a :class:`~executor.isolation.Lease` of the
executor's :class:`~executor.isolation.Confinement` (its own user, cgroup and
namespaces, where the machine allows); once the session is under way the
executor pings it, so a worker that stops answering (stopped with SIGSTOP,
or its event loop blocked past the call timeout) is noticed and killed, and
its session ends.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Awaitable, Callable

from remotemedia import codec
from remotemedia.rpc import Kind, RPCProtocol, peek

from .dispatch import Limits
from .isolation import Confinement, Lease
from .sandbox import EXIT_BAD_START, EXIT_STUCK, frame, read_frame

__all__ = ["WorkerProcess"]

logger = logging.getLogger(__name__)

#: Seconds between the executor's pings to a worker whose session is under way.
PING_INTERVAL = 1.0
#: Seconds of silence after which a worker is taken for stopped, when no call timeout applies.
DEFAULT_SILENCE = 60.0
#: Never less than this, whatever the call timeout: a loaded machine may not run a worker for a second or two.
MIN_SILENCE = 5.0
_PING = RPCProtocol(1024, compress=False).encode(Kind.PING, 0)


class WorkerProcess:
    """
    One worker process. ``await on_reply(data)`` gets each whole message it
    sends (the worker waits while that waits: backpressure from the data
    channel); ``on_exit(why)`` is called if it ends before :meth:`close`.
    """

    def __init__(
        self,
        on_reply: Callable[[bytes], Awaitable[None]] | None = None,
        on_exit: Callable[[str], None] | None = None,
        confinement: Confinement | None = None,
    ) -> None:
        self._confinement = confinement
        self._lease: Lease | None = None
        self._heard = 0.0  # loop time the worker last sent anything
        self._relaying = False  # a reply is on its way to the client: the worker's next frames wait
        self._watching: asyncio.Task | None = None
        self._on_reply = on_reply
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task | None = None
        self._memory_limit: int | None = None
        self._closing = False
        self._stalled = ""

    def bind(self, on_reply: Callable[[bytes], Awaitable[None]], on_exit: Callable[[str], None]) -> None:
        """Give a spare worker (started ahead, before its session existed) to a session."""
        self._on_reply, self._on_exit = on_reply, on_exit

    @property
    def alive(self) -> bool:
        """Started and not ended."""
        return self._process is not None and self._process.returncode is None and not self._closing

    @property
    def pid(self) -> int | None:
        """The worker's process id as this machine sees it, once started."""
        if self._process is None:
            return None
        if self._lease is not None and self._confinement is not None and "namespaces" in self._confinement.active:
            # bubblewrap -> its init (pid 1 inside) -> the worker
            pid = self._process.pid
            for _ in range(2):
                try:
                    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                except OSError:
                    return self._process.pid
                if not children:
                    return self._process.pid
                pid = int(children[0])
            return pid
        return self._process.pid

    @property
    def uid(self) -> int | None:
        """The user the worker runs as (``None``: the executor's)."""
        return self._lease.uid if self._lease is not None else None

    @property
    def backlog(self) -> int:
        """Bytes passed to :meth:`send` that the worker has not read yet (beyond the socket's own buffer)."""
        if self._writer is None or self._writer.is_closing():
            return 0
        return self._writer.transport.get_write_buffer_size()

    async def start(self) -> None:
        """Start the process (it waits for :meth:`configure`): forked by the fork server, else booted."""
        env = None
        if self._confinement is not None:
            self._lease = self._confinement.lease()
            env = self._lease.environment()
        ours, theirs = socket.socketpair()
        try:
            spawner = self._confinement.spawner if self._confinement is not None else None
            if spawner is not None and spawner.alive:
                try:
                    self._process = await spawner.spawn(theirs.fileno(), self._confinement.fork_request(self._lease))
                except OSError as exc:
                    logger.warning("the fork server could not fork a worker (%s); booting one", exc)
            if self._process is None:
                await self._exec(env, theirs)
        except BaseException:
            ours.close()
            if self._lease is not None:
                self._lease.release_now()
            raise
        finally:
            theirs.close()
        if self._lease is not None:
            self._lease.group = self._process.pid  # a session of its own: forked or booted
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        self._reading = asyncio.create_task(self._read(reader), name=f"worker-{self._process.pid}")

    async def _exec(self, env: dict | None, theirs: socket.socket) -> None:
        """Boot a new interpreter for the worker (in bubblewrap, for namespaces)."""
        command = [sys.executable, "-m", "executor.sandbox", str(theirs.fileno())]
        if self._lease is not None:
            command = self._confinement.command(command + self._lease.argv())
        self._process = await asyncio.create_subprocess_exec(
            *command,
            pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            # Its own process group: a terminal's Ctrl-C goes to the executor, which stops it in order.
            start_new_session=True,
        )

    def configure(self, session: str, max_message_size: int, peer_limit: int, limits: Limits, compress: bool = True) -> None:
        """The session's settings: sent once, before any request; then the pings begin (``compress``: the client's lane wants it)."""
        self._memory_limit = limits.memory_limit
        settings = {
            "session": session,
            "max_message_size": max_message_size,
            "peer_limit": peer_limit,
            "limits": limits.to_dict(),
            "pid": self.pid,
            "compress": compress,
        }
        self.send(codec.encode(settings))
        silence = max(limits.call_timeout or DEFAULT_SILENCE, MIN_SILENCE)
        self._heard = asyncio.get_running_loop().time()
        self._watching = asyncio.create_task(self._watch(silence), name=f"worker-watch-{self._process.pid}")

    def send(self, data: bytes) -> None:
        """Pass one whole message to the worker (the socket buffers; the data channel paces the client)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(frame(data))

    async def close(self, timeout: float) -> None:
        """Let the worker run its objects' ``cleanup()`` and end; kill it after ``timeout`` seconds."""
        self._closing = True
        if self._watching is not None:
            self._watching.cancel()
        if self._process is None:
            return
        if self._writer is not None:
            self._writer.close()  # the worker sees the end of its input
        try:
            await asyncio.wait_for(self._process.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning("worker %d did not end within %g s of its session; killed", self._process.pid, timeout)
            self.kill()
            await self._process.wait()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        if self._watching is not None:
            await asyncio.gather(self._watching, return_exceptions=True)
        if self._lease is not None:
            await self._lease.release()  # its forked children end here too
        # The session's callbacks go with it: no cycle keeps an ended session alive.
        self._on_reply = self._on_exit = None

    def kill(self) -> None:
        """Stop the worker at once (stopped or not), and whatever it forked."""
        if self._process is not None and self._process.returncode is None:
            try:
                self._process.kill()
            except ProcessLookupError:
                pass
        if self._lease is not None:
            self._lease.kill_all()

    async def _watch(self, silence: float) -> None:
        loop = asyncio.get_running_loop()
        while self.alive:
            await asyncio.sleep(PING_INTERVAL)
            if self._relaying:
                self._heard = loop.time()  # its frames wait for the client, not for it
            elif loop.time() - self._heard > silence:
                why = (
                    f"the session's worker process did not answer for {silence:g} s (stopped, or its event loop "
                    f"blocked past the call timeout); it was killed"
                )
                logger.warning("worker %s: %s", self.pid, why)
                self._stalled = why
                self.kill()
                return
            self.send(_PING)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (data := await read_frame(reader)) is not None:
                self._heard = loop.time()
                if peek(data)[0] == Kind.PONG:  # an answer to _watch's ping
                    continue
                if self._on_reply is not None:
                    self._relaying = True
                    try:
                        await self._on_reply(data)
                    finally:
                        self._relaying = False
        except ConnectionError:
            pass
        code = await self._process.wait()
        if self._lease is not None and not self._closing:
            await self._lease.release()
        if not self._closing:
            if self._on_exit is not None:
                self._on_exit(self._why(code))
            else:
                logger.warning("a spare worker process ended before use: %s", self._why(code))

    def _why(self, code: int) -> str:
        if self._stalled:
            return self._stalled
        if code > 128 and self._confinement is not None and "namespaces" in self._confinement.active:
            code = 128 - code  # bubblewrap passes on a signal's death as 128 + its number
        if code == EXIT_STUCK:
            return "a call ran past the call timeout in code that cannot be interrupted; its worker process was stopped"
        if code == EXIT_BAD_START:
            return "the session's worker process could not start (see the executor's log)"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            why = f"the session's worker process was killed by {name}"
            if code == -signal.SIGKILL and self._memory_limit:
                why += f" (perhaps for memory: the executor caps each session at {self._memory_limit} MB)"
            return why
        return f"the session's worker process ended with status {code}"
