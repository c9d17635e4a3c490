"""
``python -m executor.sandbox FD [--uid UID] [--cgroup PATH]``: the worker process of one session in
``process`` mode.

The executor keeps the peer connection and the session's authentication;
once the client is authenticated it passes the client's requests, still
encoded, through a socket (file descriptor ``FD``) to this process, which
unpickles and runs them with the same :class:`~executor.dispatch.Dispatcher`
as ``inprocess`` mode and writes its replies back. So everything that comes
from the client's objects (unpickling included) happens here: a crash, a
leak, a runaway loop or a memory blow-up ends this process and its session,
never the executor or other sessions.

On the socket, every frame is a 4-byte big-endian length and one whole RPC
message (:meth:`RPCProtocol.encode`); the first frame from the executor is
a codec-encoded settings dict instead. The process ends when the executor
closes the socket (after running every object's ``cleanup()``), or with
:data:`EXIT_STUCK` when a call's sync code ran past the call timeout.

Before it reads anything from the executor it confines itself
(:func:`executor.isolation.enter`: joins its cgroup, becomes ``UID``, turns
undumpable) and ends with :data:`EXIT_BAD_START` if it cannot. It answers
the executor's ``PING`` frames with ``PONG``, so a stopped worker is noticed.
``REMOTEMEDIA_WORKER_PID`` in its environment is its pid as the machine sees
it (inside a PID namespace ``os.getpid()`` is not), for logs and tools.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import sys

from remotemedia import codec
from remotemedia.exceptions import ConnectionLostError, DecodeError, EncodeError
from remotemedia.rpc import ErrorCode, Kind, Rejected, RPCProtocol, peek
from remotemedia.rpc.framing import frame, read_frame  # the direct lane frames the same way
from remotemedia.serialization import dumps_object

from .dispatch import Dispatcher, Limits
from .isolation import enter
from .objects import ObjectTable

__all__ = ["main", "read_frame", "frame", "EXIT_STUCK", "EXIT_BAD_START"]

logger = logging.getLogger(__name__)

#: Exit status when a timed-out call held the worker thread (the executor says so to the client).
EXIT_STUCK = 3
#: Exit status when the settings could not be applied.
EXIT_BAD_START = 4

_PING_KIND = bytes([Kind.PING])


def _cap_memory(megabytes: int) -> None:
    # RLIMIT_DATA counts the heap and private writable mappings (numpy's large
    # arrays included) but not reserved, untouched address space, so it is
    # close to what the process really uses; RLIMIT_AS would count the
    # hundreds of MB that thread arenas and BLAS buffers reserve.
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


async def _serve(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    first = await read_frame(reader)
    if first is None:
        return 0
    settings = codec.decode(first)
    if settings.get("pid"):
        os.environ["REMOTEMEDIA_WORKER_PID"] = str(settings["pid"])
    limits = Limits.from_dict(settings["limits"])
    try:
        if limits.memory_limit:
            _cap_memory(int(limits.memory_limit))
    except (ValueError, OSError) as exc:
        print(f"executor.sandbox: cannot cap memory: {exc}", file=sys.stderr)
        return EXIT_BAD_START
    protocol = RPCProtocol(int(settings["max_message_size"]), compress=bool(settings.get("compress", True)))
    protocol.peer_limit(int(settings["peer_limit"]))
    stuck: list[str] = []

    async def send(kind: Kind, id: int, body=None) -> None:
        try:
            data = protocol.encode(kind, id, body)
        except EncodeError:
            data = protocol.encode(kind, id, dumps_object(body), pickled=True)
        try:
            writer.writelines(frame(data))
            await writer.drain()
        except ConnectionError as exc:  # the executor is gone: nobody to answer
            raise ConnectionLostError(f"the executor closed the worker's socket: {exc}") from exc

    def on_stuck(why: str) -> None:
        stuck.append(why)
        writer.close()  # the reader sees the end; what was written still goes out

    dispatcher = Dispatcher(ObjectTable(str(settings["session"])), send, limits, on_stuck)
    try:
        while not stuck and (data := await read_frame(reader)) is not None:
            if data[:1] == _PING_KIND:
                writer.writelines(frame(protocol.encode(Kind.PONG, 0)))
                continue
            dispatcher.handle(_decode(protocol, data))
    except ConnectionError:
        pass
    if stuck:
        logger.warning("%s; the worker process ends", stuck[0])
        return EXIT_STUCK  # the stuck thread could not be joined anyway
    await dispatcher.close()
    writer.close()
    return 0


def _decode(protocol: RPCProtocol, data: bytes):
    """A relayed message, or :class:`Rejected` for one the client made undecodable (answered, not fatal)."""
    try:
        return protocol.decode(data)
    except DecodeError as exc:
        kind, id = peek(data)  # the executor relayed it whole: its header is there
        known = Kind(kind) if kind in Kind._value2member_map_ else None
        return Rejected(known, id, ErrorCode.BAD_REQUEST, f"a message that does not decode: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Serve one session over the socket whose descriptor is the first argument."""
    argv = sys.argv[1:] if argv is None else argv
    options = dict(zip(argv[1::2], argv[2::2]))
    if not argv or not argv[0].isdigit() or len(argv) % 2 != 1 or not set(options) <= {"--uid", "--cgroup"}:
        print("usage: python -m executor.sandbox FD [--uid UID] [--cgroup PATH] (started by the executor, not by hand)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("REMOTEMEDIA_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s",
    )
    try:
        uid = options.get("--uid")
        enter(int(uid) if uid is not None else None, options.get("--cgroup"))
    except (OSError, ValueError) as exc:
        print(f"executor.sandbox: cannot confine the worker: {exc}", file=sys.stderr)
        return EXIT_BAD_START
    return asyncio.run(_serve(int(argv[0])))


if __name__ == "__main__":
    # os._exit: a stuck daemon thread must not keep the process alive.
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
