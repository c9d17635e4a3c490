"""
:class:`WasmNode`: a node whose work is a WebAssembly module, run sandboxed
under wasmtime (see :mod:`remotemedia.wasm` for the ABI and
:mod:`remotemedia.wasm.runtime` for the sandbox and its limits).

Inputs are copied into the module's linear memory through a numpy view (no
per-sample Python), the export transforms them in place, and the result is
copied out into a new frame. On an executor the node travels as data (its
module's bytes and settings, :mod:`remotemedia.wasm.spec`), never as a
pickle, so an executor started with ``--accept wasm`` can run it for a
client it does not trust with Python.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import wasmtime

from ..aio import in_thread
from ..exceptions import ResourceLimitError, WasmError
from ..frames import AudioFrame, VideoFrame
from ..node import Node
from ..wasm.runtime import Sandbox, compile_module, to_binary
from ..wasm.spec import WasmSpec

__all__ = ["WasmNode"]

# Inputs smaller than this are processed on the event loop by stream(): a
# thread hop (about 50 us) costs more than their whole work.
_INLINE_BYTES = 64 * 1024
_MB = 1 << 20


def _read_module(module: Any) -> bytes:
    # Text always has a parenthesis ("(module ...", or a comment first); a path has none, usually.
    if isinstance(module, Path) or (isinstance(module, str) and "(" not in module):
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"module {str(module)[:80]!r} is neither WebAssembly text (WAT) nor an existing file")
        module = path.read_bytes()
    if not isinstance(module, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"module must be a .wasm/.wat file, its bytes, or WebAssembly text, not {type(module).__name__}")
    return to_binary(module)


def _check_exports(module: wasmtime.Module, export: str, config: dict) -> None:
    """ValueError unless the module has what the ABI and ``config`` need."""
    exports = {e.name: e.type for e in module.exports}
    i32 = wasmtime.ValType.i32()

    def function(name: str, params: int) -> None:
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            raise ValueError(f"the module exports no function {name!r}, which the WASM node ABI needs (see remotemedia.wasm)")
        if list(ty.params) != [i32] * params or list(ty.results) != [i32]:
            raise ValueError(f"the module's {name!r} takes {ty.params} and returns {ty.results}; the ABI needs {params} i32 -> i32")

    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise ValueError("the module exports no memory named 'memory', which the WASM node ABI needs")
    if memory.is_64:
        raise ValueError("the module's memory is a 64-bit memory; the WASM node ABI's addresses are i32 (use a 32-bit memory)")
    function("alloc", 1)
    function(export, 4)
    globals_ = sorted(n for n, t in exports.items() if isinstance(t, wasmtime.GlobalType) and t.mutable)
    for name, value in config.items():
        ty = exports.get(name)
        if not (isinstance(ty, wasmtime.GlobalType) and ty.mutable):
            raise ValueError(
                f"config key {name!r} is not a mutable global the module exports "
                f"(it exports {', '.join(globals_) or 'none'})"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config[{name!r}] must be a number, not {value!r}")
        if str(ty.content) in ("i32", "i64") and not float(value).is_integer():
            raise ValueError(f"config[{name!r}] sets an integer global: give an integer, not {value!r}")


class WasmNode(Node):
    """
    Run a WebAssembly module as a node, sandboxed (no WASI, no imports).

    ``module`` is a ``.wasm`` or ``.wat`` file, the module's bytes, or
    WebAssembly text. ``export`` names the processing function; ``config``
    sets the module's exported mutable globals (``{"gain": 0.5}``) before
    the first input. Each call may use ``fuel`` units (about one per
    instruction; the limit is deterministic) and ``time_limit`` seconds of
    wall clock; the module's memory may grow to ``memory_mb``. Running out
    raises :exc:`~remotemedia.exceptions.ResourceLimitError` with ``limit``
    ``"cpu"``, ``"time"`` or ``"memory"``; a trap raises
    :exc:`~remotemedia.exceptions.WasmError` naming it and the export.

    It takes float32 :class:`~remotemedia.AudioFrame`\\ s,
    :class:`~remotemedia.VideoFrame`\\ s and ``bytes``, and returns the same
    kind with the same shape and timestamp. ``streaming=True`` makes it a
    streaming node (same work, one output per input). One module instance
    serves the node from ``initialize()`` to ``cleanup()``, so state kept in
    the module carries across frames. An invalid module, one that imports
    anything, or one without the ABI's exports raises :exc:`ValueError`
    here, with the validator's message.
    """

    def __init__(
        self,
        module: Any,
        *,
        export: str = "process",
        config: dict | None = None,
        fuel: int = WasmSpec.fuel,
        memory_mb: int = WasmSpec.memory_mb,
        time_limit: float = WasmSpec.time_limit,
        streaming: bool = False,
        name: str | None = None,
    ) -> None:
        if isinstance(fuel, bool) or not isinstance(fuel, int) or fuel < 1:
            raise ValueError(f"fuel must be a positive integer, not {fuel!r}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or not 0 < memory_mb <= 4096:
            raise ValueError(f"memory_mb must be an integer from 1 to 4096, not {memory_mb!r}")
        if not isinstance(time_limit, (int, float)) or not time_limit > 0:
            raise ValueError(f"time_limit must be a positive number of seconds, not {time_limit!r}")
        if not isinstance(export, str) or not export:
            raise ValueError(f"export must be the name of an exported function, not {export!r}")
        config = dict(config or {})
        binary = _read_module(module)
        compiled = compile_module(binary)
        _check_exports(compiled, export, config)
        spec = WasmSpec(binary, export, config, fuel, memory_mb, float(time_limit), bool(streaming), name or "WasmNode")
        self._setup(spec, compiled)

    @classmethod
    def from_spec(cls, spec: WasmSpec) -> WasmNode:
        """The node ``spec`` describes (an executor builds one from a ``CREATE``); ``ValueError`` for a bad module."""
        node = cls.__new__(cls)
        compiled = compile_module(spec.module)
        _check_exports(compiled, spec.export, spec.config)
        node._setup(spec, compiled)
        return node

    def _setup(self, spec: WasmSpec, compiled: wasmtime.Module) -> None:
        super().__init__(spec.name)
        #: What the node is made of; what travels to an executor.
        self.spec = spec
        self.is_streaming = spec.streaming
        self._compiled = compiled
        self._lock = threading.Lock()
        self._sandbox: Sandbox | None = None
        self._call = self._alloc = None
        self._memory: wasmtime.Memory | None = None
        self._buffer: np.ndarray | None = None
        self._views: dict = {}  # (dtype, shape): a view of the buffer
        self._address = 0

    # -- lifecycle -----------------------------------------------------------------------

    def initialize(self) -> None:
        """Instantiate the module (a fresh instance: state starts over) and set its config globals."""
        with self._lock:
            self._close()
            self._open()

    def cleanup(self) -> None:
        """Drop the instance and its memory; safe to call twice."""
        with self._lock:
            self._close()

    def _open(self) -> None:
        spec = self.spec
        sandbox = Sandbox(
            self._compiled, fuel=spec.fuel, time_limit=spec.time_limit, memory_bytes=spec.memory_mb * _MB, what=f"WASM node {self.name!r}"
        )
        try:
            for key, value in spec.config.items():
                glob = sandbox.export(key)
                kind = str(glob.type(sandbox.store).content)
                glob.set_value(sandbox.store, _val(kind, value))
            self._alloc = sandbox.caller("alloc", 1)
            self._call = sandbox.caller(spec.export, 4)
            self._memory = sandbox.memory()
        except BaseException:
            sandbox.close()
            raise
        self._sandbox = sandbox

    def _close(self) -> None:
        self._buffer = None  # views of the store's memory: dropped before the store
        self._views = {}
        self._call = self._alloc = None
        self._memory = None
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    # -- work ------------------------------------------------------------------------------

    def process(self, data: Any) -> Any:
        """One input through the module; returns a new frame (or bytes) of the same kind and shape."""
        if isinstance(data, AudioFrame):
            array = data.samples
            if array.dtype != np.float32:
                raise TypeError(f"WASM node {self.name!r} takes float32 audio, not {array.dtype} (convert with samples.astype(np.float32) / 32768)")
            args = (array.shape[0], array.shape[1], data.sample_rate)
        elif isinstance(data, VideoFrame):
            array = data.image
            args = (array.shape[1], array.shape[0], array.shape[2] if array.ndim == 3 else 1)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            array = np.frombuffer(data, np.uint8)
            args = (array.size, 1, 1)  # a one-row image of 1-byte pixels: video modules take bytes too
        else:
            raise TypeError(f"WASM node {self.name!r} takes AudioFrame, VideoFrame or bytes inputs, not {type(data).__name__}")
        with self._lock:
            if self._sandbox is None:
                self._open()
            slot = self._views.get((array.dtype, array.shape))
            if slot is None:
                slot = self._slot(array)
            np.copyto(slot, array)
            status = self._call(self._address, *args)
            if status != 0:
                raise WasmError(
                    f"WASM node {self.name!r}: {self.spec.export}() returned error status {status}",
                    export=self.spec.export,
                )
            out = slot.copy()
        if isinstance(data, AudioFrame):
            return AudioFrame(out, data.sample_rate, data.timestamp)
        if isinstance(data, VideoFrame):
            return VideoFrame(out, data.format, data.timestamp)
        return out.tobytes()

    def _slot(self, array: np.ndarray) -> np.ndarray:
        """A new view of the module's memory shaped like ``array`` (asked of its alloc() when the buffer so far is smaller)."""
        key = (array.dtype, array.shape)
        size = array.nbytes
        if self._buffer is None or self._buffer.size < size:
            self._buffer = None
            self._views = {}
            want = max(size, 64)
            address = self._alloc(want)
            if address == 0:
                raise ResourceLimitError(
                    f"WASM node {self.name!r}: the module's alloc({want}) found no room within "
                    f"memory_mb={self.spec.memory_mb} (WasmNode(memory_mb=...))",
                    limit="memory",
                )
            self._buffer = self._sandbox.view(self._memory, address, want)
            self._address = address
        if len(self._views) >= 8:  # inputs of ever-changing shapes: keep a few
            self._views.clear()
        view = self._views[key] = self._buffer[:size].view(array.dtype).reshape(array.shape)
        return view

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Each input through :meth:`process`, in order; large ones off the event loop."""
        async for data in frames:
            if _size(data) < _INLINE_BYTES:
                yield self.process(data)
            else:
                yield await in_thread(self.process, data)

    # -- pickling (Python executors, reconnection) ------------------------------------------

    def __getstate__(self) -> dict:
        return {"spec": self.spec}

    def __setstate__(self, state: dict) -> None:
        spec = state["spec"]
        self._setup(spec, compile_module(spec.module))

    def __repr__(self) -> str:
        return f"<WasmNode name={self.name!r} export={self.spec.export!r} {len(self.spec.module)} bytes>"


def _size(data: Any) -> int:
    if isinstance(data, AudioFrame):
        return data.samples.nbytes
    if isinstance(data, VideoFrame):
        return data.image.nbytes
    return len(data) if isinstance(data, (bytes, bytearray)) else 0


def _val(kind: str, value: float) -> wasmtime.Val:
    if kind == "i32":
        return wasmtime.Val.i32(int(value))
    if kind == "i64":
        return wasmtime.Val.i64(int(value))
    if kind == "f32":
        return wasmtime.Val.f32(float(value))
    return wasmtime.Val.f64(float(value))
