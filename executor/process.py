"""
The executor's handle on one session's worker process (``process`` mode).

:class:`WorkerProcess` starts ``python -m executor.sandbox`` with one end
of a socket pair, passes it the client's requests as they arrive and hands
its replies to ``on_reply``. It is started ahead of its session (the
executor keeps one spare) or when the session starts, so the interpreter
boots while ICE and DTLS negotiate; it learns its settings once the client
has authenticated. See :mod:`executor.sandbox` for the
other side.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Awaitable, Callable

from remotemedia import codec

from .dispatch import Limits
from .sandbox import EXIT_BAD_START, EXIT_STUCK, frame, read_frame

__all__ = ["WorkerProcess"]

logger = logging.getLogger(__name__)


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
    ) -> None:
        self._on_reply = on_reply
        self._on_exit = on_exit
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task | None = None
        self._memory_limit: int | None = None
        self._closing = False

    def bind(self, on_reply: Callable[[bytes], Awaitable[None]], on_exit: Callable[[str], None]) -> None:
        """Give a spare worker (started ahead, before its session existed) to a session."""
        self._on_reply, self._on_exit = on_reply, on_exit

    @property
    def alive(self) -> bool:
        """Started and not ended."""
        return self._process is not None and self._process.returncode is None and not self._closing

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return self._process.pid if self._process is not None else None

    @property
    def backlog(self) -> int:
        """Bytes passed to :meth:`send` that the worker has not read yet (beyond the socket's own buffer)."""
        if self._writer is None or self._writer.is_closing():
            return 0
        return self._writer.transport.get_write_buffer_size()

    async def start(self) -> None:
        """Start the process (it waits for :meth:`configure`)."""
        ours, theirs = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "executor.sandbox", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # Its own process group: a terminal's Ctrl-C goes to the executor, which stops it in order.
                start_new_session=True,
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        self._reading = asyncio.create_task(self._read(reader), name=f"worker-{self._process.pid}")

    def configure(self, session: str, max_message_size: int, peer_limit: int, limits: Limits) -> None:
        """The session's settings: sent once, before any request."""
        self._memory_limit = limits.memory_limit
        settings = {
            "session": session,
            "max_message_size": max_message_size,
            "peer_limit": peer_limit,
            "limits": limits.to_dict(),
        }
        self.send(codec.encode(settings))

    def send(self, data: bytes) -> None:
        """Pass one whole message to the worker (the socket buffers; the data channel paces the client)."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.writelines(frame(data))

    async def close(self, timeout: float) -> None:
        """Let the worker run its objects' ``cleanup()`` and end; kill it after ``timeout`` seconds."""
        self._closing = True
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

    def kill(self) -> None:
        """Stop the worker at once."""
        if self._process is not None and self._process.returncode is None:
            try:
                self._process.kill()
            except ProcessLookupError:
                pass

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (data := await read_frame(reader)) is not None:
                if self._on_reply is not None:
                    await self._on_reply(data)
        except ConnectionError:
            pass
        code = await self._process.wait()
        if not self._closing:
            if self._on_exit is not None:
                self._on_exit(self._why(code))
            else:
                logger.warning("a spare worker process ended before use: %s", self._why(code))

    def _why(self, code: int) -> str:
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
