"""
The signaling server's settings: ServerConfig refuses bad values when it is built.
"""

from __future__ import annotations

import pytest

from signaling_server.config import ServerConfig


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token": ""},
        {"signaling_heartbeat_timeout": 0},
        {"signaling_heartbeat_interval": -1},
        {"signaling_heartbeat_interval": 5.0, "signaling_heartbeat_timeout": 5.0},
        {"hello_timeout": True},
        {"rate_limit": 0},
        {"rate_burst": 0},
        {"max_message_size": 1.5},
        {"max_sessions_per_client": True},
        {"outbox_size": 0},
    ],
)
def test_server_config_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token": 5},
        {"hello_timeout": 0.0},
        {"rate_limit": float("nan")},
        {"signaling_heartbeat_interval": "5"},
        {"signaling_heartbeat_interval": 10.0, "signaling_heartbeat_timeout": 9.0},
        {"rate_burst": True},
        {"outbox_size": 2.0},
        {"max_message_size": -1},
    ],
)
def test_server_config_refuses_more_bad_values(kwargs):
    with pytest.raises(ValueError):
        ServerConfig(**kwargs)


def test_server_config_defaults_and_valid_values():
    config = ServerConfig()
    assert config.token is None and config.signaling_heartbeat_timeout > config.signaling_heartbeat_interval
    config = ServerConfig(token="t", signaling_heartbeat_interval=1, signaling_heartbeat_timeout=2, rate_limit=0.5, rate_burst=1)
    assert (config.token, config.signaling_heartbeat_interval, config.rate_burst) == ("t", 1, 1)
