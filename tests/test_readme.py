"""
Every Python block of the README runs as written, against the embedded
server (``python -m remotemedia serve`` on a free port, which the blocks'
``port=50052`` is pointed at). A block that is meant as a fragment of the one
before it says so on its first line (``# continued``) and runs joined to it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import ServeProcess

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def programs() -> list[tuple[int, str]]:
    """The blocks as programs: fragments joined to the block before them; with the README line number."""
    text = (ROOT / "README.md").read_text()
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text.count("\n", 0, match.start()) + 1
        code = match.group(1)
        if code.startswith("# continued") and found:
            found[-1] = (found[-1][0], found[-1][1] + "\n" + code)
        else:
            found.append((line, code))
    return found


@pytest.fixture(scope="module")
def serve():
    server = ServeProcess("--max-sessions", "4")
    try:
        yield server
    finally:
        server.stop()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.timeout(240)
@pytest.mark.parametrize("line, code", programs(), ids=lambda v: f"line{v}" if isinstance(v, int) else "")
def test_a_readme_block_runs_as_written(serve, tmp_path, line, code):
    code = code.replace("port=50052", f"port={serve.port}")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # a user's own folder: files a block writes stay there
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr ---\n{done.stderr[-3000:]}"
    if "print(" in code:
        assert done.stdout.strip(), f"README.md line {line} printed nothing"
