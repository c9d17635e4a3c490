"""
``RemoteObjectExecutionNode``: a pipeline node whose work runs on an executor.

Remoteness belongs to the instance added to the pipeline: wrap any object
that has ``process(data)`` or ``stream(frames)`` (a :class:`~remotemedia.Node`
or not) and add the wrapper instead::

    remote_tts = RemoteObjectExecutionNode(
        obj_to_execute=TTSNode(model="bark"),
        remote_config=RemoteExecutorConfig(host="10.0.0.12", port=50052),
        name="TTSRemote",
    )
    pipeline.add_node(remote_tts)

The wrapper itself never travels; the wrapped object does. A pipeline run
connects the wrapper to a :class:`RemoteProxyClient` shared by every remote
node of the run with an equal config (see :mod:`remotemedia.remote.sessions`);
``initialize()`` then uploads the object (the executor runs its
``initialize()``), ``process``/``stream`` run it remotely, and ``cleanup()``
releases it (the executor runs its ``cleanup()``).

``placement`` (``"remote"``, the default, ``"auto"`` or ``"local"``) says
whether each run may run the object here instead; see
:mod:`remotemedia.remote.placement` for how ``"auto"`` decides and when a
node falls back to local execution mid-run.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from ..aio import in_thread
from ..exceptions import ConnectionLostError
from ..node import Node, ProcessStream
from .config import RemoteExecutorConfig
from .placement import Calibration, check_placement, check_requires
from .proxy import RemoteProxy

if TYPE_CHECKING:
    from .client import RemoteProxyClient

__all__ = ["RemoteObjectExecutionNode", "TRANSPORTS"]

#: How a streaming remote node carries its frames: ``"tracks"`` (audio and video
#: frames on WebRTC media tracks, everything else on the data channel) or
#: ``"datachannel"`` (everything on the data channel, losslessly).
TRANSPORTS = ("tracks", "datachannel")
_NODE_CONFIG_KEYS = ("streaming", "transport")
logger = logging.getLogger(__name__)


async def _run_here(method: Callable[..., Any], *args: Any) -> Any:
    """Call a method of the wrapped object in this process: async on the loop, sync in a thread."""
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    result = await in_thread(method, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _has_method(obj: Any, name: str) -> bool:
    # Node's own process() and stream() only raise NotImplementedError: not implementations.
    return callable(getattr(obj, name, None)) and getattr(type(obj), name, None) is not getattr(Node, name)


class RemoteObjectExecutionNode(Node):
    """
    Run ``obj_to_execute`` on the executor that ``remote_config`` reaches.

    ``node_config`` keys: ``streaming`` (bool; default: the wrapped object's
    own ``is_streaming``) makes this a streaming node whose ``stream(frames)``
    runs the remote object's ``stream`` as a duplex stream (an object with
    only ``process()`` streams too: each input goes through its ``process()``
    on the executor, see :class:`~remotemedia.node.ProcessStream`); ``transport``
    (``"tracks"``, the default, or ``"datachannel"``) says how a streaming
    node's frames travel. Setting ``is_streaming = True`` after construction
    works too. ``name`` defaults to the wrapped object's name, else its class
    name.

    ``placement`` is ``"remote"`` (run on the executor), ``"local"`` (run
    the object in this process) or ``"auto"`` (each run decides; see
    :mod:`remotemedia.remote.placement`); ``None`` takes the pipeline's
    (``Pipeline(placement=...)``, itself ``"remote"`` by default).
    ``requires`` adds to the config's pairing requirements (``{"gpu": True}``).
    ``stateless`` says each input is independent, so an ``"auto"`` node may
    continue locally when its executor is lost; ``None`` reads the wrapped
    object's ``stateless`` attribute (default ``False``).

    Raises :exc:`TypeError` for an object without the needed method, a
    ``remote_config`` that is not a :class:`RemoteExecutorConfig`, or an
    unknown ``node_config`` key, and :exc:`ValueError` for an unknown
    transport.
    """

    def __init__(
        self,
        obj_to_execute: Any,
        remote_config: RemoteExecutorConfig,
        name: str | None = None,
        node_config: dict[str, Any] | None = None,
        *,
        placement: str | None = None,
        requires: dict[str, Any] | None = None,
        stateless: bool | None = None,
    ) -> None:
        if isinstance(obj_to_execute, type):
            raise TypeError(
                f"obj_to_execute must be an instance, not the class {obj_to_execute.__name__}; "
                f"did you mean {obj_to_execute.__name__}(...)?"
            )
        if isinstance(obj_to_execute, (RemoteObjectExecutionNode, RemoteProxy)):
            raise TypeError(f"obj_to_execute is remote already ({obj_to_execute!r}); wrap the original object")
        if not (_has_method(obj_to_execute, "process") or _has_method(obj_to_execute, "stream")):
            raise TypeError(
                f"{type(obj_to_execute).__name__} object cannot run as a node: it has neither "
                f"process(data) nor stream(frames)"
            )
        if not isinstance(remote_config, RemoteExecutorConfig):
            raise TypeError(f"remote_config must be a RemoteExecutorConfig, not {type(remote_config).__name__}")
        if placement is not None:
            check_placement("placement", placement)
        if requires is not None:
            check_requires("requires", requires)
            remote_config = dataclasses.replace(remote_config, requirements={**remote_config.requirements, **requires})
        if stateless is None:
            stateless = getattr(obj_to_execute, "stateless", False)
        if not isinstance(stateless, bool):
            raise TypeError(f"stateless must be True or False, not {stateless!r}")
        if node_config is None:
            node_config = {}
        if not isinstance(node_config, dict):
            raise TypeError(f"node_config must be a dict, not {type(node_config).__name__}")
        unknown = sorted(set(node_config) - set(_NODE_CONFIG_KEYS), key=str)
        if unknown:
            raise TypeError(f"unknown node_config keys {unknown}; known keys are {list(_NODE_CONFIG_KEYS)}")
        streaming = node_config.get("streaming", bool(getattr(obj_to_execute, "is_streaming", False)))
        if not isinstance(streaming, bool):
            raise TypeError(f"node_config['streaming'] must be True or False, not {streaming!r}")
        transport = node_config.get("transport", "tracks")
        if transport not in TRANSPORTS:
            raise ValueError(f"node_config['transport'] must be one of {list(TRANSPORTS)}, not {transport!r}")
        if name is None:
            own = getattr(obj_to_execute, "name", None)
            name = own if isinstance(own, str) and own else type(obj_to_execute).__name__
        super().__init__(name)
        #: The object that runs on the executor (uploaded at each pipeline run).
        self.obj_to_execute = obj_to_execute
        #: Where the executor is found (with ``requires`` added to its requirements).
        self.remote_config = remote_config
        #: ``"remote"``, ``"auto"``, ``"local"``, or ``None`` (the pipeline's).
        self.placement = placement
        #: Whether each input is independent of the ones before (see ``placement``).
        self.stateless = stateless
        #: The node_config as given.
        self.node_config = dict(node_config)
        #: ``"tracks"`` or ``"datachannel"`` (see :data:`TRANSPORTS`).
        self.transport: str = transport
        self._streaming = False
        self.is_streaming = streaming
        # Set by the pipeline run that owns this node (remotemedia.remote.sessions).
        self._client: RemoteProxyClient | None = None
        self._proxy: RemoteProxy | None = None
        # This run's placement: "remote", "local" or "calibrate" (see _begin_run()).
        self._mode = "remote"
        self._auto = False
        self._local_ready = False  # the object's initialize() ran here
        self._calibration: Calibration | None = None
        self._on_placed: Callable[[str, str], None] | None = None

    @property
    def is_streaming(self) -> bool:  # type: ignore[override]
        """Whether the node runs the remote object's ``stream`` (else its ``process``)."""
        return self._streaming

    @is_streaming.setter
    def is_streaming(self, value: bool) -> None:
        value = bool(value)
        obj = self.obj_to_execute
        if value and not _has_method(obj, "stream") and not _has_method(obj, "process"):
            raise TypeError(f"{type(obj).__name__} object has neither stream(frames) nor process(data) to stream")
        if not value and not _has_method(obj, "process"):
            hint = "; pass node_config={'streaming': True} to run its stream()" if _has_method(obj, "stream") else ""
            raise TypeError(
                f"{type(obj).__name__} object has no process() method, which a non-streaming remote node calls{hint}"
            )
        self._streaming = value

    def _uploaded(self) -> Any:
        """What goes to the executor: the object, or, for a streaming node over a process()-only object, a stream of its process()."""
        obj = self.obj_to_execute
        if self._streaming and not _has_method(obj, "stream"):
            return ProcessStream(obj)
        return obj

    @property
    def executor(self) -> str | None:
        """Name of the executor serving this node during a run, else ``None`` (none, or it runs locally)."""
        if self._mode == "local":
            return None
        return self._client.executor if self._client is not None else None

    @property
    def runs_locally(self) -> bool:
        """Whether the current (or last) run runs the object in this process."""
        return self._mode == "local"

    def _attach(self, client: RemoteProxyClient | None) -> None:
        """Give the node the session it runs on (``None``: the run is over)."""
        self._client = client
        self._proxy = None

    # -- placement (remotemedia.remote.placement) ----------------------------------------

    def _begin_run(self, default: str, on_placed: Callable[[str, str], None] | None = None) -> str:
        """Start a run's placement: returns the placement in force (the node's, else ``default``)."""
        placement = self.placement or default
        self._auto = placement == "auto"
        self._mode = "local" if placement == "local" else "remote"
        self._local_ready = False
        self._calibration = None
        self._on_placed = on_placed
        return placement

    def _place(self, mode: str, reason: str, *, log: bool = True) -> None:
        """Record a decision: ``mode`` is ``"remote"``, ``"local"`` or ``"calibrate"``."""
        self._mode = mode
        self._calibration = Calibration() if mode == "calibrate" else None
        if log:
            logger.info("node %r placed: %s", self.name, reason)
        if self._on_placed is not None:
            self._on_placed(mode, reason)

    def _end_run(self) -> None:
        """At the end of a run that stopped while still calibrating: its outputs came from the executor."""
        calibration = self._calibration
        if self._mode == "calibrate" and calibration is not None:
            executor = self._client.executor if self._client is not None else None
            self._place(
                "remote",
                f"remote {executor} (the run ended after {len(calibration.local)} of {calibration.inputs} "
                f"calibration inputs)",
            )

    async def _initialize_here(self) -> None:
        if not self._local_ready:
            method = getattr(self.obj_to_execute, "initialize", None)
            if callable(method):
                await _run_here(method)
            self._local_ready = True

    async def _process_here(self, data: Any) -> Any:
        return await _run_here(self.obj_to_execute.process, data)

    async def _lost(self, client: RemoteProxyClient, error: ConnectionLostError) -> bool:
        """
        After a call failed with a lost session: ``True`` if the node now
        runs here (an ``"auto"``, stateless node whose executor nobody
        replaced), ``False`` if it may call again (such a node, reconnected
        to another executor), else raises why it cannot go on (as before
        placement).
        """
        final = await client.wait_reconnection()
        if final is None:
            if self._auto and self.stateless:
                return False  # another executor took the node: run the input again there
            raise error  # reconnected: the call in flight failed, as for any remote node
        if not self._auto:
            raise final from None
        if not self.stateless:
            raise ConnectionLostError(
                f"{final}; node {self.name!r} cannot continue locally: it is not stateless (its state lived "
                f"on the lost executor); declare stateless=True if each input is independent of the ones before"
            ) from None
        self._proxy = None
        self._place("local", f"local (executor {client.executor!r} lost and no other took the node: {final})")
        await self._initialize_here()
        return True

    def _session(self) -> tuple[RemoteProxyClient, RemoteProxy]:
        if self._client is None or self._proxy is None:
            raise RuntimeError(
                f"remote node {self.name!r} runs only inside a pipeline run, which connects it "
                f"to its executor (add it to a Pipeline and run that)"
            )
        return self._client, self._proxy

    async def initialize(self) -> None:
        """Upload the object to the executor, which runs its ``initialize()`` (or run that here, placed locally)."""
        if self._mode == "local":
            await self._initialize_here()
            return
        if self._client is None:
            self._session()  # raises the explanation
        self._proxy = await self._client.create_proxy(self._uploaded())
        if self._mode == "calibrate":
            try:
                await self._initialize_here()
            except Exception as exc:  # it cannot run here: the executor it is
                self._place("remote", f"remote {self._client.executor} (initialize() failed here: {type(exc).__name__}: {exc})")

    async def process(self, data: Any) -> Any:
        """Run the remote object's ``process(data)`` and return its result (or run it here, placed locally)."""
        if self._mode == "local":
            return await self._process_here(data)
        client, proxy = self._session()
        try:
            if self._mode == "calibrate":
                return await self._calibrate(client, proxy, data)
            return await proxy.process(data)
        except ConnectionLostError as error:
            if not self._auto:
                await _raise_last_word(client)
                raise
            if await self._lost(client, error):
                return await self._process_here(data)
            return await self.process(data)

    async def _calibrate(self, client: RemoteProxyClient, proxy: RemoteProxy, data: Any) -> Any:
        clock = time.perf_counter
        started = clock()
        result = await proxy.process(data)
        remote = clock() - started
        started = clock()
        try:
            await self._process_here(data)
        except Exception as exc:  # it cannot run here: the executor it is
            self._place("remote", f"remote {client.executor} (process() failed here: {type(exc).__name__}: {exc})")
            await self._cleanup_here()
            return result
        local = clock() - started
        calibration = self._calibration
        calibration.add(local, remote)
        if calibration.done:
            remote_wins, reason = calibration.verdict(client.executor)
            self._place("remote" if remote_wins else "local", reason)
            # The losing side's copy is freed now rather than at the end of the run.
            if remote_wins:
                await self._cleanup_here()
            else:
                self._proxy = None
                await client.release(proxy)
        return result

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Feed ``frames`` to the remote object's ``stream`` and yield what it yields, as it yields it."""
        if self._mode == "local":
            async for output in self._uploaded().stream(frames):
                yield output
            return
        client, proxy = self._session()
        call = proxy.stream(frames)
        outputs = (call.over_tracks() if self.transport == "tracks" else call).__aiter__()
        try:
            async for output in outputs:
                yield output
        except ConnectionLostError:
            await _raise_last_word(client)
            raise
        finally:
            await outputs.aclose()

    async def cleanup(self) -> None:
        """Release the remote object (the executor runs its ``cleanup()``), and run ``cleanup()`` here if it ran here."""
        client, proxy = self._client, self._proxy
        self._proxy = None
        try:
            if client is not None and proxy is not None:
                await client.release(proxy)
        finally:
            await self._cleanup_here()

    async def _cleanup_here(self) -> None:
        """Run the object's ``cleanup()`` here if its ``initialize()`` ran here."""
        if self._local_ready:
            self._local_ready = False
            method = getattr(self.obj_to_execute, "cleanup", None)
            if callable(method):
                await _run_here(method)

    def __repr__(self) -> str:
        return (
            f"<RemoteObjectExecutionNode name={self.name!r} "
            f"obj={type(self.obj_to_execute).__name__} at {self.remote_config.host}:{self.remote_config.port}>"
        )



async def _raise_last_word(client: RemoteProxyClient) -> None:
    """
    After a call failed with a lost session: wait for the client's
    reconnection (if any) to end, and raise its outcome if it failed, so that
    a run never ends saying "reconnecting" when reconnecting has given up.
    """
    final = await client.wait_reconnection()
    if final is not None:
        raise final from None
