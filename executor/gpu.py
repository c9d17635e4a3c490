"""Whether this host has a GPU, as the executor announces it (probed once per process)."""

from __future__ import annotations

import functools

__all__ = ["has_gpu"]


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """
    Announced to the signaling server for ``pair(requirements={"gpu": True})``
    and to service sessions; probed once per process (it imports CTranslate2
    and ONNX Runtime: about 25 MB).
    """
    from remotemedia.models import gpu_available

    return gpu_available()
