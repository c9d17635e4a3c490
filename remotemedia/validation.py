"""
The checks every configuration dataclass runs on its fields, written once.

The three configurations (:class:`~remotemedia.remote.config.RemoteExecutorConfig`,
``executor.executor.ExecutorConfig``, ``signaling_server.config.ServerConfig``)
are frozen and check their fields once, in ``__post_init__``, with these
helpers; what is derived from them (the executor's session settings and
limits) is never checked again. So one kind of mistake gets one message
wherever it is made: the field's name, what it takes, and what it was given.

Every check raises :exc:`ValueError`: the command lines turn it into exit
status 2 with the message, and a field's name there is its flag's name with
``_`` for ``-``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = [
    "positive",
    "optional_positive",
    "longer",
    "positive_int",
    "non_negative_int",
    "at_least",
    "port",
    "flag",
    "choice",
    "text",
    "optional_text",
    "sequence",
    "ice_servers",
]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive(name: str, value: Any, unit: str = "seconds") -> None:
    """``value`` is a positive, finite number (of ``unit``; ``True`` is not one)."""
    if not _number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of {unit}, not {value!r}")


def optional_positive(name: str, value: Any, none: str = "no limit", unit: str = "seconds") -> None:
    """``value`` is a positive, finite number of ``unit``, or ``None`` (which means ``none``)."""
    if value is not None and (not _number(value) or not (math.isfinite(value) and value > 0)):
        raise ValueError(f"{name} must be a positive number of {unit}, or None for {none}, not {value!r}")


def longer(timeout_name: str, timeout: float, interval_name: str, interval: float) -> None:
    """A heartbeat's timeout is longer than its interval (a peer gets more than one chance)."""
    if not timeout > interval:
        raise ValueError(
            f"{timeout_name} ({timeout:g} s) must be longer than {interval_name} ({interval:g} s)"
        )


def positive_int(name: str, value: Any) -> None:
    """``value`` is an integer of at least 1 (``True`` is not one)."""
    if not _integer(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def non_negative_int(name: str, value: Any) -> None:
    """``value`` is an integer of at least 0."""
    if not _integer(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {value!r}")


def at_least(name: str, value: Any, minimum: int, shown: str) -> None:
    """``value`` is an integer of at least ``minimum``, which the message shows as ``shown`` ("1024 bytes")."""
    if not _integer(value) or value < minimum:
        raise ValueError(f"{name} must be at least {shown}, not {value!r}")


def port(name: str, value: Any) -> None:
    """``value`` is a TCP port, 1 to 65535."""
    if not _integer(value) or not 0 < value < 65536:
        raise ValueError(f"{name} must be an integer from 1 to 65535, not {value!r}")


def flag(name: str, value: Any) -> None:
    """``value`` is ``True`` or ``False`` (not 1, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")


def choice(name: str, value: Any, options: Iterable[str]) -> None:
    """``value`` is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(options)}, not {value!r}")


def text(name: str, value: Any, what: str = "a non-empty string") -> None:
    """``value`` is a non-empty string (``what`` names it in the message: "a path (a string)")."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be {what}, not {value!r}")


def optional_text(name: str, value: Any, what: str = "a non-empty string", none: str = "", *, empty: bool = False) -> None:
    """
    ``value`` is a non-empty string (any string with ``empty``) or ``None``;
    ``none`` says what ``None`` means ("for an open server").
    """
    if value is None or (isinstance(value, str) and (value or empty)):
        return
    meaning = f" {none}" if none else ""
    raise ValueError(f"{name} must be {what}, or None{meaning}, not {value!r}")


def sequence(name: str, value: Any, what: str) -> tuple:
    """``value`` as a tuple; a lone string or dict (a common slip for a list of one) is refused."""
    if isinstance(value, (str, bytes, dict)):
        raise ValueError(f"{name} must be a list of {what}, not a single one: [{value!r}]")
    try:
        return tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a list of {what}, not {value!r}") from None


def ice_servers(name: str, value: Any, *, urls_only: bool = False) -> tuple:
    """
    STUN/TURN servers as a tuple: URLs, or (unless ``urls_only``) dicts
    ``{"urls": ..., "username": ..., "credential": ...}``.
    """
    what = "stun: or turn: URLs" if urls_only else "URLs or dicts"
    servers = sequence(name, value, what)
    for server in servers:
        if urls_only:
            if not isinstance(server, str) or not server.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"each ICE server must be a stun: or turn: URL, not {server!r}")
        elif not (isinstance(server, str) or (isinstance(server, dict) and "urls" in server)):
            raise ValueError(f"each ICE server must be a URL string or a dict with 'urls', not {server!r}")
    return servers
