"""Fan-out of persisted events to live followers, each with a bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from klaudiod import states
from klaudiod.store import KIND_TASK

# A follower that falls this many events behind is cut off (it resumes from its last seq).
FOLLOWER_QUEUE_LIMIT = 10_000


@dataclass(frozen=True)
class Event:
    """One persisted event, detached from the database row."""

    seq: int
    task_id: str
    agent: str
    kind: int
    time: float
    json: str

    @classmethod
    def of(cls, row: Any) -> Event:
        """Copy a StreamEvent row."""
        return cls(row.seq, row.task_id, row.agent, row.kind, row.time, row.json)

    def settles(self) -> bool:
        """Whether this is the lifecycle event that settles its task."""
        if self.kind != KIND_TASK:
            return False
        payload = json.loads(self.json)
        return payload.get("type") == "task" and payload.get("state") in states.SETTLED


class Overflow(Exception):
    """The follower fell too far behind."""


class Subscription:
    """One follower's queue of live events."""

    def __init__(self, task_id: str, limit: int) -> None:
        self.task_id = task_id
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(limit)
        self.overflowed = False

    def offer(self, event: Event) -> None:
        """Queue an event without ever blocking; overflow ends the subscription."""
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def get(self) -> Event:
        """The next live event.

        Raises:
            Overflow: when the follower fell too far behind.
        """
        event = await self._queue.get()
        if event is None:
            raise Overflow
        return event


class Bus:
    """Routes events to the subscriptions of their task. Publishing never blocks."""

    def __init__(self, limit: int = FOLLOWER_QUEUE_LIMIT) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._limit = limit

    def subscribe(self, task_id: str) -> Subscription:
        """Start receiving the task's events published from now on."""
        sub = Subscription(task_id, self._limit)
        self._subs[task_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription."""
        subs = self._subs.get(sub.task_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.task_id]

    def publish(self, rows: list[Any]) -> None:
        """Deliver persisted rows (StreamEvent) to their task's followers, in order."""
        for row in rows:
            event = Event.of(row)
            for sub in list(self._subs.get(event.task_id, ())):
                sub.offer(event)
