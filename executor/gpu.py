"""Whether this host has a GPU, as the executor announces it (probed once per process)."""

from __future__ import annotations

import functools
import os

__all__ = ["has_gpu", "FAKE_GPU_ENV"]

#: For tests only: ``1`` makes this executor announce a GPU it does not have
#: (so that GPU placement and pairing can be tested on machines without one).
FAKE_GPU_ENV = "REMOTEMEDIA_TEST_FAKE_GPU"


@functools.lru_cache(maxsize=None)
def has_gpu() -> bool:
    """
    Announced to the signaling server for ``pair(requirements={"gpu": True})``
    and to service sessions; probed once per process (it imports CTranslate2
    and ONNX Runtime: about 25 MB).
    """
    if os.environ.get(FAKE_GPU_ENV) == "1":
        return True
    from remotemedia.models import gpu_available

    return gpu_available()
