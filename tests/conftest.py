"""
Fixtures for every test module.

``cluster`` is the module's signaling server (requiring :data:`harness.TOKEN`
of clients) with its executors, started once per module as real processes and
always stopped. By default it has one executor per execution mode, named
``exec-MODE`` (:func:`harness.mode_executor`), for tests that take ``mode``.
A module that needs other executors, server flags or environment overrides
``cluster_executors``, ``cluster_server_args`` or ``cluster_env`` (pytest picks
a module's fixture over this file's); one that also needs the executor
processes takes ``cluster_processes``. Constants live in ``harness.py``.

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
from harness import MODES, TOKEN, mode_executor, running_cluster


@pytest.fixture
def tmp_path(request):
    """A new empty folder that every user may write into; removed after the test."""
    path = Path(tempfile.mkdtemp(prefix=f"remotemedia-{request.node.name[:40]}-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Each of the executor's execution modes in turn (the executors of the default ``cluster``)."""
    return request.param


@pytest.fixture(scope="module")
def cluster_executors() -> tuple[tuple[str, ...], ...]:
    """The command-line arguments of each executor of the module's ``cluster``: one per mode by default."""
    return tuple(mode_executor(mode) for mode in MODES)


@pytest.fixture(scope="module")
def cluster_server_args() -> tuple[str, ...]:
    """More command-line arguments for the signaling server of the module's ``cluster``."""
    return ()


@pytest.fixture(scope="module")
def cluster_env() -> dict | None:
    """More environment for every process of the module's ``cluster``."""
    return None


@pytest.fixture(scope="module")
def cluster_processes(cluster_executors, cluster_server_args, cluster_env):
    """``(server, [executor, ...])``: the module's cluster, started once and always stopped."""
    with running_cluster(TOKEN, *cluster_executors, server_args=cluster_server_args, env=cluster_env) as started:
        yield started


@pytest.fixture(scope="module")
def cluster(cluster_processes):
    """The signaling server of the module's cluster (a :class:`harness.ServerProcess`)."""
    return cluster_processes[0]
