"""The SQLite store: every read and write of klaudio's state, each write one transaction.

The daemon calls a Store from one thread only (see db.py), so it is the single writer the
design asks for; peewee stays inside this module and models.py, and callers get typed records.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import peewee as pw

from klaudio import events as payloads
from klaudio.errors import FailedPrecondition, InvalidArgument, NotFound
from klaudiod import migrations, states
from klaudiod.models import (
    Agent,
    AgentRun,
    Checkpoint,
    Plan,
    Question,
    RepoTemplate,
    StreamEvent,
    Subtask,
    Task,
    TaskEvent,
    db,
)
from klaudiod.plan import Plan as PlanSpec
from klaudiod.plan import QuestionSpec
from klaudiod.records import (
    AgentRecord,
    CheckpointRecord,
    Detail,
    PlanRecord,
    QuestionRecord,
    RepoTemplateRecord,
    RunRecord,
    SubtaskRecord,
    TaskRecord,
)

# Task columns a list leaves out (record() gives their defaults).
SUMMARY_OMITS = frozenset({"prompt", "context", "planner_message", "settings", "delivery"})
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
        self,
        task_id: str,
        name: str,
        prompt: str,
        repo: str,
        workspace: str,
        auto_approve: bool,
        context: str = "",
        base_commit: str = "",
        team: str = "",
        settings: dict[str, Any] | None = None,
        git: dict[str, Any] | None = None,
    ) -> tuple[TaskRecord, StreamEvent]:
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
                context=context,
                base_commit=base_commit,
                team=team,
                settings=json.dumps(settings or {}),
                delivery=json.dumps((git or {}).get("delivery", {})),
                branch=(git or {}).get("branch", ""),
                base_branch=(git or {}).get("base_branch", ""),
                inputs=json.dumps(list((git or {}).get("inputs", []))),
            )
            created: payloads.TaskEvent = {"type": "task", "state": states.CREATED, "reason": ""}
            event = self._emit(task_id, created)
        return task.record(), event

    def task(self, task_id: str) -> TaskRecord:
        """The task with this exact id."""
        return self._task(task_id).record()

    @staticmethod
    def _task(task_id: str) -> Task:
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

    def tasks(self, only: Sequence[str] = ()) -> list[TaskRecord]:
        """All tasks as summaries, newest first, optionally only in the given states.

        A summary leaves out what can be long: the prompt, the planner's context and message,
        the settings and delivery snapshots.
        """
        fields = [f for f in Task._meta.sorted_fields if f.name not in SUMMARY_OMITS]
        query = Task.select(*fields).order_by(Task.created_at.desc())
        if only:
            query = query.where(Task.state.in_(list(only)))
        return [row.record() for row in query]

    def detail(self, task_id: str) -> Detail:
        """The task with its plan, subtasks, agents, questions and cost, read together."""
        with db.atomic():
            return Detail(
                task=self.task(task_id),
                plan=self.plan(task_id),
                subtasks=self.subtasks(task_id),
                agents=self.agents(task_id),
                questions=self.questions(task_id),
                cost=self.cost(task_id),
            )

    def delete_task(self, task_id: str) -> None:
        """Delete a task and everything recorded about it."""
        with db.atomic():
            Task.delete().where(Task.id == task_id).execute()

    def transition(
        self,
        task_id: str,
        target: str,
        reason: str = "",
        only_from: Iterable[str] | None = None,
        resume_at: float | None = None,
        limit_pauses: int | None = None,
        planner_message: str | None = None,
    ) -> tuple[TaskRecord, StreamEvent]:
        """Move a task to target in one transaction, recording the change and its event.

        A pending stop or cancel (control) is done with once the task moves; resume_at is set
        (or cleared) with every move, limit_pauses and the planner's next message only when
        given. Approving records the plan version approved.

        Raises:
            FailedPrecondition: when the move is illegal, naming the current state.
        """
        with db.atomic():
            task = self._task(task_id)
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
            task.control = ""
            task.resume_at = resume_at
            if limit_pauses is not None:
                task.limit_pauses = limit_pauses
            if planner_message is not None:
                task.planner_message = planner_message
            if target == states.APPROVED:
                latest = self.plan(task_id)
                task.approved_version = latest.version if latest else 0
            task.save()
            payload: payloads.TaskEvent = {"type": "task", "state": target, "reason": reason}
            if resume_at is not None:
                payload["resume_at"] = resume_at
            event = self._emit(task_id, payload)
        return task.record(), event

    def set_control(
        self, task_id: str, control: str, allowed: Iterable[str]
    ) -> tuple[TaskRecord, StreamEvent]:
        """Record a stop or cancel before carrying it out (intent before effect).

        Raises:
            FailedPrecondition: when the task is not in one of the allowed states.
        """
        with db.atomic():
            task = self._task(task_id)
            if task.state not in set(allowed):
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; it cannot be {_DONE[control]}"
                )
            task.control = control
            task.updated_at = time.time()
            task.save()
            asked: payloads.ControlEvent = {"type": "control", "control": control}
            event = self._emit(task_id, asked)
        return task.record(), event

    def paused_from(self, task_id: str) -> str:
        """The state the task was in when it last became paused ('' if it never did).

        A restore of a paused task (paused to paused) does not count.
        """
        row = (
            TaskEvent.select(TaskEvent.from_state)
            .where(
                (TaskEvent.task == task_id)
                & (TaskEvent.to_state == states.PAUSED)
                & (TaskEvent.from_state != states.PAUSED)
            )
            .order_by(TaskEvent.id.desc())
            .first()
        )
        return str(row.from_state) if row else ""

    def entered(self, task_id: str, state: str) -> float:
        """When the task last moved into state (0 if it never did)."""
        row = (
            TaskEvent.select(TaskEvent.time)
            .where((TaskEvent.task == task_id) & (TaskEvent.to_state == state))
            .order_by(TaskEvent.id.desc())
            .first()
        )
        return float(row.time) if row else 0.0

    def auto_resumable(self) -> list[TaskRecord]:
        """Paused tasks the daemon resumes by itself (a usage limit's), soonest first."""
        query = Task.select().where((Task.state == states.PAUSED) & Task.resume_at.is_null(False))
        return [row.record() for row in query.order_by(Task.resume_at)]

    # Plans and questions -----------------------------------------------------------------

    def save_plan(
        self, task_id: str, spec: PlanSpec, source: str = "planner"
    ) -> tuple[PlanRecord, StreamEvent]:
        """Store a validated plan as the task's current plan (a new version), with its subtasks."""
        with db.atomic():
            version = Plan.select().where(Plan.task == task_id).count() + 1
            plan = Plan.create(
                task=task_id,
                version=version,
                analysis=spec.analysis,
                strategy=spec.strategy,
                notes=spec.notes,
                created_at=time.time(),
                source=source,
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
            stored: payloads.PlanEvent = {
                "type": "plan",
                "version": version,
                "source": source,
                "strategy": spec.strategy,
                "subtasks": [
                    {"id": s.id, "name": s.name, "depends_on": list(s.depends_on)}
                    for s in spec.subtasks
                ],
            }
            event = self._emit(task_id, stored)
        return plan.record(), event

    def plan(self, task_id: str) -> PlanRecord | None:
        """The task's current (latest) plan, if any."""
        latest = Plan.select().where(Plan.task == task_id).order_by(Plan.version.desc()).first()
        return latest.record() if latest is not None else None

    def subtasks(self, task_id: str) -> list[SubtaskRecord]:
        """The subtasks of the task's current plan, in plan order."""
        plan = Plan.select().where(Plan.task == task_id).order_by(Plan.version.desc()).first()
        if plan is None:
            return []
        query = Subtask.select().where(Subtask.plan == plan).order_by(Subtask.position)
        return [row.record() for row in query]

    def set_subtask(
        self, subtask_id: int, state: str, result: str | None = None, reason: str | None = None
    ) -> tuple[SubtaskRecord, StreamEvent]:
        """Record a subtask's new state (and final message or reason), with its event.

        Raises:
            FailedPrecondition: for a move states.SUBTASK_TRANSITIONS does not allow.
        """
        with db.atomic():
            sub = Subtask.get_by_id(subtask_id)
            if state != sub.state and not states.can_transition_subtask(sub.state, state):
                raise FailedPrecondition(
                    f"subtask {sub.key} is {sub.state}; it cannot become {state}"
                )
            sub.state = state
            if result is not None:
                sub.result = result
            if reason is not None:
                sub.reason = reason
            elif state in (states.SUBTASK_PENDING, states.SUBTASK_RUNNING):
                sub.reason = ""  # a reason belongs to the end it explained
            sub.save()
            payload: payloads.SubtaskEvent = {
                "type": "subtask",
                "id": sub.key,
                "name": sub.name,
                "state": state,
            }
            if sub.reason and state != states.SUBTASK_COMPLETED:
                payload["reason"] = sub.reason
            event = self._emit(sub.task_id, payload)
        return sub.record(), event

    def save_questions(self, task_id: str, questions: Sequence[QuestionSpec]) -> StreamEvent:
        """Store the planner's questions as the next round, dropping unanswered earlier ones."""
        with db.atomic():
            Question.delete().where((Question.task == task_id) & (Question.answer == "")).execute()
            number = self.question_rounds(task_id) + 1
            for position, q in enumerate(questions):
                Question.create(
                    task=task_id,
                    key=q.id,
                    position=position,
                    text=q.text,
                    context=q.context,
                    suggestions=json.dumps(list(q.suggestions)),
                    options=json.dumps(list(q.options)),
                    round=number,
                )
            asked: payloads.QuestionsEvent = {
                "type": "questions",
                "round": number,
                "questions": [{"id": q.id, "text": q.text} for q in questions],
            }
            return self._emit(task_id, asked)

    @staticmethod
    def question_rounds(task_id: str) -> int:
        """How many rounds of questions the planner has asked."""
        value = Question.select(pw.fn.MAX(Question.round)).where(Question.task == task_id).scalar()
        return int(value or 0)

    def answer(
        self,
        task_id: str,
        answers: dict[str, str],
        message: Callable[[list[QuestionRecord]], str],
    ) -> tuple[TaskRecord, list[StreamEvent], bool]:
        """Record answers to a task's open questions, all or none.

        Once every question of the round is answered, the task moves to planning in the same
        transaction, with message(the round's questions) as the planner's next message.
        Returns the task, the events, and whether planning goes on.

        Raises:
            FailedPrecondition: when the task is not awaiting answers.
            NotFound: for an id that is no open question.
            InvalidArgument: for a question answered already, or an empty answer.
        """
        with db.atomic():
            task = self._task(task_id)
            if task.state != states.AWAITING_ANSWERS:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a task awaiting answers takes "
                    "answers"
                )
            current = self.question_rounds(task_id)
            rows = {
                q.key: q
                for q in Question.select().where(
                    (Question.task == task_id) & (Question.round == current)
                )
            }
            for key, text in answers.items():
                if key not in rows:
                    open_ = ", ".join(k for k, q in rows.items() if not q.answer) or "none"
                    raise NotFound(f"task {task_id[:8]} has no question '{key}' (open: {open_})")
                if rows[key].answer:
                    raise InvalidArgument(f"question '{key}' is answered already")
                if not text.strip():
                    raise InvalidArgument(f"the answer to question '{key}' is empty")
            now = time.time()
            for key, text in answers.items():
                rows[key].answer = text
                rows[key].answered_at = now
                rows[key].save()
            answered: payloads.AnswersEvent = {"type": "answers", "answered": sorted(answers)}
            emitted = [self._emit(task_id, answered)]
            done = all(q.answer for q in rows.values())
            if done:
                round_ = sorted((q.record() for q in rows.values()), key=lambda q: q.id)
                record, event = self.transition(
                    task_id,
                    states.PLANNING,
                    "answered",
                    planner_message=message(round_),
                )
                emitted.append(event)
                return record, emitted, True
        return task.record(), emitted, False

    def questions(self, task_id: str) -> list[QuestionRecord]:
        """The task's questions in the order they were asked."""
        query = Question.select().where(Question.task == task_id).order_by(Question.id)
        return [row.record() for row in query]

    # Agents and their runs ---------------------------------------------------------------

    def create_agent(
        self,
        task_id: str,
        name: str,
        role: str,
        subtask_id: int | None,
        session_id: str,
        home: str,
    ) -> AgentRecord:
        """Record an agent (one conversation) before its first run."""
        with db.atomic():
            agent = Agent.create(
                task=task_id,
                name=name,
                role=role,
                subtask=subtask_id,
                session_id=session_id,
                home=home,
                started_at=time.time(),
            )
        return agent.record()

    def find_agent(self, task_id: str, name: str) -> AgentRecord | None:
        """The task's agent with this name, if it exists."""
        agent = Agent.get_or_none((Agent.task == task_id) & (Agent.name == name))
        return agent.record(self._run_count(agent.id)) if agent is not None else None

    def agents(self, task_id: str) -> list[AgentRecord]:
        """The task's agents in creation order."""
        runs: Iterable[tuple[int, str]] = (
            AgentRun.select(AgentRun.agent, AgentRun.container)  # type: ignore[assignment]
            .join(Agent)
            .where(Agent.task == task_id)
            .order_by(AgentRun.epoch)
            .tuples()
        )
        counts: dict[int, int] = {}
        latest: dict[int, str] = {}
        for agent_id, container in runs:
            counts[agent_id] = counts.get(agent_id, 0) + 1
            latest[agent_id] = container
        query = Agent.select().where(Agent.task == task_id).order_by(Agent.id)
        return [row.record(counts.get(row.id, 0), latest.get(row.id, "")) for row in query]

    def reassign_agent(
        self, agent_id: int, subtask_id: int, role: str, session_id: str
    ) -> AgentRecord:
        """Give an agent to the subtask of a newer plan version, with a new conversation."""
        with db.atomic():
            agent = Agent.get_by_id(agent_id)
            agent.subtask = subtask_id  # type: ignore[assignment]
            agent.role = role
            agent.session_id = session_id
            agent.save()
        return agent.record(self._run_count(agent_id))

    def set_session(self, agent_id: int, session_id: str) -> AgentRecord:
        """Give an agent a new conversation (a retry asked to start afresh)."""
        with db.atomic():
            agent = Agent.get_by_id(agent_id)
            agent.session_id = session_id
            agent.save()
        return agent.record(self._run_count(agent_id))

    def start_run(
        self,
        agent_id: int,
        epoch: int,
        container: str,
        run_dir: str,
        prompt: str,
        resume: bool,
        takes_message: bool = False,
    ) -> tuple[RunRecord, StreamEvent]:
        """Record an agent's next run before its container is created (intent before effect).

        With takes_message, the run carries the task's pending planner message, which is
        cleared in the same transaction.

        Raises:
            FailedPrecondition: when the agent is running already.
        """
        with db.atomic():
            agent = Agent.get_by_id(agent_id)
            if self._run_count(agent_id) and not states.can_transition_agent(
                agent.state, states.AGENT_STARTING
            ):
                raise FailedPrecondition(f"agent {agent.name} is {agent.state}; it cannot start")
            run = AgentRun.create(
                agent=agent_id,
                epoch=epoch,
                state=states.RUN_STARTING,
                container=container,
                run_dir=run_dir,
                prompt=prompt,
                resume=resume,
                started_at=time.time(),
            )
            agent.state = states.AGENT_STARTING
            agent.save()
            if takes_message:
                Task.update(planner_message="").where(Task.id == agent.task_id).execute()
            event = self._agent_event(agent, run)
        return run.record(agent.task_id, agent.name), event

    def set_run_running(self, run_id: int) -> tuple[RunRecord, StreamEvent]:
        """Record that a run's container started."""
        return self._set_run(run_id, states.RUN_RUNNING, {})

    def end_run(self, run_id: int, state: str, **fields: Any) -> tuple[RunRecord, StreamEvent]:
        """Record how a run ended (exit_code, cost_usd, reason, result); its agent follows."""
        return self._set_run(run_id, state, fields)

    def _set_run(
        self, run_id: int, state: str, fields: dict[str, Any]
    ) -> tuple[RunRecord, StreamEvent]:
        with db.atomic():
            run = AgentRun.get_by_id(run_id)
            agent = Agent.get_by_id(run.agent_id)
            if not states.can_transition_run(run.state, state):
                raise FailedPrecondition(
                    f"run {run.epoch} of agent {agent.name} is {run.state}; "
                    f"it cannot become {state}"
                )
            run.state = state
            for key, value in fields.items():
                setattr(run, key, value)
            if state in states.RUN_ENDED:
                run.ended_at = time.time()
            run.save()
            agent.state = state
            if state in states.RUN_ENDED:
                agent.exit_code = run.exit_code
                agent.reason = run.reason
                if run.result or state == states.RUN_COMPLETED:
                    agent.result = run.result
                agent.ended_at = run.ended_at
                total = (
                    AgentRun.select(pw.fn.SUM(AgentRun.cost_usd))
                    .where(AgentRun.agent == agent.id)
                    .scalar()
                )
                agent.cost_usd = float(total or 0.0)
            agent.save()
            event = self._agent_event(agent, run)
        return run.record(agent.task_id, agent.name), event

    def _agent_event(self, agent: Agent, run: AgentRun) -> StreamEvent:
        payload: payloads.AgentEvent = {
            "type": "agent",
            "agent": agent.name,
            "state": run.state,
            "epoch": run.epoch,
        }
        if run.resume and run.state == states.RUN_STARTING:
            payload["resume"] = True
        if run.exit_code is not None:
            payload["exit_code"] = run.exit_code
        if run.reason:
            payload["reason"] = run.reason
        if run.state in states.RUN_ENDED:
            payload["cost_usd"] = run.cost_usd
        return self._emit(agent.task_id, payload, agent=agent.name)

    def live_run(self, agent_id: int) -> RunRecord | None:
        """The agent's run that is starting or running, if any."""
        return self._latest(agent_id, live=True)

    def latest_run(self, agent_id: int) -> RunRecord | None:
        """The agent's most recent run, if it ever ran."""
        return self._latest(agent_id, live=False)

    def _latest(self, agent_id: int, live: bool) -> RunRecord | None:
        query = AgentRun.select(AgentRun, Agent).join(Agent).where(AgentRun.agent == agent_id)
        if live:
            query = query.where(AgentRun.state.in_(list(states.RUN_LIVE)))
        row = query.order_by(AgentRun.epoch.desc()).first()
        return row.record(row.agent.task_id, row.agent.name) if row is not None else None

    def live_runs(self, task_id: str | None = None) -> list[RunRecord]:
        """Runs that are starting or running (of one task, when given)."""
        query = (
            AgentRun.select(AgentRun, Agent)
            .join(Agent)
            .where(AgentRun.state.in_(list(states.RUN_LIVE)))
        )
        if task_id is not None:
            query = query.where(Agent.task == task_id)
        return [row.record(row.agent.task_id, row.agent.name) for row in query]

    def runs(self, task_id: str) -> list[RunRecord]:
        """Every run of the task's agents, oldest first."""
        query = AgentRun.select(AgentRun, Agent).join(Agent).where(Agent.task == task_id)
        return [
            row.record(row.agent.task_id, row.agent.name) for row in query.order_by(AgentRun.id)
        ]

    @staticmethod
    def _run_count(agent_id: int) -> int:
        return int(AgentRun.select().where(AgentRun.agent == agent_id).count())

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

    # Delivery and repository templates ---------------------------------------------------

    def set_delivery(
        self,
        task_id: str,
        state: str,
        reason: str | None = None,
        commit: str | None = None,
        pr_url: str | None = None,
    ) -> StreamEvent:
        """Record the delivery's state, and the reason, commit and pull request given."""
        with db.atomic():
            task = self._task(task_id)
            task.delivery_state = state
            payload: payloads.DeliveryEvent = {"type": "delivery", "state": state}
            if reason is not None:
                task.delivery_reason = payload["delivery_reason"] = reason
            if commit is not None:
                task.delivered_commit = payload["delivered_commit"] = commit
            if pr_url is not None:
                task.pr_url = payload["pr_url"] = pr_url
            task.updated_at = time.time()
            task.save()
            return self._emit(task_id, payload)

    def delivered(self, task_id: str) -> tuple[TaskRecord, StreamEvent]:
        """Complete a task failed only by its delivery, now that a publication succeeded.

        Raises:
            FailedPrecondition: unless the task failed in delivery with every subtask done.
        """
        with db.atomic():
            task = self._task(task_id)
            subs = self.subtasks(task_id)
            done = all(s.state == states.SUBTASK_COMPLETED for s in subs)
            if task.state != states.FAILED or task.delivery_state != "delivered" or not done:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; it cannot become completed"
                )
            TaskEvent.create(
                task=task_id,
                time=time.time(),
                from_state=task.state,
                to_state=states.COMPLETED,
                reason="published",
            )
            task.state = states.COMPLETED
            task.reason = ""
            task.updated_at = time.time()
            task.save()
            published: payloads.TaskEvent = {
                "type": "task",
                "state": states.COMPLETED,
                "reason": "",
            }
            event = self._emit(task_id, published)
        return task.record(), event

    def add_repo(self, template: RepoTemplateRecord, replace: bool) -> RepoTemplateRecord:
        """Store a repository template.

        Raises:
            FailedPrecondition: when one of that name exists and replace is not set.
        """
        with db.atomic():
            existing = RepoTemplate.get_or_none(RepoTemplate.name == template.name)
            if existing is not None and not replace:
                raise FailedPrecondition(
                    f"repository template {template.name} exists; change it with "
                    f"`klaudio repo edit {template.name}`"
                )
            now = time.time()
            fields = dataclasses.asdict(template)
            fields["reviewers"] = json.dumps(list(template.reviewers))
            if existing is None:
                RepoTemplate.create(**fields, created_at=now, updated_at=now)
            else:
                RepoTemplate.update(**fields, updated_at=now).where(
                    RepoTemplate.name == template.name
                ).execute()
        return self.repo(template.name)

    def repo(self, name: str) -> RepoTemplateRecord:
        """The repository template of that name.

        Raises:
            NotFound: naming the templates there are.
        """
        row = RepoTemplate.get_or_none(RepoTemplate.name == name)
        if row is None:
            known = ", ".join(r.name for r in self.repos()) or "none yet"
            raise NotFound(f"no repository template {name!r} (templates: {known})")
        return row.record()

    def repos(self) -> list[RepoTemplateRecord]:
        """Every repository template, by name."""
        return [row.record() for row in RepoTemplate.select().order_by(RepoTemplate.name)]

    def remove_repo(self, name: str) -> None:
        """Forget a repository template (tasks keep their snapshot of it)."""
        self.repo(name)
        with db.atomic():
            RepoTemplate.delete().where(RepoTemplate.name == name).execute()

    # Checkpoints -------------------------------------------------------------------------

    def add_checkpoint(
        self, checkpoint_id: str, task_id: str, reason: str, size: int, path: str
    ) -> CheckpointRecord:
        """Record a checkpoint whose archive is complete on disk."""
        with db.atomic():
            row = Checkpoint.create(
                id=checkpoint_id,
                task=task_id,
                created_at=time.time(),
                reason=reason,
                size=size,
                path=path,
            )
        return row.record()

    def checkpoints(self, task_id: str | None = None) -> list[CheckpointRecord]:
        """A task's checkpoints (or every task's), newest first."""
        query = Checkpoint.select().order_by(Checkpoint.created_at.desc(), Checkpoint.id)
        if task_id is not None:
            query = query.where(Checkpoint.task == task_id)
        return [row.record() for row in query]

    def checkpoint(self, task_id: str, prefix: str) -> CheckpointRecord:
        """The task's one checkpoint whose id starts with prefix.

        Raises:
            NotFound: when none does; InvalidArgument: when several do, or prefix is empty.
        """
        prefix = prefix.strip()
        if not prefix:
            raise InvalidArgument("checkpoint id is empty")
        rows = list(
            Checkpoint.select()
            .where((Checkpoint.task == task_id) & Checkpoint.id.startswith(prefix))
            .limit(2)
        )
        if not rows:
            raise NotFound(f"task {task_id[:8]} has no checkpoint '{prefix}'")
        if len(rows) > 1:
            raise InvalidArgument(f"checkpoint id prefix '{prefix}' is ambiguous")
        return rows[0].record()

    def restore(
        self,
        task_id: str,
        reason: str,
        subtasks: dict[str, str],
        sessions: dict[str, str],
    ) -> tuple[TaskRecord, StreamEvent]:
        """Put a paused or failed task back as a checkpoint recorded it, paused.

        Subtasks take the states given (those not given stay); agents the sessions given.

        Raises:
            FailedPrecondition: when the task is neither paused nor failed.
        """
        with db.atomic():
            task = self._task(task_id)
            if task.state not in (states.PAUSED, states.FAILED):
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a paused or failed task can be "
                    "restored"
                )
            plan = Plan.select().where(Plan.task == task_id).order_by(Plan.version.desc()).first()
            if plan is not None:
                for sub in Subtask.select().where(Subtask.plan == plan):
                    if sub.key in subtasks and subtasks[sub.key] != sub.state:
                        sub.state = subtasks[sub.key]
                        sub.reason = ""
                        sub.save()
            for agent in Agent.select().where(Agent.task == task_id):
                if agent.name in sessions:
                    agent.session_id = sessions[agent.name]
                    agent.save()
            TaskEvent.create(
                task=task_id,
                time=time.time(),
                from_state=task.state,
                to_state=states.PAUSED,
                reason=reason,
            )
            task.state = states.PAUSED
            task.reason = reason
            task.control = ""
            task.resume_at = None
            task.updated_at = time.time()
            task.save()
            paused: payloads.TaskEvent = {"type": "task", "state": states.PAUSED, "reason": reason}
            event = self._emit(task_id, paused)
        return task.record(), event

    def delete_checkpoints(self, ids: Iterable[str]) -> None:
        """Forget checkpoints (their archives are removed by the caller)."""
        with db.atomic():
            Checkpoint.delete().where(Checkpoint.id.in_(list(ids))).execute()

    # Stream ------------------------------------------------------------------------------

    def append_output(
        self, run_id: int, lines: Sequence[str], new_offset: int
    ) -> list[StreamEvent]:
        """Persist a run's new output lines and its read offset in one transaction."""
        with db.atomic():
            run = AgentRun.get_by_id(run_id)
            agent = Agent.get_by_id(run.agent_id)
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
            AgentRun.update(output_offset=new_offset).where(AgentRun.id == run_id).execute()
        return events

    def emit(self, task_id: str, payload: payloads.Lifecycle, agent: str = "") -> StreamEvent:
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

    def _emit(self, task_id: str, payload: payloads.Lifecycle, agent: str = "") -> StreamEvent:
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


# How a refused control request reads: "task abc is completed; it cannot be stopped".
_DONE = {"stop": "stopped", "cancel": "cancelled"}
