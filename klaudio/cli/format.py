"""Tasks as text tables and as JSON for scripts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from klaudio.rpc.v1.tasks_pb2 import Task

STATE_PREFIX = "TASK_STATE_"
STATE_NAMES = {
    0: "unspecified",
    1: "created",
    2: "planning",
    3: "awaiting_answers",
    4: "planned",
    5: "approved",
    6: "running",
    7: "completed",
    8: "failed",
    9: "paused",
    10: "cancelled",
}


def state(task: Task) -> str:
    """The task's state name."""
    return STATE_NAMES.get(task.state, str(task.state))


def _time(stamp: Any) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def summary_dict(task: Task) -> dict[str, Any]:
    """A task's summary (as `task list -o json` prints it) with stable keys."""
    return {
        "id": task.id,
        "name": task.name,
        "state": state(task),
        "reason": task.reason,
        "repo": task.repo,
        "workspace": task.workspace,
        "auto_approve": task.auto_approve,
        "cost_usd": round(task.cost_usd, 6),
        "created_at": _time(task.created_at),
        "updated_at": _time(task.updated_at),
    }


def task_dict(task: Task) -> dict[str, Any]:
    """A whole task (as `task show -o json` prints it) with stable keys."""
    data = summary_dict(task)
    data["prompt"] = task.prompt
    if task.HasField("plan"):
        data["plan"] = {
            "analysis": task.plan.analysis,
            "strategy": task.plan.strategy,
            "notes": task.plan.notes,
            "subtasks": [
                {
                    "id": s.id,
                    "name": s.name,
                    "description": s.description,
                    "prompt": s.prompt,
                    "depends_on": list(s.depends_on),
                    "files_involved": list(s.files_involved),
                    "complexity": s.complexity,
                    "agent_role": s.agent_role,
                    "state": s.state,
                    "result": s.result,
                }
                for s in task.plan.subtasks
            ],
        }
    else:
        data["plan"] = None
    data["agents"] = [
        {
            "name": a.name,
            "role": a.role,
            "subtask": a.subtask_id or None,
            "state": a.state,
            "container": a.container,
            "session_id": a.session_id,
            "exit_code": None if a.exit_code < 0 else a.exit_code,
            "cost_usd": round(a.cost_usd, 6),
            "reason": a.reason,
        }
        for a in task.agents
    ]
    data["questions"] = [
        {
            "id": q.id,
            "text": q.text,
            "context": q.context,
            "suggestions": list(q.suggestions),
            "options": list(q.options),
            "answer": q.answer,
        }
        for q in task.questions
    ]
    return data


def age(task: Task, now: float | None = None) -> str:
    """How long ago the task was created, in a short human form."""
    seconds = max(0, int((now or time.time()) - task.created_at.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(tasks: list[Task]) -> list[str]:
    """`task list` as aligned text lines."""
    rows = [("ID", "STATE", "AGE", "COST", "NAME")]
    now = time.time()
    rows += [(t.id[:8], state(t), age(t, now), f"${t.cost_usd:.4f}", t.name[:60]) for t in tasks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    ]


def details(task: Task) -> list[str]:
    """`task show` as text lines."""
    lines = [
        f"id:         {task.id}",
        f"name:       {task.name}",
        f"state:      {state(task)}" + (f" ({task.reason})" if task.reason else ""),
        f"repo:       {task.repo or '(empty workspace)'}",
        f"workspace:  {task.workspace}",
        f"cost:       ${task.cost_usd:.4f}",
        f"created:    {_time(task.created_at)}",
        "prompt:",
        *("  " + line for line in task.prompt.splitlines()),
    ]
    if task.HasField("plan"):
        lines.append(f"plan ({task.plan.strategy}): {task.plan.analysis}".rstrip(": "))
        width = max((len(s.id) for s in task.plan.subtasks), default=0)
        for s in task.plan.subtasks:
            after = f"  (after {', '.join(s.depends_on)})" if s.depends_on else ""
            lines.append(f"  {s.id.ljust(width)}  {s.state:<9}  {s.name}{after}")
    if task.questions:
        lines.append("questions:")
        lines += [f"  {q.id}: {q.text}" for q in task.questions]
    if task.agents:
        lines.append("agents:")
        width = max(len(a.name) for a in task.agents)
        for a in task.agents:
            code = "" if a.exit_code < 0 else f"exit {a.exit_code}"
            reason = f"  {a.reason}" if a.reason else ""
            lines.append(
                f"  {a.name.ljust(width)}  {a.state:<9}  {code:<7}  ${a.cost_usd:.4f}{reason}"
            )
    return lines
