"""
Object serialization with cloudpickle, kept apart from the codec on purpose.

The codec (:mod:`remotemedia.codec`) carries data and can never run code.
This module carries *objects* (a node instance with its state, to be run on an
executor), and unpickling runs arbitrary code. So :func:`loads_object` must
only ever see bytes from an authenticated peer; the executor checks the
session's ticket before it calls it.
"""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from .exceptions import SerializationError

__all__ = ["dumps_object", "loads_object"]


def dumps_object(obj: Any) -> bytes:
    """
    Serialize ``obj`` with cloudpickle.

    Raises :exc:`SerializationError` naming the object's type when it holds
    something that cannot be pickled (an open file, a lock, an event loop...).
    Create such resources in the object's ``initialize()`` instead of its
    constructor, so they are made where the object runs.
    """
    try:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise SerializationError(
            f"cannot serialize {name} with cloudpickle: {exc}. Objects sent to "
            f"an executor must not hold open files, sockets, locks, threads or "
            f"event loops; create those in initialize() instead of __init__().",
            type_name=name,
        ) from exc


def loads_object(data: bytes) -> Any:
    """
    Deserialize an object made by :func:`dumps_object`.

    This runs code chosen by whoever made ``data``: call it only with bytes
    from an authenticated peer. Raises :exc:`SerializationError` when the
    bytes are corrupt or need a module that is not installed here.
    """
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise SerializationError(
            f"cannot deserialize object: {type(exc).__name__}: {exc}. If a module "
            f"is missing, install it where the object is deserialized."
        ) from exc
