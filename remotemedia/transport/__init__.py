"""
Adapters that run the sans-I/O cores over real connections.

- :mod:`remotemedia.transport.connection`: what the RPC runs over (the
  :class:`RPCConnection` interface) and the lane each side opens through one
  factory (:func:`open_lane`, :func:`accept_lane`);
- :mod:`remotemedia.transport.datachannel`: the RPC protocol over an aiortc
  data channel, with heartbeats and send-side backpressure;
- :mod:`remotemedia.transport.peer`: aiortc peer connections negotiated
  through a signaling session;
- :mod:`remotemedia.transport.ice`: which TURN URL a connection uses (a UDP
  probe, TCP where UDP is blocked) and the route ICE selected (``direct``,
  ``stun``, ``relay``).
"""

from .connection import Lane, RPCConnection, accept_lane, open_lane
from .datachannel import RPCChannel
from .peer import RPC_LABEL, add_candidate, close_peer_connection, make_answer, make_offer, new_peer_connection, wait_open, watch_bye

__all__ = [
    "Lane",
    "RPCConnection",
    "accept_lane",
    "open_lane",
    "RPCChannel",
    "RPC_LABEL",
    "add_candidate",
    "close_peer_connection",
    "make_answer",
    "make_offer",
    "new_peer_connection",
    "wait_open",
    "watch_bye",
]
