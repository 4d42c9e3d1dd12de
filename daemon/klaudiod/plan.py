"""The planner's output and a person's plan file: schema, parsing, validation, order (pure)."""

from __future__ import annotations

import difflib
import graphlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from klaudio.errors import InvalidArgument

STRATEGIES = ("dag", "collaborative")
COMPLEXITIES = ("low", "medium", "high")
MAX_SUBTASKS = 50
PLANNER_AGENT = "planner"
DEFAULT_ROLE = "developer"
# The fields of a plan as a person edits it (plan_to_dict, plan_from_dict), in that order.
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
# The summary line names this many problems; PlanProblems.problems holds them all.
SUMMARY_PROBLEMS = 10

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


class PlanProblems(InvalidArgument):
    """Everything wrong with a plan (or with the planner's questions), one line per problem.

    Attributes:
        problems: each problem on one line, ordered by subtask position, then by kind.
    """

    def __init__(self, problems: Iterable[str], what: str = "the plan") -> None:
        self.problems = list(problems)
        super().__init__(summary(what, self.problems))


def summary(what: str, problems: list[str]) -> str:
    """One line for a list of problems: a lone one as it is, else a count and the first few."""
    if len(problems) == 1:
        return problems[0]
    line = f"{what} has {len(problems)} problems: " + "; ".join(problems[:SUMMARY_PROBLEMS])
    more = len(problems) - SUMMARY_PROBLEMS
    return line + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Rules:
    """What a team allows a plan; klaudiod.teams.rules() makes one from a team.

    Attributes:
        team: the team's name, for the messages.
        mode: the strategy a plan must have.
        limits: each of the team's roles with how many subtasks may have it, in team order.
        run_last: the roles whose subtasks run after every other subtask.
        review: whether a plan needs a subtask with a run_last role.
    """

    team: str
    mode: str
    limits: tuple[tuple[str, int], ...]
    run_last: frozenset[str] = frozenset()
    review: bool = False


def parse(output: Any, rules: Rules | None = None) -> Plan | Questions:
    """Turn the planner's structured output into a validated Plan or Questions.

    Keys the schema does not name are ignored (a model may add some); everything else wrong is
    collected, with the same checks as validate() and plan_from_dict().

    Raises:
        PlanProblems: listing every problem with the output.
    """
    if not isinstance(output, dict):
        raise PlanProblems(["planner output is not a JSON object"])
    kind = output.get("kind")
    if kind == "questions":
        return _questions(output)
    if kind != "plan":
        raise PlanProblems([f"planner output has kind {kind!r}; expected 'plan' or 'questions'"])
    return _plan(output, rules, strict=False)


def plan_from_dict(data: Any, rules: Rules | None = None) -> Plan:
    """A plan as a person wrote it (the shape of plan_to_dict(), say loaded from YAML), validated.

    Raises:
        PlanProblems: listing every wrong type and unknown key with its field's path (such as
            `subtasks[2].depends_on: must be a list of strings`) and every problem validate()
            finds, all at once.
    """
    if not isinstance(data, dict):
        raise PlanProblems([f"the plan must be a mapping with the keys {', '.join(PLAN_FIELDS)}"])
    return _plan(data, rules, strict=True)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """A plan as a person edits it: plain types, every field, in PLAN_FIELDS order."""
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


def validate(plan: Plan, rules: Rules | None = None) -> None:
    """Check a plan as a whole, and against a team's rules when they are given.

    Raises:
        PlanProblems: listing every problem, ordered by subtask position, then by kind.
    """
    found = _Found()
    _check(plan, rules, found, list(range(len(plan.subtasks))))
    found.raise_any()


def agent_name(subtask_id: str) -> str:
    """The agent (and container name part) for a subtask: its id made safe for Docker."""
    slug = re.sub(r"[^a-zA-Z0-9_.-]+", "-", subtask_id).strip("-.")[:40] or "subtask"
    return f"{slug}-worker" if slug == PLANNER_AGENT else slug


def levels(
    subtasks: tuple[SubtaskSpec, ...], extra: Mapping[str, Iterable[str]] | None = None
) -> list[list[str]]:
    """Subtask ids grouped by dependency level: what may run at the same time.

    Level 0 holds the subtasks without dependencies, level n those whose dependencies are all in
    earlier levels; each level keeps plan order. extra adds dependencies the plan does not list
    (such as klaudiod.teams.run_last_dependencies()), to show the order subtasks really run in.

    Raises:
        PlanProblems: when a dependency names no subtask, or the dependencies form a cycle.
    """
    position: dict[str, int] = {}
    graph: dict[str, set[str]] = {}
    edges = [(s.id, d) for s in subtasks for d in s.depends_on]
    edges += [(sid, d) for sid, deps in (extra or {}).items() for d in deps]
    for i, sub in enumerate(subtasks):
        position.setdefault(sub.id, i)
        graph[sub.id] = set()
    unknown = [
        f"subtask {sid!r} depends on unknown subtask {dep!r}"
        for sid, dep in edges
        if sid not in position or dep not in position
    ]
    if unknown:
        raise PlanProblems(unknown)
    for sid, dep in edges:
        graph[sid].add(dep)
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        raise PlanProblems([_cycle_message(_in_cycles(graph))]) from None
    result: list[list[str]] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        result.append(ready)
        sorter.done(*ready)
    return result


def order(
    subtasks: tuple[SubtaskSpec, ...], extra: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """Subtask ids in a dependency order: levels() one after the other.

    Raises:
        PlanProblems: when a dependency names no subtask, or the dependencies form a cycle.
    """
    return [sid for level in levels(subtasks, extra) for sid in level]


# Where a problem sorts: plan-wide ones first, then by subtask position, then by kind.
_PLAN_WIDE = -1
_FIELD, _RULE, _ID, _PROMPT, _DEPENDS, _COMPLEXITY, _ROLE, _LIMIT, _LAST, _CYCLE = range(10)


class _Found:
    """Problems collected with where each sorts."""

    def __init__(self) -> None:
        self._items: list[tuple[int, int, int, str]] = []
        # (position, field) of values already reported as wrong: not reported again as empty.
        self.marked: set[tuple[int, str]] = set()

    def add(self, position: int, kind: int, message: str) -> None:
        self._items.append((position, kind, len(self._items), message))

    def bad_value(self, position: int, key: str, path: str, message: str) -> None:
        self.marked.add((position, key))
        self.add(position, _FIELD, f"{path}: {message}")

    def raise_any(self, what: str = "the plan") -> None:
        if self._items:
            raise PlanProblems([item[-1] for item in sorted(self._items)], what)


class _Reader:
    """Reads the fields of a decoded plan; each wrong type or unknown key is a problem."""

    def __init__(self, found: _Found, strict: bool) -> None:
        self._found = found
        self._strict = strict

    def keys(self, obj: dict[Any, Any], allowed: tuple[str, ...], path: str, pos: int) -> None:
        if not self._strict:
            return
        for key in obj:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]}?" if close else f"expected {', '.join(allowed)}"
                self._found.add(pos, _FIELD, f"{_path(path, key)}: unknown key; {hint}")

    def text(self, obj: dict[Any, Any], key: str, path: str, pos: int) -> str:
        value = obj.get(key)
        if value is None or isinstance(value, str):
            return value or ""
        self._found.bad_value(pos, key, _path(path, key), "must be a string")
        return ""

    def strings(self, obj: dict[Any, Any], key: str, path: str, pos: int) -> tuple[str, ...]:
        value = obj.get(key)
        if value is None:
            return ()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self._found.bad_value(pos, key, _path(path, key), "must be a list of strings")
        return ()

    def subtask(self, item: dict[Any, Any], pos: int) -> SubtaskSpec:
        path = f"subtasks[{pos}]"
        self.keys(item, SUBTASK_FIELDS, path, pos)
        sid = self.text(item, "id", path, pos)
        return SubtaskSpec(
            id=sid,
            name=self.text(item, "name", path, pos) or sid,
            prompt=self.text(item, "prompt", path, pos),
            description=self.text(item, "description", path, pos),
            depends_on=self.strings(item, "depends_on", path, pos),
            files_involved=self.strings(item, "files_involved", path, pos),
            complexity=self.text(item, "complexity", path, pos) or "medium",
            agent_role=self.text(item, "agent_role", path, pos) or DEFAULT_ROLE,
        )


def _path(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _plan(data: dict[Any, Any], rules: Rules | None, strict: bool) -> Plan:
    found = _Found()
    read = _Reader(found, strict)
    read.keys(data, PLAN_FIELDS, "", _PLAN_WIDE)
    items = data.get("subtasks")
    if items is not None and not isinstance(items, list):
        found.bad_value(_PLAN_WIDE, "subtasks", "subtasks", "must be a list of subtasks")
        items = None
    subtasks: list[SubtaskSpec] = []
    positions: list[int] = []
    for pos, item in enumerate(items or []):
        if isinstance(item, dict):
            subtasks.append(read.subtask(item, pos))
            positions.append(pos)
        else:
            found.bad_value(pos, "", f"subtasks[{pos}]", "must be a mapping (a subtask)")
            found.marked.add((_PLAN_WIDE, "subtasks"))
    plan = Plan(
        analysis=read.text(data, "analysis", "", _PLAN_WIDE),
        strategy=read.text(data, "strategy", "", _PLAN_WIDE) or "dag",
        subtasks=tuple(subtasks),
        notes=read.text(data, "notes", "", _PLAN_WIDE),
    )
    _check(plan, rules, found, positions)
    found.raise_any()
    return plan


def _questions(output: dict[Any, Any]) -> Questions:
    found = _Found()
    read = _Reader(found, strict=False)
    items = output.get("questions")
    if items is not None and not isinstance(items, list):
        found.bad_value(_PLAN_WIDE, "questions", "questions", "must be a list of questions")
    elif not items:
        found.add(_PLAN_WIDE, _RULE, "planner asked no questions")
    questions: list[QuestionSpec] = []
    seen: set[str] = set()
    for pos, item in enumerate(items if isinstance(items, list) else []):
        path = f"questions[{pos}]"
        if not isinstance(item, dict):
            found.bad_value(pos, "", path, "must be a mapping (a question)")
            continue
        qid, text = (read.text(item, key, path, pos) for key in ("id", "text"))
        for key, value in (("id", qid), ("text", text)):
            if not value.strip() and (pos, key) not in found.marked:
                found.add(
                    pos, _FIELD, f"{path}.{key}: is {'missing' if key not in item else 'empty'}"
                )
        if qid in seen:
            found.add(pos, _ID, f"duplicate question id {qid!r}")
        seen.add(qid)
        questions.append(
            QuestionSpec(
                id=qid,
                text=text,
                context=read.text(item, "context", path, pos),
                suggestions=read.strings(item, "suggestions", path, pos),
                options=read.strings(item, "options", path, pos),
            )
        )
    found.raise_any("the planner's questions")
    return Questions(tuple(questions))


def _check(plan: Plan, rules: Rules | None, found: _Found, positions: list[int]) -> None:
    """Note every problem of the plan in found; positions[i] is subtask i's place in the input."""
    subs = plan.subtasks
    if not subs and (_PLAN_WIDE, "subtasks") not in found.marked:
        found.add(_PLAN_WIDE, _RULE, "plan has no subtasks")
    if len(subs) > MAX_SUBTASKS:
        found.add(_PLAN_WIDE, _RULE, f"plan has {len(subs)} subtasks; the limit is {MAX_SUBTASKS}")
    if plan.strategy not in STRATEGIES:
        found.add(
            _PLAN_WIDE,
            _RULE,
            f"plan strategy {plan.strategy!r} is not one of {', '.join(STRATEGIES)}",
        )
    first = _check_ids(subs, found, positions)
    for i, sub in enumerate(subs):
        pos, label = positions[i], _label(sub, positions[i])
        if not sub.prompt.strip() and (pos, "prompt") not in found.marked:
            found.add(pos, _PROMPT, f"{label} has an empty prompt")
        for dep in sub.depends_on:
            if dep == sub.id:
                found.add(pos, _DEPENDS, f"{label} depends on itself")
            elif dep not in first:
                found.add(pos, _DEPENDS, f"{label} depends on unknown subtask {dep!r}")
        if sub.complexity not in COMPLEXITIES:
            found.add(
                pos,
                _COMPLEXITY,
                f"{label} has unknown complexity {sub.complexity!r}; use low, medium or high",
            )
    if rules is not None:
        _check_team(plan, rules, found, positions, first)
    graph = {sid: set[str]() for sid in first}
    for sub in subs:
        if sub.id in graph:
            graph[sub.id].update(d for d in sub.depends_on if d in graph and d != sub.id)
    cycle = _in_cycles(graph)
    if cycle:
        found.add(min(positions[first[sid]] for sid in cycle), _CYCLE, _cycle_message(cycle))


def _check_ids(
    subs: tuple[SubtaskSpec, ...], found: _Found, positions: list[int]
) -> dict[str, int]:
    """Note empty, duplicate and too alike ids; return each id's first index in subs."""
    first: dict[str, int] = {}
    agents: dict[str, str] = {}
    duplicates: set[str] = set()
    for i, sub in enumerate(subs):
        pos = positions[i]
        if not sub.id.strip():
            if (pos, "id") not in found.marked:
                found.add(pos, _ID, f"subtasks[{pos}] has an empty id")
        elif sub.id in first:
            if sub.id not in duplicates:
                found.add(pos, _ID, f"duplicate subtask id {sub.id!r}")
            duplicates.add(sub.id)
        else:
            first[sub.id] = i
            other = agents.setdefault(agent_name(sub.id), sub.id)
            if other != sub.id:
                found.add(
                    pos, _ID, f"subtask ids {other!r} and {sub.id!r} are too alike; rename one"
                )
    return first


def _check_team(
    plan: Plan, rules: Rules, found: _Found, positions: list[int], first: dict[str, int]
) -> None:
    """Note what the team does not allow: its mode, roles, limits, review and run-last order."""
    subs, limits, team = plan.subtasks, dict(rules.limits), rules.team
    if plan.strategy in STRATEGIES and plan.strategy != rules.mode:
        found.add(
            _PLAN_WIDE,
            _RULE,
            f"the team {team} works as {rules.mode}; the plan's strategy is {plan.strategy}",
        )
    if rules.review and subs and not any(s.agent_role in rules.run_last for s in subs):
        last = ", ".join(sorted(rules.run_last)) or "none"
        found.add(
            _PLAN_WIDE,
            _RULE,
            f"the team {team} reviews its work: at least one subtask needs a role that runs last"
            f" ({last})",
        )
    having: dict[str, list[int]] = {}
    for i, sub in enumerate(subs):
        if sub.agent_role in limits:
            having.setdefault(sub.agent_role, []).append(i)
            continue
        found.add(
            positions[i],
            _ROLE,
            f"{_label(sub, positions[i])} has agent_role {sub.agent_role!r}; the team {team} has"
            f" no such role (its roles: {', '.join(limits)})",
        )
    for role, members in having.items():
        limit = limits[role]
        if len(members) > limit:
            ids = ", ".join(repr(subs[i].id) for i in members)
            found.add(
                positions[members[limit]],
                _LIMIT,
                f"the team {team} allows at most {limit} {role} subtask{'' if limit == 1 else 's'};"
                f" the plan has {len(members)}: {ids}",
            )
    for i, sub in enumerate(subs):
        if sub.agent_role in rules.run_last:
            continue
        for dep in sub.depends_on:
            j = first.get(dep)
            if j is not None and subs[j].agent_role in rules.run_last:
                found.add(
                    positions[i],
                    _LAST,
                    f"{_label(sub, positions[i])} depends on {dep!r}, whose role"
                    f" {subs[j].agent_role} runs last, after every other subtask",
                )


def _label(sub: SubtaskSpec, pos: int) -> str:
    return f"subtask {sub.id!r}" if sub.id.strip() else f"subtasks[{pos}]"


def _cycle_message(members: set[str]) -> str:
    return "plan has a dependency cycle among: " + ", ".join(sorted(members))


def _in_cycles(graph: dict[str, set[str]]) -> set[str]:
    """The nodes of graph (id -> dependencies) on a cycle, or on a path between cycles.

    They are what is left after repeatedly dropping the nodes that depend on nothing left, or
    that nothing left depends on; the rest is empty exactly when the graph has no cycle.
    """
    nodes = {sid: set(deps) & set(graph) for sid, deps in graph.items()}
    while True:
        needed = set().union(*nodes.values()) if nodes else set()
        ends = [sid for sid, deps in nodes.items() if not deps or sid not in needed]
        if not ends:
            return set(nodes)
        for sid in ends:
            del nodes[sid]
        for deps in nodes.values():
            deps.difference_update(ends)
