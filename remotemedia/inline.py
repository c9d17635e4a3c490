"""
When a synchronous node method runs on the event loop instead of a thread.

A synchronous ``process()`` runs in a worker thread so that numpy or model
code never blocks the loop. The hand-off costs about 70 µs a call on this
machine (waking an idle thread and waking the loop again), which is far more
than a cheap node takes: ten pass-through sync nodes ran at 1,400 frames/s
against 32,000 for async ones. So each sync method earns its place:

- it starts in a thread, where it is timed (the time inside the method, not
  the hand-off);
- after :data:`PROOF_CALLS` calls in a row each under :data:`INLINE_BUDGET`,
  it runs inline, on the loop, still timed;
- the first inline call over the budget sends it back to a thread, and the
  proof it must give before coming back doubles (up to :data:`MAX_PROOF`), so
  a node that is slow now and then settles in a thread.

The cost of being wrong is one call's time on the loop: a node proven cheap
that suddenly takes 30 ms stalls the loop once, for 30 ms, then leaves.
Methods marked with :func:`threaded` (a model call, a blocking read) never run
inline.

Sans-I/O: :class:`InlinePolicy` is fed durations and answers where the next
call runs; the scheduler does the timing and the running.
"""

from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["INLINE_BUDGET", "PROOF_CALLS", "MAX_PROOF", "InlinePolicy", "threaded", "wants_thread"]

#: A call under this many seconds may run on the loop (a 20 ms audio frame
#: leaves ample room for twenty such nodes).
INLINE_BUDGET = 0.0005

#: Calls in a row under the budget before a method first runs inline.
PROOF_CALLS = 16

#: The most calls in a row a method that went back to a thread must prove.
MAX_PROOF = 4096

F = TypeVar("F", bound=Callable)


def threaded(method: F) -> F:
    """Mark a synchronous node method to always run in a worker thread (it may block)."""
    method.__remotemedia_threaded__ = True  # type: ignore[attr-defined]
    return method


def wants_thread(method: Callable) -> bool:
    """Whether ``method`` (or the function behind a bound method) is marked with :func:`threaded`."""
    function = getattr(method, "__func__", method)
    return bool(getattr(function, "__remotemedia_threaded__", False))


class InlinePolicy:
    """Where one synchronous method's next call runs: :attr:`inline` or in a thread."""

    def __init__(self, budget: float = INLINE_BUDGET, proof: int = PROOF_CALLS) -> None:
        self.budget = budget
        #: Whether the next call runs on the loop.
        self.inline = False
        #: Calls in a row under the budget that it takes to go inline.
        self.proof = proof
        #: Times it went back to a thread after running inline.
        self.demotions = 0
        self._streak = 0

    def record(self, seconds: float) -> None:
        """A call took ``seconds`` (inside the method)."""
        if seconds > self.budget:
            self._streak = 0
            if self.inline:
                self.inline = False
                self.demotions += 1
                self.proof = min(self.proof * 2, MAX_PROOF)
            return
        if not self.inline:
            self._streak += 1
            if self._streak >= self.proof:
                self.inline = True
                self._streak = 0

    def __repr__(self) -> str:
        where = "inline" if self.inline else f"threaded ({self._streak}/{self.proof} cheap calls)"
        return f"<InlinePolicy {where}, {self.demotions} demotions>"
