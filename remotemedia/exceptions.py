"""
Every error RemoteMedia raises on purpose derives from :exc:`RemoteMediaError`.

The tree, as it stands::

    RemoteMediaError
    ├── PipelineError           a pipeline could not run, or one of its nodes failed
    ├── CodecError              the msgpack codec was fed something it cannot carry
    │   ├── EncodeError         local: the caller passed an unsupported value (also a TypeError)
    │   └── DecodeError         remote: the bytes received are not a valid message
    ├── SerializationError      an object could not be cloudpickled (or unpickled)
    ├── SignalingError          the signaling server refused a request (``code`` says why)
    │   ├── AuthenticationError a token is missing or wrong (code ``unauthorized``)
    │   └── NoExecutorError     no registered executor matches the request (code ``no_executor``)
    ├── ConnectionLostError     a connection closed under a pending operation (also a ConnectionError)
    └── RemoteTimeoutError      a network wait ran past its timeout (also a TimeoutError)

Misuse of an API with a wrong type (adding something that is not a node to a
pipeline, say) raises the built-in :exc:`TypeError`, as Python code does.

Errors carry structured attributes (``node_name``, ``type_name``...) so that
callers never have to parse messages, and chain their cause with
``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "RemoteMediaError",
    "PipelineError",
    "CodecError",
    "EncodeError",
    "DecodeError",
    "SerializationError",
    "SignalingError",
    "AuthenticationError",
    "NoExecutorError",
    "ConnectionLostError",
    "RemoteTimeoutError",
]


class RemoteMediaError(Exception):
    """Root of every error that RemoteMedia raises on purpose."""


class PipelineError(RemoteMediaError):
    """
    A pipeline could not run, or one of its nodes failed.

    When a node failed, :attr:`node_name` and :attr:`node_index` say which one
    and ``__cause__`` holds the node's original exception. Both are ``None``
    for errors of the pipeline itself (running an empty pipeline, say).
    """

    def __init__(
        self,
        message: str,
        *,
        node_name: str | None = None,
        node_index: int | None = None,
    ) -> None:
        super().__init__(message)
        #: Name of the node that failed, or ``None``.
        self.node_name = node_name
        #: Position of the node in the pipeline (0 is the first), or ``None``.
        self.node_index = node_index


class CodecError(RemoteMediaError):
    """The codec could not encode or decode a message."""


class EncodeError(CodecError, TypeError):
    """
    A value cannot be encoded: its type is not one the codec carries.

    :attr:`type_name` is the qualified name of the offending type. This is the
    caller's mistake, so it is also a :exc:`TypeError`.
    """

    def __init__(self, message: str, *, type_name: str | None = None) -> None:
        super().__init__(message)
        #: Qualified name of the type that could not be encoded.
        self.type_name = type_name


class DecodeError(CodecError, ValueError):
    """The bytes are not a valid encoded message (truncated, corrupt or hostile)."""


class SerializationError(RemoteMediaError):
    """
    An object could not be serialized with cloudpickle, or deserialized.

    :attr:`type_name` names the type of the object being serialized.
    """

    def __init__(self, message: str, *, type_name: str | None = None) -> None:
        super().__init__(message)
        #: Qualified name of the object's type, when known.
        self.type_name = type_name


class SignalingError(RemoteMediaError):
    """
    The signaling server answered a request with an error.

    :attr:`code` is the protocol's machine-readable error code (see
    ``signaling_server/PROTOCOL.md``): ``bad_message``, ``unknown_session``,
    ``rate_limited``... The message is the server's explanation.
    """

    def __init__(self, message: str, *, code: str = "error") -> None:
        super().__init__(message)
        #: The error code sent by the server.
        self.code = code


class AuthenticationError(SignalingError):
    """
    The signaling server refused the token (code ``unauthorized``).

    Pass the server's token (``--token`` or ``REMOTEMEDIA_TOKEN`` where it
    runs) as ``token=`` / ``auth_token=``.
    """

    def __init__(self, message: str, *, code: str = "unauthorized") -> None:
        super().__init__(message, code=code)


class NoExecutorError(SignalingError):
    """
    No registered executor matches the pairing request (code ``no_executor``).

    Either no executor is connected to the signaling server, all of them are
    at capacity, or none has the requested capability. Start an executor
    (``python -m executor --signaling ws://HOST:PORT``) or relax the
    requirements, then retry: the connection stays usable.
    """

    def __init__(self, message: str, *, code: str = "no_executor") -> None:
        super().__init__(message, code=code)


class ConnectionLostError(RemoteMediaError, ConnectionError):
    """A connection closed while an operation was waiting on it."""


class RemoteTimeoutError(RemoteMediaError, TimeoutError):
    """
    A network wait ran past its timeout.

    Every wait on the network in RemoteMedia has one; the message names the
    operation and the limit, and says which setting raises it.
    """
