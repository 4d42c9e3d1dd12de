"""Team templates: parsed with each problem's line, built in or a user's; plans held to them."""

from __future__ import annotations

import builtins
import difflib
import functools
import importlib.resources
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from klaudio.errors import FailedPrecondition, InvalidArgument, NotFound
from klaudiod.plan import STRATEGIES, Plan, Rules, SubtaskSpec, summary
from klaudiod.plan import validate as validate_plan

MODES = STRATEGIES
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
NAME_RULE = "must be 1 to 40 lower-case letters, digits or '-', not starting with '-'"
TEAM_FIELDS = ("name", "description", "mode", "max_agents", "review", "roles")
ROLE_FIELDS = ("name", "description", "prompt_hint", "max_instances", "run_last")
# Where a team comes from, as Teams.list() says it.
BUILT_IN = "built-in"
USER = "user"
SHADOW = "user (shadows built-in)"

_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True)
class Role:
    """One role of a team: what its agents do, how many subtasks may have it, when they run."""

    name: str
    description: str = ""
    prompt_hint: str = ""
    max_instances: int = 1
    run_last: bool = False


@dataclass(frozen=True)
class Team:
    """A team template: the roles a plan may use, their limits, the mode and the review rule."""

    name: str
    description: str
    mode: str
    max_agents: int
    review: bool
    roles: tuple[Role, ...]

    def role(self, name: str) -> Role | None:
        """The role called name, or None."""
        return next((r for r in self.roles if r.name == name), None)


class TeamProblems(InvalidArgument):
    """Everything wrong with a team file, one line per problem, each naming its line.

    Attributes:
        problems: `<source>:<line>: <field path>: <problem>` lines, ordered by line.
    """

    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = list(problems)
        super().__init__(summary(source, self.problems))


# Parsing --------------------------------------------------------------------------------------


def parse_team(text: str, source: str) -> Team:
    """Parse and validate a team document; source names it in the problems (a path, say).

    Raises:
        TeamProblems: listing every problem with its line, such as
            `teams/x.yaml:7: roles[1].max_instances: must be a whole number >= 1`.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ": ".join(part for part in (exc.context, exc.problem) if part)
        line = mark.line + 1 if mark else 1
        raise TeamProblems([f"{source}:{line}: not valid YAML: {what}"], source) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        what = str(exc).splitlines()[0]
        raise TeamProblems([f"{source}:{line}: not valid YAML: {what}"], source) from None
    if root is None:
        raise TeamProblems(
            [f"{source}:1: the file is empty; a team needs name, mode, max_agents and roles"],
            source,
        )
    doc = _Doc(source)
    fields = doc.fields(root, "", TEAM_FIELDS)
    if fields is None:
        raise TeamProblems(doc.problems(), source)
    name = doc.text(fields, "name", root, "", required=True)
    if name and not NAME.fullmatch(name):
        doc.add(fields["name"], "name", NAME_RULE)
    description = doc.text(fields, "description", root, "")
    mode = doc.text(fields, "mode", root, "", required=True)
    if mode and mode not in MODES:
        doc.add(fields["mode"], "mode", f"must be {' or '.join(MODES)}")
    max_agents = doc.whole(fields, "max_agents", root, "", required=True)
    review = doc.flag(fields, "review", root, "")
    roles = _roles(doc, fields.get("roles"), root)
    if review and roles and not any(r.run_last for r in roles):
        doc.add(fields["review"], "review", "true needs a role with run_last: true to do it")
    doc.raise_any()
    return Team(name, description, mode, max_agents, review, roles)


def _roles(doc: _Doc, node: yaml.Node | None, root: yaml.Node) -> tuple[Role, ...]:
    if node is None or _is_null(node):
        doc.add(node or root, "roles", "is required: a list of roles")
        return ()
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        doc.add(node, "roles", "must be a non-empty list of roles")
        return ()
    roles: list[Role] = []
    first: dict[str, int] = {}
    for i, item in enumerate(node.value):
        path = f"roles[{i}]"
        fields = doc.fields(item, path, ROLE_FIELDS)
        if fields is None:
            continue
        name = doc.text(fields, "name", item, path, required=True)
        if name and not NAME.fullmatch(name):
            doc.add(fields["name"], f"{path}.name", NAME_RULE)
        elif name in first:
            doc.add(fields["name"], f"{path}.name", f"{name!r} is already roles[{first[name]}]")
        elif name:
            first[name] = i
        roles.append(
            Role(
                name=name,
                description=doc.text(fields, "description", item, path),
                prompt_hint=doc.text(fields, "prompt_hint", item, path),
                max_instances=doc.whole(fields, "max_instances", item, path, default=1),
                run_last=doc.flag(fields, "run_last", item, path),
            )
        )
    return tuple(roles)


class _Doc:
    """One team document's problems, each with its line, and typed reads of its nodes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._problems: list[tuple[int, int, str]] = []
        self._build = yaml.constructor.SafeConstructor()

    def add(self, node: yaml.Node, path: str, message: str) -> None:
        line = node.start_mark.line + 1
        where = f"{path}: " if path else ""
        self._problems.append(
            (line, len(self._problems), f"{self.source}:{line}: {where}{message}")
        )

    def problems(self) -> list[str]:
        return [p[-1] for p in sorted(self._problems)]

    def raise_any(self) -> None:
        if self._problems:
            raise TeamProblems(self.problems(), self.source)

    def fields(
        self, node: yaml.Node, path: str, allowed: tuple[str, ...]
    ) -> dict[str, yaml.Node] | None:
        """The mapping's value nodes by key; unknown and repeated keys are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.add(node, path, f"must be a mapping with {_list(allowed)}")
            return None
        found: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            where = f"{path}.{name}" if path else str(name)
            if name not in allowed:
                close = difflib.get_close_matches(str(name), allowed, n=1)
                hint = f"did you mean {close[0]}?" if close else f"expected {_list(allowed)}"
                self.add(key, where, f"unknown key; {hint}")
            elif name in found:
                self.add(key, where, f"repeats the key of line {found[name].start_mark.line + 1}")
            else:
                found[name] = value
        return found

    def _value(
        self, fields: dict[str, yaml.Node], key: str, owner: yaml.Node, path: str, required: bool
    ) -> tuple[yaml.Node | None, Any]:
        node = fields.get(key)
        if node is None or _is_null(node):
            if required:
                self.add(node or owner, _path(path, key), "is required")
            return None, None
        if not isinstance(node, yaml.ScalarNode):
            return node, node
        try:
            return node, self._build.construct_object(node)
        except yaml.YAMLError:
            return node, node

    def text(
        self,
        fields: dict[str, yaml.Node],
        key: str,
        owner: yaml.Node,
        path: str,
        required: bool = False,
    ) -> str:
        node, value = self._value(fields, key, owner, path, required)
        if node is None or isinstance(value, str):
            return value or ""
        self.add(node, _path(path, key), "must be a string")
        return ""

    def whole(
        self,
        fields: dict[str, yaml.Node],
        key: str,
        owner: yaml.Node,
        path: str,
        required: bool = False,
        default: int = 1,
    ) -> int:
        node, value = self._value(fields, key, owner, path, required)
        if node is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        self.add(node, _path(path, key), "must be a whole number >= 1")
        return default

    def flag(self, fields: dict[str, yaml.Node], key: str, owner: yaml.Node, path: str) -> bool:
        node, value = self._value(fields, key, owner, path, False)
        if node is None or isinstance(value, bool):
            return bool(value)
        self.add(node, _path(path, key), "must be true or false")
        return False


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _TAG + "null"


def _path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _list(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def team_to_yaml(team: Team) -> str:
    """The team as a YAML document that parse_team() reads back as the same team."""
    data = {
        "name": team.name,
        "description": team.description,
        "mode": team.mode,
        "max_agents": team.max_agents,
        "review": team.review,
        "roles": [
            {
                "name": r.name,
                "description": r.description,
                "max_instances": r.max_instances,
                "run_last": r.run_last,
                "prompt_hint": r.prompt_hint,
            }
            for r in team.roles
        ],
    }
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


class _Dumper(yaml.SafeDumper):
    """Writes text of several lines as a block, the way a person writes it."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar(_TAG + "str", value, style=style)


_Dumper.add_representer(str, _represent_str)


# The built-in teams and a user's -------------------------------------------------------------


@functools.cache
def _builtin_texts() -> dict[str, str]:
    """Team name -> YAML text of each built-in team (the files of klaudiod/teams/)."""
    folder = importlib.resources.files("klaudiod") / "teams"
    texts: dict[str, str] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            texts[entry.name.removesuffix(".yaml")] = entry.read_text(encoding="utf-8")
    return texts


@functools.cache
def _builtins() -> tuple[Team, ...]:
    return tuple(
        parse_team(text, f"built-in teams/{name}.yaml") for name, text in _builtin_texts().items()
    )


def builtin_teams() -> dict[str, Team]:
    """The teams shipped with klaudio, by name."""
    return {team.name: team for team in _builtins()}


class Teams:
    """The built-in teams and a user's own, stored as `<directory>/<name>.yaml`.

    A user team shadows a built-in team of the same name; removing it brings the built-in back.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def get(self, name: str) -> Team:
        """The team called name: the user's, else the built-in one.

        Raises:
            NotFound: listing the known names.
            TeamProblems: when the user's file for it is broken (edited by hand).
        """
        path = self._user_path(name)
        if path is not None and path.exists():
            return self._load(path)
        builtin = builtin_teams().get(name)
        if builtin is None:
            raise NotFound(f"no team named {name!r}; known teams: {', '.join(self.names())}")
        return builtin

    def text(self, name: str) -> str:
        """The YAML text of the team called name, as written (comments kept), for editing."""
        path = self._user_path(name)
        if path is not None and path.exists():
            return path.read_text(encoding="utf-8")
        self.get(name)
        return _builtin_texts()[name]

    def add(self, text: str, replace: bool = False, source: str = "team") -> Team:
        """Validate a team document and store it as a user team; source names it in problems.

        Raises:
            TeamProblems: listing every problem of the document.
            FailedPrecondition: when a team of that name exists and replace is false.
        """
        team = parse_team(text, source)
        path = self._dir / f"{team.name}.yaml"
        if not replace and path.exists():
            raise FailedPrecondition(
                f"a user team named {team.name} exists; `klaudio team edit {team.name}` changes it"
            )
        if not replace and team.name in builtin_teams():
            raise FailedPrecondition(
                f"{team.name} is a built-in team; `klaudio team edit {team.name}` makes a user"
                " team of the same name that shadows it"
            )
        self._write(path, text if text.endswith("\n") else text + "\n")
        return team

    def remove(self, name: str) -> Team | None:
        """Remove the user team called name; return the built-in team it shadowed, if any.

        Raises:
            FailedPrecondition: for a built-in team.
            NotFound: listing the known names.
        """
        path = self._user_path(name)
        if path is not None and path.exists():
            path.unlink()
            return builtin_teams().get(name)
        if name in builtin_teams():
            raise FailedPrecondition(
                f"built-in team {name} cannot be removed; a user team of the same name can"
                " shadow it"
            )
        raise NotFound(f"no team named {name!r}; known teams: {', '.join(self.names())}")

    def names(self) -> builtins.list[str]:
        """Every team's name, sorted (for messages and completion)."""
        return sorted(set(builtin_teams()) | {p.stem for p in self._user_files()})

    def invalid(self) -> builtins.list[str]:
        """One line for each user team file that cannot be used (list() leaves them out)."""
        lines: builtins.list[str] = []
        for path in self._user_files():
            try:
                self._load(path)
            except (OSError, InvalidArgument) as exc:
                lines.append(str(exc) if not isinstance(exc, OSError) else f"{path}: {exc}")
        return lines

    def list(self) -> builtins.list[tuple[Team, str]]:
        """Every usable team with where it comes from: built-in, user, or a user's shadow."""
        shipped = builtin_teams()
        teams: dict[str, tuple[Team, str]] = {n: (t, BUILT_IN) for n, t in shipped.items()}
        for path in self._user_files():
            try:
                team = self._load(path)
            except (OSError, InvalidArgument):
                continue
            teams[team.name] = (team, SHADOW if team.name in shipped else USER)
        return [teams[name] for name in sorted(teams)]

    def _user_path(self, name: str) -> Path | None:
        # Only a valid name becomes a path: no "../x" or "/etc/x" reaches the file system.
        return self._dir / f"{name}.yaml" if NAME.fullmatch(name) else None

    def _user_files(self) -> builtins.list[Path]:
        if not self._dir.is_dir():
            return []
        return sorted(p for p in self._dir.glob("*.yaml") if NAME.fullmatch(p.stem) and p.is_file())

    def _load(self, path: Path) -> Team:
        team = parse_team(path.read_text(encoding="utf-8"), str(path))
        if team.name != path.stem:
            raise TeamProblems(
                [f"{path}:1: name: is {team.name!r}, but the file is {path.name}; rename one"],
                str(path),
            )
        return team

    def _write(self, path: Path, text: str) -> None:
        """Write path atomically: a reader sees the old file or the new one, never half."""
        self._dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# Plans against a team -----------------------------------------------------------------------


def rules(team: Team) -> Rules:
    """What the team allows a plan, for klaudiod.plan's parse(), validate(), plan_from_dict()."""
    return Rules(
        team=team.name,
        mode=team.mode,
        limits=tuple((r.name, r.max_instances) for r in team.roles),
        run_last=run_last_roles(team),
        review=team.review,
    )


def validate(plan: Plan, team: Team) -> None:
    """Check a plan as a whole and against the team: roles, limits, mode, review, run-last.

    Raises:
        PlanProblems: listing every problem at once.
    """
    validate_plan(plan, rules(team))


def run_last_roles(team: Team) -> frozenset[str]:
    """The roles whose subtasks start only after every other subtask has finished."""
    return frozenset(r.name for r in team.roles if r.run_last)


def run_last_dependencies(
    subtasks: tuple[SubtaskSpec, ...], team: Team
) -> dict[str, tuple[str, ...]]:
    """The dependencies to add so each run-last subtask waits for every other subtask.

    Returns:
        Subtask id -> the ids it must also wait for (those not already in its depends_on, in
        plan order), for each run-last subtask that needs any. The plan itself is unchanged.
    """
    last = run_last_roles(team)
    others = [s.id for s in subtasks if s.agent_role not in last]
    extra: dict[str, tuple[str, ...]] = {}
    for sub in subtasks:
        if sub.agent_role in last:
            missing = tuple(sid for sid in others if sid not in sub.depends_on)
            if missing:
                extra[sub.id] = missing
    return extra


def prompt_hint(team: Team, role: str) -> str:
    """What an agent in the role is told about its part in the team.

    Raises:
        NotFound: when the team has no such role.
    """
    found = team.role(role)
    if found is None:
        names = ", ".join(r.name for r in team.roles)
        raise NotFound(f"the team {team.name} has no role {role!r} (its roles: {names})")
    return found.prompt_hint


def planner_brief(team: Team) -> str:
    """What the planner is told about the team: roles, limits, mode, review and agent_role."""
    lines = [f"The team for this task is {team.name!r}: {team.description.strip()}", ""]
    if team.mode == "dag":
        lines.append(
            'Mode: dag. Set the plan\'s "strategy" to "dag": the subtasks form a dependency'
            " graph, and each starts as soon as every subtask in its depends_on has finished."
        )
    else:
        lines.append(f'Mode: {team.mode}. Set the plan\'s "strategy" to "{team.mode}".')
    agents = "1 agent runs" if team.max_agents == 1 else f"{team.max_agents} agents run"
    lines.append(
        f"At most {agents} at the same time; subtasks beyond that wait for a free place, so"
        " give independent subtasks no dependencies on each other and they run in parallel."
    )
    last = [r.name for r in team.roles if r.run_last]
    if team.review:
        lines.append(
            "Review: required. The plan must have at least one subtask with a role that runs"
            f" last ({', '.join(last)})."
        )
    lines += [
        "",
        'Roles: set each subtask\'s "agent_role" to one of these names; no other is accepted.',
    ]
    for r in team.roles:
        limit = "1 subtask" if r.max_instances == 1 else f"up to {r.max_instances} subtasks"
        when = "; runs last, after every other subtask" if r.run_last else ""
        lines.append(f"- {r.name} ({limit}{when}): {r.description.strip()}")
    if last:
        lines += [
            "",
            "A subtask whose role runs last starts only after every subtask of the other roles"
            " has finished, whatever its depends_on says; no other subtask may depend on it.",
        ]
    lines += ["", "A plan that breaks these rules is refused with the reasons."]
    return "\n".join(lines)
