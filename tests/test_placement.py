"""
``placement`` of remote nodes, end to end (remotemedia/remote/placement.py):
a real signaling server with a CPU executor and one that announces a GPU
(``executor/gpu.py``'s test override), discovery through the server, a
calibration between a node made slow here and one that is cheap here, and
the fallback to local execution when the executor is SIGKILLed mid-run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time

import pytest
from harness import EXECUTOR_TOKEN, TOKEN, config_for, running_cluster, running_executor, running_server

from executor.gpu import FAKE_GPU_ENV
from remotemedia import Node, Pipeline, PipelineError, RemoteExecutorConfig, RemoteObjectExecutionNode
from remotemedia.exceptions import (
    AuthenticationError, NoExecutorAvailable, PermissionDeniedError, SignalingError, TLSError, TokenExpiredError,
)
from remotemedia.remote.placement import misconfigured
from remotemedia.tokens import mint_client_token


class Double(Node):
    """Cheap everywhere; says whether it ran in the test's process."""

    def __init__(self, home: int | None = None) -> None:
        super().__init__()
        self.home = home if home is not None else os.getpid()

    def process(self, data: int):
        return (data * 2, os.getpid() == self.home)


class SlowHere(Double):
    """Slow in the test's process only (on an executor it is cheap)."""

    def process(self, data: int):
        if os.getpid() == self.home:
            time.sleep(0.1)
        return super().process(data)


class OnlyThere(Double):
    """Cannot run in the test's process (a library only the executor has, say)."""

    def process(self, data: int):
        if os.getpid() == self.home:
            raise ImportError("no such library here")
        return super().process(data)


class Stateless(Double):
    stateless = True


class Tally(Node):
    """Stateful: a running sum."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def process(self, data: int) -> int:
        self.total += data
        return self.total


@pytest.fixture(scope="module")
def cluster():
    """A server with ``exec-cpu`` and ``exec-gpu`` (a faked GPU), both in-process."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN))
        for name, env in (("exec-cpu", None), ("exec-gpu", {FAKE_GPU_ENV: "1"})):
            stack.enter_context(
                running_executor(
                    server.url, "--executor-token", EXECUTOR_TOKEN, "--name", name, "--mode", "inprocess", env=env
                )
            )
        yield server


def placement_of(pipeline: Pipeline, index: int = 0) -> str:
    return pipeline.last_run_stats[index].placement


async def test_auto_runs_locally_when_no_executor_is_registered(caplog):
    with running_cluster(TOKEN) as (server, _):
        node = RemoteObjectExecutionNode(Double(), config_for(server), placement="auto")
        pipeline = Pipeline("alone").add_node(node)
        with caplog.at_level(logging.INFO, logger="remotemedia.remote.node"):
            outputs = await pipeline.run_async([1, 2, 3])
    assert outputs == [(2, True), (4, True), (6, True)]
    stats = pipeline.last_run_stats[0]
    assert (stats.location, stats.remote) == ("local", False)
    assert stats.placement.startswith("local (no executor is registered")
    assert "placed: local (no executor is registered" in caplog.text


async def test_local_placement_needs_no_server():
    config = RemoteExecutorConfig(host="127.0.0.1", port=9)  # nothing listens there
    pipeline = Pipeline("here", placement="local").add_node(RemoteObjectExecutionNode(Double(), config))
    assert await pipeline.run_async([5]) == [(10, True)]
    assert placement_of(pipeline) == "local (placement='local')"


async def test_auto_goes_to_the_executor_that_has_the_gpu_a_node_requires(cluster):
    node = RemoteObjectExecutionNode(Double(), config_for(cluster), requires={"gpu": True}, placement="auto")
    pipeline = Pipeline("gpu").add_node(node)
    assert await pipeline.run_async([1, 2]) == [(2, False), (4, False)]
    assert placement_of(pipeline) == "remote exec-gpu (needs a GPU)"
    assert pipeline.last_run_stats[0].location == "exec-gpu"


async def test_auto_runs_locally_when_no_executor_meets_the_needs(cluster):
    config = config_for(cluster, requirements={"executor": "exec-cpu"})
    node = RemoteObjectExecutionNode(Double(), config, requires={"gpu": True})
    pipeline = Pipeline("no-gpu", placement="auto").add_node(node)  # the pipeline's default
    assert await pipeline.run_async([1]) == [(2, True)]
    assert placement_of(pipeline) == "local (no executor is named 'exec-cpu' with a GPU)"


async def test_calibration_picks_the_executor_for_a_node_slow_here(cluster):
    node = RemoteObjectExecutionNode(SlowHere(), config_for(cluster), placement="auto")
    pipeline = Pipeline("slow").add_node(node)
    outputs = await pipeline.run_async(range(6))
    assert [value for value, _ in outputs] == [0, 2, 4, 6, 8, 10]
    assert not any(here for _, here in outputs)  # calibration hands on the remote side's outputs
    placement = placement_of(pipeline)
    assert placement.startswith("remote exec-") and "remote vs" in placement and "local per input" in placement
    assert pipeline.last_run_stats[0].remote


async def test_calibration_keeps_a_cheap_node_here(cluster):
    node = RemoteObjectExecutionNode(Double(), config_for(cluster), placement="auto")
    pipeline = Pipeline("cheap").add_node(node)
    outputs = await pipeline.run_async(range(6))
    assert [value for value, _ in outputs] == [0, 2, 4, 6, 8, 10]
    assert [here for _, here in outputs] == [False] * 3 + [True] * 3  # calibrated on 3, then here
    assert placement_of(pipeline).startswith("local (") and "remote vs" in placement_of(pipeline)
    assert pipeline.last_run_stats[0].location == "local"


async def test_calibration_keeps_a_node_that_fails_here_on_the_executor(cluster):
    node = RemoteObjectExecutionNode(OnlyThere(), config_for(cluster), placement="auto")
    pipeline = Pipeline("only-there").add_node(node)
    assert await pipeline.run_async(range(3)) == [(0, False), (2, False), (4, False)]
    assert placement_of(pipeline).startswith("remote exec-") and "process() failed here: ImportError" in placement_of(pipeline)


async def test_a_run_shorter_than_the_calibration_says_it_ran_remotely(cluster):
    node = RemoteObjectExecutionNode(Double(), config_for(cluster), placement="auto")
    pipeline = Pipeline("short").add_node(node)
    assert await pipeline.run_async([1]) == [(2, False)]
    assert placement_of(pipeline).endswith("(the run ended after 1 of 3 calibration inputs)")
    assert pipeline.last_run_stats[0].remote


def doomed_cluster():
    """A server and one GPU executor (killed by the test)."""
    return running_cluster(TOKEN, ("--name", "exec-doomed", "--mode", "inprocess"), env={FAKE_GPU_ENV: "1"})


def fragile_config(server):
    # Loss noticed in 2 s, reconnection given up after 4 s.
    return config_for(server, heartbeat_interval=0.5, heartbeat_timeout=2.0, connect_timeout=3.0)


async def run_and_kill(pipeline: Pipeline, executor, inputs, kill_after: int) -> list:
    outputs = []
    async for output in pipeline.stream(inputs):
        outputs.append(output)
        if len(outputs) == kill_after:
            executor.kill()
    return outputs


async def test_a_stateless_auto_node_continues_locally_when_its_executor_is_killed():
    with doomed_cluster() as (server, (executor,)):
        node = RemoteObjectExecutionNode(Stateless(), fragile_config(server), requires={"gpu": True}, placement="auto")
        pipeline = Pipeline("fallback", queue_size=1).add_node(node)
        outputs = await run_and_kill(pipeline, executor, range(12), kill_after=3)
    assert [value for value, _ in outputs] == [2 * x for x in range(12)]  # complete, in order
    assert outputs[0][1] is False and outputs[-1][1] is True
    stats = pipeline.last_run_stats[0]
    assert stats.placement.startswith("local (executor 'exec-doomed' lost and no other took the node")
    assert (stats.location, stats.remote) == ("local", False)


async def test_a_stateful_auto_node_fails_saying_why_it_did_not_continue_locally():
    with doomed_cluster() as (server, (executor,)):
        node = RemoteObjectExecutionNode(Tally(), fragile_config(server), requires={"gpu": True}, placement="auto")
        pipeline = Pipeline("stateful", queue_size=1).add_node(node)
        with pytest.raises(PipelineError, match="cannot continue locally: it is not stateless"):
            await run_and_kill(pipeline, executor, range(12), kill_after=3)


def test_placement_is_checked():
    config = RemoteExecutorConfig(host="127.0.0.1", port=9)
    with pytest.raises(ValueError, match="placement"):
        RemoteObjectExecutionNode(Double(), config, placement="elsewhere")
    with pytest.raises(ValueError, match="placement"):
        Pipeline("p", placement="elsewhere")
    with pytest.raises(TypeError, match="stateless"):
        RemoteObjectExecutionNode(Double(), config, stateless="yes")
    node = RemoteObjectExecutionNode(Double(), config, requires={"gpu": True})
    assert node.remote_config.requirements == {"gpu": True} and node.placement is None
    assert RemoteObjectExecutionNode(Stateless(), config).stateless


@pytest.mark.parametrize(
    ("requires", "error", "words"),
    [
        (["gpu"], TypeError, "must be a dict"),
        ({"gpus": True}, ValueError, "unknown keys ['gpus']"),  # pairing would ignore it: any executor
        ({"gpu": "no"}, ValueError, "requires.gpu"),  # "no" is truthy: it would ask for a GPU
        ({"model": 3}, ValueError, "requires.model"),
        ({"service": ""}, ValueError, "requires.service"),
        ({"avoid": ["exec-cpu"]}, ValueError, "unknown keys ['avoid']"),  # reconnection's, not the user's
    ],
)
def test_requires_is_checked_as_pairing_would_check_it(requires, error, words):
    config = RemoteExecutorConfig(host="127.0.0.1", port=9)
    with pytest.raises(error) as raised:
        RemoteObjectExecutionNode(Double(), config, requires=requires)
    assert words in str(raised.value)
    every = {"gpu": False, "service": "demo", "model": "whisper-tiny", "executor": "exec-cpu"}
    assert RemoteObjectExecutionNode(Double(), config, requires=every).remote_config.requirements == every


@pytest.mark.parametrize(
    ("pipeline_placement", "node_placement"),
    [("remote", None), ("auto", "remote"), ("local", "remote")],
)
async def test_a_remote_node_never_runs_here_even_with_no_server(pipeline_placement, node_placement):
    # The default ("remote") and an explicit "remote" fail as before placement existed, whatever the pipeline's.
    config = RemoteExecutorConfig(host="127.0.0.1", port=9, connect_timeout=5.0)  # nothing listens there
    pipeline = Pipeline("there", placement=pipeline_placement)
    pipeline.add_node(RemoteObjectExecutionNode(Double(), config, placement=node_placement))
    with pytest.raises(PipelineError, match="could not reach an executor"):
        await pipeline.run_async([1])


async def test_auto_does_not_hide_a_ca_file_that_does_not_load_by_running_here(cluster):
    config = config_for(cluster, ssl_enabled=True, ca_file="/nowhere/ca.pem")
    pipeline = Pipeline("no-ca").add_node(RemoteObjectExecutionNode(Double(), config, placement="auto"))
    with pytest.raises(PipelineError, match="cannot load CA certificates") as raised:
        await pipeline.run_async([1])
    assert isinstance(raised.value.__cause__, ValueError)


@pytest.mark.parametrize("token", ["wrong", EXECUTOR_TOKEN])
async def test_auto_does_not_hide_a_token_the_server_refuses_by_running_here(cluster, token):
    # No executor reachable is a reason to run here; a wrong credential is the user's mistake to hear about.
    node = RemoteObjectExecutionNode(Double(), config_for(cluster, auth_token=token), placement="auto")
    pipeline = Pipeline("refused").add_node(node)
    with pytest.raises(PipelineError, match="could not reach an executor") as raised:
        await pipeline.run_async([1])
    assert isinstance(raised.value.__cause__, AuthenticationError)
    assert not node.runs_locally


def test_only_a_refused_config_is_misconfigured():
    assert misconfigured(AuthenticationError("a wrong token"))
    assert misconfigured(TokenExpiredError("expired"))
    assert misconfigured(PermissionDeniedError("an executor credential", code="wrong_role"))
    assert misconfigured(TLSError("untrusted certificate"))
    assert misconfigured(ValueError("cannot load CA certificates from '/nowhere.pem'"))
    assert not misconfigured(PermissionDeniedError("this token does not allow a GPU"))  # forbidden: its scope
    assert not misconfigured(SignalingError("cannot reach the signaling server"))
    assert not misconfigured(NoExecutorAvailable("no executor"))
    assert not misconfigured(ConnectionRefusedError())


async def test_auto_runs_here_when_the_tokens_scope_allows_no_executor_for_the_node():
    # A scope is no mistake (unlike a wrong token): the GPU executor is listed, the token may not ask for it.
    secret = "placement-secret-" + "x" * 32
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running_server("--token-secret", secret, "--executor-token", EXECUTOR_TOKEN))
        stack.enter_context(
            running_executor(
                server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "exec-gpu", "--mode", "inprocess",
                env={FAKE_GPU_ENV: "1"},
            )
        )
        config = config_for(server, auth_token=mint_client_token(secret, gpu=False))
        node = RemoteObjectExecutionNode(Double(), config, requires={"gpu": True}, placement="auto")
        pipeline = Pipeline("scoped").add_node(node)
        assert await pipeline.run_async([1]) == [(2, True)]
    assert placement_of(pipeline).startswith("local (no executor took the node: PermissionDeniedError")
