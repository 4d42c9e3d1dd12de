"""The SQLite store: every read and write of klaudio's state, each write one transaction.

The daemon calls a Store from one thread only (see Db in service code), so it is the single
writer the design asks for; peewee stays inside this module and models.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw

from klaudio.errors import FailedPrecondition, InvalidArgument, NotFound
from klaudiod import migrations, states
from klaudiod.models import (
    Agent,
    Plan,
    Question,
    StreamEvent,
    Subtask,
    Task,
    TaskEvent,
    db,
)
from klaudiod.plan import Plan as PlanSpec
from klaudiod.plan import QuestionSpec

KIND_AGENT = 1
KIND_TASK = 2


class Store:
    """klaudio's state in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db.init(
            str(path),
            pragmas={
                "journal_mode": "wal",
                "synchronous": "full",
                "foreign_keys": 1,
                "busy_timeout": 5000,
            },
        )
        db.connect(reuse_if_open=True)
        self._migrate()

    def close(self) -> None:
        """Close the database connection."""
        if not db.is_closed():
            db.close()

    def _migrate(self) -> None:
        try:
            migrations.migrate(db)
        except BaseException:
            # A refused or failed migration leaves the file as it was; free it for the next open.
            db.close()
            raise

    @staticmethod
    def schema_version() -> int:
        """The schema version of the open database."""
        return migrations.version(db)

    # Tasks -------------------------------------------------------------------------------

    def create_task(
        self, task_id: str, name: str, prompt: str, repo: str, workspace: str, auto_approve: bool
    ) -> tuple[Task, StreamEvent]:
        """Insert a new task in state created, with its first lifecycle event."""
        now = time.time()
        with db.atomic():
            task = Task.create(
                id=task_id,
                name=name,
                prompt=prompt,
                state=states.CREATED,
                repo=repo,
                workspace=workspace,
                auto_approve=auto_approve,
                created_at=now,
                updated_at=now,
            )
            event = self._emit(task_id, {"type": "task", "state": states.CREATED, "reason": ""})
        return task, event

    def task(self, task_id: str) -> Task:
        """Return the task with this exact id."""
        task = Task.get_or_none(Task.id == task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task

    def resolve(self, prefix: str) -> str:
        """Return the id of the one task whose id starts with prefix."""
        prefix = prefix.strip()
        if not prefix:
            raise InvalidArgument("task_id is empty")
        matches = [t.id for t in Task.select(Task.id).where(Task.id.startswith(prefix)).limit(3)]
        if not matches:
            raise NotFound(f"no task matches '{prefix}'")
        if len(matches) > 1:
            raise InvalidArgument(f"task id prefix '{prefix}' is ambiguous; give more characters")
        return str(matches[0])

    def tasks(self, only: Sequence[str] = ()) -> list[Task]:
        """All tasks without their prompts, newest first, optionally only in the given states."""
        fields = [f for f in Task._meta.sorted_fields if f.name != "prompt"]
        query = Task.select(*fields).order_by(Task.created_at.desc())
        if only:
            query = query.where(Task.state.in_(list(only)))
        return list(query)

    def detail(self, task_id: str) -> dict[str, Any]:
        """The task with its plan, subtasks, agents, questions and cost, read together."""
        return {
            "task": self.task(task_id),
            "plan": self.plan(task_id),
            "subtasks": self.subtasks(task_id),
            "agents": self.agents(task_id),
            "questions": self.questions(task_id),
            "cost": self.cost(task_id),
        }

    def delete_task(self, task_id: str) -> None:
        """Delete a task and everything recorded about it."""
        with db.atomic():
            Task.delete().where(Task.id == task_id).execute()

    def transition(
        self, task_id: str, target: str, reason: str = "", only_from: Iterable[str] | None = None
    ) -> tuple[Task, StreamEvent]:
        """Move a task to target in one transaction, recording the change and its event.

        Raises:
            FailedPrecondition: when the move is illegal, naming the current state.
        """
        with db.atomic():
            task = self.task(task_id)
            allowed = states.can_transition(task.state, target)
            if only_from is not None and task.state not in set(only_from):
                allowed = False
            if not allowed:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; it cannot become {target}"
                )
            TaskEvent.create(
                task=task_id,
                time=time.time(),
                from_state=task.state,
                to_state=target,
                reason=reason,
            )
            task.state = target
            task.reason = reason
            task.updated_at = time.time()
            task.save()
            event = self._emit(task_id, {"type": "task", "state": target, "reason": reason})
        return task, event

    # Plans and questions -----------------------------------------------------------------

    def save_plan(self, task_id: str, spec: PlanSpec) -> tuple[Plan, StreamEvent]:
        """Store a validated plan as the task's current plan, with its subtasks."""
        with db.atomic():
            version = Plan.select().where(Plan.task == task_id).count() + 1
            plan = Plan.create(
                task=task_id,
                version=version,
                analysis=spec.analysis,
                strategy=spec.strategy,
                notes=spec.notes,
                created_at=time.time(),
            )
            for position, sub in enumerate(spec.subtasks):
                Subtask.create(
                    task=task_id,
                    plan=plan,
                    key=sub.id,
                    position=position,
                    name=sub.name,
                    description=sub.description,
                    prompt=sub.prompt,
                    depends_on=json.dumps(list(sub.depends_on)),
                    files_involved=json.dumps(list(sub.files_involved)),
                    complexity=sub.complexity,
                    agent_role=sub.agent_role,
                )
            event = self._emit(
                task_id,
                {
                    "type": "plan",
                    "version": version,
                    "strategy": spec.strategy,
                    "subtasks": [
                        {"id": s.id, "name": s.name, "depends_on": list(s.depends_on)}
                        for s in spec.subtasks
                    ],
                },
            )
        return plan, event

    def plan(self, task_id: str) -> Plan | None:
        """The task's current (latest) plan, if any."""
        latest: Plan | None = (
            Plan.select().where(Plan.task == task_id).order_by(Plan.version.desc()).first()
        )
        return latest

    def subtasks(self, task_id: str) -> list[Subtask]:
        """The subtasks of the task's current plan, in plan order."""
        plan = self.plan(task_id)
        if plan is None:
            return []
        return list(Subtask.select().where(Subtask.plan == plan).order_by(Subtask.position))

    def set_subtask(
        self, subtask_id: int, state: str, result: str | None = None
    ) -> tuple[Subtask, StreamEvent]:
        """Record a subtask's new state (and final message), with its event."""
        with db.atomic():
            sub = Subtask.get_by_id(subtask_id)
            sub.state = state
            if result is not None:
                sub.result = result
            sub.save()
            event = self._emit(
                sub.task_id, {"type": "subtask", "id": sub.key, "name": sub.name, "state": state}
            )
        return sub, event

    def save_questions(self, task_id: str, questions: Sequence[QuestionSpec]) -> StreamEvent:
        """Store the planner's questions, replacing unanswered earlier ones."""
        with db.atomic():
            Question.delete().where((Question.task == task_id) & (Question.answer == "")).execute()
            for position, q in enumerate(questions):
                Question.create(
                    task=task_id,
                    key=q.id,
                    position=position,
                    text=q.text,
                    context=q.context,
                    suggestions=json.dumps(list(q.suggestions)),
                    options=json.dumps(list(q.options)),
                )
            return self._emit(
                task_id,
                {
                    "type": "questions",
                    "questions": [{"id": q.id, "text": q.text} for q in questions],
                },
            )

    def questions(self, task_id: str) -> list[Question]:
        """The task's questions in the order they were asked."""
        return list(Question.select().where(Question.task == task_id).order_by(Question.id))

    # Agents ------------------------------------------------------------------------------

    def create_agent(
        self,
        task_id: str,
        name: str,
        role: str,
        subtask_id: int | None,
        container: str,
        session_id: str,
        run_dir: str,
    ) -> Agent:
        """Record an agent before its container is created (intent before effect)."""
        with db.atomic():
            return Agent.create(
                task=task_id,
                name=name,
                role=role,
                subtask=subtask_id,
                container=container,
                session_id=session_id,
                run_dir=run_dir,
                started_at=time.time(),
            )

    def agent(self, agent_id: int) -> Agent:
        """The agent with this id."""
        return Agent.get_by_id(agent_id)

    def find_agent(self, task_id: str, name: str) -> Agent | None:
        """The task's agent with this name, if it exists."""
        return Agent.get_or_none((Agent.task == task_id) & (Agent.name == name))

    def agents(self, task_id: str) -> list[Agent]:
        """The task's agents in creation order."""
        return list(Agent.select().where(Agent.task == task_id).order_by(Agent.id))

    def live_agents(self) -> list[Agent]:
        """Agents of every task that are starting or running."""
        return list(Agent.select().where(Agent.state.in_(list(states.AGENT_LIVE))))

    def set_agent_state(
        self, agent_id: int, state: str, **fields: Any
    ) -> tuple[Agent, StreamEvent]:
        """Record an agent's new state and outcome fields, with its event."""
        with db.atomic():
            agent = Agent.get_by_id(agent_id)
            agent.state = state
            for key, value in fields.items():
                setattr(agent, key, value)
            if state in (states.AGENT_COMPLETED, states.AGENT_FAILED):
                agent.ended_at = time.time()
            agent.save()
            payload: dict[str, Any] = {"type": "agent", "agent": agent.name, "state": state}
            if agent.exit_code is not None:
                payload["exit_code"] = agent.exit_code
            if agent.reason:
                payload["reason"] = agent.reason
            if state in (states.AGENT_COMPLETED, states.AGENT_FAILED):
                payload["cost_usd"] = agent.cost_usd
            event = self._emit(agent.task_id, payload, agent=agent.name)
        return agent, event

    def cost(self, task_id: str) -> float:
        """The task's cost so far: the sum of its agents' costs."""
        total = Agent.select(pw.fn.SUM(Agent.cost_usd)).where(Agent.task == task_id).scalar()
        return float(total or 0.0)

    def costs(self) -> dict[str, float]:
        """Every task's cost, by task id."""
        query = (
            Agent.select(Agent.task, pw.fn.SUM(Agent.cost_usd).alias("total"))
            .group_by(Agent.task)
            .dicts()
        )
        rows: list[dict[str, Any]] = list(query)  # type: ignore[arg-type]
        return {row["task"]: float(row["total"] or 0.0) for row in rows}

    # Stream ------------------------------------------------------------------------------

    def append_output(
        self, agent_id: int, lines: Sequence[str], new_offset: int
    ) -> list[StreamEvent]:
        """Persist an agent's new output lines and its read offset in one transaction."""
        with db.atomic():
            agent = Agent.get_by_id(agent_id)
            events = []
            seq = self._last_seq(agent.task_id)
            now = time.time()
            for line in lines:
                seq += 1
                events.append(
                    StreamEvent.create(
                        task=agent.task_id,
                        seq=seq,
                        agent=agent.name,
                        kind=KIND_AGENT,
                        time=now,
                        json=line,
                    )
                )
            Agent.update(output_offset=new_offset).where(Agent.id == agent_id).execute()
        return events

    def emit(self, task_id: str, payload: dict[str, Any], agent: str = "") -> StreamEvent:
        """Persist a task event (not an agent's output line)."""
        with db.atomic():
            return self._emit(task_id, payload, agent)

    def events(
        self, task_id: str, since_seq: int, agent: str = "", limit: int = 500
    ) -> list[StreamEvent]:
        """Up to limit events after since_seq, in order.

        With agent, only that agent's events and the task's own (agentless) events.
        """
        query = StreamEvent.select().where(
            (StreamEvent.task == task_id) & (StreamEvent.seq > since_seq)
        )
        if agent:
            query = query.where(
                (StreamEvent.agent == agent)
                | ((StreamEvent.kind == KIND_TASK) & (StreamEvent.agent == ""))
            )
        return list(query.order_by(StreamEvent.seq).limit(limit))

    def _emit(self, task_id: str, payload: dict[str, Any], agent: str = "") -> StreamEvent:
        return StreamEvent.create(
            task=task_id,
            seq=self._last_seq(task_id) + 1,
            agent=agent,
            kind=KIND_TASK,
            time=time.time(),
            json=json.dumps(payload),
        )

    @staticmethod
    def _last_seq(task_id: str) -> int:
        value = (
            StreamEvent.select(pw.fn.MAX(StreamEvent.seq))
            .where(StreamEvent.task == task_id)
            .scalar()
        )
        return int(value or 0)
