"""StreamService: replay a task's events from a sequence number, then follow them live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from klaudio import validate
from klaudio.errors import NotFound
from klaudio.rpc.v1 import stream_pb2, stream_pb2_grpc
from klaudiod.db import Db
from klaudiod.follow import follow
from klaudiod.services import convert
from klaudiod.services.errors import mapped
from klaudiod.stream import Bus

Context = grpc.aio.ServicerContext[Any, Any]


class StreamService(stream_pb2_grpc.StreamServiceServicer):
    """Follow a task's events with no gap and no duplicate."""

    def __init__(self, db: Db, bus: Bus) -> None:
        self._db = db
        self._bus = bus

    @mapped
    async def FollowTask(
        self, request: stream_pb2.FollowTaskRequest, context: Context
    ) -> AsyncIterator[stream_pb2.FollowTaskResponse]:
        store = self._db.store
        last = validate.since(request.since_seq, "since_seq")
        task_id = await self._db.call(store.resolve, request.task_id)
        agent = request.agent
        if agent and await self._db.call(store.find_agent, task_id, agent) is None:
            names = [a.name for a in await self._db.call(store.agents, task_id)]
            known = ", ".join(names) if names else "none yet"
            raise NotFound(f"task {task_id[:8]} has no agent '{agent}' (agents: {known})")
        async for event in follow(self._db, self._bus, task_id, agent, last, request.follow):
            yield stream_pb2.FollowTaskResponse(event=convert.event(event))
