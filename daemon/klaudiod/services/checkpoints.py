"""CheckpointService: a task's checkpoints, and restoring one."""

from __future__ import annotations

from typing import Any

import grpc

from klaudio import validate
from klaudio.rpc.v1 import checkpoints_pb2, checkpoints_pb2_grpc
from klaudiod.db import Db
from klaudiod.scheduler import Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]


class CheckpointService(checkpoints_pb2_grpc.CheckpointServiceServicer):
    """Lists and restores checkpoints."""

    def __init__(self, scheduler: Scheduler, db: Db) -> None:
        self._scheduler = scheduler
        self._db = db

    async def _resolve(self, task_id: str) -> str:
        return await self._db.call(self._db.store.resolve, validate.utf8(task_id, "task_id"))

    @mapped
    async def ListCheckpoints(
        self, request: checkpoints_pb2.ListCheckpointsRequest, context: Context
    ) -> checkpoints_pb2.ListCheckpointsResponse:
        task_id = await self._resolve(request.task_id)
        records = await self._scheduler.checkpoints(task_id)
        return checkpoints_pb2.ListCheckpointsResponse(
            checkpoints=[convert.checkpoint(r) for r in records]
        )

    @mapped
    async def RestoreCheckpoint(
        self, request: checkpoints_pb2.RestoreCheckpointRequest, context: Context
    ) -> checkpoints_pb2.RestoreCheckpointResponse:
        task_id = await self._resolve(request.task_id)
        checkpoint = validate.utf8(request.checkpoint_id, "checkpoint_id")
        detail, record = await self._scheduler.restore(task_id, checkpoint)
        return checkpoints_pb2.RestoreCheckpointResponse(
            task=convert.detail(detail), checkpoint=convert.checkpoint(record)
        )
