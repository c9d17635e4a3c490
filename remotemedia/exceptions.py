"""
Every error RemoteMedia raises on purpose derives from :exc:`RemoteMediaError`.

The tree, as it stands::

    RemoteMediaError
    ├── PipelineError           a pipeline could not run, or one of its nodes failed
    ├── CodecError              the msgpack codec was fed something it cannot carry
    │   ├── EncodeError         local: the caller passed an unsupported value (also a TypeError)
    │   └── DecodeError         remote: the bytes received are not a valid message
    ├── SerializationError      an object could not be cloudpickled (or unpickled)
    │   └── PickleRefusedError  local: a result needs unpickling, and the client refuses pickles
    ├── SignalingError          the signaling server refused a request (``code`` says why)
    │   ├── AuthenticationError a token or ticket is missing or wrong (code ``unauthorized``)
    │   │   ├── TokenExpiredError     the token's expiry has passed (code ``token_expired``)
    │   │   └── PermissionDeniedError the token may not do this (``forbidden``, ``wrong_role``)
    │   ├── QuotaExceededError  the token's session quota is used up (code ``quota_exceeded``)
    │   ├── NoExecutorAvailable no registered executor matches the request (code ``no_executor``)
    │   ├── ConnectionLimitError the server closed the connection at one of its limits (``code`` says which)
    │   └── TLSError            TLS with the server failed: an untrusted certificate, or ws:// to a TLS-only server
    ├── RemoteExecutionError    the remote object's method raised (remote type, message, traceback)
    ├── MessageTooLargeError    a message is above ``max_message_size`` (also a ValueError)
    ├── ResourceLimitError      work stopped at one of its limits (memory, objects; a WASM node's cpu, time)
    ├── WasmError               a WASM node's module trapped, or breaks the node ABI (also a RuntimeError)
    ├── ModelError              a model, or the package that runs it, is missing or failed to load
    ├── ConnectionLostError     a connection closed under a pending operation (also a ConnectionError)
    └── RemoteTimeoutError      a network wait or a remote call ran past its timeout (also a TimeoutError)

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
    "PickleRefusedError",
    "SignalingError",
    "AuthenticationError",
    "TokenExpiredError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "NoExecutorAvailable",
    "RemoteExecutionError",
    "MessageTooLargeError",
    "ResourceLimitError",
    "WasmError",
    "ModelError",
    "ConnectionLostError",
    "RemoteTimeoutError",
    "ConnectionLimitError",
    "TLSError",
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


class PickleRefusedError(SerializationError):
    """
    The executor sent a value that only unpickling could restore, and this
    client refuses to unpickle (``RemoteExecutorConfig(allow_pickled_results=False)``).

    Unpickling runs code chosen by the sender, so a client that does not
    trust its executors that far refuses it. Return values the codec carries
    (numbers, strings, bytes, lists, dicts, numpy arrays, frames) from the
    remote method, or set ``allow_pickled_results=True`` for executors you trust.
    """


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


class TokenExpiredError(AuthenticationError):
    """
    The token's expiry has passed (code ``token_expired``); the server closes
    the connection. Ask whoever issued it for a new one
    (``python -m remotemedia token`` mints them).
    """

    def __init__(self, message: str, *, code: str = "token_expired") -> None:
        super().__init__(message, code=code)


class PermissionDeniedError(AuthenticationError):
    """
    The credential is valid but may not do this.

    Code ``forbidden``: the request is outside the token's scope (a service,
    object sessions, a GPU or an executor it does not allow, or an executor
    name its credential was not issued for); the connection stays usable.
    Code ``wrong_role``: a client credential tried to register an executor,
    or an executor credential tried to pair; the server closes the connection.
    """

    def __init__(self, message: str, *, code: str = "forbidden") -> None:
        super().__init__(message, code=code)


class QuotaExceededError(SignalingError):
    """
    The token already holds as many open sessions as its quota allows (code
    ``quota_exceeded``). Close one of them, or ask for a token with a larger
    ``max_sessions``; the connection stays usable.
    """

    def __init__(self, message: str, *, code: str = "quota_exceeded") -> None:
        super().__init__(message, code=code)


class NoExecutorAvailable(SignalingError):
    """
    No registered executor matches the pairing request (code ``no_executor``).

    Either no executor is connected to the signaling server, all of them are
    at capacity, or none has the requested capability. Start an executor
    (``python -m executor --signaling ws://HOST:PORT``) or relax the
    requirements, then retry: the connection stays usable.
    """

    def __init__(self, message: str, *, code: str = "no_executor") -> None:
        super().__init__(message, code=code)


class RemoteExecutionError(RemoteMediaError):
    """
    A method of a remote object raised an exception on the executor.

    The remote exception cannot be re-raised here as itself (its class may not
    exist on this side), so this error carries it as data:
    :attr:`remote_type` (qualified name), :attr:`remote_message` and
    :attr:`remote_traceback` (the executor's formatted traceback, also shown in
    ``str()``). The session stays usable: later calls work as before.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_type: str = "",
        remote_message: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        #: Qualified name of the remote exception's type, e.g. ``"builtins.ValueError"``.
        self.remote_type = remote_type
        #: ``str()`` of the remote exception.
        self.remote_message = remote_message
        #: The traceback as the executor formatted it.
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback (most recent call last is at the bottom):\n" + self.remote_traceback
        return text


class MessageTooLargeError(RemoteMediaError, ValueError):
    """
    A message is larger than ``max_message_size`` allows.

    Raised before sending when a call or an object is too large, and when the
    other end refused or would have to refuse a message. :attr:`size` and
    :attr:`limit` are in bytes. Raise the limit with
    ``RemoteExecutorConfig(max_message_size=...)`` on the client and
    ``--max-message-size`` on the executor, or send smaller pieces.
    """

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        #: Size of the message in bytes.
        self.size = size
        #: The limit it broke, in bytes.
        self.limit = limit


class ResourceLimitError(RemoteMediaError):
    """
    The executor stopped or refused work at one of its limits.

    :attr:`limit` names it: ``"memory"`` (the session's worker process ran
    out of the memory ``--memory-limit`` gives it, or a WASM node's module
    needs more than its ``memory_mb``), ``"objects"`` (the session holds
    ``--max-objects`` objects already: release some), ``"rate_limited"`` (the
    client sent compressed data faster than ``--inflate-rate``, or more than
    its worker keeps up with), ``"cpu"`` (a WASM node's call used its whole
    ``fuel``) or ``"time"`` (a WASM node's call ran past its ``time_limit``).
    The message says which setting raises it.
    """

    def __init__(self, message: str, *, limit: str = "") -> None:
        super().__init__(message)
        #: Which limit: ``"memory"``, ``"objects"``, ``"rate_limited"``, ``"cpu"`` or ``"time"``.
        self.limit = limit


class WasmError(RemoteMediaError, RuntimeError):
    """
    A WASM node's module trapped (``unreachable``, an out-of-bounds access,
    a division by zero...), returned an error status, or does not follow
    the node ABI (a missing export, a wrong signature).

    :attr:`trap` names the trap (``"unreachable"``,
    ``"memory_out_of_bounds"``...; empty when it was not a trap) and
    :attr:`export` the export that was running. Running out of fuel or time
    is a :exc:`ResourceLimitError` instead. On an executor it reaches the
    client as a :exc:`RemoteExecutionError` whose ``remote_type`` ends in
    ``WasmError``.
    """

    def __init__(self, message: str, *, trap: str = "", export: str = "") -> None:
        super().__init__(message)
        #: The trap's name, lowercase (``""`` when it was no trap).
        self.trap = trap
        #: The export that was running (``""`` when unknown).
        self.export = export


class ModelError(RemoteMediaError):
    """
    A model could not be loaded: its package is not installed, its weights
    cannot be found (or fetched), or the device asked for is not there.

    :attr:`model` names the model as the node was given it. The message says
    how to get what is missing (which package to install, which command
    downloads the weights). Raised by a speech node's ``initialize()``; on
    an executor it reaches the client as a
    :exc:`RemoteExecutionError` whose ``remote_type`` ends in ``ModelError``.
    """

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        #: The model's name or path, as the node was given it.
        self.model = model


class ConnectionLostError(RemoteMediaError, ConnectionError):
    """A connection closed while an operation was waiting on it."""


class RemoteTimeoutError(RemoteMediaError, TimeoutError):
    """
    A network wait ran past its timeout.

    Every wait on the network in RemoteMedia has one; the message names the
    operation and the limit, and says which setting raises it.
    """


class ConnectionLimitError(SignalingError):
    """
    The signaling server closed the connection at one of its connection limits.

    :attr:`code` says which: ``server_full`` (it holds ``--max-connections``
    connections: try again later), ``too_many_connections`` (this address
    holds ``--max-connections-per-address``: close some, or raise the limit)
    or ``idle_timeout`` (the connection neither registered nor held a session
    for ``--idle-timeout`` seconds: connect again when there is work).
    """


class TLSError(SignalingError):
    """
    TLS with the signaling server failed.

    :attr:`code` is ``untrusted_certificate`` when the server's certificate is
    not signed by a CA this side trusts, or is not for the host name dialled
    (pass the CA's certificate: ``RemoteExecutorConfig(ca_file=...)``,
    ``$REMOTEMEDIA_CA_FILE`` or the executor's ``--ca-file``), and
    ``tls_required`` when a ``ws://`` URL reached a server that speaks only
    TLS (use ``wss://``: ``RemoteExecutorConfig(ssl_enabled=True)``).
    """
