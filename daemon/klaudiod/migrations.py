"""The SQLite schema's numbered migrations, each frozen as the SQL text it runs."""

# How to change the schema (append, never edit):
#
# 1. Append `(N, (statement, ...))` to MIGRATIONS, N one more than the last version. Never edit,
#    reorder or remove a migration once it is committed: databases out there have already run
#    it, and only the version number in their schemaversion table says so.
# 2. Write each statement by hand as fixed SQL text. Never derive it from models.py, not even
#    through peewee's schema helpers: the models describe the newest schema, and a migration
#    must create the schema of its own version forever.
# 3. Change models.py to match. tests/unit/test_migrations.py fails while a model's table or
#    columns differ from what the migrations make.
#
# SQLite's ALTER TABLE adds, renames and drops columns; a NOT NULL column it adds needs a SQL
# DEFAULT (the models' defaults are Python's, not the database's). Any other change rebuilds the
# table: CREATE TABLE "new_x" (...); INSERT INTO "new_x" SELECT ... FROM "x"; DROP TABLE "x";
# ALTER TABLE "new_x" RENAME TO "x"; then create x's indexes again. migrate() turns foreign keys
# off while it migrates (so dropping a table cascades nothing) and checks them before each
# commit. When a release ships, add a database made by it under tests/data
# (scripts/make_db_fixture.py) and a test that it opens.

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import peewee as pw

from klaudio.errors import FailedPrecondition, Internal

log = logging.getLogger(__name__)

# Version 1: the schema klaudio 0.1.0 created, as its sqlite_master holds it. 0.1.0 ran these
# with IF NOT EXISTS (SQLite leaves that out of sqlite_master); later versions should not, so
# that a table already there fails the migration instead of passing for the new one.
_V1 = (
    (
        'CREATE TABLE IF NOT EXISTS "schemaversion" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"version" INTEGER NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "task" ("id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"name" VARCHAR(255) NOT NULL, "prompt" TEXT NOT NULL, "state" VARCHAR(255) NOT NULL, '
        '"reason" TEXT NOT NULL, "repo" TEXT NOT NULL, "workspace" TEXT NOT NULL, '
        '"auto_approve" INTEGER NOT NULL, "created_at" REAL NOT NULL, '
        '"updated_at" REAL NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "task_state" ON "task" ("state")',
    (
        'CREATE TABLE IF NOT EXISTS "plan" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "version" INTEGER NOT NULL, '
        '"analysis" TEXT NOT NULL, "strategy" VARCHAR(255) NOT NULL, "notes" TEXT NOT NULL, '
        '"created_at" REAL NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "plan_task_id" ON "plan" ("task_id")',
    (
        'CREATE TABLE IF NOT EXISTS "subtask" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "plan_id" INTEGER NOT NULL, '
        '"key" VARCHAR(255) NOT NULL, "position" INTEGER NOT NULL, "name" TEXT NOT NULL, '
        '"description" TEXT NOT NULL, "prompt" TEXT NOT NULL, "depends_on" TEXT NOT NULL, '
        '"files_involved" TEXT NOT NULL, "complexity" VARCHAR(255) NOT NULL, '
        '"agent_role" VARCHAR(255) NOT NULL, "state" VARCHAR(255) NOT NULL, '
        '"result" TEXT NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("plan_id") REFERENCES "plan" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "subtask_task_id" ON "subtask" ("task_id")',
    'CREATE INDEX IF NOT EXISTS "subtask_plan_id" ON "subtask" ("plan_id")',
    (
        'CREATE TABLE IF NOT EXISTS "agent" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "name" VARCHAR(255) NOT NULL, '
        '"role" VARCHAR(255) NOT NULL, "subtask_id" INTEGER, "state" VARCHAR(255) NOT NULL, '
        '"container" VARCHAR(255) NOT NULL, "session_id" VARCHAR(255) NOT NULL, '
        '"run_dir" TEXT NOT NULL, "epoch" INTEGER NOT NULL, "output_offset" INTEGER NOT NULL, '
        '"exit_code" INTEGER, "cost_usd" REAL NOT NULL, "reason" TEXT NOT NULL, '
        '"result" TEXT NOT NULL, "started_at" REAL, "ended_at" REAL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE, '
        'FOREIGN KEY ("subtask_id") REFERENCES "subtask" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "agent_task_id" ON "agent" ("task_id")',
    'CREATE INDEX IF NOT EXISTS "agent_subtask_id" ON "agent" ("subtask_id")',
    'CREATE UNIQUE INDEX IF NOT EXISTS "agent_task_id_name" ON "agent" ("task_id", "name")',
    (
        'CREATE TABLE IF NOT EXISTS "question" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "key" VARCHAR(255) NOT NULL, '
        '"position" INTEGER NOT NULL, "text" TEXT NOT NULL, "context" TEXT NOT NULL, '
        '"suggestions" TEXT NOT NULL, "options" TEXT NOT NULL, "answer" TEXT NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "question_task_id" ON "question" ("task_id")',
    (
        'CREATE TABLE IF NOT EXISTS "streamevent" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "seq" INTEGER NOT NULL, '
        '"agent" VARCHAR(255) NOT NULL, "kind" INTEGER NOT NULL, "time" REAL NOT NULL, '
        '"json" TEXT NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "streamevent_task_id" ON "streamevent" ("task_id")',
    (
        'CREATE UNIQUE INDEX IF NOT EXISTS "streamevent_task_id_seq" '
        'ON "streamevent" ("task_id", "seq")'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "taskevent" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "time" REAL NOT NULL, '
        '"from_state" VARCHAR(255) NOT NULL, "to_state" VARCHAR(255) NOT NULL, '
        '"reason" TEXT NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX IF NOT EXISTS "taskevent_task_id" ON "taskevent" ("task_id")',
)

# Version 2: agent runs. An agent (one conversation) may run several times; each run is a row
# of agentrun with its own container, run dir, output offset and outcome. A 0.1.0 agent becomes
# an agent with one run (epoch 0); its run dir stays where it was, its home beneath it. The
# agent columns container, run_dir, epoch and output_offset are unused from here on (dropping
# a column needs SQLite 3.35). Tasks gain a pending stop/cancel (control), the time a task
# paused by a usage limit resumes (resume_at) and the count of such pauses in a row, extra
# context for the planner (a relaunch's story) and the commit the workspace was cloned at;
# subtasks gain the reason they failed or stopped.
_V2 = (
    'ALTER TABLE "task" ADD COLUMN "control" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "resume_at" REAL',
    'ALTER TABLE "task" ADD COLUMN "limit_pauses" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "task" ADD COLUMN "context" TEXT NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "base_commit" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "subtask" ADD COLUMN "reason" TEXT NOT NULL DEFAULT \'\'',
    'ALTER TABLE "agent" ADD COLUMN "home" TEXT NOT NULL DEFAULT \'\'',
    (
        'CREATE TABLE "agentrun" ("id" INTEGER NOT NULL PRIMARY KEY, '
        '"agent_id" INTEGER NOT NULL, "epoch" INTEGER NOT NULL, "state" VARCHAR(255) NOT NULL, '
        '"container" VARCHAR(255) NOT NULL, "run_dir" TEXT NOT NULL, "prompt" TEXT NOT NULL, '
        '"resume" INTEGER NOT NULL, "output_offset" INTEGER NOT NULL, "exit_code" INTEGER, '
        '"cost_usd" REAL NOT NULL, "reason" TEXT NOT NULL, "result" TEXT NOT NULL, '
        '"started_at" REAL, "ended_at" REAL, '
        'FOREIGN KEY ("agent_id") REFERENCES "agent" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX "agentrun_agent_id" ON "agentrun" ("agent_id")',
    'CREATE UNIQUE INDEX "agentrun_agent_id_epoch" ON "agentrun" ("agent_id", "epoch")',
    'CREATE INDEX "agentrun_state" ON "agentrun" ("state")',
    'UPDATE "agent" SET "home" = "run_dir" || \'/home\'',
    (
        'INSERT INTO "agentrun" ("agent_id", "epoch", "state", "container", "run_dir", '
        '"prompt", "resume", "output_offset", "exit_code", "cost_usd", "reason", "result", '
        '"started_at", "ended_at") '
        'SELECT "id", 0, "state", "container", "run_dir", \'\', 0, "output_offset", '
        '"exit_code", "cost_usd", "reason", "result", "started_at", "ended_at" FROM "agent"'
    ),
)

# Version 3: checkpoints, each an archive file under <data>/checkpoints/<task>/, recorded once
# it is complete (written to a temporary name, fsynced, renamed).
_V3 = (
    (
        'CREATE TABLE "checkpoint" ("id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"task_id" VARCHAR(255) NOT NULL, "created_at" REAL NOT NULL, '
        '"reason" VARCHAR(255) NOT NULL, "size" INTEGER NOT NULL, "path" TEXT NOT NULL, '
        'FOREIGN KEY ("task_id") REFERENCES "task" ("id") ON DELETE CASCADE)'
    ),
    'CREATE INDEX "checkpoint_task_id" ON "checkpoint" ("task_id")',
)

# Version 4: planning in depth. A task records its team and effective settings when it is
# created (JSON), the plan version approved, and the next message for its planner (answers,
# a replan's context) until a planner run takes it; plans say who wrote them; questions
# their round and when they were answered. Tasks from before have no team ('').
_V4 = (
    'ALTER TABLE "task" ADD COLUMN "team" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "settings" TEXT NOT NULL DEFAULT \'{}\'',
    'ALTER TABLE "task" ADD COLUMN "approved_version" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "task" ADD COLUMN "planner_message" TEXT NOT NULL DEFAULT \'\'',
    'ALTER TABLE "plan" ADD COLUMN "source" VARCHAR(255) NOT NULL DEFAULT \'planner\'',
    'ALTER TABLE "question" ADD COLUMN "round" INTEGER NOT NULL DEFAULT 1',
    'ALTER TABLE "question" ADD COLUMN "answered_at" REAL',
)

# Version 5: delivery. Repository templates; a task records how its work is delivered (a
# snapshot of its template or flags: JSON), its task branch and base branch, the inputs it
# was given (JSON), and the delivery's state, reason, pushed commit and pull request URL.
_V5 = (
    (
        'CREATE TABLE "repotemplate" ("name" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"url" TEXT NOT NULL, "branch" VARCHAR(255) NOT NULL, "forge" VARCHAR(255) NOT NULL, '
        '"api_url" TEXT NOT NULL, "token_env" VARCHAR(255) NOT NULL, "token_file" TEXT NOT NULL, '
        '"auto_branch" INTEGER NOT NULL, "auto_commit" INTEGER NOT NULL, '
        '"auto_push" INTEGER NOT NULL, "auto_pr" INTEGER NOT NULL, '
        '"pr_target" VARCHAR(255) NOT NULL, "reviewers" TEXT NOT NULL, "memory" INTEGER NOT NULL, '
        '"created_at" REAL NOT NULL, "updated_at" REAL NOT NULL)'
    ),
    'ALTER TABLE "task" ADD COLUMN "delivery" TEXT NOT NULL DEFAULT \'{}\'',
    'ALTER TABLE "task" ADD COLUMN "branch" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "base_branch" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "inputs" TEXT NOT NULL DEFAULT \'[]\'',
    'ALTER TABLE "task" ADD COLUMN "delivery_state" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "delivery_reason" TEXT NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "delivered_commit" VARCHAR(255) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "task" ADD COLUMN "pr_url" TEXT NOT NULL DEFAULT \'\'',
)

# (version, statements), oldest first; a database at version N has run every migration up to N.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _V1),
    (2, _V2),
    (3, _V3),
    (4, _V4),
    (5, _V5),
)

LATEST: int = MIGRATIONS[-1][0]
"""The schema version this code creates and expects."""


class NewerSchema(FailedPrecondition):
    """The database was written by a newer klaudio, whose schema this code does not know."""


def version(database: pw.Database) -> int:
    """The schema version recorded in the database, 0 when it has none (a new file)."""
    if not database.table_exists("schemaversion"):
        return 0
    row = _execute(database, 'SELECT "version" FROM "schemaversion" LIMIT 1').fetchone()
    return int(row[0]) if row else 0


def migrate(database: pw.Database) -> int:
    """Apply the migrations the database lacks, each in its own transaction; return LATEST.

    Raises:
        NewerSchema: when the database's version is newer than LATEST (nothing is changed).
    """
    if database.in_transaction():
        raise RuntimeError("migrate runs outside any transaction")
    found = version(database)
    _refuse_newer(database, found)
    if found == LATEST:
        return LATEST
    # PRAGMA foreign_keys is a no-op inside a transaction, so it is set around them.
    foreign_keys = int(_execute(database, "PRAGMA foreign_keys").fetchone()[0])
    _execute(database, "PRAGMA foreign_keys = OFF")
    try:
        for number, statements in MIGRATIONS:
            # IMMEDIATE takes the write lock first: another process cannot migrate in between.
            with database.atomic("IMMEDIATE"):
                current = version(database)
                _refuse_newer(database, current)
                if current >= number:
                    continue
                for statement in statements:
                    _execute(database, statement)
                dangling = _execute(database, "PRAGMA foreign_key_check").fetchall()
                if dangling:
                    raise Internal(
                        f"schema migration {number} leaves {len(dangling)} rows whose foreign "
                        f"keys point nowhere (first: {tuple(dangling[0])})"
                    )
                _record(database, number)
            log.info("database schema migrated to version %d", number)
    finally:
        _execute(database, f"PRAGMA foreign_keys = {foreign_keys}")
    return LATEST


def _record(database: pw.Database, number: int) -> None:
    """Set the one row of the schemaversion table, as 0.1.0 kept it."""
    updated = _execute(database, 'UPDATE "schemaversion" SET "version" = ?', (number,))
    if updated.rowcount == 0:
        _execute(database, 'INSERT INTO "schemaversion" ("version") VALUES (?)', (number,))


def _refuse_newer(database: pw.Database, found: int) -> None:
    if found > LATEST:
        raise NewerSchema(
            f"the database {database.database} has schema version {found}, newer than version "
            f"{LATEST} that this klaudiod knows; run the klaudio that wrote it, or a newer one"
        )


def _execute(database: pw.Database, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
    """database.execute_sql, which peewee leaves untyped."""
    cursor: sqlite3.Cursor = database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
    return cursor
