"""
Flow-control figures the client and the executor must agree on.

Defined once, in the call conversation's contract
(:mod:`remotemedia.rpc.calls`); this module re-exports them for code that
imported them from here.
"""

from .calls import INPUT_WINDOW, MAX_WAITING_FRAMES, MEDIA_DRAIN, STREAM_WINDOW

__all__ = ["STREAM_WINDOW", "INPUT_WINDOW", "MEDIA_DRAIN", "MAX_WAITING_FRAMES"]
