"""Frozen migrations: a 0.1.0 database opens intact, and the models match the migrated schema.

tests/data/klaudio-0.1.0.db was made by the 0.1.0 daemon and CLI against the fake model
(scripts/make_db_fixture.py); the ids, names and counts below are what it holds.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from klaudio.errors import FailedPrecondition, KlaudioError
from klaudiod import migrations, models, states
from klaudiod.migrations import LATEST, NewerSchema
from klaudiod.models import db
from klaudiod.store import KIND_AGENT, KIND_TASK, Store

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "klaudio-0.1.0.db"

DONE = "cf7e216eacc0"  # completed: two subtasks, three agents
FAILED = "5a43ef05a6e4"  # failed: the first subtask's agent got an API error, the second skipped
ASKING = "6eb1aa97124b"  # awaiting_answers: two questions
PLANNED = "1098da64d463"  # planned, waiting for approval
CREATED = "5dd265a364a1"  # created, never started

ROWS_0_1_0 = {
    "schemaversion": 1,
    "task": 5,
    "plan": 3,
    "subtask": 6,
    "question": 2,
    "agent": 7,
    "taskevent": 14,
    "streamevent": 74,
}


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    """A copy of the 0.1.0 database (opening it writes: never open the fixture itself)."""
    copy = tmp_path / "data" / "klaudio.db"
    copy.parent.mkdir()
    shutil.copyfile(FIXTURE, copy)
    return copy


@pytest.fixture
def old(old_file: Path) -> Iterator[Store]:
    opened = Store(old_file)
    try:
        yield opened
    finally:
        opened.close()


def schema(path: Path) -> list[tuple[str, str, str, str]]:
    """The file's sqlite_master without root pages, whitespace collapsed, in a stable order."""
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return sorted((t, n, tbl, re.sub(r"\s+", " ", sql or "").strip()) for t, n, tbl, sql in rows)


def rows(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def events(store: Store, task_id: str) -> list[tuple[int, str, Any]]:
    """(kind, agent, payload) of every stream event; agent output lines as parsed JSON."""
    found = store.events(task_id, 0, limit=1000)
    assert [e.seq for e in found] == list(range(1, len(found) + 1))
    return [(e.kind, e.agent, json.loads(e.json)) for e in found]


def task_states(store: Store, task_id: str) -> list[str]:
    return [p["state"] for kind, _, p in events(store, task_id) if p.get("type") == "task"]


# The 0.1.0 file ---------------------------------------------------------------------------------


def test_the_fixture_is_a_0_1_0_database() -> None:
    # Read-only and immutable: reading must not leave -wal or -shm files beside the fixture.
    uri = f"file:{FIXTURE}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        assert conn.execute('SELECT "id", "version" FROM "schemaversion"').fetchall() == [(1, 1)]
    assert FIXTURE.stat().st_size < 256 * 1024
    assert b"sk-test-not-a-secret" not in FIXTURE.read_bytes()


def test_a_0_1_0_database_opens_at_the_latest_version_with_every_row(
    old: Store, old_file: Path
) -> None:
    assert Store.schema_version() == LATEST
    assert models.SchemaVersion.select().count() == 1
    old.close()
    assert {t: n for t, n in rows(old_file).items() if t in ROWS_0_1_0} == ROWS_0_1_0


def test_the_tasks_of_a_0_1_0_database(old: Store) -> None:
    listed = old.tasks()

    assert [(t.id, t.name, t.state) for t in listed] == [
        (CREATED, "created", states.CREATED),
        (PLANNED, "planned", states.PLANNED),
        (ASKING, "asking", states.AWAITING_ANSWERS),
        (FAILED, "failed", states.FAILED),
        (DONE, "done", states.COMPLETED),
    ]
    assert [t.auto_approve for t in listed] == [False, False, False, True, True]
    assert [t.id for t in old.tasks(only=[states.FAILED, states.COMPLETED])] == [FAILED, DONE]
    assert old.task(DONE).prompt == "FIX-DONE-TASK greet"
    assert old.resolve("cf7e") == DONE
    assert old.costs().keys() == {DONE, FAILED, ASKING, PLANNED}


def test_a_completed_0_1_0_task_keeps_its_plan_subtasks_agents_and_stream(old: Store) -> None:
    detail = old.detail(DONE)

    plan = detail.plan
    assert (plan.version, plan.analysis, plan.strategy, plan.notes) == (
        1,
        "scripted analysis",
        "dag",
        "scripted notes",
    )
    subtasks = detail.subtasks
    assert [(s.key, s.position, s.name, s.state) for s in subtasks] == [
        ("write", 0, "Subtask write", "completed"),
        ("copy", 1, "Subtask copy", "completed"),
    ]
    assert [s.depends_on for s in subtasks] == [(), ("write",)]
    assert [s.files_involved for s in subtasks] == [("greeting.txt",)] * 2
    assert [s.result for s in subtasks] == [
        "wrote greeting.txt with a hello",
        "copied: hello from write",
    ]
    agents = detail.agents
    assert [(a.name, a.role, a.state, a.exit_code) for a in agents] == [
        ("planner", "planner", "completed", 0),
        ("write", "developer", "completed", 0),
        ("copy", "developer", "completed", 0),
    ]
    assert [a.subtask_id for a in agents] == [None, subtasks[0].id, subtasks[1].id]
    assert json.loads(agents[0].result)["kind"] == "plan"
    # Schema 2: each 0.1.0 agent became an agent with one run, epoch 0, in its old run dir.
    assert [a.runs for a in agents] == [1, 1, 1]
    assert [a.home for a in agents] == [f"{a.home[: -len('/home')]}/home" for a in agents]
    runs = old.runs(DONE)
    assert [(r.agent, r.epoch, r.state, r.exit_code) for r in runs] == [
        ("planner", 0, "completed", 0),
        ("write", 0, "completed", 0),
        ("copy", 0, "completed", 0),
    ]
    assert all(r.container == f"klaudio-{DONE}-{r.agent}" for r in runs)
    assert [r.run_dir for r in runs] == [a.home.removesuffix("/home") for a in agents]
    assert all(r.output_offset > 0 for r in runs)
    assert old.live_runs() == []
    assert detail.questions == []
    assert detail.cost == pytest.approx(0.0007)
    stream = events(old, DONE)
    assert len(stream) == 32
    output = Counter(agent for kind, agent, _ in stream if kind == KIND_AGENT)
    assert output == {"planner": 4, "write": 6, "copy": 5}
    assert task_states(old, DONE) == [
        "created",
        "planning",
        "planned",
        "approved",
        "running",
        "completed",
    ]
    assert [e.seq for e in old.events(DONE, 29)] == [30, 31, 32]
    assert {e.agent for e in old.events(DONE, 0, agent="copy")} == {"copy", ""}


def test_a_failed_0_1_0_task_keeps_its_reason_and_failed_agent(old: Store) -> None:
    detail = old.detail(FAILED)

    assert detail.task.reason.startswith("subtask write failed: API error: API Error: 500")
    assert detail.task.reason.endswith("(exit 1); skipped: copy")
    assert [(s.key, s.state) for s in detail.subtasks] == [
        ("write", "failed"),
        ("copy", "skipped"),
    ]
    assert [(a.name, a.state, a.exit_code) for a in detail.agents] == [
        ("planner", "completed", 0),
        ("write", "failed", 1),
    ]
    assert "500 model exploded" in detail.agents[1].reason
    assert len(events(old, FAILED)) == 21
    assert task_states(old, FAILED)[-1] == "failed"


def test_a_0_1_0_task_awaiting_answers_keeps_its_questions(old: Store) -> None:
    detail = old.detail(ASKING)

    assert detail.task.reason == "the planner has questions"
    assert detail.plan is None and detail.subtasks == []
    assert [a.name for a in detail.agents] == ["planner"]
    questions = detail.questions
    assert [(q.key, q.text, q.context, q.answer) for q in questions] == [
        ("db", "Which database?", "the store needs one", ""),
        ("port", "Which port?", "", ""),
    ]
    assert [q.options for q in questions] == [("sqlite", "postgres"), ()]
    assert [q.suggestions for q in questions] == [(), ("8080",)]
    assert len(events(old, ASKING)) == 10
    assert task_states(old, ASKING) == ["created", "planning", "awaiting_answers"]


def test_planned_and_created_0_1_0_tasks(old: Store) -> None:
    planned = old.detail(PLANNED)
    assert [(s.key, s.state) for s in planned.subtasks] == [
        ("write", "pending"),
        ("copy", "pending"),
    ]
    assert [a.name for a in planned.agents] == ["planner"]
    assert task_states(old, PLANNED) == ["created", "planning", "planned"]
    assert len(events(old, PLANNED)) == 10

    created = old.detail(CREATED)
    assert created.plan is None and created.agents == [] and created.cost == 0.0
    assert events(old, CREATED) == [
        (KIND_TASK, "", {"type": "task", "state": "created", "reason": ""})
    ]


def test_a_0_1_0_database_takes_new_writes(old: Store) -> None:
    old.transition(PLANNED, states.APPROVED)
    _, event = old.transition(CREATED, states.PLANNING)

    assert event.seq == 2
    assert old.task(PLANNED).state == states.APPROVED
    old.delete_task(DONE)  # the foreign keys still cascade
    assert old.agents(DONE) == [] and old.events(DONE, 0) == []


# The schema ---------------------------------------------------------------------------------------


def test_a_new_database_has_the_schema_of_an_upgraded_0_1_0_one(
    tmp_path: Path, old_file: Path
) -> None:
    fresh = tmp_path / "fresh" / "klaudio.db"
    Store(fresh).close()
    Store(old_file).close()

    assert schema(fresh) == schema(old_file)


def test_version_1_is_the_schema_0_1_0_created(tmp_path: Path) -> None:
    database = pw.SqliteDatabase(str(tmp_path / "v1.db"))
    for statement in dict(migrations.MIGRATIONS)[1]:
        database.execute_sql(statement)
    database.close()
    uri = f"file:{FIXTURE}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        original = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    with closing(sqlite3.connect(tmp_path / "v1.db")) as conn:
        frozen = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()

    assert frozen == original  # the same text, in the same order


def test_the_versions_count_up_from_1() -> None:
    numbers = [number for number, _ in migrations.MIGRATIONS]
    assert numbers == list(range(1, len(numbers) + 1))
    assert numbers[-1] == LATEST


def test_every_model_matches_its_migrated_table(tmp_path: Path) -> None:
    path = tmp_path / "klaudio.db"
    Store(path).close()
    with closing(sqlite3.connect(path)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        live = [m for m in vars(models).values() if isinstance(m, type) and m is not models.Base]
        live = [m for m in live if issubclass(m, models.Base)]
        assert {m._meta.table_name for m in live} == tables
        for model in live:
            table = model._meta.table_name
            columns = {
                name: (bool(notnull), bool(pk))
                for _, name, _, notnull, _, pk in conn.execute(f'PRAGMA table_info("{table}")')
            }
            fields = {f.column_name: (not f.null, f.primary_key) for f in model._meta.sorted_fields}
            assert fields == columns, f"model {model.__name__} differs from table {table}"


# Opening ------------------------------------------------------------------------------------------


def test_a_new_database_reaches_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "new" / "klaudio.db")
    try:
        assert Store.schema_version() == LATEST
        assert migrations.version(db) == LATEST
    finally:
        store.close()


def test_opening_twice_changes_nothing(tmp_path: Path, old_file: Path) -> None:
    for path in (tmp_path / "new" / "klaudio.db", old_file):
        Store(path).close()
        before = (schema(path), rows(path))
        store = Store(path)
        try:
            assert Store.schema_version() == LATEST
            assert migrations.migrate(db) == LATEST
            assert models.SchemaVersion.select().count() == 1
        finally:
            store.close()
        assert (schema(path), rows(path)) == before


def test_the_foreign_keys_are_on_after_migrating(old: Store) -> None:
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_a_database_newer_than_this_code_is_refused(old_file: Path) -> None:
    with closing(sqlite3.connect(old_file)) as conn, conn:
        conn.execute('UPDATE "schemaversion" SET "version" = ?', (LATEST + 1,))
    before = rows(old_file)

    with pytest.raises(NewerSchema) as raised:
        Store(old_file)

    message = str(raised.value)
    assert isinstance(raised.value, FailedPrecondition)
    assert isinstance(raised.value, KlaudioError)
    assert "\n" not in message
    assert f"schema version {LATEST + 1}" in message and f"version {LATEST} " in message
    assert str(old_file) in message
    assert db.is_closed()  # the refused file is let go
    assert rows(old_file) == before
