"""
Where a :class:`~remotemedia.remote.RemoteObjectExecutionNode` runs: the
``placement`` rules.

- ``"remote"`` (the default): on an executor, always (the behaviour from
  before placement existed).
- ``"local"``: in the pipeline's own process, without any session.
- ``"auto"``: decided by each run, before the node's first output:

  1. **Needs and availability** (:func:`survey`, before the run starts):
     :func:`remotemedia.discover` lists the executors; the node's needs are
     its config's ``requirements`` (``{"gpu": True}``, ``{"model": ...}``,
     ``{"service": ...}``, ``{"executor": name}``, matched as pairing
     matches them). No server, no executor, none that meets the needs, or
     none with a free slot: local, saying which (but a config the server
     refuses, for a missing, wrong or expired token or a failed TLS
     handshake, fails the run as for a ``"remote"`` node:
     :func:`misconfigured`). A node that needs a GPU an
     executor has: remote, without measuring (the local host has none to
     compare, as far as the node's declaration goes).
  2. **Calibration** (:class:`Calibration`, on the first
     :data:`CALIBRATION_INPUTS` inputs of a ``process()`` node): each input
     runs on both sides (remote first, then local; each side's copy of the
     object sees the same inputs, so its state stays consistent whichever
     wins), and the medians decide. The remote cost is the whole round trip
     (client to executor and back, the call included): the RPC results do
     not carry the executor's own time today, and the round trip is what a
     frame pays anyway. The outputs of those inputs are the remote side's.
     A streaming node is not calibrated (a stream has no per-input cost to
     time): remote when an executor can take it.

- **Fallback**: when the executor of an ``"auto"`` node is lost mid-run and
  the reconnection finds no other, a *stateless* node (``stateless=True``, or
  a ``stateless = True`` attribute of the wrapped object: each input is
  independent) runs the input that failed, and every next one, locally. A
  stateful node fails as before, saying why: its state lived on the lost
  executor. This is for ``process()`` nodes: a streaming node fails as
  before (the frames in flight in its remote stream cannot be replayed).

Every decision is logged at INFO and kept in the node's
:class:`~remotemedia.stats.NodeStats` (``placement``), e.g.
``local (no executor has a GPU)`` or
``remote exec-2 (3.1 ms remote vs 41 ms local per input)``.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any, Sequence

from ..exceptions import AuthenticationError, PermissionDeniedError, RemoteMediaError, SignalingError, TLSError
from ..pipeline import PLACEMENTS
from ..signaling import messages
from .config import RemoteExecutorConfig

__all__ = [
    "PLACEMENTS", "CALIBRATION_INPUTS", "SURVEY_TIMEOUT", "REQUIRES_KEYS", "Calibration", "listing", "survey",
    "check_placement", "check_requires", "misconfigured",
]

logger = logging.getLogger(__name__)

#: Inputs an ``"auto"`` process() node runs on both sides before it picks one.
CALIBRATION_INPUTS = 3
#: Longest wait for the signaling server's list of executors, in seconds.
SURVEY_TIMEOUT = 5.0


def check_placement(name: str, value: Any) -> None:
    """Raise :exc:`ValueError` unless ``value`` is one of :data:`PLACEMENTS`."""
    if value not in PLACEMENTS:
        raise ValueError(f"{name} must be one of {list(PLACEMENTS)}, not {value!r}")


#: What ``requires`` may ask of an executor: the keys pairing matches
#: (:data:`remotemedia.signaling.messages.REQUIREMENTS`, less ``avoid``, which
#: reconnection sets).
REQUIRES_KEYS = tuple(key for key in messages.REQUIREMENTS.fields if key != "avoid")


def check_requires(name: str, value: Any) -> None:
    """
    Raise :exc:`TypeError` unless ``value`` is a dict, and :exc:`ValueError`
    for a key pairing does not know or a value it would refuse. The signaling
    server ignores unknown keys, so a misspelt ``{"gpus": True}`` would
    otherwise pair with any executor, and ``"auto"`` would not see the need.
    """
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict such as {{'gpu': True}}, not {type(value).__name__}")
    unknown = sorted((key for key in value if key not in REQUIRES_KEYS), key=str)
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; the keys are {list(REQUIRES_KEYS)}, e.g. {{'gpu': True}}")
    try:
        messages.REQUIREMENTS.check(value, name)
    except SignalingError as exc:
        raise ValueError(str(exc)) from None


def _lacks(needs: dict) -> str:
    """What no executor has, in words."""
    parts = []
    if needs.get("gpu"):
        parts.append("a GPU")
    for key in ("model", "service"):
        if key in needs:
            parts.append(f"the {key} {needs[key]!r}")
    if "executor" in needs:
        return f"no executor is named {needs['executor']!r}" + (f" with {' and '.join(parts)}" if parts else "")
    return f"no executor has {' and '.join(parts)}" if parts else "no executor matches"


def _meets(info: Any, needs: dict) -> bool:
    # The rule pairing applies (remotemedia.signaling.messages.meets).
    return messages.meets(needs, name=info.name, gpu=info.gpu, services=info.services, models=info.models)


def misconfigured(error: BaseException) -> bool:
    """
    Whether ``error`` says that the config itself is wrong: its token is
    missing, wrong, expired or an executor's, TLS with the server failed, or
    a setting cannot be used (a CA file that does not load: ``ValueError``).
    ``"auto"`` never hides that by running here (a typo in a token would go
    unnoticed for ever); the run fails as a ``"remote"`` node's would. A
    token's scope that allows no executor for the node (``forbidden``) is no
    mistake: such a node runs here.
    """
    if isinstance(error, PermissionDeniedError):
        return error.code != "forbidden"
    if isinstance(error, ValueError) and not isinstance(error, RemoteMediaError):
        return True
    return isinstance(error, (AuthenticationError, TLSError))


async def listing(config: RemoteExecutorConfig) -> list | str:
    """
    The executors that the signaling server of ``config`` lists, or why it
    did not; raises what :func:`misconfigured` says is the config's fault.
    """
    from ..discovery import discover

    try:
        return await discover(config, timeout=min(SURVEY_TIMEOUT, config.connect_timeout))
    except (RemoteMediaError, OSError) as exc:
        if misconfigured(exc):
            raise
        where = f"{config.host}:{config.port}" if not config.signaling_urls else ", ".join(config.signaling_urls)
        return f"the signaling server at {where} did not list executors: {exc}"


async def survey(
    config: RemoteExecutorConfig, streaming: bool, executors: list | str | None = None
) -> tuple[str, str]:
    """
    Step 1 of ``"auto"``: ``("local" | "remote" | "calibrate", reason)`` from
    the node's needs and what the signaling server lists (``executors``: a
    :func:`listing` already made for this config, else one is made).
    """
    if executors is None:
        executors = await listing(config)
    if isinstance(executors, str):
        return "local", f"local ({executors})"
    where = f"{config.host}:{config.port}" if not config.signaling_urls else ", ".join(config.signaling_urls)
    if not executors:
        return "local", f"local (no executor is registered at {where})"
    needs = dict(config.requirements)
    fit = [info for info in executors if _meets(info, needs)]
    if not fit:
        return "local", f"local ({_lacks(needs)})"
    free = [info for info in fit if info.free > 0]
    if not free:
        return "local", f"local (no free slot on {', '.join(info.name for info in fit)})"
    if needs.get("gpu"):
        return "remote", "needs a GPU"
    if streaming:
        return "remote", "an executor is free; streams are not calibrated"
    return "calibrate", f"{len(free)} executor(s) free"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


class Calibration:
    """The timings of the first inputs on both sides, and the verdict they give."""

    def __init__(self, inputs: int = CALIBRATION_INPUTS) -> None:
        self.inputs = inputs
        self.local: list[float] = []
        self.remote: list[float] = []

    def add(self, local: float, remote: float) -> None:
        """One input's seconds on each side."""
        self.local.append(local)
        self.remote.append(remote)

    @property
    def done(self) -> bool:
        """Whether enough inputs were timed."""
        return len(self.local) >= self.inputs

    def verdict(self, executor: str | None) -> tuple[bool, str]:
        """``(remote, reason)``: remote when its median round trip is below the local median."""
        local, remote = _median(self.local), _median(self.remote)
        versus = f"{_ms(remote)} remote vs {_ms(local)} local per input"
        if remote < local:
            return True, f"remote {executor} ({versus})"
        return False, f"local ({versus} on {executor})"


def _median(samples: Sequence[float]) -> float:
    return statistics.median(samples)
