"""Argument checks shared by the built-in nodes (internal)."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int"]


def positive_int(label: str, value: Any, *, optional: bool = False) -> int | None:
    """Return ``value`` if it is a positive int (not a bool), else raise ValueError."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"{label} must be {allowed}, not {value!r}")
    return value
