"""FileService: a task's inputs and changes, copies out of its workspace, its diff."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from klaudio import validate
from klaudio.rpc.v1 import files_pb2, files_pb2_grpc
from klaudiod import taskfiles
from klaudiod.db import Db
from klaudiod.services.errors import mapped
from klaudiod.workspace import TaskFiles

Context = grpc.aio.ServicerContext[Any, Any]
_END = object()


class FileService(files_pb2_grpc.FileServiceServicer):
    """What a task was given and changed, and copies of its files."""

    def __init__(self, db: Db, tasks_dir: Any, scratch: Any) -> None:
        self._db = db
        self._tasks_dir = tasks_dir
        self._scratch = scratch

    async def _task(self, task_id: str) -> tuple[Any, TaskFiles]:
        store = self._db.store
        resolved = await self._db.call(store.resolve, validate.utf8(task_id, "task_id"))
        detail = await self._db.call(store.detail, resolved)
        return detail, TaskFiles(self._tasks_dir, resolved)

    @mapped
    async def ListFiles(
        self, request: files_pb2.ListFilesRequest, context: Context
    ) -> files_pb2.ListFilesResponse:
        detail, files = await self._task(request.task_id)
        found = await asyncio.to_thread(taskfiles.listing, detail, files)
        return files_pb2.ListFilesResponse(
            inputs=found.inputs,
            changed=[files_pb2.FileChange(status=c.status, path=c.path) for c in found.changed],
            declared=found.declared,
        )

    @mapped
    async def CopyFiles(
        self, request: files_pb2.CopyFilesRequest, context: Context
    ) -> AsyncIterator[files_pb2.CopyFilesResponse]:
        _, files = await self._task(request.task_id)
        path = validate.utf8(request.path, "path")
        self._scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        async for chunk in _drain(taskfiles.copy(files, path, self._scratch)):
            yield files_pb2.CopyFilesResponse(chunk=chunk)

    @mapped
    async def DiffFiles(
        self, request: files_pb2.DiffFilesRequest, context: Context
    ) -> AsyncIterator[files_pb2.DiffFilesResponse]:
        detail, files = await self._task(request.task_id)
        batch: list[str] = []
        async for line in _drain(taskfiles.diff(detail, files, request.stat)):
            batch.append(line)
            if len(batch) >= 256:
                yield files_pb2.DiffFilesResponse(text="".join(batch))
                batch.clear()
        if batch:
            yield files_pb2.DiffFilesResponse(text="".join(batch))


async def _drain(items: Iterator[Any]) -> AsyncIterator[Any]:
    """The items of a blocking iterator, each taken in a thread."""
    while (item := await asyncio.to_thread(next, items, _END)) is not _END:
        yield item
