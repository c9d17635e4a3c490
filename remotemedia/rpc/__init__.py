"""
The RPC protocol core, sans-I/O: message kinds, encoding and chunking.

It imports no asyncio, aiortc or websockets; it is fed bytes and hands back
events and bytes. :mod:`remotemedia.transport` runs it over a data channel.
"""

from .framing import CHUNK_SIZE
from .compression import InflateBudget
from .protocol import PROTOCOL_VERSION, ErrorCode, Kind, Message, Raw, Rejected, RPCProtocol, TooLarge, peek

__all__ = [
    "CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "InflateBudget",
    "Kind",
    "Message",
    "Raw",
    "Rejected",
    "RPCProtocol",
    "TooLarge",
    "peek",
]
