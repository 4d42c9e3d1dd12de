"""The SQLite store on a real database file (klaudiod.store.Store is the real component)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from klaudio.errors import FailedPrecondition, InvalidArgument, NotFound
from klaudiod import models, states
from klaudiod.migrations import LATEST
from klaudiod.models import db
from klaudiod.plan import Plan, QuestionSpec, SubtaskSpec
from klaudiod.store import KIND_AGENT, KIND_TASK, Store


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "klaudio.db"


@pytest.fixture
def store(db_file: Path) -> Iterator[Store]:
    # The store binds the module-global peewee database: one open Store per test.
    opened = Store(db_file)
    try:
        yield opened
    finally:
        opened.close()


def new_task(store: Store, task_id: str = "aaaa11112222") -> str:
    store.create_task(task_id, f"name {task_id}", "do things", "", f"/w/{task_id}", False)
    return task_id


def new_agent(store: Store, task_id: str, name: str) -> int:
    """An agent with its first run started; returns the run's id."""
    agent = store.create_agent(task_id, name, "developer", None, f"s-{name}", f"/h/{name}")
    run, _ = store.start_run(agent.id, 0, f"klaudio-{task_id}-0-{name}", f"/r/{name}", "go", False)
    return run.id


def run_of(store: Store, run_id: int) -> Any:
    return next(r for r in models.AgentRun.select().where(models.AgentRun.id == run_id))


def seqs(store: Store, task_id: str, agent: str = "") -> list[int]:
    return [e.seq for e in store.events(task_id, 0, agent)]


def payloads(store: Store, task_id: str, agent: str = "") -> list[Any]:
    return [json.loads(e.json) for e in store.events(task_id, 0, agent)]


def pragma(name: str) -> Any:
    return db.execute_sql(f"PRAGMA {name}").fetchone()[0]


def tables() -> set[str]:
    return set(db.get_tables())


# Opening ------------------------------------------------------------------------------------------


def test_the_pragmas_are_in_effect(store: Store) -> None:
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 2  # FULL
    assert pragma("foreign_keys") == 1


def test_the_database_file_and_its_folder_are_created(store: Store, db_file: Path) -> None:
    assert db_file.is_file()


def test_the_schema_version_is_the_number_of_migrations(store: Store) -> None:
    assert Store.schema_version() == LATEST
    assert models.SchemaVersion.select().count() == 1
    assert {"task", "plan", "subtask", "question", "agent", "taskevent", "streamevent"} <= tables()


def test_reopening_keeps_the_data_and_does_not_rerun_migrations(db_file: Path) -> None:
    first = Store(db_file)
    try:
        new_task(first)
        # A migration that ran again would recreate this table.
        db.execute_sql("DROP TABLE taskevent")
    finally:
        first.close()

    second = Store(db_file)
    try:
        assert "taskevent" not in tables()
        assert second.task("aaaa11112222").state == states.CREATED
        assert Store.schema_version() == LATEST
        assert models.SchemaVersion.select().count() == 1
    finally:
        second.close()


def test_an_older_schema_version_is_migrated_on_open(db_file: Path) -> None:
    first = Store(db_file)
    try:
        # Undo versions 2 to 5 by hand: the next open must run them again.
        db.execute_sql("DROP TABLE repotemplate")
        db.execute_sql("DROP TABLE checkpoint")
        db.execute_sql("DROP TABLE agentrun")
        models.SchemaVersion.update(version=1).execute()
        for table, column in [
            ("task", "control"),
            ("task", "resume_at"),
            ("task", "limit_pauses"),
            ("task", "context"),
            ("task", "base_commit"),
            ("task", "team"),
            ("task", "settings"),
            ("task", "approved_version"),
            ("task", "planner_message"),
            ("task", "delivery"),
            ("task", "branch"),
            ("task", "base_branch"),
            ("task", "inputs"),
            ("task", "delivery_state"),
            ("task", "delivery_reason"),
            ("task", "delivered_commit"),
            ("task", "pr_url"),
            ("plan", "source"),
            ("question", "round"),
            ("question", "answered_at"),
            ("subtask", "reason"),
            ("agent", "home"),
        ]:
            db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    finally:
        first.close()

    second = Store(db_file)
    try:
        assert {"agentrun", "checkpoint"} <= tables()
        assert Store.schema_version() == LATEST
        assert models.SchemaVersion.select().count() == 1
    finally:
        second.close()


# Tasks and transitions ----------------------------------------------------------------------------


def test_a_new_task_is_created_with_its_first_event(store: Store) -> None:
    task, event = store.create_task("abc123def456", "n", "the prompt", "/repo", "/ws", True)

    assert task.state == states.CREATED
    assert event.seq == 1 and event.kind == KIND_TASK and event.agent == ""
    assert json.loads(event.json) == {"type": "task", "state": "created", "reason": ""}
    stored = store.task("abc123def456")
    assert (stored.name, stored.prompt, stored.repo, stored.workspace) == (
        "n",
        "the prompt",
        "/repo",
        "/ws",
    )
    assert stored.auto_approve is True
    assert stored.created_at == stored.updated_at > 0


def test_a_task_moves_along_a_legal_path(store: Store) -> None:
    task_id = new_task(store)
    path = [
        states.PLANNING,
        states.PLANNED,
        states.APPROVED,
        states.RUNNING,
        states.COMPLETED,
    ]

    for target in path:
        task, event = store.transition(task_id, target, f"to {target}")
        assert task.state == target
        assert json.loads(event.json) == {"type": "task", "state": target, "reason": f"to {target}"}

    stored = store.task(task_id)
    assert stored.state == states.COMPLETED
    assert stored.reason == "to completed"
    assert stored.updated_at >= stored.created_at


def test_an_illegal_transition_is_refused_and_changes_nothing(store: Store) -> None:
    task_id = new_task(store)
    before = store.task(task_id)

    with pytest.raises(FailedPrecondition) as caught:
        store.transition(task_id, states.RUNNING)

    assert "created" in str(caught.value)
    assert "running" in str(caught.value)
    after = store.task(task_id)
    assert after.state == states.CREATED
    assert after.updated_at == before.updated_at
    assert models.TaskEvent.select().where(models.TaskEvent.task == task_id).count() == 0
    assert seqs(store, task_id) == [1]


def test_a_transition_from_a_terminal_state_names_it(store: Store) -> None:
    task_id = new_task(store)
    store.transition(task_id, states.CANCELLED)

    with pytest.raises(FailedPrecondition, match="cancelled"):
        store.transition(task_id, states.PLANNING)

    assert store.task(task_id).state == states.CANCELLED


def test_only_from_narrows_the_legal_sources(store: Store) -> None:
    task_id = new_task(store)
    store.transition(task_id, states.PLANNING)
    store.transition(task_id, states.FAILED, "planner failed")

    # failed -> planning is legal in general, but not when only created may start planning.
    with pytest.raises(FailedPrecondition, match="failed"):
        store.transition(task_id, states.PLANNING, only_from=[states.CREATED])

    assert store.task(task_id).state == states.FAILED
    store.transition(task_id, states.PLANNING, only_from=[states.FAILED])
    assert store.task(task_id).state == states.PLANNING


def test_transitioning_an_unknown_task_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.transition("nope", states.PLANNING)


def test_every_transition_records_a_task_event_and_a_stream_event(store: Store) -> None:
    task_id = new_task(store)
    store.transition(task_id, states.PLANNING)
    store.transition(task_id, states.AWAITING_ANSWERS, "questions")
    store.transition(task_id, states.PLANNING, "answered")

    rows = list(
        models.TaskEvent.select()
        .where(models.TaskEvent.task == task_id)
        .order_by(models.TaskEvent.id)
    )
    assert [(r.from_state, r.to_state, r.reason) for r in rows] == [
        ("created", "planning", ""),
        ("planning", "awaiting_answers", "questions"),
        ("awaiting_answers", "planning", "answered"),
    ]
    assert seqs(store, task_id) == [1, 2, 3, 4]
    assert [p["state"] for p in payloads(store, task_id)] == [
        "created",
        "planning",
        "awaiting_answers",
        "planning",
    ]


def test_sequence_numbers_are_per_task(store: Store) -> None:
    first = new_task(store, "aaaa00000001")
    second = new_task(store, "bbbb00000002")
    store.transition(first, states.PLANNING)
    store.transition(first, states.FAILED)
    store.transition(second, states.PLANNING)
    store.transition(first, states.PLANNING)

    assert seqs(store, first) == [1, 2, 3, 4]
    assert seqs(store, second) == [1, 2]


# resolve ------------------------------------------------------------------------------------------


@pytest.fixture
def three(store: Store) -> Store:
    for task_id in ("abc111000000", "abc222000000", "def333000000"):
        new_task(store, task_id)
    return store


def test_resolve_finds_the_task_by_a_unique_prefix(three: Store) -> None:
    assert three.resolve("abc1") == "abc111000000"
    assert three.resolve("d") == "def333000000"
    assert three.resolve("abc222000000") == "abc222000000"
    assert three.resolve("  abc2  ") == "abc222000000"


def test_resolve_without_a_match_is_not_found(three: Store) -> None:
    with pytest.raises(NotFound, match="zzz"):
        three.resolve("zzz")


def test_resolve_of_an_ambiguous_prefix_is_invalid(three: Store) -> None:
    with pytest.raises(InvalidArgument, match="ambiguous"):
        three.resolve("abc")


def test_resolve_of_an_empty_prefix_is_invalid(three: Store) -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        three.resolve("   ")


@pytest.mark.parametrize("prefix", ["_", "%", "a_c", "ab%"])
def test_like_wildcards_in_a_prefix_match_literally(three: Store, prefix: str) -> None:
    with pytest.raises(NotFound):
        three.resolve(prefix)


def test_tasks_lists_newest_first_and_filters_by_state(three: Store) -> None:
    three.transition("def333000000", states.PLANNING)

    assert [t.id for t in three.tasks()] == ["def333000000", "abc222000000", "abc111000000"]
    assert [t.id for t in three.tasks([states.PLANNING])] == ["def333000000"]
    assert [t.id for t in three.tasks([states.CREATED, states.COMPLETED])] == [
        "abc222000000",
        "abc111000000",
    ]


# Agent output -------------------------------------------------------------------------------------


def test_append_output_numbers_lines_and_moves_the_offset(store: Store) -> None:
    task_id = new_task(store)
    agent_id = new_agent(store, task_id, "planner")

    events = store.append_output(agent_id, ['{"type":"system"}', '{"type":"result"}'], 123)

    # seq 2 is the run's "starting" event.
    assert [e.seq for e in events] == [3, 4]
    assert all(e.kind == KIND_AGENT and e.agent == "planner" for e in events)
    assert [e.json for e in events] == ['{"type":"system"}', '{"type":"result"}']
    assert run_of(store, agent_id).output_offset == 123
    more = store.append_output(agent_id, ['{"type":"assistant"}'], 200)
    assert [e.seq for e in more] == [5]
    assert run_of(store, agent_id).output_offset == 200
    assert seqs(store, task_id) == [1, 2, 3, 4, 5]


def test_append_output_with_no_lines_still_moves_the_offset(store: Store) -> None:
    task_id = new_task(store)
    agent_id = new_agent(store, task_id, "planner")

    assert store.append_output(agent_id, [], 77) == []
    assert run_of(store, agent_id).output_offset == 77
    assert seqs(store, task_id) == [1, 2]


def test_append_output_is_all_or_nothing(store: Store) -> None:
    task_id = new_task(store)
    agent_id = new_agent(store, task_id, "planner")
    store.append_output(agent_id, ['{"n":1}'], 10)

    # A lone surrogate cannot be stored: the line before it and the offset must roll back.
    with pytest.raises(UnicodeEncodeError):
        store.append_output(agent_id, ['{"n":2}', '{"bad":"\ud800"}'], 20)

    assert run_of(store, agent_id).output_offset == 10
    assert seqs(store, task_id) == [1, 2, 3]
    assert store.append_output(agent_id, ['{"n":3}'], 30)[0].seq == 4


# events(since, agent) -----------------------------------------------------------------------------


@pytest.fixture
def busy(store: Store) -> tuple[Store, str]:
    """A task whose stream mixes task events, two agents' output and their state events."""
    task_id = new_task(store)  # 1 task created
    store.transition(task_id, states.PLANNING)  # 2 task planning
    one = new_agent(store, task_id, "one")  # 3 one starting
    two = new_agent(store, task_id, "two")  # 4 two starting
    store.append_output(one, ['{"o":1}', '{"o":2}'], 10)  # 5, 6 one
    store.append_output(two, ['{"t":1}'], 5)  # 7 two
    store.set_run_running(one)  # 8 one
    store.end_run(one, states.RUN_COMPLETED, exit_code=0, cost_usd=0.5)  # 9 one
    store.emit(task_id, {"type": "note"})  # 10 task
    store.append_output(two, ['{"t":2}'], 9)  # 11 two
    return store, task_id


def test_events_returns_everything_in_order(busy: tuple[Store, str]) -> None:
    store, task_id = busy

    assert seqs(store, task_id) == list(range(1, 12))


def test_events_since_returns_only_later_events(busy: tuple[Store, str]) -> None:
    store, task_id = busy

    assert [e.seq for e in store.events(task_id, 8)] == [9, 10, 11]
    assert store.events(task_id, 11) == []
    assert [e.seq for e in store.events(task_id, 2, limit=3)] == [3, 4, 5]


def test_events_of_an_agent_are_its_own_plus_the_tasks_own(busy: tuple[Store, str]) -> None:
    store, task_id = busy

    mine = store.events(task_id, 0, agent="one")

    assert [e.seq for e in mine] == [1, 2, 3, 5, 6, 8, 9, 10]
    assert {e.agent for e in mine} == {"one", ""}
    assert [e.seq for e in store.events(task_id, 0, agent="two")] == [1, 2, 4, 7, 10, 11]
    assert [e.seq for e in store.events(task_id, 4, agent="two")] == [7, 10, 11]


def test_events_of_an_unknown_agent_are_only_the_tasks_own(busy: tuple[Store, str]) -> None:
    store, task_id = busy

    assert [e.seq for e in store.events(task_id, 0, agent="nobody")] == [1, 2, 10]


def test_an_agent_state_event_carries_its_outcome(busy: tuple[Store, str]) -> None:
    store, task_id = busy

    event = store.events(task_id, 8, limit=1)[0]

    assert event.agent == "one" and event.kind == KIND_TASK
    assert json.loads(event.json) == {
        "type": "agent",
        "agent": "one",
        "state": "completed",
        "epoch": 0,
        "exit_code": 0,
        "cost_usd": 0.5,
    }
    agent = store.find_agent(task_id, "one")
    assert agent is not None and agent.ended_at is not None and agent.state == "completed"
    assert store.cost(task_id) == 0.5
    assert store.costs() == {task_id: 0.5}


# delete -------------------------------------------------------------------------------------------


def test_delete_task_removes_everything_recorded_about_it(store: Store) -> None:
    task_id = new_task(store, "dead00000000")
    keep = new_task(store, "keep00000000")
    store.transition(task_id, states.PLANNING)
    store.save_questions(task_id, [QuestionSpec(id="q", text="why?")])
    store.transition(task_id, states.AWAITING_ANSWERS)
    store.transition(task_id, states.PLANNING)
    spec = Plan("a", "dag", (SubtaskSpec(id="s1", name="S1", prompt="do"),))
    store.save_plan(task_id, spec)
    subtask_id = int(store.subtasks(task_id)[0].id)
    agent = store.create_agent(task_id, "s1", "developer", subtask_id, "s", "/h")
    run, _ = store.start_run(agent.id, 0, "c", "/r", "go", False)
    store.append_output(run.id, ['{"x":1}'], 5)
    new_agent(store, keep, "other")

    store.delete_task(task_id)

    with pytest.raises(NotFound):
        store.task(task_id)
    for model in (
        models.Plan,
        models.Subtask,
        models.Question,
        models.Agent,
        models.TaskEvent,
        models.StreamEvent,
    ):
        assert model.select().where(model.task == task_id).count() == 0, model.__name__
    assert store.events(task_id, 0) == []
    assert store.agents(task_id) == []
    assert models.AgentRun.select().where(models.AgentRun.id == run.id).count() == 0
    # The other task is untouched.
    assert store.task(keep).state == states.CREATED
    assert seqs(store, keep) == [1, 2]  # created, and its agent starting
    assert [a.name for a in store.agents(keep)] == ["other"]


def test_a_task_id_can_be_reused_after_delete_with_fresh_sequence_numbers(store: Store) -> None:
    task_id = new_task(store)
    store.transition(task_id, states.PLANNING)
    store.delete_task(task_id)

    new_task(store, task_id)

    assert seqs(store, task_id) == [1]


# Plans and questions ------------------------------------------------------------------------------


def test_save_plan_stores_a_new_version_with_subtasks_in_order(store: Store) -> None:
    task_id = new_task(store)
    first = Plan("v1", "dag", (SubtaskSpec(id="a", name="A", prompt="do a"),))
    second = Plan(
        "v2",
        "dag",
        (
            SubtaskSpec(id="b", name="B", prompt="do b", files_involved=("b.py",)),
            SubtaskSpec(id="c", name="C", prompt="do c", depends_on=("b",), complexity="high"),
        ),
        notes="n",
    )

    store.save_plan(task_id, first)
    plan, event = store.save_plan(task_id, second)

    assert plan.version == 2
    latest = store.plan(task_id)
    assert latest is not None and latest.analysis == "v2"
    subs = store.subtasks(task_id)
    assert [(s.key, s.position, s.state) for s in subs] == [
        ("b", 0, "pending"),
        ("c", 1, "pending"),
    ]
    assert subs[1].depends_on == ("b",)
    assert subs[0].files_involved == ("b.py",)
    assert json.loads(event.json)["subtasks"] == [
        {"id": "b", "name": "B", "depends_on": []},
        {"id": "c", "name": "C", "depends_on": ["b"]},
    ]


def test_save_questions_replaces_unanswered_ones(store: Store) -> None:
    task_id = new_task(store)
    store.save_questions(task_id, [QuestionSpec(id="old", text="old?")])

    store.save_questions(task_id, [QuestionSpec(id="db", text="which?", options=("a", "b"))])

    questions = store.questions(task_id)
    assert [q.key for q in questions] == ["db"]
    assert questions[0].options == ("a", "b")
