"""
A service session: a named service (see :mod:`executor.registry`) serving
one client's camera and microphone, live.

The client (a browser, or :class:`~remotemedia.remote.service.RemoteServiceNode`)
offers an audio and a video track and a ``service`` data channel, and
trickles its ICE candidates; this side applies them as they come, before or
after its answer. The protocol is in ``signaling_server/PROTOCOL.md``
(*Services*). In short:

- nothing is looked at before the client's ``hello`` shows the session's
  ticket; then the service's node is built with the client's options;
- received frames go to the node in arrival order; video it has not taken
  yet is replaced by newer frames (:class:`~remotemedia.aio.Latest`
  semantics), audio is kept up to :data:`MAX_AUDIO_BACKLOG` seconds;
- the node's video goes back on the video track (the latest frame), its
  audio is played on the audio track, anything else goes on the data
  channel as JSON;
- ``configure`` messages change the node's options while it runs, and a
  ``stats`` message goes out every second.

No Python object comes from the client: the node is the executor's own
code, and it runs in the executor's process (in either ``--mode``).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import time
from typing import Any, Callable

import av
from aiortc.mediastreams import MediaStreamError

from remotemedia.aio import in_thread
from remotemedia.frames import AudioFrame, Transcript, VideoFrame
from remotemedia.node import ProcessStream
from remotemedia.rpc.calls import PAUSED, RESUMED, is_interrupted
from remotemedia.signaling import SignalingSession
from remotemedia.transport.connection import opened_or_ended
from remotemedia.transport.ice import order_ice_servers
from remotemedia.transport.live import LiveAudioTrack, LiveVideoTrack
from remotemedia.transport.media import KINDS
from remotemedia.transport.peer import (
    SERVICE_LABEL,
    add_candidate,
    close_peer_connection,
    make_answer,
    new_peer_connection,
    watch_bye,
)

from .gpu import has_gpu
from .registry import Factory, build
from .peer_session import PeerSession, SessionOver
from .session import SessionSettings, ticket_problem

__all__ = ["ServiceSession", "MAX_AUDIO_BACKLOG"]

logger = logging.getLogger(__name__)

#: Seconds of received audio kept for a node that falls behind; older audio is dropped.
MAX_AUDIO_BACKLOG = 5.0
#: Seconds between ``stats`` messages.
STATS_INTERVAL = 1.0
#: Largest data channel message accepted from the client, in bytes.
MAX_CONTROL_MESSAGE = 64 * 1024


class _Input:
    """The node's input: frames in arrival order; one video frame at most waits (the latest)."""

    def __init__(self) -> None:
        self._items: collections.deque = collections.deque()
        self._ready = asyncio.Event()
        self._audio_s = 0.0
        self._audio_warned = False
        self.ended = False
        self.frames_in = self.dropped = 0
        #: When each video frame (by timestamp) was handed to the node.
        self.taken: collections.OrderedDict = collections.OrderedDict()

    def put(self, frame: Any) -> None:
        if self.ended:
            return
        if isinstance(frame, av.VideoFrame):
            self.frames_in += 1
            for i, item in enumerate(self._items):
                if isinstance(item, av.VideoFrame):
                    self._items[i] = frame  # the newer frame takes the waiting one's place
                    self.dropped += 1
                    return
        else:
            self._audio_s += frame.samples / frame.sample_rate
            while self._audio_s > MAX_AUDIO_BACKLOG:
                for i, item in enumerate(self._items):
                    if isinstance(item, av.AudioFrame):
                        del self._items[i]
                        self._audio_s -= item.samples / item.sample_rate
                        break
                if not self._audio_warned:
                    self._audio_warned = True
                    logger.warning("a service is slower than real time: the oldest audio beyond %g s is dropped", MAX_AUDIO_BACKLOG)
        self._items.append(frame)
        self._ready.set()

    def end(self) -> None:
        self.ended = True
        self._ready.set()

    @property
    def audio_backlog(self) -> float:
        return max(0.0, self._audio_s)  # a sum of float durations drifts below 0 when empty

    async def frames(self):
        """The frames, converted as the node takes them, until :meth:`end`."""
        while True:
            while not self._items:
                if self.ended:
                    return
                self._ready.clear()
                await self._ready.wait()
            frame = self._items.popleft()
            if isinstance(frame, av.VideoFrame):
                out = VideoFrame.from_av(frame)
                self.taken[out.timestamp] = time.perf_counter()
                while len(self.taken) > 100:
                    self.taken.popitem(last=False)
            else:
                self._audio_s -= frame.samples / frame.sample_rate
                out = AudioFrame.from_av(frame)
            yield out


class ServiceSession(PeerSession):
    """Serves one client with one named service until either ends (see the module docstring)."""

    EXPECTED_FAILURES = (*PeerSession.EXPECTED_FAILURES, LookupError)

    def __init__(self, signaling: SignalingSession, settings: SessionSettings, services: dict[str, Factory]) -> None:
        super().__init__(signaling, settings)
        self.services = services
        self.service = str(signaling.requirements.get("service", ""))
        self._pc: Any = None
        self._channel: Any = None
        self._node: Any = None
        self._input = _Input()
        self._video = LiveVideoTrack()
        self._audio = LiveAudioTrack()
        self._tasks: list[asyncio.Task] = []
        self._messages: asyncio.Queue = asyncio.Queue()
        self._process_ms: list[float] = []
        self.frames_out = 0

    async def _serve(self) -> None:
        self._pc = pc = new_peer_connection(await order_ice_servers([*self.settings.ice_servers, *self.signaling.ice_servers]))
        opened: asyncio.Future = asyncio.get_running_loop().create_future()

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == SERVICE_LABEL and not opened.done():
                # Now, not once `opened` is awaited: a browser sends hello the moment the channel
                # opens, and aiortc may deliver it in the same step as the channel itself.
                channel.on("message", self._messages.put_nowait)
                channel.on("close", lambda: self._end("the client closed the data channel"))
                opened.set_result(channel)

        @pc.on("track")
        def on_track(track: Any) -> None:
            self._spawn(self._read_track(track), f"service-{track.kind}-in")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._end(f"the peer connection {pc.connectionState}")

        factory = self.services.get(self.service)
        if factory is None:
            raise LookupError(f"this executor offers no service {self.service!r} (it offers {', '.join(self.services)})")
        timeout = self.settings.connect_timeout
        await make_answer(pc, self.signaling, timeout, self._add_tracks)
        # Browsers trickle: candidates after the answer are applied as they come; bye ends the session.
        self._spawn(
            watch_bye(
                self.signaling,
                lambda why: self._end(f"the client left ({why})"),
                on_candidate=lambda candidate: add_candidate(pc, candidate),
            ),
            "service-signaling",
        )
        # A bye while the channel is awaited ends the session at once: its slot is freed now.
        if not await opened_or_ended(opened, self._done, timeout):
            if self._done.is_set():
                raise SessionOver()  # the teardown says why
            raise asyncio.TimeoutError()
        self._channel = opened.result()
        if await self._hello(factory, timeout):
            self._spawn(self._serve_node(), "service-node")
            self._spawn(self._control(), "service-control")
            self._spawn(self._stats(), "service-stats")
            await self._done.wait()

    async def _teardown(self) -> None:
        self._input.end()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()  # a cancelled task's traceback holds its frame, and so this session
        if self._node is not None:
            await self._call(getattr(self._node, "cleanup", None))
        self._video.stop()
        self._audio.stop()
        pc, self._pc = self._pc, None
        if pc is not None:
            await close_peer_connection(pc)  # bounded: the slot is freed even when TURN is unreachable

    def _bye_reason(self) -> str:
        return self._why[:200] or "the executor is stopping"

    def _name(self) -> str:
        return f"{self.signaling.id} (service {self.service})"

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=f"{name}-{self.signaling.id}"))

    def _add_tracks(self, pc: Any) -> None:
        kinds = [t.kind for t in pc.getTransceivers()]
        if kinds.count("audio") > 1 or kinds.count("video") > 1:
            raise ValueError(f"a service session takes at most one audio and one video track, not {kinds}")
        for transceiver in pc.getTransceivers():
            # Ours go back on the client's transceivers: processed video, and speech (or silence).
            pc.addTrack(self._video if transceiver.kind == "video" else self._audio)

    async def _read_track(self, track: Any) -> None:
        """Hand the track's frames to the node, once it exists and if it takes their kind."""
        try:
            while True:
                frame = await track.recv()
                if self._node is not None and track.kind in getattr(self._node, "takes", KINDS):
                    self._input.put(frame)
        except MediaStreamError:
            pass
        except Exception:  # a frame that does not convert must not pass unnoticed
            logger.exception("session %s: reading the client's %s track failed", self.signaling.id, track.kind)
            self._end(f"reading the client's {track.kind} track failed")

    # -- control ---------------------------------------------------------------------

    def _send(self, message: dict) -> None:
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(json.dumps(message, allow_nan=False, default=str))

    def _error(self, code: str, message: str) -> None:
        self._send({"type": "error", "code": code, "message": message})

    async def _next_message(self, timeout: float | None = None) -> dict | None:
        """The client's next message as a dict; ``None`` (after telling it) for a malformed one."""
        raw = await asyncio.wait_for(self._messages.get(), timeout)
        if isinstance(raw, bytes) or len(raw) > MAX_CONTROL_MESSAGE:
            self._error("bad_request", f"messages are JSON text of at most {MAX_CONTROL_MESSAGE} bytes")
            return None
        try:
            message = json.loads(raw)
        except ValueError:
            self._error("bad_request", "a message is not valid JSON")
            return None
        except RecursionError:  # "[[[[..." 20,000 deep fits in a message
            logger.warning("session %s: a control message nested too deep to parse; refused", self.signaling.id)
            self._error("bad_request", "a message is nested too deep")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._error("bad_request", "a message is a JSON object with a string 'type'")
            return None
        return message

    async def _hello(self, factory: Factory, timeout: float) -> bool:
        try:
            hello = await self._next_message(timeout)
        except asyncio.TimeoutError:
            self._end(f"no hello within {timeout:g} s")
            return False
        why = "the first message must be hello" if hello is None or hello["type"] != "hello" else None
        why = why or ticket_problem(self.settings, self.signaling, hello.get("ticket"))
        if why is not None:
            logger.warning("session %s: refused: %s", self.signaling.id, why)
            self._error("unauthorized", why)
            self._end(f"refused: {why}")
            return False
        try:
            self._node = build(factory, hello.get("options"))
        except ValueError as exc:
            self._error("bad_options", str(exc))
            self._end(f"bad options: {exc}")
            return False
        except Exception as exc:
            logger.exception("session %s: building service %r failed", self.signaling.id, self.service)
            self._error("service_failed", f"building service {self.service!r} failed: {type(exc).__name__}: {exc}")
            self._end(f"service {self.service!r} failed to start")
            return False
        self._send(
            {
                "type": "welcome",
                "executor": self.settings.executor,
                "service": self.service,
                "options": self._options(hello.get("options") or {}),
                "choices": {k: list(v) for k, v in (getattr(self._node, "choices", None) or {}).items()},
                "gpu": has_gpu(),
            }
        )
        return True

    def _options(self, fallback: dict) -> dict:
        options = getattr(self._node, "options", None)
        return options() if callable(options) else fallback

    async def _control(self) -> None:
        while True:
            message = await self._next_message()
            if message is None:
                continue
            try:
                self._control_message(message)
            except Exception as exc:
                # One message the service cannot take must not end the loop: later ones still count.
                logger.warning("session %s: control message %r failed", self.signaling.id, message["type"], exc_info=True)
                self._error("bad_request", f"the {message['type']!r} message failed: {type(exc).__name__}")

    def _control_message(self, message: dict) -> None:
        if message["type"] == "configure":
            self._configure(message.get("options"))
        elif message["type"] == "end":
            self._input.end()
        elif message["type"] != "hello":
            self._error("bad_request", f"unknown message type {message['type']!r} (configure or end)")

    def _configure(self, options: Any) -> None:
        configure = getattr(self._node, "configure", None)
        if not callable(configure):
            self._error("bad_options", f"service {self.service!r} has no options to change while it runs")
        elif not isinstance(options, dict) or not all(isinstance(k, str) and k.isidentifier() for k in options):
            self._error("bad_options", f"options must be an object of option names to values, not {options!r}")
        else:
            try:
                configure(**options)
            except (TypeError, ValueError) as exc:
                self._error("bad_options", str(exc))
                return
            self._send({"type": "configured", "options": self._options(options)})

    async def _stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            times, self._process_ms = self._process_ms, []
            dropped = self._input.dropped + getattr(self._node, "dropped", 0) + self._video.replaced
            self._send(
                {
                    "type": "stats",
                    "frames_in": self._input.frames_in,
                    "frames_out": self.frames_out,
                    "dropped": dropped,
                    "process_ms": round(sum(times) / len(times), 1) if times else None,
                    "audio_backlog_s": round(self._input.audio_backlog, 2),
                    **_speech_stats(self._node),
                }
            )

    # -- the node ----------------------------------------------------------------------

    async def _call(self, method: Callable | None) -> Any:
        if method is None:
            return None
        if inspect.iscoroutinefunction(method):
            return await method()
        return await in_thread(method)

    async def _serve_node(self) -> None:
        node = self._node if getattr(self._node, "is_streaming", False) else ProcessStream(self._node)
        try:
            await self._call(getattr(node, "initialize", None))
            async for item in node.stream(self._input.frames()):
                self._output(item)
        except Exception as exc:
            logger.warning("session %s: service %r failed", self.signaling.id, self.service, exc_info=True)
            self._error("service_failed", f"service {self.service!r} failed: {type(exc).__name__}: {exc}")
            self._end(f"service {self.service!r} failed: {type(exc).__name__}: {exc}")
            return
        await self._audio.drained()  # the speech it yielded is heard to the end
        self._send({"type": "done"})
        # The client ends the session once the last frames on the tracks have reached it.

    def _output(self, item: Any) -> None:
        if isinstance(item, VideoFrame):
            taken = self._input.taken.pop(item.timestamp, None)
            if taken is not None:
                self._process_ms.append((time.perf_counter() - taken) * 1000)
            self.frames_out += 1
            self._video.put(item)
        elif isinstance(item, AudioFrame):
            self._audio.play(item)
        elif isinstance(item, Transcript):
            self._send({"type": "transcript", "text": item.text, "start": item.start, "end": item.end})
        elif is_interrupted(item):
            # Barge-in: the reply's audio still queued on the track is not played.
            flushed = self._audio.queued
            self._audio.clear()
            self._audio.paused = False
            self._send({**item, "flushed_s": round(flushed, 3)})
        elif isinstance(item, dict) and item.get("type") in (PAUSED, RESUMED):
            # Barge-in's pause at speech start: the audio queued on the track waits too.
            self._audio.paused = item["type"] == PAUSED
            self._send(item)
        elif isinstance(item, dict) and isinstance(item.get("type"), str):
            self._send(item)
        elif isinstance(item, str):
            self._send({"type": "text", "text": item})
        else:
            self._send({"type": "event", "data": item})


def _speech_stats(node: Any) -> dict:
    """A service's speech recognition: utterances transcribed, shed (too short, merged while busy); its barge-ins."""
    stats = {}
    whisper = getattr(node, "whisper", None)
    for name in ("ignored", "merged", "transcribed"):
        value = getattr(whisper, name, None)
        if isinstance(value, int):
            stats[f"utterances_{name}"] = value
    if isinstance(getattr(node, "interruptions", None), int):
        stats["interruptions"] = node.interruptions
    return stats
