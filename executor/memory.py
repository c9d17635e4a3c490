"""
Giving freed memory back to the system, so that what a session held leaves
the executor's resident size when the session ends.

glibc serves large allocations with ``mmap`` and returns them at ``free``,
but only above a threshold that it raises, up to 32 MB, each time such a
block is freed; blocks under it come from the heap, which it trims only
when twice that much is free at its top. So a session whose messages grew
a 24 MB buffer moves the threshold to 24 MB, and the buffers of the next
sessions stay in the executor after they are freed: measured here, three
clients that vanished in the middle of a 48 MB upload left the executor
26 MB above its start with every buffer freed, 2 MB with the thresholds
fixed. :func:`return_freed_memory` fixes them at 1 MiB (mmap) and 4 MiB
(trim); a 1 MiB message then costs a fresh mapping's page faults, about
0.1 ms, small beside moving it over a data channel (0.1-0.3 s).
"""

from __future__ import annotations

import ctypes
import logging

__all__ = ["return_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

logger = logging.getLogger(__name__)

#: Allocations at least this large get a mapping of their own, returned at once when freed.
MMAP_THRESHOLD = 1024 * 1024
#: Free memory at the top of the heap beyond this is given back.
TRIM_THRESHOLD = 4 * 1024 * 1024

# mallopt's parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def return_freed_memory() -> bool:
    """
    Fix this process's malloc thresholds (see the module docstring); whether
    it could (``False`` where the C library is not glibc).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt in this C library: freed memory is returned as it decides")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
