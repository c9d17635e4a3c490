"""
How a :class:`~remotemedia.nodes.WasmNode` travels to an executor: as data,
never as a pickle.

A ``CREATE`` whose body is not pickled but a codec-encoded dict with the one
key ``"wasm"`` asks the executor to build a WASM node::

    {"wasm": {"abi": 1, "module": <binary module bytes>, "export": "process",
              "config": {name: number}, "fuel": int, "memory_mb": int,
              "time_limit": float, "streaming": bool, "name": str}}

The client builds it with :func:`create_body`; the executor recognizes it
with :func:`is_create_body` and reads it back with :func:`spec_from_body`,
which checks every field's type (the body comes from the peer). Nothing else
builds or parses this body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["WasmSpec", "ABI_VERSION", "create_body", "is_create_body", "spec_from_body", "KEY"]

#: Version of the node ABI (see :mod:`remotemedia.wasm`); both ends must speak the same.
ABI_VERSION = 1
#: The ``CREATE`` body's one key.
KEY = "wasm"


@dataclass(frozen=True)
class WasmSpec:
    """Everything a WASM node is made of: what travels, and what a node is rebuilt from."""

    #: The module, as WebAssembly binary.
    module: bytes
    #: The exported function that processes one input.
    export: str = "process"
    #: Values for the module's exported mutable globals, set at ``initialize()``.
    config: dict = field(default_factory=dict)
    #: Fuel (about one unit per WebAssembly instruction) one call may use.
    fuel: int = 1_000_000_000
    #: Most MB the module's linear memory may grow to.
    memory_mb: int = 64
    #: Seconds one call may run.
    time_limit: float = 1.0
    #: Whether the node streams (``stream()``) instead of processing one input per call.
    streaming: bool = False
    #: The node's name.
    name: str = "WasmNode"


def create_body(spec: WasmSpec) -> dict:
    """The ``CREATE`` body for ``spec``."""
    return {
        KEY: {
            "abi": ABI_VERSION,
            "module": spec.module,
            "export": spec.export,
            "config": dict(spec.config),
            "fuel": spec.fuel,
            "memory_mb": spec.memory_mb,
            "time_limit": spec.time_limit,
            "streaming": spec.streaming,
            "name": spec.name,
        }
    }


def is_create_body(body: Any) -> bool:
    """Whether a (not pickled) ``CREATE`` body asks for a WASM node."""
    return isinstance(body, dict) and len(body) == 1 and KEY in body


def spec_from_body(body: Any) -> WasmSpec:
    """The spec in a ``CREATE`` body; ``ValueError`` naming the first bad field."""
    if not is_create_body(body) or not isinstance(body[KEY], dict):
        raise ValueError('a WASM node\'s CREATE body is {"wasm": {...}}')
    d = body[KEY]
    if d.get("abi") != ABI_VERSION:
        raise ValueError(f"WASM node ABI {d.get('abi')!r} is not {ABI_VERSION} (upgrade remotemedia on both ends)")
    checks = {
        "module": lambda v: isinstance(v, bytes),
        "export": lambda v: isinstance(v, str) and v,
        "config": lambda v: isinstance(v, dict)
        and all(isinstance(k, str) and isinstance(x, (int, float)) and not isinstance(x, bool) for k, x in v.items()),
        "fuel": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "memory_mb": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096,
        "time_limit": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "streaming": lambda v: isinstance(v, bool),
        "name": lambda v: isinstance(v, str),
    }
    for name, ok in checks.items():
        if name not in d or not ok(d[name]):
            raise ValueError(f"a WASM node's CREATE body has a bad or missing {name!r}")
    return WasmSpec(
        module=d["module"],
        export=d["export"],
        config=dict(d["config"]),
        fuel=d["fuel"],
        memory_mb=d["memory_mb"],
        time_limit=float(d["time_limit"]),
        streaming=d["streaming"],
        name=d["name"],
    )
