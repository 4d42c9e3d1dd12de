"""Removes containers left behind while the Docker engine was away, once it answers again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from klaudio.errors import KlaudioError
from klaudiod.runtime import EngineUnavailable, Runtime

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


class Janitor:
    """Removes finished runs' containers, retrying in the background while Docker is down."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._pending: set[str] = set()
        self._sweep: Callable[[], Awaitable[None]] | None = None
        self._retrier: asyncio.Task[None] | None = None

    async def remove(self, name: str) -> None:
        """Remove a container now, or as soon as the engine answers again."""
        try:
            await asyncio.to_thread(self._runtime.remove, name)
        except EngineUnavailable:
            self._pending.add(name)
            self._start()
        except KlaudioError as exc:
            log.error("cannot remove container %s: %s", name, exc)

    def sweep_later(self, sweep: Callable[[], Awaitable[None]]) -> None:
        """Run sweep (which needs the engine) as soon as the engine answers."""
        self._sweep = sweep
        self._start()

    @property
    def pending(self) -> frozenset[str]:
        """Containers waiting for the engine to come back."""
        return frozenset(self._pending)

    def _start(self) -> None:
        if self._retrier is None or self._retrier.done():
            self._retrier = asyncio.create_task(self._retry(), name="klaudio-janitor")

    async def _retry(self) -> None:
        while self._pending or self._sweep is not None:
            await asyncio.sleep(RETRY_SECONDS)
            with contextlib.suppress(EngineUnavailable):
                await self._sweep_now()
                for name in sorted(self._pending):
                    await self._remove_pending(name)

    async def _sweep_now(self) -> None:
        if self._sweep is None:
            return
        try:
            await self._sweep()
        except EngineUnavailable:
            raise
        except KlaudioError as exc:
            log.error("looking for orphaned containers: %s", exc)
        self._sweep = None

    async def _remove_pending(self, name: str) -> None:
        try:
            await asyncio.to_thread(self._runtime.remove, name)
            log.info("removed container %s, left behind while Docker was away", name)
        except EngineUnavailable:
            raise
        except KlaudioError as exc:
            log.error("cannot remove container %s: %s", name, exc)
        self._pending.discard(name)

    async def close(self) -> None:
        """Stop retrying (the next daemon's start-up sweep finds what is left)."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
