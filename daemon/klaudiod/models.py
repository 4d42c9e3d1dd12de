"""The SQLite schema as peewee models; migrations.py creates and changes it."""

from __future__ import annotations

import json
from typing import Any

import peewee as pw

from klaudiod.records import (
    AgentRecord,
    CheckpointRecord,
    PlanRecord,
    QuestionRecord,
    RepoTemplateRecord,
    RunRecord,
    SubtaskRecord,
    TaskRecord,
)

db = pw.SqliteDatabase(None)


class Base(pw.Model):
    # Attributes peewee adds at run time (implicit ids, foreign-key ids), declared for mypy.
    id: Any
    task_id: str
    subtask_id: int | None
    agent_id: int

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
    control = pw.CharField(default="")
    resume_at = pw.FloatField(null=True)
    limit_pauses = pw.IntegerField(default=0)
    context = pw.TextField(default="")
    base_commit = pw.CharField(default="")
    team = pw.CharField(default="")
    settings = pw.TextField(default="{}")
    approved_version = pw.IntegerField(default=0)
    planner_message = pw.TextField(default="")
    delivery = pw.TextField(default="{}")
    branch = pw.CharField(default="")
    base_branch = pw.CharField(default="")
    inputs = pw.TextField(default="[]")
    delivery_state = pw.CharField(default="")
    delivery_reason = pw.TextField(default="")
    delivered_commit = pw.CharField(default="")
    pr_url = pw.TextField(default="")

    def record(self) -> TaskRecord:
        """This row as a record (prompt empty when the query left it out)."""
        return TaskRecord(
            id=self.id,
            name=self.name,
            prompt=self.prompt or "",
            state=self.state,
            reason=self.reason,
            repo=self.repo,
            workspace=self.workspace,
            auto_approve=bool(self.auto_approve),
            created_at=self.created_at,
            updated_at=self.updated_at,
            control=self.control,
            resume_at=self.resume_at,
            limit_pauses=self.limit_pauses,
            context=self.context or "",
            base_commit=self.base_commit,
            team=self.team,
            settings=json.loads(self.settings or "{}"),
            approved_version=self.approved_version,
            planner_message=self.planner_message or "",
            delivery=json.loads(self.delivery or "{}"),
            branch=self.branch,
            base_branch=self.base_branch,
            inputs=tuple(json.loads(self.inputs or "[]")),
            delivery_state=self.delivery_state,
            delivery_reason=self.delivery_reason,
            delivered_commit=self.delivered_commit,
            pr_url=self.pr_url,
        )


class Plan(Base):
    task = pw.ForeignKeyField(Task, backref="plans", on_delete="CASCADE")
    version = pw.IntegerField()
    analysis = pw.TextField(default="")
    strategy = pw.CharField(default="dag")
    notes = pw.TextField(default="")
    created_at = pw.FloatField()
    source = pw.CharField(default="planner")

    def record(self) -> PlanRecord:
        """This row as a record."""
        return PlanRecord(
            self.id,
            self.task_id,
            self.version,
            self.analysis,
            self.strategy,
            self.notes,
            self.created_at,
            self.source,
        )


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
    reason = pw.TextField(default="")

    def record(self) -> SubtaskRecord:
        """This row as a record, its JSON lists decoded."""
        return SubtaskRecord(
            id=self.id,
            task_id=self.task_id,
            key=self.key,
            position=self.position,
            name=self.name,
            description=self.description,
            prompt=self.prompt,
            depends_on=tuple(json.loads(self.depends_on)),
            files_involved=tuple(json.loads(self.files_involved)),
            complexity=self.complexity,
            agent_role=self.agent_role,
            state=self.state,
            result=self.result,
            reason=self.reason,
        )


class Question(Base):
    task = pw.ForeignKeyField(Task, backref="questions", on_delete="CASCADE")
    key = pw.CharField()
    position = pw.IntegerField()
    text = pw.TextField()
    context = pw.TextField(default="")
    suggestions = pw.TextField(default="[]")
    options = pw.TextField(default="[]")
    answer = pw.TextField(default="")
    round = pw.IntegerField(default=1)
    answered_at = pw.FloatField(null=True)

    def record(self) -> QuestionRecord:
        """This row as a record, its JSON lists decoded."""
        return QuestionRecord(
            id=self.id,
            task_id=self.task_id,
            key=self.key,
            text=self.text,
            context=self.context,
            suggestions=tuple(json.loads(self.suggestions)),
            options=tuple(json.loads(self.options)),
            answer=self.answer,
            round=self.round,
        )


class Agent(Base):
    task = pw.ForeignKeyField(Task, backref="agents", on_delete="CASCADE")
    name = pw.CharField()
    role = pw.CharField()
    subtask = pw.ForeignKeyField(Subtask, null=True, on_delete="CASCADE")
    state = pw.CharField(default="starting")
    session_id = pw.CharField()
    home = pw.TextField(default="")
    exit_code = pw.IntegerField(null=True)
    cost_usd = pw.FloatField(default=0.0)
    reason = pw.TextField(default="")
    result = pw.TextField(default="")
    started_at = pw.FloatField(null=True)
    ended_at = pw.FloatField(null=True)
    # Unused since schema 2, where runs moved to AgentRun (SQLite < 3.35 cannot drop columns).
    container = pw.CharField(default="")
    run_dir = pw.TextField(default="")
    epoch = pw.IntegerField(default=0)
    output_offset = pw.IntegerField(default=0)

    class Meta:
        indexes = ((("task", "name"), True),)

    def record(self, runs: int = 0, container: str = "") -> AgentRecord:
        """This row as a record."""
        return AgentRecord(
            id=self.id,
            task_id=self.task_id,
            name=self.name,
            role=self.role,
            subtask_id=self.subtask_id,
            state=self.state,
            session_id=self.session_id,
            home=self.home,
            exit_code=self.exit_code,
            cost_usd=self.cost_usd,
            reason=self.reason,
            result=self.result,
            started_at=self.started_at,
            ended_at=self.ended_at,
            runs=runs,
            container=container,
        )


class AgentRun(Base):
    """One run of an agent: one container."""

    agent = pw.ForeignKeyField(Agent, backref="runs", on_delete="CASCADE")
    epoch = pw.IntegerField()
    state = pw.CharField(index=True)
    container = pw.CharField()
    run_dir = pw.TextField()
    prompt = pw.TextField()
    resume = pw.BooleanField(default=False)
    output_offset = pw.IntegerField(default=0)
    exit_code = pw.IntegerField(null=True)
    cost_usd = pw.FloatField(default=0.0)
    reason = pw.TextField(default="")
    result = pw.TextField(default="")
    started_at = pw.FloatField(null=True)
    ended_at = pw.FloatField(null=True)

    class Meta:
        indexes = ((("agent", "epoch"), True),)

    def record(self, task_id: str, agent: str) -> RunRecord:
        """This row as a record, with its agent's task and name."""
        return RunRecord(
            id=self.id,
            agent_id=self.agent_id,
            task_id=task_id,
            agent=agent,
            epoch=self.epoch,
            state=self.state,
            container=self.container,
            run_dir=self.run_dir,
            prompt=self.prompt,
            resume=bool(self.resume),
            output_offset=self.output_offset,
            exit_code=self.exit_code,
            cost_usd=self.cost_usd,
            reason=self.reason,
            result=self.result,
            started_at=self.started_at,
            ended_at=self.ended_at,
        )


class Checkpoint(Base):
    """An archive of a task's workspace and agent sessions, complete on disk."""

    id = pw.CharField(primary_key=True)
    task = pw.ForeignKeyField(Task, backref="checkpoints", on_delete="CASCADE")
    created_at = pw.FloatField()
    reason = pw.CharField()
    size = pw.IntegerField()
    path = pw.TextField()

    def record(self) -> CheckpointRecord:
        """This row as a record."""
        return CheckpointRecord(
            self.id, self.task_id, self.created_at, self.reason, self.size, self.path
        )


class RepoTemplate(Base):
    """A repository template: where a task's repository comes from and how work is delivered."""

    name = pw.CharField(primary_key=True)
    url = pw.TextField()
    branch = pw.CharField()
    forge = pw.CharField()
    api_url = pw.TextField()
    token_env = pw.CharField()
    token_file = pw.TextField()
    auto_branch = pw.BooleanField()
    auto_commit = pw.BooleanField()
    auto_push = pw.BooleanField()
    auto_pr = pw.BooleanField()
    pr_target = pw.CharField()
    reviewers = pw.TextField()
    memory = pw.BooleanField()
    created_at = pw.FloatField()
    updated_at = pw.FloatField()

    def record(self) -> RepoTemplateRecord:
        """This row as a record."""
        return RepoTemplateRecord(
            name=self.name,
            url=self.url,
            branch=self.branch,
            forge=self.forge,
            api_url=self.api_url,
            token_env=self.token_env,
            token_file=self.token_file,
            auto_branch=bool(self.auto_branch),
            auto_commit=bool(self.auto_commit),
            auto_push=bool(self.auto_push),
            auto_pr=bool(self.auto_pr),
            pr_target=self.pr_target,
            reviewers=tuple(json.loads(self.reviewers or "[]")),
            memory=bool(self.memory),
        )


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
