"""
The RPC protocol core, sans-I/O: message kinds, encoding and chunking.

It imports no asyncio, aiortc or websockets; it is fed bytes and hands back
events and bytes. :mod:`remotemedia.transport` runs it over a data channel.
:mod:`~remotemedia.rpc.calls` is the call conversation's contract (kinds,
bodies, error codes, windows) and :mod:`~remotemedia.rpc.conversation` its
rules (ids, credit, what each message settles), both shared by the client
and the executor.
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
