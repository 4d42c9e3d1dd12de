"""StreamService: replay a task's events from a sequence number, then follow them live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from klaudio import validate
from klaudio.errors import NotFound, ResourceExhausted
from klaudio.rpc.v1 import stream_pb2, stream_pb2_grpc
from klaudiod import states
from klaudiod.db import Db
from klaudiod.services import convert
from klaudiod.services.errors import mapped
from klaudiod.stream import Bus, Event, Overflow

Context = grpc.aio.ServicerContext[Any, Any]
PAGE = 500


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
        # Subscribe before replaying, so nothing published meanwhile is missed.
        sub = self._bus.subscribe(task_id)
        try:
            async for event in self._replay(task_id, agent, last):
                last = event.seq
                yield _response(event)
            if not request.follow:
                return
            task = await self._db.call(store.task, task_id)
            if task.state in states.SETTLED:
                async for event in self._replay(task_id, agent, last):
                    yield _response(event)
                return
            while True:
                try:
                    event = await sub.get()
                except Overflow:
                    raise ResourceExhausted(
                        f"follower fell behind; resume with --since {last}"
                    ) from None
                if event.seq <= last:
                    continue
                if event.seq > last + 1:
                    # A gap: fetch what is missing from the store first.
                    async for missed in self._replay(task_id, agent, last, below=event.seq):
                        last = missed.seq
                        yield _response(missed)
                last = event.seq
                if not agent or event.agent in (agent, ""):
                    yield _response(event)
                if event.settles():
                    return
        finally:
            self._bus.unsubscribe(sub)

    async def _replay(
        self, task_id: str, agent: str, since: int, below: int | None = None
    ) -> AsyncIterator[Event]:
        while True:
            rows = await self._db.call(self._db.store.events, task_id, since, agent, PAGE)
            for row in rows:
                if below is not None and row.seq >= below:
                    return
                since = row.seq
                yield Event.of(row)
            if len(rows) < PAGE:
                return


def _response(event: Event) -> stream_pb2.FollowTaskResponse:
    return stream_pb2.FollowTaskResponse(event=convert.event(event))
