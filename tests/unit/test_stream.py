"""The event bus: in-order fan-out per task, never blocking, cutting off a follower that lags."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import pytest

from klaudiod.stream import Bus, Event, Overflow


@dataclass
class Row:
    seq: int
    task_id: str
    agent: str = ""
    kind: int = 1
    time: float = 0.0
    json: str = "{}"


def test_events_reach_their_own_tasks_followers_in_order() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        bus = Bus()
        first, second = bus.subscribe("t1"), bus.subscribe("t2")
        bus.publish([Row(1, "t1"), Row(1, "t2"), Row(2, "t1")])
        got_first = [(await first.get()).seq for _ in range(2)]
        got_second = [(await second.get()).seq]
        return got_first, got_second

    assert asyncio.run(scenario()) == ([1, 2], [1])


def test_a_follower_that_lags_is_cut_off_without_slowing_the_publisher() -> None:
    async def scenario() -> None:
        bus = Bus(limit=3)
        slow, quick = bus.subscribe("t"), bus.subscribe("t")
        for seq in range(1, 4):
            bus.publish([Row(seq, "t")])
            assert (await quick.get()).seq == seq
        bus.publish([Row(4, "t")])  # slow has 3 queued: this one overflows it, at once
        assert (await quick.get()).seq == 4
        with pytest.raises(Overflow):
            await slow.get()
        assert slow.overflowed

    asyncio.run(scenario())


def test_unsubscribed_followers_get_nothing_more() -> None:
    async def scenario() -> bool:
        bus = Bus()
        sub = bus.subscribe("t")
        bus.unsubscribe(sub)
        bus.publish([Row(1, "t")])
        try:
            await asyncio.wait_for(sub.get(), timeout=0.05)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(scenario())


@pytest.mark.parametrize(
    ("kind", "payload", "settles"),
    [
        (2, {"type": "task", "state": "completed"}, True),
        (2, {"type": "task", "state": "failed"}, True),
        (2, {"type": "task", "state": "awaiting_answers"}, True),
        (2, {"type": "task", "state": "planned"}, False),
        (2, {"type": "task", "state": "running"}, False),
        (2, {"type": "subtask", "state": "completed"}, False),
        (1, {"type": "task", "state": "completed"}, False),
    ],
)
def test_which_events_settle_a_task(kind: int, payload: dict[str, str], settles: bool) -> None:
    event = Event(seq=1, task_id="t", agent="", kind=kind, time=0.0, json=json.dumps(payload))
    assert event.settles() is settles
