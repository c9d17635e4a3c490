"""
The signaling protocol, shared by the signaling server, executors and clients.

- :mod:`remotemedia.signaling.messages`: every message type and field, as a
  table, and the validator both ends use;
- :mod:`remotemedia.signaling.ticket`: the HMAC tickets that bind a session to
  its two ends;
- :mod:`remotemedia.signaling.client`: the asyncio client (on ``websockets``)
  that the SDK and the executor use to talk to the server;
- :mod:`remotemedia.signaling.session`: one session's relay, from either end.

The protocol itself is described in ``signaling_server/PROTOCOL.md``.
"""

from .client import SignalingClient
from .session import SignalingSession
from .messages import MAX_MESSAGE_SIZE

__all__ = [
    "MAX_MESSAGE_SIZE",
    "SignalingClient",
    "SignalingSession",
]
