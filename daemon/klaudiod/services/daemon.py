"""DaemonService: health, version and shutdown."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import grpc

from klaudio import __version__
from klaudio.config import Config
from klaudio.paths import Paths
from klaudio.rpc.v1 import daemon_pb2, daemon_pb2_grpc
from klaudiod.db import Db
from klaudiod.scheduler import Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]


class DaemonService(daemon_pb2_grpc.DaemonServiceServicer):
    """The daemon's own health and lifecycle."""

    def __init__(
        self,
        config: Config,
        paths: Paths,
        db: Db,
        scheduler: Scheduler,
        started_at: float,
        stop: Callable[[], None],
    ) -> None:
        self._config = config
        self._paths = paths
        self._db = db
        self._scheduler = scheduler
        self._started_at = started_at
        self._stop = stop

    @mapped
    async def GetHealth(
        self, request: daemon_pb2.GetHealthRequest, context: Context
    ) -> daemon_pb2.GetHealthResponse:
        live = await self._db.call(self._db.store.live_runs)
        return daemon_pb2.GetHealthResponse(
            version=__version__,
            pid=os.getpid(),
            started_at=convert.timestamp(self._started_at),
            socket=str(self._paths.socket),
            data_dir=str(self._paths.data_dir),
            tasks_active=self._scheduler.active(),
            agents_running=len(live),
            image=self._config.docker.image,
        )

    @mapped
    async def StopDaemon(
        self, request: daemon_pb2.StopDaemonRequest, context: Context
    ) -> daemon_pb2.StopDaemonResponse:
        # Answer first, then stop: the caller sees success rather than a dropped connection.
        asyncio.get_running_loop().call_later(0.05, self._stop)
        return daemon_pb2.StopDaemonResponse()
