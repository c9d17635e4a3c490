"""
What the executor's two kinds of session share: one paired client, served
over a peer connection until either end stops.

- :class:`~executor.session.ExecutorSession` serves the RPC (Python objects
  sent by a :class:`~remotemedia.remote.RemoteProxyClient`);
- :class:`~executor.service_session.ServiceSession` serves a named service
  to a browser's camera and microphone.

Both negotiate, then wait until the session ends: the client leaves (a
``bye``), goes silent, breaks the protocol, or the executor ends it
(:meth:`PeerSession.end`, when draining). :meth:`PeerSession.run` holds what
is the same for both: a set-up that fails (a timeout, a malformed offer,
which makes aiortc raise all sorts) ends the session with a reason rather
than an exception; whatever happens, the subclass's :meth:`~PeerSession._teardown`
runs, then the signaling session is closed (the client hears ``bye``) and
the end is logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from remotemedia.exceptions import RemoteMediaError
from remotemedia.signaling import SignalingSession

if TYPE_CHECKING:
    from .session import SessionSettings

__all__ = ["PeerSession", "SessionOver"]

logger = logging.getLogger(__name__)


class SessionOver(Exception):
    """Raised inside :meth:`PeerSession._serve` to stop: the session ended (its reason is set already)."""


class PeerSession:
    """A session with one paired client; subclasses write :meth:`_serve` and :meth:`_teardown`."""

    #: Set-up failures that end the session with their message alone (others are logged with their traceback).
    EXPECTED_FAILURES: tuple[type[BaseException], ...] = (asyncio.TimeoutError, RemoteMediaError)

    def __init__(self, signaling: SignalingSession, settings: SessionSettings) -> None:
        self.signaling = signaling
        self.settings = settings
        self._done = asyncio.Event()
        self._why = ""
        self._ending = False

    async def run(self) -> None:
        """Negotiate, serve, and free everything of the session, whatever happens."""
        try:
            await self._serve()
        except SessionOver:
            pass
        except self.EXPECTED_FAILURES as exc:
            self._why = self._why or f"setup failed: {exc or type(exc).__name__}"
        except Exception as exc:  # a malformed offer makes aiortc raise all sorts
            logger.warning("session %s: setup failed", self.signaling.id, exc_info=True)
            self._why = self._why or f"setup failed: {type(exc).__name__}: {exc}"
        finally:
            self._ending = True  # requests from now on are not served
            self.signaling.on_candidate(None)
            await self._teardown()
            await self.signaling.close(self._bye_reason())
            logger.info("session %s ended: %s", self._name(), self._why or "done")

    async def _serve(self) -> None:
        """Negotiate and serve until the session ends; raise :exc:`SessionOver` to stop early."""
        raise NotImplementedError

    async def _teardown(self) -> None:
        """Free what the session holds (bounded in time: the executor's slot waits for it)."""

    def _bye_reason(self) -> str:
        """The reason the client is told with ``bye``."""
        return self._why[:200]

    def _name(self) -> str:
        return str(self.signaling.id)

    @property
    def ending(self) -> bool:
        """The session is over and being torn down (its slot is freed when :meth:`run` returns)."""
        return self._done.is_set() or self._ending

    def end(self, why: str) -> None:
        """End the session; an authenticated client is told ``why`` (``session_ended``)."""
        self._end(why)

    def _end(self, why: str) -> None:
        if not self._done.is_set():
            self._why = why
            self._done.set()
