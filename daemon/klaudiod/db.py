"""The store's own thread: every store call runs there, one at a time (the single writer)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from klaudiod.store import Store

P = ParamSpec("P")
R = TypeVar("R")


class Db:
    """Runs Store methods on one dedicated thread, so SQLite sees a single writer."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="klaudio-db")
        self._store: Store | None = None

    async def open(self, path: Path) -> None:
        """Open (and migrate) the database on the store thread."""
        loop = asyncio.get_running_loop()
        self._store = await loop.run_in_executor(self._executor, Store, path)

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("database is not open")
        return self._store

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run fn (a bound Store method) on the store thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def close(self) -> None:
        """Close the database and stop the thread."""
        if self._store is not None:
            await self.call(self._store.close)
        self._executor.shutdown(wait=True)
