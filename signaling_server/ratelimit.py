"""A token bucket: the per-connection message rate limit."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """
    Allows ``rate`` events per second on average and bursts of ``burst``.

    Time is passed in (``now``, in seconds from any monotonic clock), so the
    bucket does no I/O and is tested without sleeping.
    """

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; ``False`` means over the limit."""
        # A clock that steps back must not count the same interval twice.
        elapsed = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
