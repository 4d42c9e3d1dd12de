"""`klaudio task ...` and `klaudio run`: create, inspect, start, approve, follow and wait."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from klaudio import errors, validate
from klaudio.cli import format as fmt
from klaudio.cli.common import Interrupted, connect, note, out
from klaudio.cli.follow import Printer, events, task_state

app = typer.Typer(
    help="Create, inspect and drive tasks.", no_args_is_help=True, rich_markup_mode=None
)

Prompt = Annotated[
    str,
    typer.Argument(help="What the agents should do; - reads it from stdin.", show_default=False),
]
TaskId = Annotated[
    str,
    typer.Argument(
        help="Task id, or a unique prefix of it.",
        show_default=False,
        callback=lambda value: validate.utf8(value, "the task id"),
    ),
]
STATE_EXIT = {"completed": errors.EXIT_OK, "failed": errors.EXIT_TASK_FAILED}


class Output(StrEnum):
    """Output formats of list and show."""

    text = "text"
    json = "json"


def exit_code_for(state: str) -> int:
    """The exit code for a settled task: 0 completed, 1 failed, 7 otherwise."""
    return STATE_EXIT.get(state, errors.EXIT_TASK_STOPPED)


@app.command("create")
def create(
    prompt: Prompt,
    name: Annotated[str, typer.Option("--name", "-n", help="A short name for the task.")] = "",
    repo: Annotated[
        str, typer.Option("--repo", "-r", help="Local path or git URL to clone into the workspace.")
    ] = "",
    start: Annotated[bool, typer.Option("--start", help="Start planning at once.")] = False,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", "-y", help="Approve the plan as soon as it is valid.")
    ] = False,
) -> None:
    """Create a task (and with --start, start planning it); print its id."""
    text, name, repo = _checked(prompt, name, repo)
    task = connect().create_task(text, name, repo, start, auto_approve)
    out(task.id)


@app.command("list")
def list_(
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-s", help="Only tasks in this state (repeatable)."),
    ] = None,
) -> None:
    """List tasks, newest first."""
    wanted = list(state or [])
    unknown = [s for s in wanted if s not in fmt.STATE_NAMES.values() or s == "unspecified"]
    if unknown:
        raise errors.InvalidArgument(f"--state {unknown[0]!r} is not a task state")
    tasks = connect().list_tasks(wanted)
    if output == Output.json:
        out(json.dumps([fmt.summary_dict(t) for t in tasks], indent=2))
    else:
        for line in fmt.table(tasks):
            out(line)


@app.command("show")
def show(
    task_id: TaskId,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
) -> None:
    """Show a task: state, plan, agents, workspace and cost."""
    task = connect().get_task(task_id)
    if output == Output.json:
        out(json.dumps(fmt.task_dict(task), indent=2))
    else:
        for line in fmt.details(task):
            out(line)


@app.command("start")
def start(task_id: TaskId) -> None:
    """Start planning a created task."""
    task = connect().start_task(task_id)
    note(f"task {task.id[:8]} is {fmt.state(task)}")


@app.command("approve")
def approve(task_id: TaskId) -> None:
    """Approve a planned task's plan; its agents start at once."""
    task = connect().approve_task(task_id)
    note(f"task {task.id[:8]} is {fmt.state(task)}")


@app.command("delete")
def delete(task_id: TaskId) -> None:
    """Delete a task that no agent is working on, with its workspace, agents and logs."""
    client = connect()
    task = client.get_task(task_id)
    client.delete_task(task.id)
    note(f"deleted task {task.id[:8]}")


@app.command("logs")
def logs(
    task_id: TaskId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep following until the task settles.")
    ] = False,
    agent: Annotated[
        str,
        typer.Option(
            "--agent",
            "-a",
            help="Only this agent's output.",
            callback=lambda value: validate.utf8(value, "--agent"),
        ),
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One raw JSON event per line.")] = False,
    since: Annotated[
        int, typer.Option("--since", help="Only events after this sequence number.")
    ] = 0,
) -> None:
    """Print a task's output from the start (or --since SEQ); with -f, follow it live."""
    validate.since(since)
    client = connect()
    printer = Printer(as_json, show_agent=not agent)
    try:
        for event in events(client, task_id, agent, since, follow):
            printer.show(event)
    finally:
        printer.finish()


@app.command("wait")
def wait(
    task_id: TaskId,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", "-t", help="Give up after this many seconds."),
    ] = None,
) -> None:
    """Wait until a task settles.

    Exits 0 completed, 1 failed, 6 timed out, 7 paused, cancelled or awaiting answers.
    """
    validate.timeout(timeout)
    task = connect().wait_task(task_id, timeout)
    state = fmt.state(task)
    note(f"task {task.id[:8]} {state}" + (f": {task.reason}" if task.reason else ""))
    raise typer.Exit(exit_code_for(state))


def run(
    prompt: Prompt,
    repo: Annotated[
        str, typer.Option("--repo", "-r", help="Local path or git URL to clone into the workspace.")
    ] = "",
    name: Annotated[str, typer.Option("--name", "-n", help="A short name for the task.")] = "",
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", "-y", help="Approve the plan without waiting.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One raw JSON event per line.")] = False,
) -> None:
    """Create and start a task, stream its output, and exit with its outcome.

    Exits 0 when the task completed, 1 when it failed, 7 when it was paused, cancelled or
    needs answers. Without --auto-approve it waits for `klaudio task approve ID`.
    """
    text, name, repo = _checked(prompt, name, repo)
    client = connect()
    task = client.create_task(text, name, repo, start=True, auto_approve=auto_approve)
    note(f"task {task.id} created")
    printer = Printer(as_json)
    try:
        for event in events(client, task.id):
            printer.show(event)
            state = task_state(event)
            if state == "planned" and not auto_approve:
                note(f"plan ready: approve it with `klaudio task approve {task.id[:8]}`")
            if state == "awaiting_answers":
                note(f"the planner has questions: see `klaudio task show {task.id[:8]}`")
                break
    except Interrupted:
        note(f"stopped following; the task goes on: `klaudio task logs -f {task.id[:8]}`")
        raise
    printer.finish()
    final = client.get_task(task.id)
    state = fmt.state(final)
    note(f"task {final.id[:8]} {state}" + (f": {final.reason}" if final.reason else ""))
    raise typer.Exit(exit_code_for(state))


def _checked(prompt: str, name: str, repo: str) -> tuple[str, str, str]:
    """The prompt, name and repo of a new task, checked before anything is sent."""
    return _prompt(prompt), validate.name(name), _repo(repo)


def _prompt(value: str) -> str:
    """The prompt, read from stdin when it is "-" (for long prompts and pipelines).

    Stdin is read as bytes and decoded strictly: undecodable bytes are refused, not replaced.
    """
    if value != "-":
        return validate.prompt(value)
    import sys

    field = "the prompt read from stdin"
    data = sys.stdin.buffer.read(validate.MAX_PROMPT_BYTES + 1)
    if len(data) > validate.MAX_PROMPT_BYTES:
        raise errors.InvalidArgument(
            f"{field} is over the limit of {validate.MAX_PROMPT_BYTES} bytes (4 MiB) of UTF-8"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(
            f"{field} is not valid UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    return validate.prompt(text, field)


def _repo(value: str) -> str:
    """A checked --repo, a local path made absolute (the daemon has its own working directory)."""
    validate.repo_source(value)
    if not value or "://" in value or value.startswith("git@"):
        return value
    from pathlib import Path

    path = Path(value).expanduser()
    if not path.is_dir():
        raise errors.InvalidArgument(f"--repo {value}: no such directory")
    return str(path.resolve())
