"""The SQLite schema as peewee models; migrations.py creates and changes it."""

from __future__ import annotations

from typing import Any

import peewee as pw

db = pw.SqliteDatabase(None)


class Base(pw.Model):
    # Attributes peewee adds at run time (implicit ids, foreign-key ids), declared for mypy.
    id: Any
    task_id: str
    subtask_id: int | None

    class Meta:
        database = db


class SchemaVersion(Base):
    version = pw.IntegerField()


class Task(Base):
    id = pw.CharField(primary_key=True)
    name = pw.CharField()
    prompt = pw.TextField()
    state = pw.CharField(index=True)
    reason = pw.TextField(default="")
    repo = pw.TextField(default="")
    workspace = pw.TextField()
    auto_approve = pw.BooleanField(default=False)
    created_at = pw.FloatField()
    updated_at = pw.FloatField()


class Plan(Base):
    task = pw.ForeignKeyField(Task, backref="plans", on_delete="CASCADE")
    version = pw.IntegerField()
    analysis = pw.TextField(default="")
    strategy = pw.CharField(default="dag")
    notes = pw.TextField(default="")
    created_at = pw.FloatField()


class Subtask(Base):
    task = pw.ForeignKeyField(Task, backref="subtasks", on_delete="CASCADE")
    plan = pw.ForeignKeyField(Plan, backref="subtasks", on_delete="CASCADE")
    key = pw.CharField()
    position = pw.IntegerField()
    name = pw.TextField()
    description = pw.TextField(default="")
    prompt = pw.TextField()
    depends_on = pw.TextField(default="[]")
    files_involved = pw.TextField(default="[]")
    complexity = pw.CharField(default="medium")
    agent_role = pw.CharField(default="developer")
    state = pw.CharField(default="pending")
    result = pw.TextField(default="")


class Question(Base):
    task = pw.ForeignKeyField(Task, backref="questions", on_delete="CASCADE")
    key = pw.CharField()
    position = pw.IntegerField()
    text = pw.TextField()
    context = pw.TextField(default="")
    suggestions = pw.TextField(default="[]")
    options = pw.TextField(default="[]")
    answer = pw.TextField(default="")


class Agent(Base):
    task = pw.ForeignKeyField(Task, backref="agents", on_delete="CASCADE")
    name = pw.CharField()
    role = pw.CharField()
    subtask = pw.ForeignKeyField(Subtask, null=True, on_delete="CASCADE")
    state = pw.CharField(default="starting")
    container = pw.CharField()
    session_id = pw.CharField()
    run_dir = pw.TextField()
    epoch = pw.IntegerField(default=0)
    output_offset = pw.IntegerField(default=0)
    exit_code = pw.IntegerField(null=True)
    cost_usd = pw.FloatField(default=0.0)
    reason = pw.TextField(default="")
    result = pw.TextField(default="")
    started_at = pw.FloatField(null=True)
    ended_at = pw.FloatField(null=True)

    class Meta:
        indexes = ((("task", "name"), True),)


class TaskEvent(Base):
    """The audit trail of task transitions."""

    task = pw.ForeignKeyField(Task, backref="events", on_delete="CASCADE")
    time = pw.FloatField()
    from_state = pw.CharField()
    to_state = pw.CharField()
    reason = pw.TextField(default="")


class StreamEvent(Base):
    """Every event followers see, numbered per task."""

    task = pw.ForeignKeyField(Task, on_delete="CASCADE")
    seq = pw.IntegerField()
    agent = pw.CharField(default="")
    kind = pw.IntegerField()
    time = pw.FloatField()
    json = pw.TextField()

    class Meta:
        indexes = ((("task", "seq"), True),)
