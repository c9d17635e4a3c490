"""
A streamed call whose frames travel on a media slot, on the executor's side.

The :class:`~executor.dispatch.Dispatcher` (in the worker process, or in the
executor) knows only the data channel's protocol: ``INPUT`` items under
input credit in, ``YIELD`` items under stream credit out. A
:class:`MediaBridge` stands between it and the client for one call, so the
remote method sees one stream whatever wire each item took:

- inputs: frames from the slot's tracks, and the client's other inputs from
  the data channel, go to the method in the order they arrived, under the
  method's input credit. The bridge grants the client credit for its data
  channel inputs as it passes them on. Tracks are real time and cannot wait:
  when the method falls behind, the oldest waiting frames are dropped.
- the input's end: the client's ``INPUT_END`` says where its media stops;
  the end reaches the method once those frames have arrived (or after
  :data:`MEDIA_DRAIN` seconds, for frames lost on the way).
- outputs: a frame the method yields goes out on the slot's track (and the
  bridge grants the method the stream credit the client would have); any
  other item goes on the data channel, unchanged. The ``END`` carries where
  the media stops, and only then is the padding sent.
- a cut: when the method yields ``{"type": "interrupted"}`` (barge-in cut
  its reply), the frames it yielded before and that have not left yet (a
  stream window waiting here, 200 ms queued on the track) are dropped, and
  the ``interrupted`` goes out next. In flight after the cut: what the
  track had already sent, and at most the rest of one packet.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import Any, Awaitable, Callable

from remotemedia.exceptions import RemoteMediaError
from remotemedia.rpc import Kind, calls
from remotemedia.rpc.calls import INPUT_WINDOW, MAX_WAITING_FRAMES, MEDIA_DRAIN
from remotemedia.rpc.conversation import Credit
from remotemedia.transport.media import kind_of
from remotemedia.transport.tracks import MediaSlot

from .objects import error_body

__all__ = ["MediaBridge", "MEDIA_DRAIN", "MAX_WAITING_FRAMES"]

logger = logging.getLogger(__name__)


_END = object()


class MediaBridge:
    """
    One call's media (see the module docstring).

    ``to_method(kind, body)`` passes a message to the method's dispatcher;
    ``forward_input(event)`` passes one of the client's own messages on
    unchanged; ``send(kind, body)`` sends a message to the client;
    ``on_close()`` is called once the call is over.
    """

    def __init__(
        self,
        call_id: int,
        slot: MediaSlot,
        to_method: Callable[[Kind, Any], None],
        forward_input: Callable[[Any], None],
        send: Callable[[Kind, Any], Awaitable[None]],
        on_close: Callable[[], None],
    ) -> None:
        self.call_id = call_id
        self.slot = slot
        self._to_method = to_method
        self._forward_input = forward_input
        self._send = send
        self._on_close = on_close
        self._inputs: collections.deque = collections.deque()
        self._waiting_frames = 0
        self._dropped = 0
        self._input_ready = asyncio.Event()
        self._credit = Credit(INPUT_WINDOW)  # the method's input credit
        self._granted = asyncio.Event()
        self._outputs: asyncio.Queue = asyncio.Queue()
        self._drain: asyncio.TimerHandle | None = None
        self._input_ended = False
        #: Frames of cut replies dropped before they were sent (see :func:`remotemedia.rpc.calls.is_interrupted`).
        self.frames_cut = 0
        self._ended = False  # the method's END (or ERROR) went out: its last frames and padding must play
        self.closed = False
        slot.take(call_id, self._track_frame, self._media_in)
        self._tasks = [
            asyncio.create_task(self._guard(self._pump_inputs()), name=f"media-in-{call_id}"),
            asyncio.create_task(self._guard(self._pump_outputs()), name=f"media-out-{call_id}"),
        ]

    async def _guard(self, pump: Awaitable[None]) -> None:
        # A frame no track can carry (odd size, 6 channels, a changed format) or a message
        # that cannot be passed on ends the call, and the client learns why (if it can still hear).
        try:
            await pump
        except Exception as exc:
            logger.info("call %d: media bridge stopped: %s: %s", self.call_id, type(exc).__name__, exc)
            self._to_method(Kind.CANCEL, None)
            with contextlib.suppress(RemoteMediaError):
                await self._send(Kind.ERROR, error_body(exc))
            self.close()

    # -- from the client -----------------------------------------------------------------

    def announce(self, announcement: Any) -> None:
        """The client's ``MEDIA`` announcement of a kind of frame; ``ValueError`` when malformed."""
        self.slot.begin_receiving(announcement)

    def client_input(self, event: Any) -> None:
        """One of the client's data-channel inputs (it holds credit for it)."""
        self._push(event)

    def client_end(self, ends: Any) -> None:
        """The client's ``INPUT_END``, with where its media stops."""
        if self._input_ended:
            return
        self._input_ended = True
        self.slot.end_receiving(ends if isinstance(ends, dict) else None)
        if self.slot.receiving:
            self._drain = asyncio.get_running_loop().call_later(MEDIA_DRAIN, self._give_up)

    def _give_up(self) -> None:
        logger.warning("call %d: input frames were lost on the way; ending the input without them", self.call_id)
        self.slot.give_up()

    def _media_in(self) -> None:
        # Every frame up to the client's end mark has arrived.
        if self._drain is not None:
            self._drain.cancel()
        self._push(_END)

    def _track_frame(self, frame: Any) -> None:
        if self._drain is not None and not self._drain.cancelled():
            # Frames are still coming: wait for the rest from now on.
            self._drain.cancel()
            self._drain = asyncio.get_running_loop().call_later(MEDIA_DRAIN, self._give_up)
        if self._waiting_frames >= MAX_WAITING_FRAMES:
            for i, item in enumerate(self._inputs):
                if kind_of(item) is not None:
                    del self._inputs[i]
                    self._waiting_frames -= 1
                    self._dropped += 1
                    if self._dropped in (1, 100, 10000):
                        logger.warning("call %d: the method is slower than real time; %d frames dropped", self.call_id, self._dropped)
                    break
        self._waiting_frames += 1
        self._push(frame)

    def _push(self, item: Any) -> None:
        self._inputs.append(item)
        self._input_ready.set()

    async def _pump_inputs(self) -> None:
        while True:
            while not self._inputs:
                self._input_ready.clear()
                await self._input_ready.wait()
            item = self._inputs.popleft()
            if item is _END:
                self._to_method(Kind.INPUT_END, calls.ends_body())
                return
            while not self._credit.take():
                self._granted.clear()
                await self._granted.wait()
            if kind_of(item) is not None:
                self._waiting_frames -= 1
                self._to_method(Kind.INPUT, item)
            else:
                self._forward_input(item)
                await self._send(Kind.CREDIT, calls.credit_body(1))  # the client may send another

    # -- from the method -----------------------------------------------------------------

    def output(self, kind: Kind, decode: Callable[[], Any], forward: Callable[[], Awaitable[None]]) -> None:
        """
        A message from the method's dispatcher for this call. ``decode()``
        gives its body (for a ``YIELD``, or anything not a frame), and
        ``forward()`` sends it to the client unchanged.
        """
        if kind is Kind.CREDIT:
            if self._credit.grant(decode()):
                self._granted.set()
            return
        body = decode() if kind is Kind.YIELD else None
        if calls.is_interrupted(body):
            self._cut()
        self._outputs.put_nowait((kind, body, forward))

    def _cut(self) -> None:
        # Barge-in: the reply's frames waiting here and on the tracks are void. Sent, they would
        # play for another ~0.5 s (the track's queue, and a stream window of frames here).
        waiting, kept = 0, []
        while not self._outputs.empty():
            entry = self._outputs.get_nowait()
            if entry[0] is Kind.YIELD and kind_of(entry[1]) is not None:
                waiting += 1
            else:
                kept.append(entry)
        for entry in kept:
            self._outputs.put_nowait(entry)
        queued = self.slot.cut()
        self.frames_cut += waiting + queued
        if waiting:
            self._to_method(Kind.CREDIT, calls.credit_body(waiting))  # as if they had been sent
        logger.debug("call %d: reply cut: %d frames dropped here, %d on the tracks", self.call_id, waiting, queued)

    async def _pump_outputs(self) -> None:
        while True:
            kind, body, forward = await self._outputs.get()
            if kind is Kind.YIELD:
                if kind_of(body) is not None:
                    await self.slot.send(body, lambda announcement: self._send(Kind.MEDIA, announcement))
                    self._to_method(Kind.CREDIT, calls.credit_body(1))  # it is on its way: the method may yield another
                else:
                    await forward()
                continue
            if kind is Kind.END:
                await self.slot.finish_sending(lambda ends: self._send(Kind.END, ends))
            else:  # ERROR (or a RESULT): the call is over
                await forward()
            self._ended = True
            self.close()
            return

    def close(self) -> None:
        """The call is over (ended, failed, cancelled) or the session is ending."""
        if self.closed:
            return
        self.closed = True
        if self._drain is not None:
            self._drain.cancel()
        if not self._ended:
            # Cancelled (or the session is ending): what the tracks still queue is not for anyone.
            self.frames_cut += self.slot.cut()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self.slot.free()
        self._on_close()

