"""Delete racing start or approve over gRPC: exactly one wins, and nothing is left behind."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from klaudio import errors
from klaudio.client import Client
from klaudio.paths import resolve
from klaudio.rpc.v1 import tasks_pb2
from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import FakeModel, structured, text

pytestmark = pytest.mark.docker

RACES = 50
BARRIER_SECONDS = 30.0


@dataclass
class Race:
    """How one race between a delete and a start (or approve) ended."""

    task_id: str
    other: str  # "start" or "approve"
    results: dict[str, BaseException | None]

    def winner(self) -> str:
        won = [name for name, error in self.results.items() if error is None]
        assert len(won) == 1, f"task {self.task_id}: {self.other}/delete gave {self.results}"
        return won[0]


def state(task: tasks_pb2.Task) -> str:
    return tasks_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_").lower()


@pytest.fixture
def racing(instance: Instance) -> Iterator[tuple[Instance, Client, Client]]:
    """A daemon with room for many agents at once, and two clients (two connections)."""
    instance.env["KLAUDIO_AGENTS_MAX_CONCURRENT"] = "8"
    instance.start_daemon()
    paths = resolve(instance.env)
    first, second = Client(paths), Client(paths)
    try:
        yield instance, first, second
    finally:
        first.close()
        second.close()


def race(
    task_id: str, other: str, call: Callable[[str], object], delete: Callable[[str], None]
) -> Race:
    """Fire call(task_id) and delete(task_id) at the same moment, from two threads."""
    barrier = threading.Barrier(2)
    results: dict[str, BaseException | None] = {}

    def fire(name: str, action: Callable[[str], object]) -> None:
        barrier.wait(BARRIER_SECONDS)
        try:
            action(task_id)
        except BaseException as exc:  # recorded, judged by the test
            results[name] = exc
        else:
            results[name] = None

    threads = [
        threading.Thread(target=fire, args=(other, call)),
        threading.Thread(target=fire, args=("delete", delete)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(results) == {other, "delete"}, f"a call of the race on {task_id} never returned"
    return Race(task_id, other, results)


def labelled_tasks(instance: Instance) -> Counter[str]:
    """The klaudio.task label of every container of the instance, counted."""
    found = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=klaudio.instance={resolve(instance.env).instance_id}",
            "--format",
            '{{.Label "klaudio.task"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return Counter(found)


def judge(races: list[Race], refused_states: set[str]) -> tuple[list[str], list[str]]:
    """Check each race's loser got the documented error; return (deleted, kept) task ids."""
    deleted, kept = [], []
    for done in races:
        winner = done.winner()
        if winner == "delete":
            loser = done.results[done.other]
            assert isinstance(loser, errors.NotFound), f"{done.task_id}: {done.other}: {loser!r}"
            deleted.append(done.task_id)
        else:
            loser = done.results["delete"]
            assert isinstance(loser, errors.FailedPrecondition), f"{done.task_id}: {loser!r}"
            named = re.search(r"is (\w+); stop or cancel it first", str(loser))
            assert named and named.group(1) in refused_states, str(loser)
            kept.append(done.task_id)
    return deleted, kept


def test_delete_racing_start_and_approve_has_exactly_one_winner(
    racing: tuple[Instance, Client, Client], model: FakeModel
) -> None:
    instance, client, other = racing
    # Workers first: their prompts contain the task's prompt, and the first match wins.
    model.script("E2E-RACE-WORK", [[text("race worker done")]])
    model.script(
        "E2E-RACE-APPROVE", [[structured(plan(subtask("only", "E2E-RACE-WORK finish at once")))]]
    )
    question = {"id": "q", "text": "Which one?", "options": ["a", "b"]}
    model.script("E2E-RACE-START", [[structured({"kind": "questions", "questions": [question]})]])
    began = time.monotonic()

    planned = [client.create_task(f"E2E-RACE-APPROVE {n}", start=True).id for n in range(RACES)]
    created = [client.create_task(f"E2E-RACE-START {n}").id for n in range(RACES)]
    assert {state(client.get_task(t)) for t in created} == {"created"}

    def all_planned() -> bool:
        found = client.list_tasks(["planned"])
        return len({t.id for t in found} & set(planned)) == RACES

    wait_for(all_planned, 150, f"{RACES} tasks to be planned", interval=0.5)
    prepared = time.monotonic()

    races = [race(t, "start", client.start_task, other.delete_task) for t in created]
    races += [race(t, "approve", client.approve_task, other.delete_task) for t in planned]
    raced = time.monotonic()

    deleted_s, started = judge(races[:RACES], {"planning"})
    deleted_a, approved = judge(races[RACES:], {"approved", "running"})
    deleted = deleted_s + deleted_a
    # Both outcomes happen: the race is real (the calls do meet at the lock).
    print(f"start won {len(started)}, approve won {len(approved)}, delete won {len(deleted)}")

    # The winners' tasks go on and settle: asked questions, or completed their one subtask.
    for task_id in started:
        settled = client.wait_task(task_id, timeout=150)
        assert state(settled) == "awaiting_answers", (task_id, settled.reason)
    for task_id in approved:
        settled = client.wait_task(task_id, timeout=150)
        assert state(settled) == "completed", (task_id, settled.reason)
    settled_at = time.monotonic()

    # A deleted task is gone for good: no record, no files, no containers, no driver later.
    tasks_dir = instance.home / "data" / "tasks"
    for task_id in deleted:
        with pytest.raises(errors.NotFound):
            client.get_task(task_id)
        assert not (tasks_dir / task_id).exists(), f"deleted task {task_id} left its files"
    left = labelled_tasks(instance)
    assert not set(left) & set(deleted), f"containers of deleted tasks: {left}"
    assert sorted(p.name for p in tasks_dir.iterdir()) == sorted(started + approved)
    listed = {t.id for t in client.list_tasks()}
    assert listed == set(started + approved)

    log = instance.daemon_log()
    for bad in ("Traceback", "Task exception was never retrieved", "ERROR"):
        assert bad not in log, f"{bad!r} in the daemon log:\n{log[-4000:]}"
    health = instance.cli("daemon", "status")
    assert health.returncode == 0, health.stderr
    print(
        f"planning {prepared - began:.1f}s, races {raced - prepared:.1f}s, "
        f"settling {settled_at - raced:.1f}s"
    )
