"""
The configuration model: every config is frozen and checked once, with the
checks of remotemedia/validation.py; what sessions use is derived from the
executor's config, never copied; the signaling heartbeat and the data-channel
heartbeat have different names.
"""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from executor.__main__ import executor_config, parse_args as executor_args
from executor.dispatch import Limits
from executor.executor import Executor, ExecutorConfig
from executor.session import SessionSettings
from remotemedia import RemoteExecutorConfig
from remotemedia import validation as check
from remotemedia.__main__ import dial_own_server, parse_args as remotemedia_args
from signaling_server.__main__ import _config as server_config, parse_args as server_args
from signaling_server.config import ServerConfig


def executor(**overrides) -> ExecutorConfig:
    return ExecutorConfig(**{"signaling": "ws://127.0.0.1:1/ws", "name": "e", **overrides})


# -- frozen ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, field",
    [
        (RemoteExecutorConfig(), "port"),
        (ServerConfig(), "signaling_heartbeat_timeout"),
        (executor(), "max_sessions"),
        (executor(), "signaling"),
        (SessionSettings(executor()), "confinement"),
        (Limits(), "call_timeout"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value,
)
def test_every_config_is_frozen(config, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(config, field, getattr(config, field))


def test_an_executor_configs_collections_cannot_change_either():
    config = executor(ice_servers=["stun:a.example.org"], isolation=["user"])
    assert config.ice_servers == ("stun:a.example.org",) and config.isolation == ("user",)
    with pytest.raises(TypeError):
        config.services["mine"] = lambda: None


def test_replace_makes_a_new_checked_config():
    config = executor()
    changed = dataclasses.replace(config, max_sessions=2)
    assert (config.max_sessions, changed.max_sessions, changed.name) == (4, 2, "e")
    with pytest.raises(ValueError, match="max_sessions"):
        dataclasses.replace(config, max_sessions=0)


# -- requirements: immutable, so the hash is stable ------------------------------------------


def test_requirements_cannot_change_and_the_hash_stays():
    config = RemoteExecutorConfig(requirements={"gpu": True})
    before = hash(config)
    for change in (
        lambda r: r.__setitem__("gpu", False),
        lambda r: r.update(gpu=False),
        lambda r: r.pop("gpu"),
        lambda r: r.clear(),
    ):
        with pytest.raises(TypeError, match="dataclasses.replace"):
            change(config.requirements)
    assert hash(config) == before == hash(RemoteExecutorConfig(requirements={"gpu": True}))
    assert hash(pickle.loads(pickle.dumps(config))) == before
    assert hash(dataclasses.replace(config, requirements={"gpu": False})) != before


# -- derived, not copied ---------------------------------------------------------------------


def test_session_settings_and_limits_follow_the_executor_config():
    config = executor(
        max_message_size=4096, heartbeat_interval=0.5, heartbeat_timeout=3.0, connect_timeout=7.0,
        ice_servers=["stun:a.example.org"], mode="inprocess", call_timeout=9.0, max_objects=3,
        inflate_rate=2 * 1024 * 1024, accept="any",
    )
    settings = SessionSettings(config)
    assert settings.executor == "e"
    assert (settings.max_message_size, settings.heartbeat_interval, settings.heartbeat_timeout) == (4096, 0.5, 3.0)
    assert (settings.connect_timeout, settings.ice_servers, settings.mode) == (7.0, ("stun:a.example.org",), "inprocess")
    assert settings.limits == config.limits == Limits(
        call_timeout=9.0, max_objects=3, memory_limit=None, inflate_rate=2 * 1024 * 1024, accept="any"
    )
    # Every field of Limits comes from the config: a new one cannot be forgotten.
    assert {f.name for f in dataclasses.fields(Limits)} <= {f.name for f in dataclasses.fields(ExecutorConfig)}
    changed = dataclasses.replace(config, max_objects=5, call_timeout=None)
    assert SessionSettings(changed).limits == dataclasses.replace(config.limits, max_objects=5, call_timeout=None)


def test_the_executor_derives_its_session_settings_from_its_config():
    config = executor(max_objects=7, mode="inprocess")
    settings = Executor(config)._settings
    assert settings.config is config and settings.confinement is None
    assert settings.limits.max_objects == 7


# -- one set of checks, one message per mistake ---------------------------------------------------


@pytest.mark.parametrize(
    "checker, args, message",
    [
        (check.positive, ("timeout", 0), "timeout must be a positive number of seconds, not 0"),
        (check.positive, ("timeout", float("nan")), "timeout must be a positive number of seconds"),
        (check.positive, ("timeout", True), "timeout must be a positive number of seconds, not True"),
        (check.positive, ("rate_limit", "5", "messages per second"), "rate_limit must be a positive number of messages per second"),
        (check.optional_positive, ("call_timeout", -1), "call_timeout must be a positive number of seconds, or None for no limit"),
        (check.longer, ("heartbeat_timeout", 1.0, "heartbeat_interval", 1.0), r"heartbeat_timeout \(1 s\) must be longer than heartbeat_interval \(1 s\)"),
        (check.positive_int, ("max_sessions", 0), "max_sessions must be a positive integer, not 0"),
        (check.positive_int, ("max_sessions", 2.0), "max_sessions must be a positive integer, not 2.0"),
        (check.non_negative_int, ("spare_workers", -1), "spare_workers must be a non-negative integer, not -1"),
        (check.at_least, ("max_message_size", 10, 1024, "1024 bytes"), "max_message_size must be at least 1024 bytes, not 10"),
        (check.port, ("port", 65536), "port must be an integer from 1 to 65535, not 65536"),
        (check.flag, ("reconnect", 1), "reconnect must be True or False, not 1"),
        (check.choice, ("mode", "thread", ("process", "inprocess")), "mode must be one of process, inprocess, not 'thread'"),
        (check.text, ("host", ""), "host must be a non-empty string, not ''"),
        (check.optional_text, ("token", "", "a non-empty string", "for an open server"), "token must be a non-empty string, or None for an open server"),
        (check.sequence, ("ice_servers", "stun:x", "URLs"), "ice_servers must be a list of URLs, not a single one"),
        (check.ice_servers, ("ice_servers", [42]), "each ICE server must be a URL string or a dict with 'urls', not 42"),
    ],
)
def test_each_check_names_the_field_and_what_it_takes(checker, args, message):
    with pytest.raises(ValueError, match=message):
        checker(*args)


def test_the_checks_pass_good_values():
    check.positive("t", 0.5)
    check.optional_positive("t", None)
    check.positive_int("n", 1)
    check.non_negative_int("n", 0)
    check.port("port", 1)
    check.flag("f", False)
    check.optional_text("token", None)
    check.optional_text("auth_token", "", "a string", empty=True)
    assert check.ice_servers("s", ["stun:a", {"urls": "turn:b"}]) == ("stun:a", {"urls": "turn:b"})
    assert check.ice_servers("s", ["stun:a"], urls_only=True) == ("stun:a",)
    with pytest.raises(ValueError, match="stun: or turn: URL"):
        check.ice_servers("s", [{"urls": "turn:b"}], urls_only=True)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"mode": "thread"}, "mode must be one of process, inprocess"),
        ({"accept": "everything"}, "accept must be one of python, wasm, any"),
        ({"call_timeout": 0}, "call_timeout"),
        ({"inflate_rate": 1000}, "inflate_rate must be at least 1 MiB/s"),
        ({"max_objects": 0}, "max_objects"),
        ({"max_sessions": True}, "max_sessions"),
        ({"max_message_size": 100}, "max_message_size must be at least 1024 bytes"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"heartbeat_interval": 5.0, "heartbeat_timeout": 5.0}, "heartbeat_timeout .* must be longer than heartbeat_interval"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be a positive number of seconds"),
        ({"spare_workers": -1}, "spare_workers"),
        ({"isolation": ("nothing",)}, "isolation names protections"),
        ({"services": {"x": 5}}, "services maps names to node factories"),
        ({"memory_limit": 100}, "memory_limit must be at least 200 MB"),
        ({"memory_limit": 300, "mode": "inprocess"}, "needs mode 'process'"),
        ({"ice_servers": "stun:a"}, "not a single one"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_the_executor_config_refuses_bad_values_saying_which(overrides, fragment):
    with pytest.raises(ValueError, match=fragment):
        executor(**overrides)


def test_the_signaling_heartbeat_is_checked_under_its_own_name():
    with pytest.raises(ValueError, match="signaling_heartbeat_timeout .* must be longer than signaling_heartbeat_interval"):
        ServerConfig(signaling_heartbeat_interval=5.0, signaling_heartbeat_timeout=5.0)
    with pytest.raises(ValueError, match="rate_limit must be a positive number of messages per second"):
        ServerConfig(rate_limit=0)


# -- distinct heartbeat names, and the command lines ----------------------------------------------


def test_the_signaling_heartbeat_is_not_named_like_the_data_channel_one():
    fields = {f.name for f in dataclasses.fields(ServerConfig)}
    assert {"signaling_heartbeat_interval", "signaling_heartbeat_timeout"} <= fields
    assert not fields & {"heartbeat_interval", "heartbeat_timeout"}
    for data_channel in (RemoteExecutorConfig, ExecutorConfig):
        assert {"heartbeat_interval", "heartbeat_timeout"} <= {f.name for f in dataclasses.fields(data_channel)}


@pytest.mark.parametrize(
    "argv",
    [
        ["--signaling-heartbeat-timeout", "6", "--signaling-heartbeat-interval", "1.5"],
        ["--heartbeat-timeout", "6", "--heartbeat-interval", "1.5"],  # the old names still work
    ],
)
def test_the_signaling_heartbeat_flags_and_their_old_names(argv):
    config = server_config(server_args(argv))
    assert (config.signaling_heartbeat_timeout, config.signaling_heartbeat_interval) == (6.0, 1.5)


def test_the_signaling_heartbeat_interval_defaults_to_a_third_of_the_timeout():
    config = server_config(server_args(["--signaling-heartbeat-timeout", "0.6"]))
    assert config.signaling_heartbeat_interval == pytest.approx(0.2)


def test_serve_gives_the_embedded_executor_a_new_config_instead_of_changing_it():
    args = remotemedia_args(["serve", "--port", "0"])
    config = executor_config(args, signaling="", token=None, name="embedded")
    dialing = dial_own_server(config, "0.0.0.0", 4321, tls=False)
    assert dialing is not config and config.signaling == "" and config.ssl_context is None
    assert dialing.signaling == "ws://127.0.0.1:4321/ws" and dialing.ssl_context is None
    assert dataclasses.replace(dialing, signaling="") == config  # nothing else changed
    assert config.accept == "any"  # serve's own default
    secure = dial_own_server(config, "::", 4321, tls=True)
    assert secure.signaling == "wss://[::1]:4321/ws" and secure.ssl_context is not None
    assert config.ssl_context is None


def test_the_executor_command_line_makes_one_checked_config():
    args = executor_args(["--max-objects", "3", "--ice-server", "stun:a.example.org", "--call-timeout", "0"])
    config = executor_config(args, signaling="ws://h:1/ws", token=None, name="cli")
    assert (config.max_objects, config.ice_servers, config.call_timeout) == (3, ("stun:a.example.org",), None)
    assert config.limits.max_objects == 3 and config.limits.call_timeout is None
    args = executor_args(["--max-objects", "0"])
    with pytest.raises(ValueError, match="max_objects must be a positive integer"):
        executor_config(args, signaling="ws://h:1/ws", token=None, name="cli")
