"""`klaudio task ...`: create, inspect, drive, stop, retry, follow and wait for tasks."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from klaudio import errors, validate
from klaudio.cli import format as fmt
from klaudio.cli.common import Interrupted, connect, note, out
from klaudio.cli.complete import repo_names, team_names
from klaudio.cli.follow import Printer, events

if TYPE_CHECKING:
    from klaudio.client import TaskOptions
    from klaudio.rpc.v1 import tasks_pb2

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
TeamOption = Annotated[
    str,
    typer.Option(
        "--team",
        help="The team template (see `klaudio team list`; default: teams.default).",
        show_default=False,
        autocompletion=team_names,
        callback=lambda value: validate.utf8(value, "--team"),
    ),
]
RepoTemplateOption = Annotated[
    str,
    typer.Option(
        "--repo-template",
        help="A repository template (see `klaudio repo list`): its repository, credentials and "
        "delivery.",
        show_default=False,
        autocompletion=repo_names,
        callback=lambda value: validate.utf8(value, "--repo-template"),
    ),
]
BranchOption = Annotated[
    str,
    typer.Option(
        "--branch",
        "-b",
        help="The branch to clone (default: the repository's, or the template's).",
        show_default=False,
        callback=lambda value: validate.branch(value, "--branch"),
    ),
]
PushOption = Annotated[
    bool, typer.Option("--push", help="Commit the work on the task branch and push it.")
]
PrOption = Annotated[
    bool,
    typer.Option("--pr", help="Open or update a pull request from the task branch (and push)."),
]
PrTargetOption = Annotated[
    str,
    typer.Option(
        "--pr-target",
        help="The pull request's target branch (default: the branch cloned).",
        show_default=False,
        callback=lambda value: validate.branch(value, "--pr-target"),
    ),
]
InputOption = Annotated[
    list[str] | None,
    typer.Option(
        "--input",
        "-i",
        help="A file or directory for the planner and agents, copied into the workspace's input/ "
        "(repeatable).",
        show_default=False,
        callback=lambda values: [validate.utf8(v, "--input") for v in values or []],
    ),
]
STATE_EXIT = {"completed": errors.EXIT_OK, "failed": errors.EXIT_TASK_FAILED}


class Output(StrEnum):
    """Output formats of the commands that print a task."""

    text = "text"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text or json.")]
Grace = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        "-t",
        help="Seconds each agent gets to end its turn before it is killed (default 10).",
        show_default=False,
    ),
]


def example(*commands: str) -> str:
    """A command's help epilog: its examples, each on a line of its own."""
    head = "Example:" if len(commands) == 1 else "Examples:"
    return "\b\n" + head + "\n" + "\n".join(f"  {command}" for command in commands)


def _now(task: tasks_pb2.Task) -> str:
    """'task 3f2a9c1e is running (resumed by user)': where a command left a task."""
    reason = f" ({task.reason})" if task.reason else ""
    return f"task {task.id[:8]} is {fmt.state(task)}{reason}"


def _ended(task: tasks_pb2.Task) -> str:
    """'task 3f2a9c1e paused (stopped by user)': how a stop or cancel left a task."""
    reason = f" ({task.reason})" if task.reason else ""
    return f"task {task.id[:8]} {fmt.state(task)}{reason}"


def print_task(task: tasks_pb2.Task) -> None:
    """The whole task as `task show -o json` prints it."""
    out(json.dumps(fmt.task_dict(task), indent=2))


def exit_code_for(state: str) -> int:
    """The exit code for a settled task: 0 completed, 1 failed, 7 otherwise."""
    return STATE_EXIT.get(state, errors.EXIT_TASK_STOPPED)


@app.command(
    "create",
    epilog=example(
        'klaudio task create "Add a hello script" --repo ./myrepo',
        'klaudio task create "Split the parser" --team dev-review --start',
        'klaudio task create "Fix the flaky test" --repo-template widgets',
        'klaudio task create "..." --repo https://github.com/acme/widgets --pr --pr-target main',
        'klaudio task create "Summarise the spec" --input spec.pdf --input data/',
        "klaudio task create - < task.md",
    ),
)
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
    team: TeamOption = "",
    repo_template: RepoTemplateOption = "",
    branch: BranchOption = "",
    push: PushOption = False,
    pr: PrOption = False,
    pr_target: PrTargetOption = "",
    input_: InputOption = None,
) -> None:
    """Create a task (and with --start, start planning it); print its id.

    With --repo-template, or --push/--pr, the work is delivered once the subtasks complete:
    committed on the task's own branch, pushed, and a pull request opened or updated. Exits 0,
    2 bad input (an --input that is missing, a link, or not a file or directory, too), 3
    unknown --team or --repo-template.
    """
    text, name, repo = checked(prompt, name, repo)
    chosen = task_options(repo_template, branch, push, pr, pr_target, input_)
    task = connect().create_task(text, name, repo, start, auto_approve, team, chosen)
    out(task.id)


@app.command("list", epilog=example("klaudio task list -s running -s paused"))
def list_(
    output: OutputOption = Output.text,
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


@app.command("show", epilog=example("klaudio task show 3f2a", "klaudio task show 3f2a -o json"))
def show(task_id: TaskId, output: OutputOption = Output.text) -> None:
    """Show a task: state, plan, agents, workspace and cost."""
    task = connect().get_task(task_id)
    if output == Output.json:
        print_task(task)
    else:
        for line in fmt.details(task):
            out(line)


@app.command("start", epilog=example("klaudio task start 3f2a"))
def start(task_id: TaskId) -> None:
    """Start planning a created task."""
    note(_now(connect().start_task(task_id)))


@app.command("approve", epilog=example("klaudio task approve 3f2a"))
def approve(task_id: TaskId) -> None:
    """Approve a planned task's plan; its agents start at once."""
    note(_now(connect().approve_task(task_id)))


@app.command("delete", epilog=example("klaudio task delete 3f2a"))
def delete(task_id: TaskId) -> None:
    """Delete a task that no agent is working on, with its workspace, agents and logs."""
    client = connect()
    task = client.get_task(task_id)
    client.delete_task(task.id)
    note(f"deleted task {task.id[:8]}")


@app.command(
    "logs",
    epilog=example("klaudio task logs -f 3f2a", "klaudio task logs 3f2a --agent planner --json"),
)
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


@app.command("wait", epilog=example("klaudio task wait 3f2a --timeout 600"))
def wait(
    task_id: TaskId,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", "-t", help="Give up after this many seconds."),
    ] = None,
) -> None:
    """Wait until a task settles; print its pull request URL last when it has one.

    Exits 0 completed, 1 failed (its delivery too), 6 timed out, 7 paused, cancelled or
    awaiting answers.
    """
    validate.timeout(timeout)
    task = connect().wait_task(task_id, timeout)
    raise typer.Exit(settled(task))


def settled(task: tasks_pb2.Task) -> int:
    """Say how a settled task ended and how its work was delivered; return the exit code.

    The pull request URL of a completed task is the last line on stdout. A completed task
    whose later publication failed exits 1, as a delivery failure does.
    """
    note(fmt.outcome(task))
    code = exit_code_for(fmt.state(task))
    if not task.HasField("delivery"):
        return code
    delivery = task.delivery
    if delivery.state == "delivered":
        note(f"task {task.id[:8]} {fmt.delivery_said(task)}")
        if code == errors.EXIT_OK and delivery.pr_url:
            out(delivery.pr_url)
    elif delivery.state == "failed" and code == errors.EXIT_OK:
        note(f"task {task.id[:8]} {fmt.delivery_said(task)}")
        code = errors.EXIT_TASK_FAILED
    return code


@app.command(
    "stop", epilog=example("klaudio task stop 3f2a", "klaudio task stop 3f2a --timeout 60")
)
def stop(task_id: TaskId, timeout: Grace = None, output: OutputOption = Output.text) -> None:
    """Stop a planning or running task: its agents end their turn and the task is paused.

    Each agent keeps its conversation for `klaudio task resume ID`. Returns once the agents
    have stopped; a paused task is left as it is. Exits 0 paused (or paused already), 2 bad
    --timeout, 3 unknown task, 4 when the task is neither planning nor running.
    """
    validate.timeout(timeout)
    client = connect()
    try:
        task, stopped = client.stop_task(task_id, timeout)
    except Interrupted:
        note(f"stopped waiting; the stop goes on: `klaudio task show {task_id}`")
        raise
    if output == Output.json:
        print_task(task)
    elif stopped:
        note(_ended(task))
    else:
        note(f"task {task.id[:8]} is already paused; nothing to stop")


@app.command("resume", epilog=example("klaudio task resume 3f2a"))
def resume(task_id: TaskId, output: OutputOption = Output.text) -> None:
    """Resume a paused task: each stopped agent continues its own conversation.

    Exits 0, 3 unknown task, 4 when the task is not paused.
    """
    task = connect().resume_task(task_id)
    if output == Output.json:
        print_task(task)
    else:
        note(_now(task))


@app.command("cancel", epilog=example("klaudio task cancel 3f2a", "klaudio task cancel 3f2a -t 0"))
def cancel(task_id: TaskId, timeout: Grace = None, output: OutputOption = Output.text) -> None:
    """Cancel an unfinished task for good, stopping its agents first.

    Returns once the agents have stopped. A cancelled task cannot go on, but `klaudio task
    relaunch ID` makes a new task from it. Exits 0 cancelled, 2 bad --timeout, 3 unknown task,
    4 when the task has completed, failed or been cancelled.
    """
    validate.timeout(timeout)
    client = connect()
    try:
        task = client.cancel_task(task_id, timeout)
    except Interrupted:
        note(f"stopped waiting; the cancel goes on: `klaudio task show {task_id}`")
        raise
    if output == Output.json:
        print_task(task)
    else:
        note(_ended(task))


@app.command(
    "retry",
    epilog=example("klaudio task retry 3f2a", "klaudio task retry 3f2a --subtask tests --fresh"),
)
def retry(
    task_id: TaskId,
    subtask: Annotated[
        list[str] | None,
        typer.Option(
            "--subtask",
            help="Only this failed or skipped subtask, by its id in `task show` (repeatable).",
            callback=lambda values: [validate.utf8(v, "--subtask") for v in values or []],
        ),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Start the agents' conversations afresh, not resumed."),
    ] = False,
    output: OutputOption = Output.text,
) -> None:
    """Run a failed task's failed subtasks again, and those skipped because of them.

    Completed subtasks stay done. Each retried agent resumes its conversation, told why it
    failed, unless --fresh. A task that failed while planning is planned again. Exits 0, 3
    unknown task or subtask, 4 when the task has not failed or a named subtask neither failed
    nor was skipped.
    """
    task = connect().retry_task(task_id, list(subtask or []), fresh)
    if output == Output.json:
        print_task(task)
    else:
        note(_now(task))


@app.command(
    "relaunch",
    epilog=example(
        "klaudio task relaunch 3f2a --start",
        'klaudio task relaunch 3f2a --prompt "Also add tests" --no-context',
    ),
)
def relaunch(
    task_id: TaskId,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "-p",
            help="The new task's prompt (default: the old one's); - reads it from stdin.",
            show_default=False,
        ),
    ] = None,
    no_context: Annotated[
        bool,
        typer.Option("--no-context", help="Do not tell the planner what happened to the old task."),
    ] = False,
    start: Annotated[bool, typer.Option("--start", help="Start planning at once.")] = False,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", "-y", help="Approve the plan as soon as it is valid.")
    ] = False,
    output: OutputOption = Output.text,
) -> None:
    """Create a new task from a completed, failed or cancelled one; print the new task's id.

    The new task has the old one's repository and settings and a copy of its workspace. Its
    planner is told the old task's prompt, outcome, plan and changed files, unless
    --no-context. Exits 0, 2 bad --prompt, 3 unknown task, 4 when the task has not finished.
    """
    text = None if prompt is None else _prompt(prompt, "--prompt")
    task = connect().relaunch_task(task_id, text, no_context, start, auto_approve)
    if output == Output.json:
        print_task(task)
    else:
        out(task.id)


def checked(prompt: str, name: str, repo: str) -> tuple[str, str, str]:
    """The prompt, name and repo of a new task, checked before anything is sent."""
    return _prompt(prompt), validate.name(name), _repo(repo)


def task_options(
    template: str,
    branch: str,
    push: bool,
    pr: bool,
    pr_target: str,
    inputs: list[str] | None,
) -> TaskOptions:
    """A new task's template, branch, delivery and inputs.

    Inputs are made absolute: the daemon has its own working directory.
    """
    import os

    from klaudio.client import TaskOptions

    if any(not p for p in inputs or []):
        raise errors.InvalidArgument("--input is empty")
    given = tuple(os.path.abspath(os.path.expanduser(p)) for p in inputs or [])
    return TaskOptions(template, push, pr, pr_target, branch, given)


def _prompt(value: str, name: str = "prompt") -> str:
    """The prompt, read from stdin when it is "-" (for long prompts and pipelines)."""
    if value != "-":
        return validate.prompt(value, name)
    return validate.prompt(read_stdin(name), f"the {name} read from stdin")


def read_stdin(name: str) -> str:
    """Text read from stdin, named name in errors: at most 4 MiB of UTF-8.

    Stdin is read as bytes and decoded strictly: undecodable bytes are refused, not replaced.
    """
    import sys

    field = f"the {name} read from stdin"
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
    return text


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
