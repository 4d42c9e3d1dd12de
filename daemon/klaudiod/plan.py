"""The planner's output: its JSON schema, parsing, and plan validation (pure logic)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from klaudio.errors import InvalidArgument

STRATEGIES = ("dag", "collaborative")
COMPLEXITIES = ("low", "medium", "high")
MAX_SUBTASKS = 50
PLANNER_AGENT = "planner"

_STR = {"type": "string"}
_STRS = {"type": "array", "items": {"type": "string"}}

# One flat object: the Messages API refuses oneOf/anyOf at the top of a tool's input schema.
# Only "kind" is required, so any conforming model can plan; the rest is checked by parse().
PLANNER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["plan", "questions"]},
        "analysis": _STR,
        "strategy": {"type": "string", "enum": list(STRATEGIES)},
        "subtasks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": _STR,
                    "name": _STR,
                    "description": _STR,
                    "prompt": _STR,
                    "depends_on": _STRS,
                    "files_involved": _STRS,
                    "complexity": {"type": "string", "enum": list(COMPLEXITIES)},
                    "agent_role": _STR,
                },
                "required": ["id", "name", "prompt"],
            },
        },
        "notes": _STR,
        "questions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": _STR,
                    "text": _STR,
                    "context": _STR,
                    "suggestions": _STRS,
                    "options": _STRS,
                },
                "required": ["id", "text"],
            },
        },
    },
    "required": ["kind"],
}


@dataclass(frozen=True)
class SubtaskSpec:
    """One subtask of a plan, as the planner wrote it."""

    id: str
    name: str
    prompt: str
    description: str = ""
    depends_on: tuple[str, ...] = ()
    files_involved: tuple[str, ...] = ()
    complexity: str = "medium"
    agent_role: str = "developer"


@dataclass(frozen=True)
class Plan:
    """A validated plan."""

    analysis: str
    strategy: str
    subtasks: tuple[SubtaskSpec, ...]
    notes: str = ""


@dataclass(frozen=True)
class QuestionSpec:
    """A clarifying question from the planner."""

    id: str
    text: str
    context: str = ""
    suggestions: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Questions:
    """The planner's questions instead of a plan."""

    questions: tuple[QuestionSpec, ...] = field(default_factory=tuple)


def parse(output: Any, roles: frozenset[str] | None = None) -> Plan | Questions:
    """Turn the planner's structured output into a validated Plan or Questions.

    Raises:
        InvalidArgument: naming what is wrong with the output.
    """
    if not isinstance(output, dict):
        raise InvalidArgument("planner output is not a JSON object")
    kind = output.get("kind")
    if kind == "questions":
        items = _list(output, "questions", dict)
        if not items:
            raise InvalidArgument("planner asked no questions")
        questions = tuple(
            QuestionSpec(
                id=_str(q, "id", required=True),
                text=_str(q, "text", required=True),
                context=_str(q, "context"),
                suggestions=tuple(_list(q, "suggestions", str)),
                options=tuple(_list(q, "options", str)),
            )
            for q in items
        )
        _unique([q.id for q in questions], "question")
        return Questions(questions)
    if kind != "plan":
        raise InvalidArgument(f"planner output has kind {kind!r}; expected 'plan' or 'questions'")
    strategy = _str(output, "strategy") or "dag"
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"plan strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    subtasks = tuple(_subtask(item) for item in _list(output, "subtasks", dict))
    plan = Plan(
        analysis=_str(output, "analysis"),
        strategy=strategy,
        subtasks=subtasks,
        notes=_str(output, "notes"),
    )
    validate(plan, roles)
    return plan


def validate(plan: Plan, roles: frozenset[str] | None = None) -> None:
    """Check ids are unique, dependencies known, the graph acyclic, roles known and limits kept.

    Raises:
        InvalidArgument: naming the first problem found.
    """
    if not plan.subtasks:
        raise InvalidArgument("plan has no subtasks")
    if len(plan.subtasks) > MAX_SUBTASKS:
        raise InvalidArgument(
            f"plan has {len(plan.subtasks)} subtasks; the limit is {MAX_SUBTASKS}"
        )
    ids = [s.id for s in plan.subtasks]
    _unique(ids, "subtask")
    names: dict[str, str] = {}
    for sid in ids:
        other = names.setdefault(agent_name(sid), sid)
        if other != sid:
            raise InvalidArgument(f"subtask ids {other!r} and {sid!r} are too alike; rename one")
    known = set(ids)
    for sub in plan.subtasks:
        if not sub.prompt.strip():
            raise InvalidArgument(f"subtask {sub.id!r} has an empty prompt")
        for dep in sub.depends_on:
            if dep not in known:
                raise InvalidArgument(f"subtask {sub.id!r} depends on unknown subtask {dep!r}")
            if dep == sub.id:
                raise InvalidArgument(f"subtask {sub.id!r} depends on itself")
        if sub.complexity not in COMPLEXITIES:
            raise InvalidArgument(f"subtask {sub.id!r} has unknown complexity {sub.complexity!r}")
        if roles is not None and sub.agent_role not in roles:
            raise InvalidArgument(f"subtask {sub.id!r} has unknown agent_role {sub.agent_role!r}")
    order(plan.subtasks)


def agent_name(subtask_id: str) -> str:
    """The agent (and container name part) for a subtask: its id made safe for Docker."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", subtask_id).strip("-.")[:40] or "subtask"
    return f"{slug}-worker" if slug == PLANNER_AGENT else slug


def order(subtasks: tuple[SubtaskSpec, ...]) -> list[str]:
    """Return subtask ids in a dependency order (Kahn's algorithm, stable by plan order).

    Raises:
        InvalidArgument: when the dependencies form a cycle, naming the subtasks in it.
    """
    remaining = {s.id: set(s.depends_on) for s in subtasks}
    result: list[str] = []
    while remaining:
        ready = [sid for sid, deps in remaining.items() if not deps]
        if not ready:
            raise InvalidArgument(
                "plan has a dependency cycle among: " + ", ".join(sorted(_in_cycles(remaining)))
            )
        for sid in ready:
            result.append(sid)
            del remaining[sid]
        for deps in remaining.values():
            deps.difference_update(ready)
    return result


def _in_cycles(graph: dict[str, set[str]]) -> set[str]:
    """The nodes of graph (id -> dependencies) on a cycle, or between cycles.

    They are what is left after repeatedly dropping the nodes nothing left depends on.
    """
    nodes = {sid: set(deps) & set(graph) for sid, deps in graph.items()}
    while True:
        needed = set().union(*nodes.values()) if nodes else set()
        leaves = [sid for sid in nodes if sid not in needed]
        if not leaves:
            return set(nodes)
        for sid in leaves:
            del nodes[sid]


def _subtask(item: dict[str, Any]) -> SubtaskSpec:
    sid = _str(item, "id", required=True)
    return SubtaskSpec(
        id=sid,
        name=_str(item, "name") or sid,
        prompt=_str(item, "prompt", required=True),
        description=_str(item, "description"),
        depends_on=tuple(_list(item, "depends_on", str)),
        files_involved=tuple(_list(item, "files_involved", str)),
        complexity=_str(item, "complexity") or "medium",
        agent_role=_str(item, "agent_role") or "developer",
    )


def _str(obj: dict[str, Any], key: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidArgument(f"planner output is missing '{key}'")
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"planner output field '{key}' must be a string")
    if required and not value.strip():
        raise InvalidArgument(f"planner output field '{key}' is empty")
    return value


def _list(obj: dict[str, Any], key: str, kind: type) -> list[Any]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise InvalidArgument(f"planner output field '{key}' must be a list of {kind.__name__}")
    return value


def _unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise InvalidArgument(f"duplicate {what} id {i!r}")
        seen.add(i)
