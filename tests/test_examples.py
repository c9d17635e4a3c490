"""The examples run as a user runs them: as scripts, in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_local_pipeline_example_writes_the_wav_and_summarizes(tmp_path):
    output = tmp_path / "tone.wav"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "local_pipeline.py"),
         "--output", str(output), "--duration", "1.5", "--frequency", "1000"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "peak at 1000.0 Hz" in result.stdout
    assert "-12.0 dBFS" in result.stdout
    with wave.open(str(output)) as wav:
        assert wav.getframerate() == 16000
        assert wav.getnchannels() == 1
        assert wav.getnframes() == 24000


def test_readme_quickstart_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    peaks = eval(result.stdout)  # a list of floats, printed by the quickstart
    # 1 s of 20 ms frames, plus the resampler's flushed tail.
    assert len(peaks) in (50, 51)
    assert all(abs(p - 0.25) < 0.01 for p in peaks[1:50])  # 0.5 amplitude, -6 dB


def test_remote_proxy_example_starts_the_embedded_server_and_runs_remotely():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "remote_proxy.py")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "created <RemoteProxy __main__.StreamingDataProcessor #1 on " in result.stdout
    assert "process([0, 1, 2, 3]) -> [0.0, 2.0, 4.0, 6.0]" in result.stdout
    assert "the remote processor has processed 206 inputs; the local copy 0" in result.stdout
    assert "session closed" in result.stdout


def test_readme_remote_execution_example_runs_as_written():
    from harness import ServeProcess

    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n")[2].split("```", 1)[0]
    assert "port=50052" in code
    serve = ServeProcess()
    try:
        # The README's server listens on 50052; the test's on a free port.
        code = code.replace("port=50052", f"port={serve.port}")
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
    finally:
        serve.stop()
    assert result.stdout.splitlines() == ["[0 2 4]", "[0, 1, 4, 9]", "[11, 21]", "2 0"]
