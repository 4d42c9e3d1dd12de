"""Store records -> protobuf messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from klaudio.rpc.v1 import checkpoints_pb2, stream_pb2, tasks_pb2, teams_pb2
from klaudiod.records import (
    AgentRecord,
    CheckpointRecord,
    Detail,
    PlanRecord,
    QuestionRecord,
    SubtaskRecord,
    TaskRecord,
)
from klaudiod.stream import Event
from klaudiod.teams import Team, parse_team, team_to_yaml


def timestamp(value: float | None) -> Timestamp | None:
    """A protobuf Timestamp for a UNIX time (None stays None)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(value * 1e9))
    return stamp


def state(value: str) -> tasks_pb2.TaskState.ValueType:
    """The proto enum for a task state name."""
    return tasks_pb2.TaskState.Value("TASK_STATE_" + value.upper())


def state_name(value: int) -> str:
    """The task state name for a proto enum value."""
    return tasks_pb2.TaskState.Name(value).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]


def task(record: TaskRecord, cost: float = 0.0) -> tasks_pb2.Task:
    """A task summary, as lists carry: no prompt (prompts can be long), plan or agents."""
    msg = tasks_pb2.Task(
        id=record.id,
        name=record.name,
        state=state(record.state),
        reason=record.reason,
        repo=record.repo,
        workspace=record.workspace,
        auto_approve=record.auto_approve,
        created_at=timestamp(record.created_at),
        updated_at=timestamp(record.updated_at),
        cost_usd=cost,
        resume_at=timestamp(record.resume_at),
        control=record.control,
        approved_plan_version=record.approved_version,
        branch=record.branch,
        base_branch=record.base_branch,
        base_commit=record.base_commit,
        inputs=record.inputs,
    )
    if record.delivery or record.delivery_state:
        msg.delivery.CopyFrom(_delivery(record))
    if record.settings:
        msg.settings.CopyFrom(_settings(record))
    return msg


def _delivery(record: TaskRecord) -> tasks_pb2.Delivery:
    chosen = record.delivery
    return tasks_pb2.Delivery(
        template=str(chosen.get("template", "")),
        forge=str(chosen.get("forge", "")),
        commit=bool(chosen.get("commit", False)),
        push=bool(chosen.get("push", False)),
        pr=bool(chosen.get("pr", False)),
        pr_target=str(chosen.get("pr_target", "")),
        reviewers=[str(r) for r in chosen.get("reviewers", [])],
        state=record.delivery_state,
        reason=record.delivery_reason,
        commit_id=record.delivered_commit,
        pr_url=record.pr_url,
    )


def _settings(record: TaskRecord) -> tasks_pb2.TaskSettings:
    saved = record.settings
    return tasks_pb2.TaskSettings(
        team=str(saved.get("team", record.team)),
        model=str(saved.get("model", "")),
        max_turns=int(saved.get("max_turns", 0)),
        image=str(saved.get("image", "")),
        max_agents=int(saved.get("max_agents", 0)),
        memory=str(saved.get("memory", "")),
        cpus=float(saved.get("cpus", 0.0)),
        pids_limit=int(saved.get("pids_limit", 0)),
        max_question_rounds=int(saved.get("max_question_rounds", 0)),
        network=str(saved.get("network", "")),
        team_template=_snapshot_team(record),
    )


def _snapshot_team(record: TaskRecord) -> teams_pb2.Team | None:
    text = record.settings.get("team_yaml")
    if not text:
        return None
    return team(parse_team(str(text), f"task {record.id[:8]}'s team"), "snapshot", str(text))


def detail(value: Detail) -> tasks_pb2.Task:
    """A whole task: prompt, plan, agents and questions too."""
    msg = task(value.task, value.cost)
    msg.prompt = value.task.prompt
    if value.plan is not None:
        msg.plan.CopyFrom(_plan(value.plan, value.subtasks))
    keys = {s.id: s.key for s in value.subtasks}
    msg.agents.extend(_agent(a, keys) for a in value.agents)
    msg.questions.extend(_question(q) for q in value.questions)
    return msg


def _plan(record: PlanRecord, subtasks: list[SubtaskRecord]) -> tasks_pb2.Plan:
    return tasks_pb2.Plan(
        analysis=record.analysis,
        strategy=record.strategy,
        notes=record.notes,
        version=record.version,
        source=record.source,
        subtasks=[
            tasks_pb2.Subtask(
                id=s.key,
                name=s.name,
                description=s.description,
                prompt=s.prompt,
                depends_on=s.depends_on,
                files_involved=s.files_involved,
                complexity=s.complexity,
                agent_role=s.agent_role,
                state=s.state,
                result=s.result,
                reason=s.reason,
            )
            for s in subtasks
        ],
    )


def _agent(record: AgentRecord, keys: dict[int, str]) -> tasks_pb2.Agent:
    return tasks_pb2.Agent(
        name=record.name,
        role=record.role,
        subtask_id=keys.get(record.subtask_id, "") if record.subtask_id is not None else "",
        state=record.state,
        container=record.container,
        session_id=record.session_id,
        exit_code=-1 if record.exit_code is None else record.exit_code,
        cost_usd=record.cost_usd,
        reason=record.reason,
        started_at=timestamp(record.started_at),
        ended_at=timestamp(record.ended_at),
        runs=record.runs,
    )


def _question(record: QuestionRecord) -> tasks_pb2.Question:
    return tasks_pb2.Question(
        id=record.key,
        text=record.text,
        context=record.context,
        suggestions=record.suggestions,
        options=record.options,
        answer=record.answer,
        round=record.round,
    )


def checkpoint(record: CheckpointRecord) -> checkpoints_pb2.Checkpoint:
    """A Checkpoint message."""
    return checkpoints_pb2.Checkpoint(
        id=record.id,
        task_id=record.task_id,
        created_at=timestamp(record.created_at),
        reason=record.reason,
        size_bytes=record.size,
    )


def event(value: Event) -> stream_pb2.Event:
    """An Event message."""
    return stream_pb2.Event(
        seq=value.seq,
        task_id=value.task_id,
        agent=value.agent,
        kind=value.kind,  # type: ignore[arg-type]
        time=timestamp(value.time),
        json=value.json,
    )


def team(team: Team, source: str, text: str = "") -> teams_pb2.Team:
    """A Team message (its YAML text given, or made)."""
    return teams_pb2.Team(
        name=team.name,
        description=team.description,
        mode=team.mode,
        max_agents=team.max_agents,
        review=team.review,
        roles=[
            teams_pb2.Role(
                name=r.name,
                description=r.description,
                prompt_hint=r.prompt_hint,
                max_instances=r.max_instances,
                run_last=r.run_last,
            )
            for r in team.roles
        ],
        source=source,
        yaml=text or team_to_yaml(team),
    )
