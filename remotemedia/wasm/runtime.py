"""
WebAssembly under wasmtime, sandboxed: the runtime under
:class:`~remotemedia.nodes.WasmNode`.

The sandbox gives a module nothing: no WASI (so no files, environment,
sockets or clocks) and no host function at all; a module that imports
anything is refused when it is loaded. Each call runs under three limits:

- **fuel** (deterministic CPU): every WebAssembly instruction costs about
  one unit; a call that uses its whole budget traps, and raises
  :exc:`~remotemedia.exceptions.ResourceLimitError` with ``limit="cpu"``;
- **an epoch deadline** (wall clock): a shared thread advances the engine's
  epoch every :data:`TICK` seconds while any sandbox is open; a call still
  running at its deadline traps, ``limit="time"``;
- **a memory cap**: the store's limiter makes ``memory.grow`` fail (return
  -1) beyond it, and refuses a module whose initial memory is above it.

Speed: wasmtime-py's ``Func.__call__`` checks and converts every argument
in Python, which measured 60-90 us per call here, more than the whole work
of a 20 ms audio frame. :class:`Sandbox.caller` checks the export's type
once, then calls ``wasmtime_func_call_unchecked`` with a pre-built argument
array: about 1.5 us a call, fuel and deadline included. That function is
wasmtime's C API, found through the binding's ``_bindings`` module; when it
is missing (another wasmtime version) the public ``Func.__call__`` is used
instead.
"""

from __future__ import annotations

import ctypes
import logging
import math
import struct
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np
import wasmtime

from ..exceptions import ResourceLimitError, WasmError

__all__ = ["Sandbox", "compile_module", "engine", "TICK", "to_binary"]

logger = logging.getLogger(__name__)

#: Seconds between two epoch ticks: the resolution of a call's time limit.
TICK = 0.01

try:  # the C API's direct call (see the module docstring)
    from wasmtime import _bindings as _capi
    from wasmtime._trap import Trap as _Trap

    # Handles of our own on the binding's library, whose functions take
    # ready-made ctypes arguments with no conversion (no argtypes): 0.2 us
    # a setter and 0.6 us the call, against 0.5 and 1.5 us through the
    # binding's declarations. The call releases the GIL (CDLL), so the epoch
    # ticker runs while WebAssembly does; the setters keep it (PyDLL).
    _call_unchecked = ctypes.CDLL(_capi.dll._name).wasmtime_func_call_unchecked
    _call_unchecked.restype = ctypes.c_void_p
    _setters = ctypes.PyDLL(_capi.dll._name)
    _set_fuel = _setters.wasmtime_context_set_fuel
    _set_fuel.restype = ctypes.c_void_p
    _set_deadline = _setters.wasmtime_context_set_epoch_deadline
    _set_deadline.restype = None
    _RawVal = _capi.wasmtime_val_raw
    _TrapPtr = ctypes.POINTER(_capi.wasm_trap_t)
    _ErrorPtr = ctypes.POINTER(_capi.wasmtime_error_t)
except (ImportError, AttributeError):  # pragma: no cover - another wasmtime version
    _call_unchecked = None

_engine: wasmtime.Engine | None = None
_engine_lock = threading.Lock()


def engine() -> wasmtime.Engine:
    """The process's one engine: fuel and epoch interruption on, memory that never moves."""
    global _engine
    with _engine_lock:
        if _engine is None:
            config = wasmtime.Config()
            config.consume_fuel = True
            config.epoch_interruption = True
            # Views of linear memory (numpy arrays over it) stay valid across memory.grow.
            config.memory_may_move = False
            _engine = wasmtime.Engine(config)
        return _engine


class _Ticker:
    """Advances the engine's epoch every TICK seconds while at least one sandbox is open."""

    def __init__(self) -> None:
        self._open = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def opened(self) -> None:
        with self._cond:
            self._open += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
                self._thread.start()
            elif self._open == 1:
                self._cond.notify()

    def closed(self) -> None:
        with self._cond:
            self._open = max(0, self._open - 1)

    def _run(self) -> None:
        eng = engine()
        while True:
            with self._cond:
                while self._open == 0:  # no sandbox: no wake-ups at all
                    self._cond.wait()
            # A sleep, not a wait on the condition: a notify must not bring a deadline closer.
            time.sleep(TICK)
            eng.increment_epoch()


_ticker = _Ticker()


def to_binary(module: bytes | str) -> bytes:
    """WebAssembly text (WAT) or binary, as binary; ``ValueError`` with the parser's message for bad text."""
    if isinstance(module, (bytes, bytearray, memoryview)):
        data = bytes(module)
        return data if data[:4] == b"\0asm" else to_binary(data.decode("utf-8", "replace"))
    try:
        return bytes(wasmtime.wat2wasm(module))
    except wasmtime.WasmtimeError as exc:
        raise ValueError(f"the WebAssembly text does not parse: {exc}") from None


def compile_module(binary: bytes) -> wasmtime.Module:
    """
    Validate and compile a module; ``ValueError`` with the validator's
    message for an invalid one, or naming the first import (the sandbox
    gives none).
    """
    try:
        wasmtime.Module.validate(engine(), binary)
        module = wasmtime.Module(engine(), binary)
    except wasmtime.WasmtimeError as exc:
        raise ValueError(f"the WebAssembly module is not valid: {exc}") from None
    for imp in module.imports:
        raise ValueError(
            f"the WebAssembly module imports {imp.module}.{imp.name} ({type(imp.type).__name__}), but a "
            f"WASM node is given no imports (no WASI, no host functions): build it to import nothing "
            f"(for C: clang --target=wasm32 -nostdlib)"
        )
    return module


class Sandbox:
    """
    One instance of a module in a store of its own, under the limits of the
    module docstring. Not thread-safe: one call at a time (the node's lock).
    """

    def __init__(self, module: wasmtime.Module, *, fuel: int, time_limit: float, memory_bytes: int, what: str) -> None:
        """``what`` names the node in errors. Raises :exc:`ResourceLimitError` or :exc:`WasmError` when instantiation fails."""
        self.fuel = fuel
        self.time_limit = time_limit
        self.memory_bytes = memory_bytes
        self._what = what
        self._ticks = math.ceil(time_limit / TICK) + 1  # +1: the first tick may come at once
        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=memory_bytes, table_elements=100_000, instances=1, tables=4, memories=1)
        _ticker.opened()
        # Closed by close(), or when the sandbox is garbage collected unclosed: the ticker stops with the last one.
        self._closer = weakref.finalize(self, _ticker.closed)
        try:
            self._arm()
            self.instance = wasmtime.Instance(self.store, module, [])  # a start function runs here, limited
        except wasmtime.Trap as exc:
            self.close()
            raise self._trap_error(exc, "its start function") from None
        except wasmtime.WasmtimeError as exc:
            self.close()
            text = str(exc)
            if "memory" in text and ("limit" in text or "minimum" in text or "size" in text):
                raise ResourceLimitError(
                    f"{what}: the module's initial memory is above memory_mb={memory_bytes >> 20}: {text.splitlines()[0]}",
                    limit="memory",
                ) from None
            raise WasmError(f"{what}: the module could not be instantiated: {text}") from None
        self._exports = self.instance.exports(self.store)

    def export(self, name: str) -> Any:
        """The export ``name``, or ``None``."""
        try:
            return self._exports[name]
        except KeyError:
            return None

    def caller(self, name: str, params: int) -> Callable[..., int]:
        """
        A fast caller of the export ``name``, which must take ``params`` i32s
        and return one i32; ``WasmError`` if it is missing or typed otherwise.
        """
        func = self.export(name)
        if not isinstance(func, wasmtime.Func):
            raise WasmError(f"{self._what}: the module exports no function {name!r}", export=name)
        ty = func.type(self.store)
        i32 = wasmtime.ValType.i32()
        if len(ty.params) != params or any(p != i32 for p in ty.params) or list(ty.results) != [i32]:
            shape = ", ".join(["i32"] * params)
            raise WasmError(
                f"{self._what}: export {name!r} has type {ty.params} -> {ty.results}, not ({shape}) -> i32",
                export=name,
            )
        if _call_unchecked is None:  # pragma: no cover
            return lambda *args: self._public_call(func, name, args)
        # Arguments in, result out: one i32 at the start of each raw value (little-endian, as WebAssembly).
        raw = (_RawVal * max(params, 1))()
        size = ctypes.sizeof(_RawVal)
        pack = struct.Struct("<" + f"{size - 4}x".join(["i"] * params)).pack_into
        unpack = struct.Struct("<i").unpack_from
        raw_bytes = memoryview(raw).cast("B")
        count = ctypes.c_size_t(len(raw))
        trap = _TrapPtr()
        trap_ref = ctypes.byref(trap)
        func_ref = ctypes.byref(func._func)
        context = self.store._context()
        fuel, ticks = ctypes.c_uint64(self.fuel), ctypes.c_uint64(self._ticks)

        def call(*args: int) -> int:
            # _arm(), without the binding's checks: fuel is on (consume_fuel), the deadline a plain number.
            _set_fuel(context, fuel)
            _set_deadline(context, ticks)
            pack(raw_bytes, 0, *args)
            error = _call_unchecked(context, func_ref, raw, count, trap_ref)
            if trap:
                caught = _Trap._from_ptr(_TrapPtr(trap.contents))  # owns the trap from now on
                ctypes.memset(ctypes.addressof(trap), 0, ctypes.sizeof(trap))  # NULL again for the next call
                raise self._trap_error(caught, f"{name}()")
            if error:
                failure = wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ErrorPtr))
                raise WasmError(f"{self._what}: {name}() failed: {failure}", export=name)
            return unpack(raw_bytes, 0)[0]

        return call

    def _public_call(self, func: wasmtime.Func, name: str, args: tuple) -> int:  # pragma: no cover
        self._arm()
        try:
            return func(self.store, *args)
        except wasmtime.Trap as exc:
            raise self._trap_error(exc, f"{name}()") from None

    def _arm(self) -> None:
        self.store.set_fuel(self.fuel)
        self.store.set_epoch_deadline(self._ticks)

    def _trap_error(self, trap: wasmtime.Trap, where: str) -> Exception:
        code = trap.trap_code
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return ResourceLimitError(
                f"{self._what}: {where} used its whole fuel budget of {self.fuel} instructions (WasmNode(fuel=...)); "
                f"an endless loop, or more work than the budget allows",
                limit="cpu",
            )
        if code is wasmtime.TrapCode.INTERRUPT:
            return ResourceLimitError(
                f"{self._what}: {where} ran past its time limit of {self.time_limit:g} s (WasmNode(time_limit=...))",
                limit="time",
            )
        name = code.name.lower() if code is not None else "trap"
        first = trap.message.splitlines()[0] if trap.message else name
        return WasmError(f"{self._what}: {where} trapped ({name}): {first}", trap=name, export=where.rstrip("()"))

    def memory(self, name: str = "memory") -> wasmtime.Memory:
        """The exported memory; ``WasmError`` when there is none."""
        memory = self.export(name)
        if not isinstance(memory, wasmtime.Memory):
            raise WasmError(f"{self._what}: the module exports no memory named {name!r} (the ABI needs it)")
        return memory

    def view(self, memory: wasmtime.Memory, address: int, size: int) -> np.ndarray:
        """A writable uint8 view of ``size`` bytes of ``memory`` at ``address`` (valid until :meth:`close`)."""
        length = memory.data_len(self.store)
        if address <= 0 or address + size > length:
            raise WasmError(f"{self._what}: alloc() returned {address}, which leaves no {size} bytes inside the module's {length}-byte memory")
        base = ctypes.addressof(memory.data_ptr(self.store).contents)
        return np.frombuffer((ctypes.c_uint8 * size).from_address(base + address), np.uint8)

    def close(self) -> None:
        """Free the store (views of its memory must be dropped first); safe to call twice."""
        if self._closer.alive:
            self._closer()
            self.store = None  # type: ignore[assignment]
