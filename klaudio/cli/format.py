"""Tasks as text tables and as JSON for scripts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from klaudio.cli.textsafe import safe

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
# A subtask's reason is shown under it in these states (a retried one keeps an old reason).
SUBTASK_STATES_WITH_REASON = frozenset({"failed", "stopped", "cancelled"})


def state(task: Task) -> str:
    """The task's state name."""
    return STATE_NAMES.get(task.state, str(task.state))


# Who wrote a plan version, as Plan.source says it.
PLAN_SOURCES = {"planner": "by the planner", "edit": "edited"}
CONTROL_SHOWN = {"stop": "stopping…", "cancel": "cancelling…"}
RESUMES = "resumes by itself at"


def _time(stamp: Any) -> str | None:
    return stamp.ToJsonString() if stamp.seconds or stamp.nanos else None


def local_time(seconds: float) -> str:
    """A UNIX time as local date and time, e.g. '2026-12-01 21:30:00 CET'."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


def size(count: int) -> str:
    """A byte count for people: '512 B', '251.5 KiB', '1.0 GiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def resumes(reason: str, resume_at: float | None) -> str:
    """'resumes by itself at <local time>' for a task the daemon will resume; else ''.

    Empty too when the reason already says so (the daemon's usage-limit reason does), so the
    time is never shown twice.
    """
    if resume_at is None or RESUMES in reason:
        return ""
    return f"{RESUMES} {local_time(resume_at)}"


def resume_at(task: Task) -> float | None:
    """When the daemon resumes a paused task by itself, as a UNIX time; None if it will not."""
    if not task.HasField("resume_at"):
        return None
    return task.resume_at.seconds + task.resume_at.nanos / 1e9


def outcome(task: Task) -> str:
    """The last line of `task wait` and `run`: the state, why, and what happens next.

    For example 'task 3f2a9c1e paused: stopped by user; resume it with `klaudio task resume
    3f2a9c1e`'.
    """
    short = task.id[:8]
    line = f"task {short} {state(task)}" + (f": {task.reason}" if task.reason else "")
    if state(task) == "awaiting_answers":
        return f"{line}; see the questions with `klaudio task questions {short}`"
    if state(task) != "paused":
        return line
    when = resume_at(task)
    if when is None:
        return f"{line}; resume it with `klaudio task resume {short}`"
    later = resumes(task.reason, when)
    return f"{line}; {later}" if later else line


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
        "resume_at": _time(task.resume_at),
        "control": task.control,
    }


def task_dict(task: Task) -> dict[str, Any]:
    """A whole task (as `task show -o json` prints it) with stable keys."""
    data = summary_dict(task)
    data["prompt"] = task.prompt
    data["settings"] = settings_dict(task) if task.HasField("settings") else None
    data["approved_plan_version"] = task.approved_plan_version or None
    if task.HasField("plan"):
        data["plan"] = {
            "version": task.plan.version,
            "source": task.plan.source,
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
                    "reason": s.reason,
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
            "runs": a.runs,
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
            "round": q.round,
        }
        for q in task.questions
    ]
    data["branch"] = task.branch
    data["base_branch"] = task.base_branch
    data["base_commit"] = task.base_commit
    data["inputs"] = list(task.inputs)
    data["delivery"] = delivery_dict(task) if task.HasField("delivery") else None
    return data


def delivery_dict(task: Task) -> dict[str, Any]:
    """How the task delivers its work and how that went, as `task show -o json` prints it."""
    d = task.delivery
    return {
        "template": d.template,
        "forge": d.forge,
        "commit": d.commit,
        "push": d.push,
        "pr": d.pr,
        "pr_target": d.pr_target,
        "reviewers": list(d.reviewers),
        "state": d.state,
        "reason": d.reason,
        "commit_id": d.commit_id,
        "pr_url": d.pr_url,
    }


def delivery_said(task: Task, pushed: bool | None = None) -> str:
    """The delivery in words, after 'task 3f2a9c1e': 'delivered: commit 1a2b3c4d5e6f on ...'.

    pushed says whether the branch was pushed (default: whether the task delivers a push).
    """
    d = task.delivery
    if d.state == "delivered":
        said = f"delivered: commit {_one(d.commit_id[:12])}"
        said += f" on {_one(task.branch)}" if task.branch else ""
        said += ", pushed" if (d.push or d.pr if pushed is None else pushed) else ""
        return said + (f"; pull request {_one(d.pr_url)}" if d.pr_url else "")
    if d.state == "failed":
        return f"delivery failed: {_one(d.reason)}"
    if d.state == "delivering":
        return "is delivering"
    return "has not delivered yet"


def delivery_steps(task: Task) -> str:
    """'commit, push, pull request to main': what the task was created to deliver."""
    d = task.delivery
    steps = [word for on, word in ((d.commit, "commit"), (d.push, "push")) if on]
    if d.pr:
        steps.append(
            f"pull request to {_one(d.pr_target or task.base_branch) or 'the base branch'}"
        )
    return ", ".join(steps)


def git_lines(task: Task) -> list[str]:
    """The 'git:' section of `task show`: branches, base commit and the delivery."""
    has_delivery = task.HasField("delivery")
    if not (task.branch or task.base_commit or has_delivery):
        return []
    lines = ["git:"]
    if task.branch:
        lines.append(f"  branch:    {_one(task.branch)}")
    if task.base_commit:
        base = f"{_one(task.base_branch) or '(detached)'}@{_one(task.base_commit[:12])}"
        lines.append(f"  base:      {base}")
    if not has_delivery:
        lines.append("  delivery:  none (the work stays in the workspace)")
        return lines
    d = task.delivery
    steps = delivery_steps(task)
    template = f"template {_one(d.template)}" if d.template else ""
    about = "; ".join(part for part in (steps, template) if part)
    shown = {"": "not yet", "delivering": "delivering…"}.get(d.state, _one(d.state))
    lines.append(f"  delivery:  {shown}" + (f" ({about})" if about else ""))
    if d.commit_id:
        lines.append(f"  commit:    {_one(d.commit_id[:12])}")
    if d.pr_url:
        lines.append(f"  pr:        {_one(d.pr_url)}")
    if d.state == "failed" and d.reason:
        lines.append(f"  reason:    {_one(d.reason)}")
    return lines


def settings_dict(task: Task) -> dict[str, Any]:
    """The settings a task runs with, recorded when it was created."""
    s = task.settings
    return {
        "team": s.team,
        "model": s.model,
        "max_turns": s.max_turns,
        "image": s.image,
        "max_agents": s.max_agents,
        "memory": s.memory,
        "cpus": s.cpus,
        "pids_limit": s.pids_limit,
        "max_question_rounds": s.max_question_rounds,
        "network": s.network,
    }


def plan_version(task: Task) -> str:
    """'v2 (edited); v1 was approved': which plan version the task has and which was approved."""
    plan = task.plan
    source = PLAN_SOURCES.get(plan.source, _one(plan.source))
    version = f"v{plan.version}" if plan.version else "current"
    line = version + (f" ({source})" if source else "")
    approved = task.approved_plan_version
    if approved and approved == plan.version:
        return f"{line}, approved"
    if approved:
        return f"{line}; v{approved} was approved"
    return f"{line}, not approved yet" if state(task) == "planned" else line


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
    rows += [
        (_one(t.id[:8]), state(t), age(t, now), f"${t.cost_usd:.4f}", _one(t.name)[:60])
        for t in tasks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
    ]


def details(task: Task) -> list[str]:
    """`task show` as text lines, every piece of task text made safe for the terminal."""
    notes = [_one(task.reason), resumes(task.reason, resume_at(task))]
    notes.append(CONTROL_SHOWN.get(task.control, _one(task.control)))
    said = "; ".join(n for n in notes if n)
    reason = f" ({said})" if said else ""
    lines = [
        f"id:         {_one(task.id)}",
        f"name:       {_one(task.name)}",
        f"state:      {state(task)}{reason}",
        f"team:       {_one(task.settings.team) or '(none)'}",
        f"repo:       {_one(task.repo) or '(empty workspace)'}",
        f"workspace:  {_one(task.workspace)}",
        *(
            [f"inputs:     {', '.join(_one(i) for i in task.inputs)} (in input/)"]
            if task.inputs
            else []
        ),
        f"cost:       ${task.cost_usd:.4f}",
        f"created:    {_time(task.created_at)}",
        *git_lines(task),
        "prompt:",
        *("  " + _one(line) for line in _split(task.prompt)),
    ]
    if task.HasField("plan"):
        plan = task.plan
        if plan.version:
            lines.append(f"plan:       {plan_version(task)}")
        lines.append(f"plan ({_one(plan.strategy)}): {_one(plan.analysis)}".rstrip(": "))
        ids = [_one(s.id) for s in plan.subtasks]
        width = max((len(i) for i in ids), default=0)
        for ident, s in zip(ids, plan.subtasks, strict=True):
            after = f"  (after {', '.join(_one(d) for d in s.depends_on)})" if s.depends_on else ""
            lines.append(f"  {ident.ljust(width)}  {_one(s.state):<9}  {_one(s.name)}{after}")
            if s.reason and s.state in SUBTASK_STATES_WITH_REASON:
                lines.append(f"  {' ' * width}  {'':<9}  {_one(s.reason)}")
    if task.questions:
        lines.append("questions:")
        lines += [_question(q) for q in task.questions]
    if task.agents:
        lines.append("agents:")
        names = [_one(a.name) for a in task.agents]
        width = max(len(n) for n in names)
        for name, a in zip(names, task.agents, strict=True):
            code = "" if a.exit_code < 0 else f"exit {a.exit_code}"
            runs = f"  {a.runs} runs" if a.runs > 1 else ""
            why = f"  {_one(a.reason)}" if a.reason else ""
            cost = f"${a.cost_usd:.4f}"
            lines.append(f"  {name.ljust(width)}  {_one(a.state):<9}  {code:<7}  {cost}{runs}{why}")
    return lines


def _question(q: Any) -> str:
    options = f" (options: {', '.join(_one(o) for o in q.options)})" if q.options else ""
    answer = f" -> {_one(q.answer)}" if q.answer else ""
    return f"  {_one(q.id)}: {_one(q.text)}{options}{answer}"


def _one(text: str) -> str:
    """Task text as one safe line: control characters and newlines shown escaped."""
    return safe(text, one_line=True)


def _split(text: str) -> list[str]:
    """Lines split at newlines only (CRLF counts as one), so other breaks show escaped."""
    return text.replace("\r\n", "\n").removesuffix("\n").split("\n") if text else []
