"""
Object serialization with cloudpickle, kept apart from the codec on purpose.

The codec (:mod:`remotemedia.codec`) carries data and can never run code.
This module carries *objects* (a node instance with its state, to be run on an
executor), and unpickling runs arbitrary code. So :func:`loads_object` must
only ever see bytes from an authenticated peer; the executor checks the
session's ticket before it calls it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickle
import sys
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
    registered = []
    try:
        for module in _by_value_modules(obj):
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        raise SerializationError(
            f"cannot serialize {name} with cloudpickle: {exc}. Objects sent to "
            f"an executor must not hold open files, sockets, locks, threads or "
            f"event loops; create those in initialize() instead of __init__().",
            type_name=name,
        ) from exc
    finally:
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)


@functools.lru_cache(maxsize=1)
def _installed_top_level() -> frozenset[str]:
    return frozenset(importlib.metadata.packages_distributions())


def _importable_elsewhere(module_name: str) -> bool:
    top = module_name.partition(".")[0]
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top in _installed_top_level()


def _by_value_modules(obj: Any) -> list:
    """
    Modules whose classes must travel by value: neither the standard library
    nor an installed distribution, so the executor may not have them (a test
    module, a script's sibling module). cloudpickle already sends
    ``__main__`` by value; installed packages go by reference, as usual.
    The object's classes and the classes of its attributes are looked at.
    """
    types = list(type(obj).__mro__)
    for value in getattr(obj, "__dict__", {}).values():
        types += type(value).__mro__
    names = {t.__module__ for t in types} - {"__main__", "builtins"}
    modules = []
    for name in sorted(names):
        module = sys.modules.get(name)
        if module is not None and not _importable_elsewhere(name):
            if name not in cloudpickle.list_registry_pickle_by_value():
                modules.append(module)
    return modules


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
