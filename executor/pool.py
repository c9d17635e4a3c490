"""
Worker processes started ahead of their sessions (``process`` mode).

Booting a worker costs about 0.2 s of CPU (the interpreter and its imports),
far more than ICE and DTLS on loopback (about 30 ms), so the pool keeps
``spares`` workers booted and idle. One task refills it, one worker at a
time: concurrent refills used to replace each other's spare without closing
it, which left idle workers alive and tasks destroyed while pending. A
spare that dies while it waits is dropped when it is found, and the pool
never holds more than ``spares``, so idle workers cannot pile up after a
burst: the burst's extra sessions boot their own worker, which ends with
its session.
"""

from __future__ import annotations

import asyncio
import logging

from .isolation import Confinement
from .process import WorkerProcess

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)


class WorkerPool:
    """Up to ``spares`` booted, unused workers; :meth:`take` hands one out."""

    def __init__(self, confinement: Confinement | None, spares: int = 1) -> None:
        self.confinement = confinement
        self.spares = spares
        self._idle: list[WorkerProcess] = []
        self._wanted = asyncio.Event()
        self._refilling: asyncio.Task | None = None

    @property
    def idle(self) -> int:
        """Spare workers booted and waiting."""
        return sum(worker.alive for worker in self._idle)

    async def start(self) -> None:
        """Boot the first spare now (so the first session finds it), then keep the pool filled."""
        await self._fill()
        self._refilling = asyncio.create_task(self._keep_filled(), name="worker-pool")

    def take(self) -> WorkerProcess | None:
        """A booted spare, or ``None`` when none is ready (the caller boots its own)."""
        self._wanted.set()
        while self._idle:
            worker = self._idle.pop(0)
            if worker.alive:
                return worker
        return None

    async def close(self) -> None:
        """Stop refilling and end every spare."""
        if self._refilling is not None:
            self._refilling.cancel()
            await asyncio.gather(self._refilling, return_exceptions=True)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(worker.close(1.0) for worker in idle), return_exceptions=True)

    async def _keep_filled(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self._fill()

    async def _fill(self) -> None:
        self._idle = [worker for worker in self._idle if worker.alive]
        while len(self._idle) < self.spares:
            worker = WorkerProcess(confinement=self.confinement)
            try:
                await worker.start()
            except OSError as exc:
                logger.warning("could not start a spare worker process: %s", exc)
                return
            self._idle.append(worker)
