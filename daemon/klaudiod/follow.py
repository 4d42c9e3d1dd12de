"""Following a task's events: replay from a sequence number, then live, no gap, no duplicate.

Front-end neutral: the gRPC stream (services/stream.py) uses it, and so can a web dashboard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from klaudio.errors import ResourceExhausted
from klaudiod import states
from klaudiod.db import Db
from klaudiod.stream import Bus, Event, Overflow

PAGE = 500


async def follow(
    db: Db, bus: Bus, task_id: str, agent: str, since: int, live: bool
) -> AsyncIterator[Event]:
    """The task's events after since (only agent's and the task's own, when agent is given).

    With live, it goes on with new events until the one that settles the task. The follower
    subscribes before it replays, so nothing published meanwhile is missed; live events it
    has already replayed are dropped; when one arrives after a gap (published out of order,
    or dropped from a full queue), the missing ones are read from the store first.

    Raises:
        ResourceExhausted: when the follower falls too far behind (it resumes from the last
            sequence number it saw).
    """
    last = since
    sub = bus.subscribe(task_id)
    try:
        async for event in replay(db, task_id, agent, last):
            last = event.seq
            yield event
        if not live:
            return
        task = await db.call(db.store.task, task_id)
        if task.state in states.SETTLED:
            async for event in replay(db, task_id, agent, last):
                yield event
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
                async for missed in replay(db, task_id, agent, last, below=event.seq):
                    yield missed
            last = event.seq
            if not agent or event.agent in (agent, ""):
                yield event
            if event.settles():
                return
    finally:
        bus.unsubscribe(sub)


async def replay(
    db: Db, task_id: str, agent: str, since: int, below: int | None = None
) -> AsyncIterator[Event]:
    """The stored events after since (and before below), page by page."""
    while True:
        rows = await db.call(db.store.events, task_id, since, agent, PAGE)
        for row in rows:
            if below is not None and row.seq >= below:
                return
            since = row.seq
            yield Event.of(row)
        if len(rows) < PAGE:
            return
