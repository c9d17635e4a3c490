"""WasmNode and its sandbox, locally: the example modules bit-exact against numpy, state, limits, traps, bad modules."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from remotemedia import AudioFrame, Pipeline, ResourceLimitError, VideoFrame, WasmError
from remotemedia.nodes import WasmNode
from remotemedia.wasm import EXAMPLES, example, lowpass
from remotemedia.wasm.spec import create_body, spec_from_body

RNG = np.random.default_rng(22)

# A module with the ABI's exports around a process() body given as text.
ALLOC = '(func (export "alloc") (param i32) (result i32) i32.const 1024)'


def module(body: str, extra: str = "") -> str:
    return f'(module (memory (export "memory") 1) {ALLOC} {extra} (func (export "process") (param i32 i32 i32 i32) (result i32) {body}))'


def audio(channels: int = 2, n: int = 960) -> AudioFrame:
    return AudioFrame((RNG.random((channels, n), dtype=np.float32) * 2 - 1).astype(np.float32), 48000, 0.5)


def image(channels: int = 3, h: int = 48, w: int = 64) -> VideoFrame:
    shape = (h, w) if channels == 1 else (h, w, channels)
    fmt = {1: "gray", 3: "rgb24", 4: "rgba"}[channels]
    return VideoFrame(RNG.integers(0, 256, shape, dtype=np.uint8), fmt, 1.25)


def luma(img: np.ndarray) -> np.ndarray:
    i = img.astype(np.int32)
    return ((77 * i[..., 0] + 150 * i[..., 1] + 29 * i[..., 2]) >> 8).astype(np.uint8)


def biquad_reference(x: np.ndarray, c: dict, state: list) -> np.ndarray:
    """Direct form I in float32, operation for operation as biquad.wat does it."""
    b0, b1, b2, a1, a2 = (np.float32(c[k]) for k in ("b0", "b1", "b2", "a1", "a2"))
    out = np.empty_like(x)
    for ch in range(x.shape[0]):
        x1, x2, y1, y2 = state[ch]
        for i, v in enumerate(x[ch]):
            y = (((b0 * v + b1 * x1) + b2 * x2) - a1 * y1) - a2 * y2
            out[ch, i] = y
            x2, x1, y2, y1 = x1, v, y1, y
        state[ch] = [x1, x2, y1, y2]
    return out


# -- the examples, bit-exact -------------------------------------------------------------


def test_wasmtime_loads_only_for_wasm_nodes():
    code = (
        "import sys\n"
        "import remotemedia.nodes, remotemedia.remote.client, executor.dispatch\n"
        "print('wasmtime' in sys.modules)\n"
        "from remotemedia.nodes import WasmNode\n"
        "print('wasmtime' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_every_example_module_loads_and_imports_nothing():
    for name in EXAMPLES:
        node = WasmNode(example(name))
        assert node.spec.module[:4] == b"\0asm"


def test_gain_is_bit_exact():
    node = WasmNode(example("gain"), config={"gain": 0.37})
    for n in (960, 7, 1):  # the SIMD loop and its scalar tail
        frame = audio(2, n)
        out = node.process(frame)
        assert out.samples.dtype == np.float32
        assert np.array_equal(out.samples, frame.samples * np.float32(0.37))
        assert out.sample_rate == 48000 and out.timestamp == 0.5
    node.cleanup()


def test_biquad_is_bit_exact_and_keeps_its_state_across_frames():
    config = lowpass(1000, 48000)
    node = WasmNode(example("biquad"), config=config)
    node.initialize()
    state = [[np.float32(0)] * 4 for _ in range(2)]
    for _ in range(3):
        frame = audio(2, 240)
        out = node.process(frame)
        assert np.array_equal(out.samples, biquad_reference(frame.samples, config, state))
    # initialize() starts over: a fresh instance, zero history.
    node.initialize()
    frame = audio(2, 240)
    assert np.array_equal(node.process(frame).samples, biquad_reference(frame.samples, config, [[np.float32(0)] * 4] * 2))
    node.cleanup()


def test_biquad_refuses_more_channels_than_it_keeps_state_for():
    node = WasmNode(example("biquad"))
    with pytest.raises(WasmError, match="error status 1"):
        node.process(audio(9, 16))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_invert_is_bit_exact(channels):
    frame = image(channels, 31, 33)  # not a multiple of 16 bytes: the scalar tail runs
    out = WasmNode(example("invert")).process(frame)
    assert np.array_equal(out.image, 255 - frame.image)
    assert out.format == frame.format and out.timestamp == 1.25


def test_threshold_is_bit_exact():
    frame = image(3)
    out = WasmNode(example("threshold"), config={"threshold": 100}).process(frame)
    bw = np.where(luma(frame.image) >= 100, 255, 0).astype(np.uint8)
    assert np.array_equal(out.image, np.repeat(bw[..., None], 3, axis=2))
    gray = image(1)
    out = WasmNode(example("threshold")).process(gray)
    assert np.array_equal(out.image, np.where(gray.image >= 128, 255, 0).astype(np.uint8))


def test_grayscale_built_from_c_is_bit_exact():
    assert example("grayscale").suffix == ".wasm"
    assert example("grayscale").with_suffix(".c").exists()  # its source ships beside it
    frame = image(4)
    out = WasmNode(example("grayscale")).process(frame)
    assert np.array_equal(out.image[..., :3], np.repeat(luma(frame.image)[..., None], 3, axis=2))
    assert np.array_equal(out.image[..., 3], frame.image[..., 3])  # alpha kept


def test_bytes_go_through_and_a_larger_input_gets_a_larger_buffer():
    node = WasmNode(example("invert"))
    assert node.process(b"\x00\x01\xff") == b"\xff\xfe\x00"
    big = bytes(range(256)) * 1000
    assert node.process(big) == bytes(255 - b for b in big[:256]) * 1000
    assert node.process(b"") == b""


def test_the_input_frame_is_left_alone():
    frame = audio()
    before = frame.samples.copy()
    WasmNode(example("gain"), config={"gain": 2}).process(frame)
    assert np.array_equal(frame.samples, before)


def test_wrong_inputs_are_type_errors():
    node = WasmNode(example("gain"))
    with pytest.raises(TypeError, match="float32"):
        node.process(AudioFrame(np.zeros((1, 4), np.int16), 16000))
    with pytest.raises(TypeError, match="AudioFrame, VideoFrame or bytes"):
        node.process("text")


# -- in pipelines ---------------------------------------------------------------------


async def test_in_a_pipeline_streaming_and_not():
    frames = [audio(1, 480) for _ in range(4)]
    config = lowpass(500, 48000)
    for streaming in (False, True):
        pipeline = Pipeline()
        pipeline.add_node(WasmNode(example("biquad"), config=config, streaming=streaming))

        outs = await pipeline.run_async(frames)
        state = [[np.float32(0)] * 4]
        expected = [biquad_reference(f.samples, config, state) for f in frames]
        assert all(np.array_equal(o.samples, e) for o, e in zip(outs, expected)) and len(outs) == 4


# -- limits -----------------------------------------------------------------------------


def test_an_endless_loop_runs_out_of_fuel():
    node = WasmNode(module("(loop (br 0)) i32.const 0"), fuel=1_000_000, name="spin")
    with pytest.raises(ResourceLimitError, match="fuel budget of 1000000") as info:
        node.process(b"x")
    assert info.value.limit == "cpu" and "'spin'" in str(info.value)
    # The node stays usable: the next call gets a full budget again.
    with pytest.raises(ResourceLimitError):
        node.process(b"x")


def test_an_endless_loop_with_fuel_to_spare_hits_the_time_limit():
    node = WasmNode(module("(loop (br 0)) i32.const 0"), fuel=10**18, time_limit=0.1)
    with pytest.raises(ResourceLimitError, match="time limit of 0.1 s") as info:
        node.process(b"x")
    assert info.value.limit == "time"


def test_memory_cannot_grow_beyond_the_cap():
    # process() grows memory by a page until memory.grow fails, and returns the page count it reached.
    grower = module(
        "(block $full (loop $more (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1))) (br $more)))"
        "(i32.store (i32.const 0) (memory.size)) i32.const 0"
    )
    node = WasmNode(grower, memory_mb=2)
    node.process(b"....")
    assert node._memory.size(node._sandbox.store) == 32  # 2 MB of 64 KiB pages, and no more


def test_an_input_larger_than_memory_allows_is_a_memory_limit():
    node = WasmNode(example("invert"), memory_mb=1)
    with pytest.raises(ResourceLimitError, match="memory_mb=1") as info:
        node.process(bytes(2 << 20))
    assert info.value.limit == "memory"


def test_initial_memory_above_the_cap_is_a_memory_limit():
    big = f'(module (memory (export "memory") 100) {ALLOC} (func (export "process") (param i32 i32 i32 i32) (result i32) i32.const 0))'
    with pytest.raises(ResourceLimitError) as info:
        WasmNode(big, memory_mb=1).initialize()
    assert info.value.limit == "memory"


# -- traps and bad modules --------------------------------------------------------------


def test_unreachable_is_a_wasm_error_naming_the_trap_and_the_export():
    node = WasmNode(module("unreachable"), name="boom")
    with pytest.raises(WasmError, match=r"'boom': process\(\) trapped \(unreachable") as info:
        node.process(b"x")
    assert info.value.trap == "unreachable" and info.value.export == "process"


def test_an_out_of_bounds_access_traps():
    node = WasmNode(module("(i32.load (i32.const 0x7ffffff0)) drop i32.const 0"))
    with pytest.raises(WasmError) as info:
        node.process(b"x")
    assert info.value.trap == "memory_out_of_bounds"


def test_a_bad_alloc_address_is_refused():
    bad = '(module (memory (export "memory") 1) (func (export "alloc") (param i32) (result i32) i32.const 65530) (func (export "process") (param i32 i32 i32 i32) (result i32) i32.const 0))'
    with pytest.raises(WasmError, match="alloc"):
        WasmNode(bad).process(bytes(100))


def test_an_invalid_module_fails_at_construction_with_the_validators_message():
    with pytest.raises(ValueError, match="not valid"):
        WasmNode(b"\0asm\x01\0\0\0\x01\x02garbage")
    with pytest.raises(ValueError, match="does not parse"):
        WasmNode("(module (func (export \"process\") i32.add))x")
    with pytest.raises(ValueError, match="not valid.*type mismatch"):
        WasmNode(module("i64.const 1"))  # returns an i64 where the type says i32


def test_a_module_that_imports_a_function_is_refused():
    imports = '(import "env" "now" (func (result f64)))'
    with pytest.raises(ValueError, match=r"imports env\.now .*no imports"):
        WasmNode(f'(module {imports} (memory (export "memory") 1) {ALLOC} (func (export "process") (param i32 i32 i32 i32) (result i32) i32.const 0))')
    with pytest.raises(ValueError, match="wasi_snapshot_preview1.fd_write"):
        WasmNode('(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))')


def test_missing_abi_exports_and_bad_config_are_value_errors():
    with pytest.raises(ValueError, match="no function 'alloc'"):
        WasmNode('(module (memory (export "memory") 1))')
    with pytest.raises(ValueError, match="no function 'run'"):
        WasmNode(example("gain"), export="run")
    with pytest.raises(ValueError, match="no memory"):
        WasmNode(f'(module (memory 1) {ALLOC})')
    with pytest.raises(ValueError, match=r"'volume' is not a mutable global .*exports gain"):
        WasmNode(example("gain"), config={"volume": 2})
    with pytest.raises(ValueError, match="integer"):
        WasmNode(example("threshold"), config={"threshold": 0.5})
    with pytest.raises(ValueError, match="fuel"):
        WasmNode(example("gain"), fuel=0)
    with pytest.raises(ValueError, match="neither WebAssembly text"):
        WasmNode("no/such/file.wasm")


def test_a_nonzero_status_is_a_wasm_error():
    with pytest.raises(WasmError, match="error status 7"):
        WasmNode(module("i32.const 7")).process(b"x")


# -- travelling ------------------------------------------------------------------------


def test_the_create_body_round_trips_through_the_codec():
    from remotemedia import codec

    node = WasmNode(example("gain"), config={"gain": 0.5}, fuel=12345, memory_mb=3, time_limit=0.5, streaming=True, name="g")
    body = codec.decode(codec.encode(create_body(node.spec)))
    assert spec_from_body(body) == node.spec
    again = WasmNode.from_spec(spec_from_body(body))
    frame = audio()
    assert np.array_equal(again.process(frame).samples, frame.samples * np.float32(0.5))
    assert again.is_streaming and again.name == "g"


@pytest.mark.parametrize(
    "change",
    [{"abi": 99}, {"fuel": -1}, {"module": "text"}, {"config": {"gain": "loud"}}, {"memory_mb": 10**6}, {"export": ""}],
)
def test_a_bad_create_body_is_refused(change):
    body = create_body(WasmNode(example("gain")).spec)
    body["wasm"].update(change)
    with pytest.raises(ValueError):
        spec_from_body(body)


def test_a_pickled_node_carries_its_spec_only():
    node = WasmNode(example("gain"), config={"gain": 3})
    node.initialize()
    copy = pickle.loads(pickle.dumps(node))
    assert copy.spec == node.spec
    frame = audio()
    assert np.array_equal(copy.process(frame).samples, frame.samples * np.float32(3))


async def test_stream_runs_large_frames_off_the_loop():
    node = WasmNode(example("invert"), streaming=True)
    frames = [image(3, 480, 640), image(3, 4, 4)]

    async def source():
        for f in frames:
            yield f

    outs = [o async for o in node.stream(source())]
    assert all(np.array_equal(o.image, 255 - f.image) for o, f in zip(outs, frames))
    node.cleanup()
    node.cleanup()  # twice is fine


def test_modules_come_as_text_with_comments_as_paths_and_as_bytes(tmp_path):
    text = ";; a comment first\n" + module("i32.const 0")
    wat = tmp_path / "m.wat"
    wat.write_text(text)
    binary = WasmNode(text).spec.module
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(binary)
    for given in (wat, str(wat), wasm, str(wasm), binary, bytearray(binary)):
        assert WasmNode(given).spec.module == binary


def test_endless_recursion_is_a_stack_overflow_trap():
    node = WasmNode(module("call $self i32.const 0", "(func $self call $self)"))
    with pytest.raises(WasmError) as info:
        node.process(b"x")
    assert info.value.trap == "stack_overflow"


def test_a_64_bit_memory_is_refused():
    with pytest.raises(ValueError, match="64-bit"):
        WasmNode(f'(module (memory (export "memory") i64 1) {ALLOC})')


@pytest.mark.skipif(not (shutil.which("clang") and shutil.which("wasm-ld")), reason="needs Debian's clang and lld")
def test_the_c_example_builds_with_the_documented_command(tmp_path):
    source = example("grayscale").with_suffix(".c")
    built = tmp_path / "grayscale.wasm"
    command = f"clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o {built} {source}"
    assert command.replace(str(built), "grayscale.wasm").replace(str(source), "grayscale.c") in source.read_text()
    subprocess.run(command.split(), check=True, timeout=60)
    frame = image(3)
    assert np.array_equal(WasmNode(built).process(frame).image, WasmNode(example("grayscale")).process(frame).image)
