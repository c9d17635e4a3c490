"""
WebAssembly nodes: the ABI, the example modules shipped with the package,
and helpers for them. The node itself is :class:`remotemedia.nodes.WasmNode`.

The ABI (version 1). A module imports nothing and exports:

- ``memory``: its linear memory;
- ``alloc(size: i32) -> i32``: the address of ``size`` bytes the host may
  write to, or 0 when there is no room. The node calls it for its first
  input and again whenever an input is larger than any before; it reuses
  the buffer otherwise;
- the processing function (``process`` unless ``WasmNode(export=...)``
  says otherwise), ``(ptr: i32, a: i32, b: i32, c: i32) -> i32``: it
  transforms the input at ``ptr`` in place and returns 0, or an error
  status that the node raises as :exc:`~remotemedia.exceptions.WasmError`.
  For an :class:`~remotemedia.AudioFrame` (float32): planar samples,
  channel after channel, and ``a, b, c`` = channels, samples per channel,
  sample rate. For a :class:`~remotemedia.VideoFrame`: the image's bytes
  row by row, and ``a, b, c`` = width, rows of the array, bytes per pixel.
  For ``bytes``: ``a`` = their length, ``b = c = 1`` (a one-row image of
  1-byte pixels, so that a module written for video takes bytes too);
- optionally, mutable globals (i32, i64, f32, f64) that
  ``WasmNode(config={name: value})`` sets before the first input.

The instance, its memory and its globals live as long as the node's run
(from ``initialize()`` to ``cleanup()``), so a module keeps state across
frames in them (see the biquad example).
"""

from __future__ import annotations

import math
from pathlib import Path

from .spec import ABI_VERSION

__all__ = ["ABI_VERSION", "EXAMPLES", "example", "lowpass"]

_EXAMPLES_DIR = Path(__file__).parent / "examples"
#: The example modules shipped with the package, by name (``grayscale`` is built from C).
EXAMPLES = ("gain", "biquad", "invert", "threshold", "grayscale")


def example(name: str) -> Path:
    """The file of an example module: ``example("gain")`` is ``.../examples/gain.wat``."""
    if name not in EXAMPLES:
        raise ValueError(f"no example module {name!r}; the examples are {', '.join(EXAMPLES)}")
    for suffix in (".wat", ".wasm"):
        path = _EXAMPLES_DIR / (name + suffix)
        if path.exists():
            return path
    raise FileNotFoundError(f"the example module {name!r} is missing from {_EXAMPLES_DIR} (a broken install?)")


def lowpass(cutoff: float, sample_rate: int, q: float = 1 / math.sqrt(2)) -> dict:
    """
    The biquad example's ``config`` for a low-pass filter (the Audio EQ
    Cookbook's, normalized so that ``a0 = 1``): ``WasmNode(example("biquad"),
    config=lowpass(1000, 48000))``.
    """
    if not 0 < cutoff < sample_rate / 2:
        raise ValueError(f"cutoff must be between 0 and half the sample rate ({sample_rate / 2:g} Hz), not {cutoff!r}")
    if not q > 0:
        raise ValueError(f"q must be positive, not {q!r}")
    w0 = 2 * math.pi * cutoff / sample_rate
    alpha = math.sin(w0) / (2 * q)
    cos = math.cos(w0)
    a0 = 1 + alpha
    return {
        "b0": (1 - cos) / 2 / a0,
        "b1": (1 - cos) / a0,
        "b2": (1 - cos) / 2 / a0,
        "a1": -2 * cos / a0,
        "a2": (1 - alpha) / a0,
    }
