"""
The local stand-in for a remote object.

``remote.method(*args, **kwargs)`` returns a :class:`RemoteCall`, which is
both awaitable (``await remote.process(x)`` gives the method's result) and
async-iterable (``async for item in remote.stream(xs)`` gives what a
generator method yields, as the executor yields it). So the caller says how
it wants the answer, and nothing has to guess from the method's definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Generator

if TYPE_CHECKING:
    from .client import RemoteProxyClient

__all__ = ["RemoteProxy", "RemoteCall"]


class RemoteCall:
    """One call of a remote method: ``await`` it for a result, or ``async for`` over it for a stream."""

    __slots__ = ("_client", "_handle", "_name", "_args", "_kwargs", "_used", "_media")

    def __init__(self, client: RemoteProxyClient, handle: int, name: str, args: tuple, kwargs: dict) -> None:
        self._client, self._handle, self._name = client, handle, name
        self._args, self._kwargs = args, kwargs
        self._used = False
        self._media = False

    def over_tracks(self) -> RemoteCall:
        """
        Stream this call's audio and video frames on WebRTC media tracks.

        ``async for out in remote.stream(frames).over_tracks()``: the
        :class:`~remotemedia.AudioFrame` and :class:`~remotemedia.VideoFrame`
        inputs and outputs travel on one of the client's media slots
        (``RemoteProxyClient(config, media_tracks=N)``), in real time,
        through Opus and VP8; everything else still goes on the data
        channel. With no slot free, the frames go on the data channel too.
        """
        self._media = True
        return self

    def _use(self) -> None:
        if self._used:
            raise RuntimeError(f"remote call {self._name}() was already awaited or iterated; call the method again")
        self._used = True

    def __await__(self) -> Generator[Any, None, Any]:
        if self._media:
            raise TypeError(f"over_tracks() is for streams: use `async for out in remote.{self._name}(...).over_tracks()`")
        self._use()
        return self._client._call(self._handle, self._name, self._args, self._kwargs).__await__()

    def __iter__(self) -> Any:
        raise TypeError(
            f"remote call {self._name}() is not iterable with a plain `for`: its results arrive over "
            f"the network, so use `async for out in remote.{self._name}(...)` (or `await` it for one result)"
        )

    def __aiter__(self) -> AsyncIterator[Any]:
        self._use()
        return self._client._stream(self._handle, self._name, self._args, self._kwargs, media=self._media)


class _RemoteMethod:
    __slots__ = ("_proxy", "_name")

    def __init__(self, proxy: RemoteProxy, name: str) -> None:
        self._proxy, self._name = proxy, name

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteCall:
        proxy = self._proxy
        return RemoteCall(proxy._client, proxy._handle, self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<remote method {self._name} of {self._proxy!r}>"


class RemoteProxy:
    """
    A remote object, created by :meth:`RemoteProxyClient.create_proxy`.

    Every public method of the original object can be called through it;
    each call runs on the executor, against the object's remote state. The
    proxy has no public attributes of its own, so no method name of the
    object is shadowed: release it with
    :meth:`RemoteProxyClient.release(proxy) <RemoteProxyClient.release>`, and
    see what it is with ``repr()``.
    """

    def __init__(self, client: RemoteProxyClient, handle: int, local: Any, remote_type: str) -> None:
        self._client = client
        self._handle = handle
        # The object as it was uploaded (not kept in sync with the remote state).
        self._local = local
        # The remote object's qualified type name, as the executor reports it.
        self._remote_type = remote_type

    def __getattr__(self, name: str) -> _RemoteMethod:
        local = self.__dict__.get("_local")
        if name.startswith("_") or local is None:
            raise AttributeError(name)
        if not callable(getattr(local, name, None)):
            raise AttributeError(f"{type(local).__qualname__} has no method {name!r} to call remotely")
        return _RemoteMethod(self, name)

    def __repr__(self) -> str:
        return f"<RemoteProxy {self._remote_type} #{self._handle} on {self._client.executor!r}>"
