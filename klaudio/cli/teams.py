"""`klaudio team ...`: list, show, add, edit and remove team templates."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from klaudio import errors, validate
from klaudio.cli.common import connect, note, out, read_file
from klaudio.cli.complete import team_names
from klaudio.cli.task import Output, OutputOption, example, read_stdin
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.client import Client
    from klaudio.rpc.v1.teams_pb2 import Team

app = typer.Typer(
    help="Team templates: the roles, limits and mode of a task's agents.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

TeamName = Annotated[
    str,
    typer.Argument(
        help="The team's name (see `klaudio team list`).",
        show_default=False,
        autocompletion=team_names,
        callback=lambda value: validate.utf8(value, "the team name"),
    ),
]
# The daemon names a team document "team" in its problems ("team:7: roles[1].name: ...").
_SOURCE = "team"
_LINE = re.compile(rf"^(- )?{_SOURCE}:(?=\d)", re.MULTILINE)
_HEAD = re.compile(rf"^{_SOURCE} has (\d+) problems:")


@app.command("list", epilog=example("klaudio team list", "klaudio team list -o json"))
def list_(output: OutputOption = Output.text) -> None:
    """List the teams: name, where it comes from, mode, agents at once, roles.

    A user team file that cannot be used is left out and named, with why, on stderr.
    """
    teams, invalid = connect().list_teams()
    if output == Output.json:
        data = {"teams": [team_dict(t, text=False) for t in teams], "invalid": invalid}
        out(json.dumps(data, indent=2))
        return
    rows = [("NAME", "SOURCE", "MODE", "AGENTS", "ROLES")]
    rows += [(t.name, t.source, t.mode, str(t.max_agents), roles_text(t)) for t in teams]
    widths = [max(len(_one(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        cells = [_one(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])]
        out("  ".join([*cells, _one(row[4])]))
    for line in invalid:
        note(f"left out, not usable: {line}")


@app.command(
    "show", epilog=example("klaudio team show dev-review", "klaudio team show solo -o json")
)
def show(name: TeamName, output: OutputOption = Output.text) -> None:
    """Print a team as YAML, as `team edit` opens it (the user's file, comments kept).

    Exits 0, 2 a user file with problems (each listed with its line), 3 unknown team.
    """
    team = connect().get_team(name)
    if output == Output.json:
        out(json.dumps(team_dict(team), indent=2))
    else:
        out(team.yaml.rstrip("\n"))


@app.command(
    "add",
    epilog=example("klaudio team add reviewers.yaml", "klaudio team add reviewers.yaml --replace"),
)
def add(
    file: Annotated[str, typer.Argument(help="The team's YAML file; - reads stdin.")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite a user team of the same name.")
    ] = False,
) -> None:
    """Check a team file and store it as a user team, named by its `name`.

    Exits 0, 2 a file with problems (every one listed with its line), 4 when a team of that
    name exists (change it with `klaudio team edit`, or --replace a user team).
    """
    label = "stdin" if file == "-" else file
    text = read_stdin("the team") if file == "-" else read_file(file)
    team = _add(connect(), validate.prompt(text, label), label, replace)
    note(f"added team {team.name} ({team.source}): `klaudio team show {team.name}`")


@app.command("edit", epilog=example("klaudio team edit dev-review"))
def edit(name: TeamName) -> None:
    """Edit a team in $VISUAL or $EDITOR and store it when saved.

    The text is checked first: a refusal lists every problem with its line and, on a
    terminal, the editor can reopen your text. Editing a built-in team makes a user team of
    the same name that shadows it; a team keeps its name (to copy one, `klaudio team show`
    it into a file and `klaudio team add` that). Exits 0, 2 refused, 3 unknown team.
    """
    from klaudio.cli.editor import edit as edit_text

    client = connect()
    team = client.get_team(name)

    def same_name(text: str) -> None:
        renamed = _name_in(text)
        if renamed is not None and renamed != team.name:
            raise errors.InvalidArgument(
                f"name: is {renamed!r}, but this is team {team.name!r}: `team edit` keeps a "
                f"team's name (save the text to a file and `klaudio team add` it to make team "
                f"{renamed!r})"
            )

    def send(text: str, path: Path) -> Team:
        return _add(client, text, str(path), replace=True)

    saved = edit_text(team.yaml, send, "team", check=same_name)
    if saved is not None:
        shadows = " (it shadows the built-in team)" if team.source != "user" else ""
        note(f"saved team {saved.name}{shadows}")


@app.command("rm", epilog=example("klaudio team rm reviewers"))
def rm(name: TeamName) -> None:
    """Remove a user team; removing one that shadows a built-in team brings that back.

    Exits 0, 3 unknown team, 4 for a built-in team.
    """
    client = connect()
    teams, _ = client.list_teams()
    client.remove_team(name)
    source = next((t.source for t in teams if t.name == name), "")
    back = "; the built-in team of that name is back" if "built-in" in source else ""
    note(f"removed team {name}{back}")


def _add(client: Client, text: str, label: str, replace: bool) -> Team:
    """Add text as a team; its problems name label (the file) instead of the daemon's "team"."""
    try:
        return client.add_team(text, replace)
    except errors.InvalidArgument as exc:
        message = _HEAD.sub(lambda m: f"{label} has {m[1]} problems:", str(exc))
        raise errors.InvalidArgument(
            _LINE.sub(lambda m: f"{m[1] or ''}{label}:", message)
        ) from None


def _name_in(text: str) -> str | None:
    """The name a team document gives itself, when it parses; None otherwise."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def roles_text(team: Any) -> str:
    """'developer (up to 3), reviewer (1, runs last)': a team's roles in one line."""
    parts = []
    for role in team.roles:
        count = f"up to {role.max_instances}" if role.max_instances > 1 else "1"
        last = ", runs last" if role.run_last else ""
        parts.append(f"{role.name} ({count}{last})")
    return ", ".join(parts)


def team_dict(team: Team, text: bool = True) -> dict[str, Any]:
    """A team as `team show -o json` prints it; with text false (for lists), without its YAML."""
    data = {
        "name": team.name,
        "source": team.source,
        "description": team.description,
        "mode": team.mode,
        "max_agents": team.max_agents,
        "review": team.review,
        "roles": [
            {
                "name": r.name,
                "description": r.description,
                "prompt_hint": r.prompt_hint,
                "max_instances": r.max_instances,
                "run_last": r.run_last,
            }
            for r in team.roles
        ],
    }
    if text:
        data["yaml"] = team.yaml
    return data


def _one(text: str) -> str:
    return safe(text, one_line=True)
