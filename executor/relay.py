"""
The relay between a client and its session's worker process, bounded.

In ``process`` mode the executor passes the client's requests to the
worker through a local socket, undecoded. The data channel has no
receive-side backpressure, and the socket's buffer in the executor grows
without bound when the worker does not read: a client that ignored its
input credit and sent 300 inputs of 1 MiB to a worker that was not reading
raised the executor by 300 MB (issue 18). :class:`RelayGuard` makes the
relay obey the same rules as a worker would:

- **input credit**: a call may have :data:`~executor.inputs.INPUT_WINDOW`
  inputs in flight, and gets more only as the worker grants it (the
  ``CREDIT`` replies the executor relays back). An input beyond its credit,
  or for a call that is not running, is refused before it is relayed.
- **bytes**: the requests waiting in the executor for the worker (its
  *backlog*, reported by the worker's socket) may not exceed
  ``max_backlog``; a request that would go beyond is refused. One request
  always fits when nothing waits, so a message of the largest size still
  passes.

The guard is sans-I/O: the session tells it what passes each way and asks it
before relaying; the guard answers with a :class:`Refusal` or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

from remotemedia.rpc import ErrorCode, Kind
from remotemedia.rpc.calls import FINAL, INPUT_WINDOW
from remotemedia.rpc.conversation import Credit

__all__ = ["RelayGuard", "Refusal", "DEFAULT_MAX_BACKLOG"]

#: Bytes of requests that may wait in the executor for a session's worker
#: by default, besides one request of any size (see the module docstring).
DEFAULT_MAX_BACKLOG = 32 * 1024 * 1024


@dataclass(frozen=True)
class Refusal:
    """A request the relay did not pass on: answer it with an ``ERROR``."""

    #: :class:`~remotemedia.rpc.ErrorCode`'s name for it.
    code: str
    #: Why, for the log and the client.
    reason: str
    #: The call cannot go on (its inputs are broken): cancel it in the worker.
    cancel: bool = False
    #: Drop it without a reply: an input of a call that is over, or already refused.
    quiet: bool = False


class RelayGuard:
    """One session's relay to its worker (see the module docstring)."""

    def __init__(self, window: int = INPUT_WINDOW, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        #: Inputs a call may have in flight before the worker grants more.
        self.window = window
        #: Bytes that may wait for the worker, besides one request.
        self.max_backlog = max_backlog
        # Inputs each running call may still send; a call refused for its
        # inputs stays here with None, so that its later inputs are dropped quietly.
        self._credit: dict[int, Credit | None] = {}
        #: Requests refused so far.
        self.refused = 0

    @property
    def calls(self) -> int:
        """Calls the guard keeps credit for (running, as far as it knows)."""
        return len(self._credit)

    def request(self, kind: Kind, id: int, size: int, backlog: int) -> Refusal | None:
        """
        Whether the client's request ``kind``/``id`` of ``size`` bytes may be
        relayed now, with ``backlog`` bytes waiting for the worker already.
        """
        if kind in (Kind.INPUT, Kind.INPUT_END):
            refusal = self._input(kind, id)
            if refusal is not None:
                return refusal
        if backlog > 0 and backlog + size > self.max_backlog:
            self.refused += 1
            if kind is Kind.INPUT:
                self._credit[id] = None
            return Refusal(
                ErrorCode.RATE_LIMITED,
                f"the session's worker is not keeping up: {backlog} bytes of requests wait for it, and "
                f"this {kind.name} of {size} bytes would pass the executor's bound of {self.max_backlog}",
                cancel=kind is Kind.INPUT,
            )
        if kind is Kind.INPUT:
            self._credit[id].take()
        elif kind is Kind.CALL:
            # Any call may be streamed one: it has a window of inputs from the start.
            self._credit[id] = Credit(self.window)
        return None

    def _input(self, kind: Kind, id: int) -> Refusal | None:
        if id not in self._credit or self._credit[id] is None:
            # Late inputs of a call that is over: the worker would drop them too.
            return Refusal(ErrorCode.BAD_REQUEST, f"input for call {id}, which is not running", quiet=True)
        if kind is Kind.INPUT_END or self._credit[id].available > 0:
            return None
        self.refused += 1
        self._credit[id] = None
        return Refusal(
            ErrorCode.BAD_REQUEST,
            f"the client sent more inputs than its credit of {self.window} (it must wait for CREDIT); "
            f"the call is cancelled",
            cancel=True,
        )

    def granted(self, id: int, n: int) -> None:
        """The worker (or a media bridge) granted call ``id`` ``n`` more inputs."""
        credit = self._credit.get(id)
        if credit is not None:
            credit.grant(n)

    def reply(self, kind: int, id: int) -> None:
        """The worker sent ``kind`` for call ``id``: a call that ended needs no credit any more."""
        if kind in FINAL:  # the call is over: its credit is forgotten
            self._credit.pop(id, None)
