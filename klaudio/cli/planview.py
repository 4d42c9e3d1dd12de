"""A task's plan for people (grouped by dependency level) and in the shape a person edits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from klaudio.cli.format import plan_version
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.rpc.v1.tasks_pb2 import Plan, Task

# The keys of a plan and of each subtask a person edits (and SetPlan takes), in order.
PLAN_FIELDS = ("analysis", "strategy", "notes", "subtasks")
SUBTASK_FIELDS = (
    "id",
    "name",
    "description",
    "prompt",
    "depends_on",
    "files_involved",
    "complexity",
    "agent_role",
)


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as a person edits it: PLAN_FIELDS, each subtask's SUBTASK_FIELDS, plain types.

    States, results and the version are not part of it: `task plan -o yaml` and `--set` use
    the same shape, so one's output is the other's input.
    """
    return {
        "analysis": plan.analysis,
        "strategy": plan.strategy,
        "notes": plan.notes,
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
            }
            for s in plan.subtasks
        ],
    }


def to_yaml(data: Any) -> str:
    """Data as YAML for a person: key order kept, text with newlines as `|` blocks, no folding.

    yaml.safe_load() of the result gives data back exactly (control characters are escaped in
    quoted scalars).
    """
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    dumped: str = yaml.dump(
        data,
        Dumper=Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=None,
        width=1 << 20,
    )
    return dumped


@dataclass(frozen=True)
class Level:
    """Subtasks that may run at the same time: positions in the plan, in plan order.

    Attributes:
        positions: the subtasks' positions in the plan.
        last: every subtask of the level has a run-last role (it waits for all the others).
        stuck: the level holds what could not be ordered (a cycle or a missing dependency;
            the daemon refuses such plans, so only a damaged plan has one).
    """

    positions: tuple[int, ...]
    last: bool = False
    stuck: bool = False


def levels(
    subtasks: Sequence[tuple[str, Sequence[str], str]], run_last: Collection[str] = ()
) -> list[Level]:
    """Subtasks grouped by dependency level: what may run at the same time.

    Level 0 holds the subtasks without dependencies, level n those whose dependencies are all in
    earlier levels; each level keeps plan order. A subtask whose role is in run_last waits for
    every subtask of the other roles, as the daemon schedules it.

    Args:
        subtasks: (id, depends_on, agent_role) of each subtask, in plan order.
        run_last: the team's run-last roles.
    """
    ids = [sid for sid, _, _ in subtasks]
    lasts = {i for i, (_, _, role) in enumerate(subtasks) if role in run_last}
    if len(lasts) == len(subtasks):
        lasts = set()  # nothing for them to wait for
    others = {ids[i] for i in range(len(ids)) if i not in lasts}
    needs = [
        {d for d in deps if d in ids and d != sid} | (others if i in lasts else set())
        for i, (sid, deps, _) in enumerate(subtasks)
    ]
    done: set[str] = set()
    remaining = list(range(len(subtasks)))
    found: list[Level] = []
    while remaining:
        ready = [i for i in remaining if needs[i] <= done]
        if not ready:
            found.append(Level(tuple(remaining), stuck=True))
            break
        last = bool(lasts) and all(i in lasts for i in ready)
        found.append(Level(tuple(ready), last=last))
        done |= {ids[i] for i in ready}
        remaining = [i for i in remaining if i not in ready]
    return found


def level_title(number: int, level: Level, max_agents: int = 0) -> str:
    """'Level 1 (runs first, 2 in parallel)', 'Level 3 (runs last, after every other subtask)'."""
    if level.stuck:
        return f"Level {number} (cannot be ordered: a dependency cycle or a missing subtask)"
    said = []
    if number == 1:
        said.append("runs first")
    if level.last:
        said.append("runs last, after every other subtask")
    count = len(level.positions)
    if count > 1:
        if 0 < max_agents < count:
            said.append(f"{count} subtasks, {max_agents} at a time")
        else:
            said.append(f"{count} in parallel")
    return f"Level {number}" + (f" ({', '.join(said)})" if said else "")


def heading(task: Task) -> str:
    """'task 3f2a9c1e: plan v2 (edited); v1 was approved'."""
    return f"task {task.id[:8]}: plan {plan_version(task)}"


def plan_lines(task: Task, run_last: Collection[str] = ()) -> list[str]:
    """`task plan ID` as text lines, every piece of plan text made safe for the terminal.

    Args:
        task: a task with a plan.
        run_last: the run-last roles of the task's team (their subtasks wait for all others).
    """
    plan = task.plan
    lines = [heading(task)]
    about = [f"team {_one(task.settings.team)}"] if task.settings.team else []
    about.append(f"strategy {_one(plan.strategy)}")
    lines.append(", ".join(about))
    for label, text in (("analysis", plan.analysis), ("notes", plan.notes)):
        if text.strip():
            lines.append(f"{label}:")
            lines += ["  " + _one(line) for line in _split(text)]
    subtasks = list(plan.subtasks)
    width = max((len(_one(s.id)) for s in subtasks), default=0)
    grouped = levels([(s.id, list(s.depends_on), s.agent_role) for s in subtasks], run_last)
    for number, level in enumerate(grouped, 1):
        lines += ["", level_title(number, level, task.settings.max_agents)]
        for position in level.positions:
            lines += _subtask(subtasks[position], width)
    return lines


def _subtask(sub: Any, width: int) -> list[str]:
    """A subtask's lines: id and name with role and complexity, then dependencies and files."""
    about = [
        f"{label} {_one(value)}"
        for label, value in (("role", sub.agent_role), ("complexity", sub.complexity))
        if value
    ]
    head = f"  {_one(sub.id).ljust(width)}  {_one(sub.name)}"
    lines = [head + (f"  ({', '.join(about)})" if about else "")]
    pad = " " * (width + 4)
    if sub.depends_on:
        lines.append(f"{pad}after: {', '.join(_one(d) for d in sub.depends_on)}")
    if sub.files_involved:
        lines.append(f"{pad}files: {', '.join(_one(f) for f in sub.files_involved)}")
    if sub.state and sub.state != "pending":
        lines.append(f"{pad}state: {_one(sub.state)}")
    return lines


def _one(text: str) -> str:
    return safe(text, one_line=True)


def _split(text: str) -> list[str]:
    return text.replace("\r\n", "\n").strip("\n").split("\n")
