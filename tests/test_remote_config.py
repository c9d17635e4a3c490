"""RemoteExecutorConfig: defaults, URL, round trips, validation, token handling, immutability."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from remotemedia import RemoteProxyClient
from remotemedia.remote.config import RemoteExecutorConfig

TURN = {"urls": "turn:turn.example.org:3478", "username": "user", "credential": "pw"}


def full_config() -> RemoteExecutorConfig:
    """A config with every field away from its default."""
    return RemoteExecutorConfig(
        host="executors.example.org",
        port=443,
        ssl_enabled=True,
        max_message_size=2048,
        reconnect=False,
        auth_token="s3cret",
        timeout=12.5,
        connect_timeout=3,
        ice_servers=["stun:stun.example.org:3478", TURN],
        requirements={"gpu": True, "executor": "box-1"},
        heartbeat_interval=0.5,
        heartbeat_timeout=2.0,
    )


# -- defaults and the specification's constructor call ----------------------------------


def test_defaults_match_the_specification():
    config = RemoteExecutorConfig()
    assert config.host == "localhost"
    assert config.port == 50052
    assert config.ssl_enabled is False
    assert config.max_message_size == 10485760
    assert config.reconnect is True


def test_defaults_of_the_other_fields():
    config = RemoteExecutorConfig()
    assert config.auth_token is None
    assert config.ice_servers == ()
    assert config.requirements == {}
    assert config.timeout > 0 and config.connect_timeout > 0
    assert config.heartbeat_timeout > config.heartbeat_interval > 0


def test_the_specifications_constructor_call_equals_the_defaults():
    config = RemoteExecutorConfig(host="localhost", port=50052, ssl_enabled=False, max_message_size=10485760, reconnect=True)
    assert config == RemoteExecutorConfig()
    assert hash(config) == hash(RemoteExecutorConfig())


def test_default_requirements_are_not_shared_between_configs():
    assert RemoteExecutorConfig().requirements is not RemoteExecutorConfig().requirements


# -- url ------------------------------------------------------------------------------------


def test_url_is_a_plain_websocket_url_by_default():
    assert RemoteExecutorConfig().url == "ws://localhost:50052/ws"


def test_url_uses_wss_when_ssl_is_enabled():
    assert RemoteExecutorConfig(host="example.org", port=8443, ssl_enabled=True).url == "wss://example.org:8443/ws"


def test_url_brackets_an_ipv6_host():
    assert RemoteExecutorConfig(host="::1", port=9000).url == "ws://[::1]:9000/ws"
    assert RemoteExecutorConfig(host="fe80::1", ssl_enabled=True).url == "wss://[fe80::1]:50052/ws"


def test_url_leaves_an_ipv4_host_unbracketed():
    assert RemoteExecutorConfig(host="10.0.0.7", port=1).url == "ws://10.0.0.7:1/ws"


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [RemoteExecutorConfig(), full_config()], ids=["defaults", "full"])
def test_pickle_round_trip_gives_an_equal_config_with_equal_hash(config):
    copy = pickle.loads(pickle.dumps(config))
    assert copy == config
    assert hash(copy) == hash(config)


@pytest.mark.parametrize("config", [RemoteExecutorConfig(), full_config()], ids=["defaults", "full"])
def test_dict_round_trip_gives_an_equal_config_with_equal_hash(config):
    copy = RemoteExecutorConfig.from_dict(config.to_dict())
    assert copy == config
    assert hash(copy) == hash(config)


@pytest.mark.parametrize("config", [RemoteExecutorConfig(), full_config()], ids=["defaults", "full"])
def test_json_round_trip_gives_an_equal_config_with_equal_hash(config):
    copy = RemoteExecutorConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert copy == config
    assert hash(copy) == hash(config)


def test_to_dict_holds_plain_json_values():
    data = full_config().to_dict()
    assert data["ice_servers"] == ["stun:stun.example.org:3478", TURN]
    assert isinstance(data["ice_servers"], list)
    assert data["requirements"] == {"gpu": True, "executor": "box-1"}
    assert set(data) == {f.name for f in dataclasses.fields(RemoteExecutorConfig)}


def test_to_dict_is_a_copy_that_does_not_reach_back_into_the_config():
    config = full_config()
    data = config.to_dict()
    data["requirements"]["gpu"] = False
    data["ice_servers"].append("stun:other.example.org")
    assert config.requirements == {"gpu": True, "executor": "box-1"}
    assert len(config.ice_servers) == 2


def test_from_dict_with_an_unknown_key_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="hots"):
        RemoteExecutorConfig.from_dict({"hots": "example.org"})


def test_from_dict_with_a_subset_of_keys_uses_the_defaults_for_the_rest():
    assert RemoteExecutorConfig.from_dict({"port": 9000}) == RemoteExecutorConfig(port=9000)


def test_equal_configs_built_separately_hash_equal():
    assert hash(full_config()) == hash(full_config())
    assert len({full_config(), full_config(), RemoteExecutorConfig()}) == 2


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": ""},
        {"host": None},
        {"port": 0},
        {"port": 70000},
        {"port": -1},
        {"port": True},
        {"port": "1"},
        {"port": 50052.0},
        {"ssl_enabled": "yes"},
        {"reconnect": 1},
        {"max_message_size": 10},
        {"max_message_size": 1023},
        {"max_message_size": 4096.0},
        {"timeout": -1},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"timeout": True},
        {"timeout": "30"},
        {"connect_timeout": -1.0},
        {"connect_timeout": 0},
        {"connect_timeout": float("nan")},
        {"connect_timeout": float("inf")},
        {"heartbeat_interval": 0},
        {"heartbeat_interval": -0.5},
        {"heartbeat_interval": float("nan")},
        {"heartbeat_timeout": 0},
        {"heartbeat_timeout": float("inf")},
        {"heartbeat_interval": 2.0, "heartbeat_timeout": 2.0},
        {"heartbeat_interval": 3.0, "heartbeat_timeout": 2.0},
        {"ice_servers": "stun:stun.example.org:3478"},
        {"ice_servers": {"urls": "stun:stun.example.org:3478"}},
        {"ice_servers": [{"username": "u", "credential": "c"}]},
        {"ice_servers": [42]},
        {"requirements": [("gpu", True)]},
        {"requirements": None},
        {"auth_token": 123},
        {"auth_token": b"token"},
    ],
    ids=repr,
)
def test_an_invalid_value_raises_value_error(kwargs):
    with pytest.raises(ValueError):
        RemoteExecutorConfig(**kwargs)


def test_an_invalid_value_in_from_dict_raises_value_error():
    with pytest.raises(ValueError):
        RemoteExecutorConfig.from_dict({"port": 0})


def test_replace_with_an_invalid_value_raises_value_error():
    with pytest.raises(ValueError):
        dataclasses.replace(RemoteExecutorConfig(), port=0)


def test_the_boundary_values_are_accepted():
    config = RemoteExecutorConfig(port=65535, max_message_size=1024, timeout=1e-3, heartbeat_interval=1, heartbeat_timeout=1.5)
    assert config.port == 65535 and config.max_message_size == 1024
    assert RemoteExecutorConfig(port=1).port == 1


def test_ice_servers_list_is_stored_as_a_tuple():
    config = RemoteExecutorConfig(ice_servers=["stun:a.example.org", TURN])
    assert config.ice_servers == ("stun:a.example.org", TURN)
    assert isinstance(config.ice_servers, tuple)


def test_changing_the_callers_lists_and_dicts_does_not_change_the_config():
    servers = ["stun:a.example.org"]
    requirements = {"gpu": True}
    config = RemoteExecutorConfig(ice_servers=servers, requirements=requirements)
    servers.append("stun:b.example.org")
    requirements["gpu"] = False
    assert config.ice_servers == ("stun:a.example.org",)
    assert config.requirements == {"gpu": True}


# -- token -------------------------------------------------------------------------------------------


def test_token_prefers_the_explicit_auth_token(monkeypatch):
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "from-env")
    assert RemoteExecutorConfig(auth_token="explicit").token == "explicit"


def test_token_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "from-env")
    assert RemoteExecutorConfig().token == "from-env"


def test_token_is_none_without_auth_token_or_environment(monkeypatch):
    monkeypatch.delenv("REMOTEMEDIA_TOKEN", raising=False)
    assert RemoteExecutorConfig().token is None


def test_token_treats_an_empty_environment_variable_as_none(monkeypatch):
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "")
    assert RemoteExecutorConfig().token is None


def test_token_reads_the_environment_when_asked_not_when_built(monkeypatch):
    monkeypatch.delenv("REMOTEMEDIA_TOKEN", raising=False)
    config = RemoteExecutorConfig()
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "later")
    assert config.token == "later"


def test_repr_hides_the_token():
    text = repr(RemoteExecutorConfig(auth_token="very-secret-token"))
    assert "very-secret-token" not in text
    assert "auth_token='***'" in text


def test_repr_does_not_show_the_environment_token(monkeypatch):
    monkeypatch.setenv("REMOTEMEDIA_TOKEN", "env-secret-token")
    assert "env-secret-token" not in repr(RemoteExecutorConfig())


def test_repr_shows_the_other_fields():
    text = repr(RemoteExecutorConfig(host="example.org", port=1234))
    assert text.startswith("RemoteExecutorConfig(")
    assert "host='example.org'" in text and "port=1234" in text and "auth_token=None" in text


# -- immutability -------------------------------------------------------------------------------------


def test_the_config_is_frozen():
    config = RemoteExecutorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.host = "example.org"


def test_replace_makes_a_changed_copy_and_leaves_the_original():
    config = full_config()
    changed = dataclasses.replace(config, port=9000)
    assert changed.port == 9000 and config.port == 443
    assert dataclasses.replace(changed, port=443) == config


# -- the client checks its config ----------------------------------------------------------------------


def test_remote_proxy_client_refuses_something_that_is_not_a_config():
    with pytest.raises(TypeError):
        RemoteProxyClient("not a config")


def test_remote_proxy_client_refuses_a_dict_config():
    with pytest.raises(TypeError):
        RemoteProxyClient({"host": "localhost"})


# -- TLS: the CA to verify the server with ----------------------------------------------


def test_ca_file_needs_ssl_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="ssl_enabled=True"):
        RemoteExecutorConfig(ca_file="ca.pem")
    with pytest.raises(ValueError, match="ca_file"):
        RemoteExecutorConfig(ssl_enabled=True, ca_file="")
    config = RemoteExecutorConfig(ssl_enabled=True, ca_file="ca.pem")
    assert RemoteExecutorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_the_ca_file_falls_back_to_the_environment_and_builds_a_verifying_context(monkeypatch, tmp_path):
    import ssl

    trustme = pytest.importorskip("trustme")
    monkeypatch.delenv("REMOTEMEDIA_CA_FILE", raising=False)
    assert RemoteExecutorConfig().ssl_context() is None  # plain text: no context
    assert RemoteExecutorConfig(ssl_enabled=True).tls_ca_file is None
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("REMOTEMEDIA_CA_FILE", str(tmp_path / "ca.pem"))
    config = RemoteExecutorConfig(ssl_enabled=True)
    assert config.tls_ca_file == str(tmp_path / "ca.pem")
    context = config.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # that CA alone
    monkeypatch.setenv("REMOTEMEDIA_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="REMOTEMEDIA_CA_FILE"):
        config.ssl_context()


def test_requirements_cannot_change_so_the_hash_cannot_either():
    import copy
    import pickle

    config = RemoteExecutorConfig(requirements={"gpu": True})
    before = hash(config)
    with pytest.raises(TypeError, match="dataclasses.replace"):
        config.requirements["gpu"] = False
    with pytest.raises(TypeError):
        config.requirements.update(executor="x")
    assert hash(config) == before and config.requirements == {"gpu": True}
    for copied in (pickle.loads(pickle.dumps(config)), copy.deepcopy(config)):
        assert copied == config and hash(copied) == before
    assert dataclasses.replace(config, requirements={"gpu": False}).requirements == {"gpu": False}
    assert {**config.requirements, "service": "demo"} == {"gpu": True, "service": "demo"}
