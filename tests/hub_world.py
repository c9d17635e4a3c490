"""
Drive a signaling :class:`~signaling_server.hub.Hub` in memory, as its peers
would: connections, messages and the clock are all in the test's hands.
Shared by the hub's tests and the tests of what the hub hands out (TURN).
"""

from __future__ import annotations

import json

from signaling_server.config import ServerConfig
from signaling_server.hub import Close, Hub, Send

__all__ = ["World", "sent", "closes", "only"]


def sent(actions, conn) -> list[dict]:
    """Messages that ``actions`` send to ``conn``, in order."""
    return [a.message for a in actions if isinstance(a, Send) and a.conn == conn]


def closes(actions, conn) -> list[Close]:
    """The closes of ``conn`` among ``actions``."""
    return [a for a in actions if isinstance(a, Close) and a.conn == conn]


def only(actions, conn) -> dict:
    """The one message that ``actions`` send to ``conn`` (fails if not exactly one)."""
    messages = sent(actions, conn)
    assert len(messages) == 1, actions
    return messages[0]


class World:
    """A hub and helpers that speak to it like peers do."""

    def __init__(self, **config) -> None:
        if config.get("token") and "executor_token" not in config:
            config["executor_token"] = "exec-" + config["token"]  # executors hold their own credential
        #: Unix time the hub reads for token expiry.
        self.wall = 1_000_000.0
        self.hub = Hub(ServerConfig(**config), wall_clock=lambda: self.wall)
        self.now = 0.0
        self.token = config.get("token")
        self.executor_token = config.get("executor_token")

    def connect(self) -> str:
        return self.hub.open(self.now)

    def send(self, conn, message) -> list:
        data = message if isinstance(message, (str, bytes)) else json.dumps(message)
        return self.hub.receive(conn, data, self.now)

    def executor(self, name, capacity=4, **caps) -> str:
        conn = self.connect()
        message = {"type": "register", "name": name, "capacity": capacity}
        if caps:
            message["capabilities"] = caps
        if self.executor_token:
            message["token"] = self.executor_token
        assert only(self.send(conn, message), conn)["type"] == "registered"
        return conn

    def pair(self, client, requirements=None, **extra) -> tuple[dict, list]:
        message = {"type": "pair", **extra}
        if requirements is not None:
            message["requirements"] = requirements
        if self.token:
            message["token"] = self.token
        actions = self.send(client, message)
        return only(actions, client), actions

    def error_code(self, actions, conn) -> str:
        message = only(actions, conn)
        assert message["type"] == "error", message
        assert message["message"]
        return message["code"]
