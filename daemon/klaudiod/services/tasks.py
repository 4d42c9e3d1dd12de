"""TaskService: task RPCs -> scheduler calls."""

from __future__ import annotations

from typing import Any

import grpc

from klaudio import validate
from klaudio.rpc.v1 import tasks_pb2, tasks_pb2_grpc
from klaudiod.db import Db
from klaudiod.scheduler import Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    """The lifecycle of tasks."""

    def __init__(self, scheduler: Scheduler, db: Db) -> None:
        self._scheduler = scheduler
        self._db = db

    async def _resolve(self, task_id: str) -> str:
        return await self._db.call(self._db.store.resolve, task_id)

    async def _full(self, task_id: str) -> tasks_pb2.Task:
        detail = await self._db.call(self._db.store.detail, task_id)
        return convert.task(detail["task"], detail["cost"], detail)

    @mapped
    async def CreateTask(
        self, request: tasks_pb2.CreateTaskRequest, context: Context
    ) -> tasks_pb2.CreateTaskResponse:
        # The same checks as the CLI's: other tools may call the API directly.
        row = await self._scheduler.create(
            validate.prompt(request.prompt),
            validate.name(request.name, "name"),
            validate.repo_source(request.repo, "repo"),
            request.start,
            request.auto_approve,
        )
        return tasks_pb2.CreateTaskResponse(task=await self._full(row.id))

    @mapped
    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: Context
    ) -> tasks_pb2.ListTasksResponse:
        wanted = [convert.state_name(s) for s in request.states]
        rows = await self._db.call(self._db.store.tasks, wanted)
        costs = await self._db.call(self._db.store.costs)
        return tasks_pb2.ListTasksResponse(
            tasks=[convert.task(r, costs.get(r.id, 0.0)) for r in rows]
        )

    @mapped
    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: Context
    ) -> tasks_pb2.GetTaskResponse:
        return tasks_pb2.GetTaskResponse(
            task=await self._full(await self._resolve(request.task_id))
        )

    @mapped
    async def StartTask(
        self, request: tasks_pb2.StartTaskRequest, context: Context
    ) -> tasks_pb2.StartTaskResponse:
        task_id = await self._resolve(request.task_id)
        await self._scheduler.start(task_id)
        return tasks_pb2.StartTaskResponse(task=await self._full(task_id))

    @mapped
    async def ApproveTask(
        self, request: tasks_pb2.ApproveTaskRequest, context: Context
    ) -> tasks_pb2.ApproveTaskResponse:
        task_id = await self._resolve(request.task_id)
        await self._scheduler.approve(task_id)
        return tasks_pb2.ApproveTaskResponse(task=await self._full(task_id))

    @mapped
    async def DeleteTask(
        self, request: tasks_pb2.DeleteTaskRequest, context: Context
    ) -> tasks_pb2.DeleteTaskResponse:
        await self._scheduler.delete(await self._resolve(request.task_id))
        return tasks_pb2.DeleteTaskResponse()

    @mapped
    async def WaitTask(
        self, request: tasks_pb2.WaitTaskRequest, context: Context
    ) -> tasks_pb2.WaitTaskResponse:
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        validate.timeout(timeout, "timeout_seconds")
        task_id = await self._resolve(request.task_id)
        await self._scheduler.wait(task_id, timeout)
        return tasks_pb2.WaitTaskResponse(task=await self._full(task_id))
