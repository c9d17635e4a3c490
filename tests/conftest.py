"""
Fixtures for every test module.

``tmp_path`` is also writable by the executor's worker processes: in
``process`` mode each runs as a user of its own (see executor/isolation.py),
and tests hand remote objects paths in it to leave markers in. pytest's own
base folder is private to its user (and pytest makes it so again at every
start), so this one lives directly in the system's temporary folder.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path(request):
    """A new empty folder that every user may write into; removed after the test."""
    path = Path(tempfile.mkdtemp(prefix=f"remotemedia-{request.node.name[:40]}-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)
