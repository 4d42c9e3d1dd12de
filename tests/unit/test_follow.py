"""The follow algorithm in process, on a real store and bus: replay then live, gaps, overflow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from klaudio.errors import ResourceExhausted
from klaudiod import states
from klaudiod.db import Db
from klaudiod.follow import follow
from klaudiod.stream import Bus, Event

TASK = "f011011f0110"


def run(test: Callable[[Db], Awaitable[None]], tmp_path: Path) -> None:
    async def main() -> None:
        db = Db()
        await db.open(tmp_path / "klaudio.db")
        try:
            await db.call(db.store.create_task, TASK, "n", "p", "", "/w", False)
            await test(db)
        finally:
            await db.close()

    asyncio.run(main())


async def emit(db: Db, n: int, agent: str = "") -> list[Any]:
    """Persist n notice events (not published)."""
    return [await db.call(db.store.emit, TASK, {"type": "notice", "n": i}, agent) for i in range(n)]


async def collect(events: AsyncIterator[Event], limit: int = 1000) -> list[int]:
    seen = []
    async for event in events:
        seen.append(event.seq)
        if len(seen) >= limit:
            break
    return seen


async def settle(db: Db, bus: Bus) -> None:
    for target in (states.PLANNING, states.FAILED):
        _, event = await db.call(db.store.transition, TASK, target, "")
        bus.publish([event])


def test_replay_then_live_with_no_gap_and_no_duplicate(tmp_path: Path) -> None:
    async def test(db: Db) -> None:
        bus = Bus()
        await emit(db, 3)  # seqs 2..4 (1 is "created")
        follower = asyncio.create_task(collect(follow(db, bus, TASK, "", 0, live=True)))
        rows = await emit(db, 2)
        bus.publish(rows)
        bus.publish(rows)  # published twice: the follower must not repeat them
        await settle(db, bus)
        seen = await asyncio.wait_for(follower, 10)
        assert seen == list(range(1, 9))

    run(test, tmp_path)


def test_an_event_published_out_of_order_is_filled_from_the_store(tmp_path: Path) -> None:
    async def test(db: Db) -> None:
        bus = Bus()
        stream = follow(db, bus, TASK, "", 0, live=True)
        first = await anext(stream)  # replay done up to seq 1; subscribed
        assert first.seq == 1
        rows = await emit(db, 3)  # 2, 3, 4
        bus.publish([rows[2]])  # 4 arrives first: 2 and 3 are read from the store
        bus.publish([rows[0], rows[1]])  # late arrivals: dropped
        await settle(db, bus)
        rest = await asyncio.wait_for(collect(stream), 10)
        assert rest == [2, 3, 4, 5, 6]

    run(test, tmp_path)


def test_a_follower_that_falls_behind_is_cut_off_and_resumes_where_it_was(
    tmp_path: Path,
) -> None:
    async def test(db: Db) -> None:
        bus = Bus(limit=3)
        stream = follow(db, bus, TASK, "", 0, live=True)
        assert (await anext(stream)).seq == 1
        rows = await emit(db, 10)
        bus.publish(rows)  # 10 events into a queue of 3: the subscription overflows
        with pytest.raises(ResourceExhausted, match="resume with --since 1"):
            await anext(stream)
        await settle(db, bus)
        again = await asyncio.wait_for(collect(follow(db, bus, TASK, "", 1, live=True)), 10)
        assert again == list(range(2, 14))

    run(test, tmp_path)


def test_an_agent_follower_sees_its_agent_and_the_task_only(tmp_path: Path) -> None:
    async def test(db: Db) -> None:
        bus = Bus()
        await emit(db, 2, agent="one")  # 2, 3
        await emit(db, 2, agent="two")  # 4, 5
        await emit(db, 1)  # 6
        seen = await collect(follow(db, bus, TASK, "two", 0, live=False))
        assert seen == [1, 4, 5, 6]

    run(test, tmp_path)


def test_a_settled_task_is_replayed_to_its_end_and_the_follow_ends(tmp_path: Path) -> None:
    async def test(db: Db) -> None:
        bus = Bus()
        await settle(db, bus)
        seen = await asyncio.wait_for(collect(follow(db, bus, TASK, "", 0, live=True)), 10)
        assert seen == [1, 2, 3]

    run(test, tmp_path)
