"""
:class:`RemoteServiceNode`: a named service of an executor, used from Python.

Executors offer services by name (``demo``, ``effects``, ``transcribe``, and
their operator's own: see :mod:`executor.registry`); browsers use them
because they cannot send Python objects. This node uses them the same way,
with nothing to pickle: its input frames go out on live media tracks, like a
camera and a microphone, and it yields what the service sends back.

The session is live, like a call: video frames that the track has not sent
yet are replaced by newer ones, and audio is played in real time. Feed it a
source paced in real time (a camera, ``AudioFileSource(realtime=True)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

from ..exceptions import ConnectionLostError, RemoteExecutionError, RemoteMediaError, RemoteTimeoutError
from ..frames import AudioFrame, Transcript, VideoFrame
from ..node import Node
from ..rpc.calls import is_interrupted
from .config import RemoteExecutorConfig

__all__ = ["RemoteServiceNode"]

_DONE = object()
#: Seconds to wait, after the service said it is done, for its last frames on the tracks.
#: The service protocol's own and this end's alone (the executor waits for nothing):
#: not the RPC's :data:`~remotemedia.rpc.calls.MEDIA_DRAIN`, which both ends share.
DONE_DRAIN = 0.5


class RemoteServiceNode(Node):
    """
    The executor's service ``service``, with ``options``, as a streaming node.

    It takes :class:`~remotemedia.frames.VideoFrame` and
    :class:`~remotemedia.frames.AudioFrame` inputs, and yields the service's
    video frames, its speech (silence between utterances is not yielded),
    :class:`~remotemedia.frames.Transcript` values, and its other messages
    as dicts (``{"type": "reply", "text": ...}``). When the service cuts a
    reply (barge-in: ``{"type": "interrupted", ...}``), the reply's audio
    still in flight is dropped here, not yielded.

    Errors: :exc:`~remotemedia.exceptions.NoExecutorAvailable` when no
    executor offers the service, :exc:`ValueError` for options the service
    refuses, :exc:`~remotemedia.exceptions.RemoteExecutionError` when the
    service fails, :exc:`~remotemedia.exceptions.ConnectionLostError` when
    the executor goes away, :exc:`~remotemedia.exceptions.RemoteTimeoutError`
    when it does not answer within the config's ``connect_timeout``.
    """

    is_streaming = True

    def __init__(
        self,
        service: str,
        remote_config: RemoteExecutorConfig | None = None,
        options: dict | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"RemoteService[{service}]")
        if not isinstance(service, str) or not service:
            raise ValueError(f"service must be a service's name, not {service!r}")
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"options must be a dict, not {type(options).__name__}")
        #: The service's name.
        self.service = service
        #: Where the signaling server is (the default config when ``None``).
        self.remote_config = remote_config or RemoteExecutorConfig()
        #: Options for the service's node.
        self.options = dict(options or {})
        #: The ``welcome`` of the last session: the executor, the options now, their choices.
        self.welcome: dict | None = None
        #: The executor's latest ``stats`` for the session (frames in and out, dropped, time per
        #: frame, speech shed: see signaling_server/PROTOCOL.md), updated every second.
        self.stats: dict = {}
        #: Reply audio frames that arrived after an ``interrupted`` (in flight when the executor cut
        #: the reply) and were dropped, not yielded (last session).
        self.dropped_after_interrupt = 0

    @property
    def executor(self) -> str | None:
        """Name of the executor that served the last session (from its ``welcome``), else ``None``."""
        name = self.welcome.get("executor") if self.welcome else None
        return name if isinstance(name, str) and name else None

    async def stream(self, frames: AsyncIterator[Any]) -> AsyncIterator[Any]:
        from aiortc.mediastreams import MediaStreamError

        from ..signaling import SignalingClient
        from ..transport import close_peer_connection, make_offer, new_peer_connection, wait_open
        from ..transport.live import LiveAudioTrack, LiveVideoTrack
        from ..transport.ice import order_ice_servers
        from ..transport.peer import SERVICE_LABEL

        config = self.remote_config
        limit = config.connect_timeout
        signaling = await SignalingClient.connect_any(config.urls, token=config.token, timeout=limit)
        pc = None
        video, audio = LiveVideoTrack(), LiveAudioTrack()
        self.dropped_after_interrupt = 0
        out: asyncio.Queue = asyncio.Queue()
        tasks: list[asyncio.Task] = []
        try:
            session = await signaling.pair({**config.requirements, "service": self.service}, timeout=limit)
            pc = new_peer_connection(await order_ice_servers([*config.ice_servers, *session.ice_servers]))
            pc.addTransceiver(audio, direction="sendrecv")
            pc.addTransceiver(video, direction="sendrecv")
            channel = pc.createDataChannel(SERVICE_LABEL)
            # After an "interrupted", the reply's frames still in flight are dropped until the
            # track falls silent (the executor dropped the rest): the consumer hears no more of it.
            cutting = False

            def message(raw: Any) -> None:
                nonlocal cutting
                item = _message(raw)
                if is_interrupted(item):
                    cutting = True
                out.put_nowait(item)

            channel.on("message", message)
            channel.on("close", lambda: out.put_nowait(ConnectionLostError(f"the executor closed service {self.service!r}")))

            async def read(track: Any) -> None:
                nonlocal cutting
                with contextlib.suppress(MediaStreamError):
                    while True:
                        frame = await track.recv()
                        if track.kind == "video":
                            out.put_nowait(VideoFrame.from_av(frame))
                        elif not frame.to_ndarray().any():  # silence between utterances is not yielded
                            cutting = False
                        elif cutting:
                            self.dropped_after_interrupt += 1
                        else:
                            out.put_nowait(AudioFrame.from_av(frame))

            pc.on("track", lambda track: tasks.append(asyncio.create_task(read(track))))
            await make_offer(pc, session, limit)
            await wait_open(channel, limit, f"service {self.service!r}", pc)
            channel.send(json.dumps({"type": "hello", "ticket": session.ticket, "options": self.options}))
            first = await _next(out, limit, "its welcome")
            if isinstance(first, BaseException):
                raise first
            if not isinstance(first, dict) or first.get("type") != "welcome":
                raise _error(self.service, first)
            self.welcome = first

            async def feed() -> None:
                async for frame in frames:
                    if isinstance(frame, VideoFrame):
                        video.put(frame)
                    elif isinstance(frame, AudioFrame):
                        audio.play(frame)
                    else:
                        raise TypeError(f"{self.name} takes VideoFrame and AudioFrame inputs, not {type(frame).__name__}")
                await audio.drained()  # the last audio must be sent before the end is told
                channel.send(json.dumps({"type": "end"}))

            async def watch_bye() -> None:
                with contextlib.suppress(RemoteMediaError):
                    while (await session.recv())["type"] != "bye":
                        pass
                out.put_nowait(ConnectionLostError(f"the executor ended service {self.service!r}: {session.ended}"))

            feeder = asyncio.create_task(feed())
            feeder.add_done_callback(lambda t: t.cancelled() or t.exception() is None or out.put_nowait(t.exception()))
            tasks += [feeder, asyncio.create_task(watch_bye())]
            while True:
                item = await out.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, dict) and item.get("type") in ("error", "done", "stats", "configured"):
                    if item["type"] == "error":
                        raise _error(self.service, item)
                    if item["type"] == "stats":
                        self.stats = {k: v for k, v in item.items() if k != "type"}
                    if item["type"] == "done":
                        loop = asyncio.get_running_loop()
                        loop.call_later(DONE_DRAIN, out.put_nowait, _DONE)
                    continue
                yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            video.stop()
            audio.stop()
            if pc is not None:
                await close_peer_connection(pc)  # bounded: a dead TURN route must not hold the caller
            await signaling.close()


def _message(raw: Any) -> Any:
    """A data channel message as the node yields it."""
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return RemoteExecutionError(f"the executor sent a message that is not JSON: {raw!r:.100}")
    if isinstance(message, dict):
        kind = message.get("type")
        if kind == "transcript":
            return Transcript(str(message.get("text", "")), float(message.get("start", 0.0)), float(message.get("end", 0.0)))
        if kind == "text":
            return str(message.get("text", ""))
        if kind == "event":
            return message.get("data")
    return message


async def _next(queue: asyncio.Queue, timeout: float, what: str) -> Any:
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except asyncio.TimeoutError:
        raise RemoteTimeoutError(f"the executor did not send {what} within {timeout:g} s") from None


def _error(service: str, message: Any) -> Exception:
    if not isinstance(message, dict) or message.get("type") != "error":
        return RemoteExecutionError(f"service {service!r}: unexpected first message {message!r:.200}")
    code, text = message.get("code"), message.get("message", "")
    if code == "bad_options":
        return ValueError(f"service {service!r} refused its options: {text}")
    return RemoteExecutionError(f"service {service!r} failed ({code}): {text}")
