"""`klaudio repo ...`: repository templates: where a task's repository is, how it delivers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from klaudio import errors, validate
from klaudio.cli.common import connect, note, out
from klaudio.cli.complete import repo_names
from klaudio.cli.task import Output, OutputOption, example
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.rpc.v1.repos_pb2 import RepoTemplate

app = typer.Typer(
    help="Repository templates: a repository, its credentials and how tasks deliver to it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

FORGES = ("github", "gitlab", "bitbucket")
# The delivery levels, each implying the ones before it.
LEVELS = ("auto_branch", "auto_commit", "auto_push", "auto_pr")
LEVEL_WORDS = {
    "auto_branch": "task branch",
    "auto_commit": "commit",
    "auto_push": "push",
    "auto_pr": "pull request",
}
_DELIVERS = {"auto_branch": "branch", "auto_commit": "commit", "auto_push": "push", "auto_pr": "pr"}

RepoName = Annotated[
    str,
    typer.Argument(
        help="The template's name (see `klaudio repo list`).",
        show_default=False,
        autocompletion=repo_names,
        callback=lambda value: validate.utf8(value, "the template name"),
    ),
]


def _text_option(flag: str, about: str, metavar: str) -> Any:
    return typer.Option(
        flag,
        help=about,
        metavar=metavar,
        show_default=False,
        callback=lambda value: None if value is None else validate.utf8(value, flag),
    )


def _level(name: str, about: str) -> Any:
    flag = "--" + name.replace("_", "-")
    return typer.Option(f"{flag}/--no-{flag[2:]}", help=about, show_default=False)


Branch = Annotated[
    str | None,
    _text_option("--branch", "The branch to clone (default: the repository's default).", "BRANCH"),
]
Forge = Annotated[
    str | None,
    _text_option(
        "--forge",
        "github, gitlab or bitbucket (default: told from the URL's host; '' detects again).",
        "FORGE",
    ),
]
ApiUrl = Annotated[
    str | None,
    _text_option(
        "--api-url",
        "The forge's API for Enterprise or self-hosted (https://ghe.example.com/api/v3).",
        "URL",
    ),
]
TokenEnv = Annotated[
    str | None,
    _text_option("--token-env", "The daemon's environment variable holding the token.", "VAR"),
]
TokenFile = Annotated[
    str | None,
    _text_option("--token-file", "A file holding the token, read when it is needed.", "FILE"),
]
AutoBranch = Annotated[
    bool | None, _level("auto_branch", "Work on a branch of the task's own, klaudio/<id>.")
]
AutoCommit = Annotated[
    bool | None,
    _level("auto_commit", "Commit the work on the task branch (implies --auto-branch)."),
]
AutoPush = Annotated[
    bool | None, _level("auto_push", "Push the task branch (implies --auto-commit).")
]
AutoPr = Annotated[
    bool | None, _level("auto_pr", "Open or update a pull request (implies --auto-push).")
]
PrTarget = Annotated[
    str | None,
    _text_option(
        "--pr-target", "The pull request's target branch (default: the cloned one).", "BRANCH"
    ),
]
Reviewers = Annotated[
    list[str] | None,
    typer.Option(
        "--reviewer",
        help="A reviewer to request on the pull request (repeatable).",
        metavar="USER",
        show_default=False,
        callback=lambda values: (
            None if values is None else [validate.utf8(v, "--reviewer") for v in values]
        ),
    ),
]
NoReviewers = Annotated[
    bool, typer.Option("--no-reviewers", help="Request no reviewers (edit: drop them all).")
]
Memory = Annotated[
    bool | None,
    typer.Option(
        "--memory/--no-memory",
        help="Give the planner and agents the repository's summary (default: on).",
        show_default=False,
    ),
]


@dataclass
class Given:
    """The options of `repo add` or `repo edit` as given (None: not given)."""

    url: str | None = None
    branch: str | None = None
    forge: str | None = None
    api_url: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    auto_branch: bool | None = None
    auto_commit: bool | None = None
    auto_push: bool | None = None
    auto_pr: bool | None = None
    pr_target: str | None = None
    reviewers: list[str] | None = None
    no_reviewers: bool = False
    memory: bool | None = None


# The parameters of `repo add` and `repo edit` that are options (the same names as Given's).
GIVEN = frozenset(Given.__dataclass_fields__)


@app.command("list", epilog=example("klaudio repo list", "klaudio repo list -o json"))
def list_(output: OutputOption = Output.text) -> None:
    """List the repository templates: name, forge, what tasks deliver, branch, URL.

    Exits 0.
    """
    found = connect().list_repos()
    if output == Output.json:
        out(json.dumps([repo_dict(r) for r in found], indent=2))
        return
    if not found:
        note("no repository templates yet: `klaudio repo add NAME URL`")
        return
    rows = [("NAME", "FORGE", "DELIVERS", "BRANCH", "URL")]
    rows += [(r.name, r.forge or "-", delivers(r), r.branch or "-", r.url) for r in found]
    widths = [max(len(_one(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        cells = [_one(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])]
        out("  ".join([*cells, _one(row[4])]))


@app.command(
    "show", epilog=example("klaudio repo show widgets", "klaudio repo show widgets -o json")
)
def show(name: RepoName, output: OutputOption = Output.text) -> None:
    """Show a repository template: where its token comes from (never a token), what tasks deliver.

    Exits 0, 3 unknown template.
    """
    template = connect().get_repo(name)
    if output == Output.json:
        out(json.dumps(repo_dict(template), indent=2))
        return
    for line in details(template):
        out(line)


@app.command(
    "add",
    epilog=example(
        "klaudio repo add widgets https://github.com/acme/widgets --token-env GITHUB_TOKEN "
        "--auto-pr --reviewer alice",
        "klaudio repo add infra git@gitlab.example.com:ops/infra.git --forge gitlab "
        "--api-url https://gitlab.example.com/api/v4 --token-file ~/.config/gl-token --auto-push",
    ),
)
def add(
    name: Annotated[
        str,
        typer.Argument(
            help="The template's name: lower-case letters, digits, '.', '_', '-'.",
            show_default=False,
            callback=lambda value: validate.utf8(value, "the template name"),
        ),
    ],
    url: Annotated[
        str,
        typer.Argument(
            help="The repository: an https, ssh or git URL, or [user@]host:path.",
            show_default=False,
        ),
    ],
    branch: Branch = None,
    forge: Forge = None,
    api_url: ApiUrl = None,
    token_env: TokenEnv = None,
    token_file: TokenFile = None,
    auto_branch: AutoBranch = None,
    auto_commit: AutoCommit = None,
    auto_push: AutoPush = None,
    auto_pr: AutoPr = None,
    pr_target: PrTarget = None,
    reviewers: Reviewers = None,
    no_reviewers: NoReviewers = False,
    memory: Memory = None,
) -> None:
    """Add a repository template; `--repo-template NAME` on `task create` and `run` uses it.

    Each --auto-* implies the ones before it (branch, commit, push, pull request). The token
    is never stored: only where the daemon finds it, a variable of its environment
    (--token-env) or a file (--token-file). Exits 0, 2 bad input (the option is named),
    4 when a template of that name exists (change it with `klaudio repo edit`).
    """
    from klaudio.rpc.v1.repos_pb2 import RepoTemplate

    given = Given(**{k: v for k, v in locals().items() if k in GIVEN})

    template = merged(RepoTemplate(name=name, memory=True), given)
    stored = connect().add_repo(template)
    note(f"added repository template {stored.name}: {summary(stored)}")


@app.command(
    "edit",
    epilog=example(
        "klaudio repo edit widgets --auto-pr --pr-target develop",
        "klaudio repo edit widgets --no-auto-push --token-file /run/secrets/gh",
    ),
)
def edit(
    name: RepoName,
    url: Annotated[str | None, _text_option("--url", "The repository's URL.", "URL")] = None,
    branch: Branch = None,
    forge: Forge = None,
    api_url: ApiUrl = None,
    token_env: TokenEnv = None,
    token_file: TokenFile = None,
    auto_branch: AutoBranch = None,
    auto_commit: AutoCommit = None,
    auto_push: AutoPush = None,
    auto_pr: AutoPr = None,
    pr_target: PrTarget = None,
    reviewers: Reviewers = None,
    no_reviewers: NoReviewers = False,
    memory: Memory = None,
) -> None:
    """Change the options given of a repository template; the others stay as they are.

    --reviewer replaces the reviewers; '' clears a text option (--pr-target '', --api-url '').
    --token-env and --token-file replace each other. --no-auto-X also turns off what needs
    X (--no-auto-push: no pull request either). Tasks created from the template keep the
    copy they were made with. Exits 0, 2 bad input, 3 unknown template.
    """
    given = Given(**{k: v for k, v in locals().items() if k in GIVEN})
    client = connect()
    current = client.get_repo(name)
    stored = client.add_repo(merged(current, given), replace=True)
    note(f"saved repository template {stored.name}: {summary(stored)}")


@app.command("rm", epilog=example("klaudio repo rm widgets"))
def rm(name: RepoName) -> None:
    """Remove a repository template; tasks created from it keep their copy of it.

    Exits 0, 3 unknown template.
    """
    connect().remove_repo(name)
    note(f"removed repository template {name}")


def merged(current: RepoTemplate, given: Given) -> RepoTemplate:
    """current with the options given applied, checked before anything is sent.

    Raises:
        InvalidArgument: naming the option that is wrong.
    """
    from klaudio.rpc.v1.repos_pb2 import RepoTemplate

    new = RepoTemplate()
    new.CopyFrom(current)
    if given.url is not None:
        validate.repo_source(given.url, "the URL")
        if not given.url:
            raise errors.InvalidArgument("a repository template needs a URL")
        if given.forge is None and host(given.url) != host(current.url):
            new.forge = ""  # told from the new host, unless --forge says
        new.url = given.url
    if given.forge is not None:
        if given.forge and given.forge not in FORGES:
            raise errors.InvalidArgument(
                f"--forge {given.forge!r}: expected one of {', '.join(FORGES)}"
            )
        new.forge = given.forge
    if given.branch is not None:
        new.branch = validate.branch(given.branch, "--branch")
    if given.pr_target is not None:
        new.pr_target = validate.branch(given.pr_target, "--pr-target")
    if given.api_url is not None:
        new.api_url = given.api_url
    _token(new, given)
    _levels(new, given)
    if given.no_reviewers and given.reviewers:
        raise errors.InvalidArgument("give --reviewer or --no-reviewers, not both")
    if given.no_reviewers or given.reviewers:
        new.ClearField("reviewers")
        new.reviewers.extend(dict.fromkeys(given.reviewers or []))
    if given.memory is not None:
        new.memory = given.memory
    return new


def _token(new: RepoTemplate, given: Given) -> None:
    """Where the token comes from: --token-env or --token-file, each replacing the other."""
    if given.token_env and given.token_file:
        raise errors.InvalidArgument("give the token as --token-env or as --token-file, not both")
    if given.token_env is not None:
        new.token_env = given.token_env
        if given.token_env:
            new.token_file = ""
    if given.token_file is not None:
        new.token_file = token_path(given.token_file)
        if given.token_file:
            new.token_env = ""


def token_path(value: str) -> str:
    """--token-file made absolute (the daemon has its own working directory); '' stays ''.

    A file that cannot be read now is allowed (it may appear later) but said on stderr.
    """
    if not value:
        return ""
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        note(f"--token-file {path}: no readable file there yet; the daemon reads it when needed")
    return path


def _levels(new: RepoTemplate, given: Given) -> None:
    """Apply --auto-X/--no-auto-X: on turns on what it needs, off turns off what needs it."""
    wanted = {level: getattr(given, level) for level in LEVELS}
    for i, level in enumerate(LEVELS):
        for later in LEVELS[i + 1 :]:
            if wanted[level] is False and wanted[later] is True:
                raise errors.InvalidArgument(
                    f"{_flag(later)} needs {_flag(level)}: --no-{_flag(level)[2:]} contradicts it"
                )
    for i, level in enumerate(LEVELS):
        if wanted[level] is True:
            for needed in LEVELS[: i + 1]:
                setattr(new, needed, True)
        elif wanted[level] is False:
            for needing in LEVELS[i:]:
                setattr(new, needing, False)


def _flag(level: str) -> str:
    return "--" + level.replace("_", "-")


def host(url: str) -> str:
    """The host of a repository URL or `[user@]host:path` ('' for a local path)."""
    from urllib.parse import urlsplit

    if "://" in url:
        return (urlsplit(url).hostname or "").lower()
    head, colon, _ = url.partition(":")
    if colon and "/" not in head:
        return head.rpartition("@")[2].lower()
    return ""


def delivers(template: RepoTemplate) -> str:
    """The most a template's tasks deliver: 'pr', 'push', 'commit', 'branch' or 'none'."""
    chosen = [_DELIVERS[level] for level in LEVELS if getattr(template, level)]
    return chosen[-1] if chosen else "none"


def summary(template: RepoTemplate) -> str:
    """'github, tasks deliver task branch, commit, push, pull request': a template in a line."""
    steps = [LEVEL_WORDS[level] for level in LEVELS if getattr(template, level)]
    what = f"tasks deliver {', '.join(steps)}" if steps else "tasks deliver nothing"
    return f"{template.url} ({template.forge or 'forge unknown'}), {what}"


def details(template: RepoTemplate) -> list[str]:
    """`repo show` as text lines."""
    steps = [LEVEL_WORDS[level] for level in LEVELS if getattr(template, level)]
    delivery = ", ".join(steps) or "none: the work stays in the task's workspace"
    if template.auto_pr:
        delivery += f" (to {template.pr_target or 'the cloned branch'})"
    return [
        f"name:       {_one(template.name)}",
        f"url:        {_one(template.url)}",
        f"branch:     {_one(template.branch) or '(the repository default)'}",
        f"forge:      {_one(template.forge) or '(unknown: give --forge for pull requests)'}",
        f"api:        {_one(template.api_url) or '(the forge default)'}",
        f"token:      {token_source(template)}",
        f"delivery:   {delivery}",
        f"reviewers:  {', '.join(_one(r) for r in template.reviewers) or '(none)'}",
        f"memory:     {'on' if template.memory else 'off'}",
    ]


def token_source(template: RepoTemplate) -> str:
    """Where the daemon finds the template's token: never the token itself."""
    if template.token_env:
        return f"${_one(template.token_env)} in the daemon's environment"
    if template.token_file:
        return f"the file {_one(template.token_file)}, read when needed"
    return "(none: clones and pushes without one; ssh uses the daemon user's keys)"


def repo_dict(template: RepoTemplate) -> dict[str, Any]:
    """A template as `repo show -o json` prints it: where the token comes from, never a token."""
    return {
        "name": template.name,
        "url": template.url,
        "branch": template.branch,
        "forge": template.forge,
        "api_url": template.api_url,
        "token_env": template.token_env,
        "token_file": template.token_file,
        "auto_branch": template.auto_branch,
        "auto_commit": template.auto_commit,
        "auto_push": template.auto_push,
        "auto_pr": template.auto_pr,
        "pr_target": template.pr_target,
        "reviewers": list(template.reviewers),
        "memory": template.memory,
    }


def _one(text: str) -> str:
    return safe(text, one_line=True)
