"""Store rows -> protobuf messages."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from klaudio.rpc.v1 import stream_pb2, tasks_pb2
from klaudiod.stream import Event


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


def task(row: Any, cost: float = 0.0, detail: dict[str, Any] | None = None) -> tasks_pb2.Task:
    """A Task message; detail (plan, subtasks, agents, questions) fills the nested parts.

    Without detail it is a summary, as lists carry: no prompt (prompts can be long) either.
    """
    msg = tasks_pb2.Task(
        id=row.id,
        name=row.name,
        prompt=row.prompt if detail is not None else "",
        state=state(row.state),
        reason=row.reason,
        repo=row.repo,
        workspace=row.workspace,
        auto_approve=row.auto_approve,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        cost_usd=cost,
    )
    if detail:
        if detail.get("plan") is not None:
            msg.plan.CopyFrom(_plan(detail["plan"], detail.get("subtasks", [])))
        keys = {s.id: s.key for s in detail.get("subtasks", [])}
        msg.agents.extend(_agent(a, keys) for a in detail.get("agents", []))
        msg.questions.extend(_question(q) for q in detail.get("questions", []))
    return msg


def _plan(row: Any, subtasks: list[Any]) -> tasks_pb2.Plan:
    return tasks_pb2.Plan(
        analysis=row.analysis,
        strategy=row.strategy,
        notes=row.notes,
        subtasks=[
            tasks_pb2.Subtask(
                id=s.key,
                name=s.name,
                description=s.description,
                prompt=s.prompt,
                depends_on=json.loads(s.depends_on),
                files_involved=json.loads(s.files_involved),
                complexity=s.complexity,
                agent_role=s.agent_role,
                state=s.state,
                result=s.result,
            )
            for s in subtasks
        ],
    )


def _agent(row: Any, keys: dict[int, str]) -> tasks_pb2.Agent:
    return tasks_pb2.Agent(
        name=row.name,
        role=row.role,
        subtask_id=keys.get(row.subtask_id, ""),
        state=row.state,
        container=row.container,
        session_id=row.session_id,
        exit_code=-1 if row.exit_code is None else row.exit_code,
        cost_usd=row.cost_usd,
        reason=row.reason,
        started_at=timestamp(row.started_at),
        ended_at=timestamp(row.ended_at),
    )


def _question(row: Any) -> tasks_pb2.Question:
    return tasks_pb2.Question(
        id=row.key,
        text=row.text,
        context=row.context,
        suggestions=json.loads(row.suggestions),
        options=json.loads(row.options),
        answer=row.answer,
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
