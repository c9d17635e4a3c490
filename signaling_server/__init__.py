"""
The RemoteMedia signaling server: executors register here, clients pair here,
and the WebRTC offer, answer and ICE candidates of each session are relayed
between its two ends. No media and no call traffic passes through it.

Run it with ``python -m signaling_server --port 50052 [--token TOKEN]`` (or
``remotemedia-signaling``); embed it with :func:`start_server`. The protocol
is described in ``PROTOCOL.md`` beside this file.

Modules: :mod:`~signaling_server.hub` (the sans-I/O state machine),
:mod:`~signaling_server.registry` (executors and sessions),
:mod:`~signaling_server.app` (aiohttp), :mod:`~signaling_server.metrics`,
:mod:`~signaling_server.config`, :mod:`~signaling_server.ratelimit`,
:mod:`~signaling_server.limits` (connection caps), :mod:`~signaling_server.web` (the page),
:mod:`~signaling_server.turn` (ICE servers with time-limited TURN credentials);
:mod:`~signaling_server.cluster` and :mod:`~signaling_server.redis_directory`
(several instances sharing Redis: ``--redis``).
"""

from .app import RunningServer, create_app, start_server
from .config import ServerConfig

__all__ = ["RunningServer", "ServerConfig", "create_app", "start_server"]
