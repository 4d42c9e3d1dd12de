"""TaskService: task RPCs -> scheduler calls."""

from __future__ import annotations

from typing import Any

import grpc

from klaudio import validate
from klaudio.rpc.v1 import tasks_pb2, tasks_pb2_grpc
from klaudiod.db import Db
from klaudiod.scheduler import NewTask, Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]
DEFAULT_GRACE_SECONDS = 10.0


class TaskService(tasks_pb2_grpc.TaskServiceServicer):
    """The lifecycle of tasks."""

    def __init__(self, scheduler: Scheduler, db: Db) -> None:
        self._scheduler = scheduler
        self._db = db

    async def _resolve(self, task_id: str) -> str:
        return await self._db.call(self._db.store.resolve, task_id)

    async def _full(self, task_id: str) -> tasks_pb2.Task:
        return convert.detail(await self._db.call(self._db.store.detail, task_id))

    @mapped
    async def CreateTask(
        self, request: tasks_pb2.CreateTaskRequest, context: Context
    ) -> tasks_pb2.CreateTaskResponse:
        # The same checks as the CLI's: other tools may call the API directly.
        created = await self._scheduler.create(
            NewTask(
                prompt=validate.prompt(request.prompt),
                name=validate.name(request.name, "name"),
                source=validate.repo_source(request.repo, "repo"),
                start=request.start,
                auto_approve=request.auto_approve,
                team=validate.utf8(request.team, "team"),
                template=validate.utf8(request.repo_template, "repo_template"),
                push=request.push,
                pr=request.pr,
                pr_target=validate.branch(request.pr_target, "pr_target"),
                branch=validate.branch(request.branch, "branch"),
                inputs=tuple(validate.utf8(p, "inputs") for p in request.inputs),
            )
        )
        return tasks_pb2.CreateTaskResponse(task=convert.detail(created))

    @mapped
    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: Context
    ) -> tasks_pb2.ListTasksResponse:
        wanted = [convert.state_name(s) for s in request.states]
        records = await self._db.call(self._db.store.tasks, wanted)
        costs = await self._db.call(self._db.store.costs)
        return tasks_pb2.ListTasksResponse(
            tasks=[convert.task(r, costs.get(r.id, 0.0)) for r in records]
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
        return tasks_pb2.StartTaskResponse(
            task=convert.detail(await self._scheduler.start(task_id))
        )

    @mapped
    async def ApproveTask(
        self, request: tasks_pb2.ApproveTaskRequest, context: Context
    ) -> tasks_pb2.ApproveTaskResponse:
        task_id = await self._resolve(request.task_id)
        return tasks_pb2.ApproveTaskResponse(
            task=convert.detail(await self._scheduler.approve(task_id))
        )

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
        return tasks_pb2.WaitTaskResponse(
            task=convert.detail(await self._scheduler.wait(task_id, timeout))
        )

    @mapped
    async def StopTask(
        self, request: tasks_pb2.StopTaskRequest, context: Context
    ) -> tasks_pb2.StopTaskResponse:
        grace = _grace(request)
        task_id = await self._resolve(request.task_id)
        stopped, changed = await self._scheduler.stop(task_id, grace)
        return tasks_pb2.StopTaskResponse(task=convert.detail(stopped), stopped=changed)

    @mapped
    async def ResumeTask(
        self, request: tasks_pb2.ResumeTaskRequest, context: Context
    ) -> tasks_pb2.ResumeTaskResponse:
        task_id = await self._resolve(request.task_id)
        return tasks_pb2.ResumeTaskResponse(
            task=convert.detail(await self._scheduler.resume(task_id))
        )

    @mapped
    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: Context
    ) -> tasks_pb2.CancelTaskResponse:
        grace = _grace(request)
        task_id = await self._resolve(request.task_id)
        return tasks_pb2.CancelTaskResponse(
            task=convert.detail(await self._scheduler.cancel(task_id, grace))
        )

    @mapped
    async def RetryTask(
        self, request: tasks_pb2.RetryTaskRequest, context: Context
    ) -> tasks_pb2.RetryTaskResponse:
        task_id = await self._resolve(request.task_id)
        retried = await self._scheduler.retry(task_id, list(request.subtasks), request.fresh)
        return tasks_pb2.RetryTaskResponse(task=convert.detail(retried))

    @mapped
    async def PublishTask(
        self, request: tasks_pb2.PublishTaskRequest, context: Context
    ) -> tasks_pb2.PublishTaskResponse:
        task_id = await self._resolve(request.task_id)
        published = await self._scheduler.publish(task_id, request.push, request.pr)
        return tasks_pb2.PublishTaskResponse(task=convert.detail(published))

    @mapped
    async def RelaunchTask(
        self, request: tasks_pb2.RelaunchTaskRequest, context: Context
    ) -> tasks_pb2.RelaunchTaskResponse:
        prompt = validate.prompt(request.prompt) if request.HasField("prompt") else None
        task_id = await self._resolve(request.task_id)
        created = await self._scheduler.relaunch(
            task_id, prompt, not request.no_context, request.start, request.auto_approve
        )
        return tasks_pb2.RelaunchTaskResponse(task=convert.detail(created))


def _grace(request: tasks_pb2.StopTaskRequest | tasks_pb2.CancelTaskRequest) -> float:
    """The grace period a stop gives each agent (validated like every timeout)."""
    if not request.HasField("timeout_seconds"):
        return DEFAULT_GRACE_SECONDS
    grace = validate.timeout(request.timeout_seconds, "timeout_seconds")
    return DEFAULT_GRACE_SECONDS if grace is None else grace
