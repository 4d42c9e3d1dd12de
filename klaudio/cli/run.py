"""`klaudio run`: create and start a task, follow it to its end, answer questions on a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from klaudio import errors
from klaudio.cli import ask
from klaudio.cli.common import Interrupted, connect, note
from klaudio.cli.follow import Printer, events, task_state
from klaudio.cli.task import (
    BranchOption,
    InputOption,
    Prompt,
    PrOption,
    PrTargetOption,
    PushOption,
    RepoTemplateOption,
    TeamOption,
    checked,
    example,
    settled,
    task_options,
)
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.client import Client
    from klaudio.rpc.v1.tasks_pb2 import Task


def run(
    prompt: Prompt,
    repo: Annotated[
        str, typer.Option("--repo", "-r", help="Local path or git URL to clone into the workspace.")
    ] = "",
    name: Annotated[str, typer.Option("--name", "-n", help="A short name for the task.")] = "",
    team: TeamOption = "",
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", "-y", help="Approve the plan without waiting.")
    ] = False,
    no_input: Annotated[
        bool,
        typer.Option("--no-input", help="Never ask the planner's questions here; exit 7 instead."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One raw JSON event per line.")] = False,
    repo_template: RepoTemplateOption = "",
    branch: BranchOption = "",
    push: PushOption = False,
    pr: PrOption = False,
    pr_target: PrTargetOption = "",
    input_: InputOption = None,
) -> None:
    """Create and start a task, stream its output, and exit with its outcome.

    When the planner asks questions and stdin is a terminal, each is asked here and the answers
    sent; planning goes on, round after round, to the plan and the run. With --no-input, or
    when stdin is not a terminal, it exits 7 and prints the `klaudio task answer` commands to
    use. Without --auto-approve it waits for `klaudio task approve ID`. With a
    --repo-template that delivers, or --push/--pr, the work is committed, pushed and its pull
    request opened once the subtasks complete; the pull request URL is the last line on stdout.
    Exits 0 when the task completed, 1 when it failed (its delivery too), 2 bad input, 3
    unknown --team or --repo-template, 7 when it was paused, cancelled or awaits answers.
    """
    text, name, repo = checked(prompt, name, repo)
    chosen = task_options(repo_template, branch, push, pr, pr_target, input_)
    client = connect()
    task = client.create_task(text, name, repo, True, auto_approve, team, chosen)
    note(f"task {task.id} created")
    printer = Printer(as_json)
    try:
        _follow(client, task.id, printer, auto_approve, not no_input and ask.interactive())
    except Interrupted:
        note(f"stopped following; the task goes on: `klaudio task logs -f {task.id[:8]}`")
        raise
    printer.finish()
    final = client.get_task(task.id)
    if ask.open_questions(final):
        _answer_with(final)
    raise typer.Exit(settled(final))


def _follow(client: Client, task_id: str, printer: Printer, approved: bool, asking: bool) -> None:
    """Print the task's events until it settles, answering its questions while asking is on."""
    last = 0
    while True:
        waiting = False
        for event in events(client, task_id, since=last):
            last = event.seq
            printer.show(event)
            state = task_state(event)
            if state == "planned" and not approved:
                note(f"plan ready: approve it with `klaudio task approve {task_id[:8]}`")
            if state == "awaiting_answers":
                waiting = True
                break
        if not waiting or not asking:
            return
        task = client.get_task(task_id)
        answers = ask.ask(task) if ask.open_questions(task) else {}
        if answers is None:
            return  # stdin ended: the commands to answer with are printed
        if not answers:
            continue  # answered elsewhere meanwhile: follow on
        try:
            client.answer_questions(task_id, answers)
        except (errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition) as exc:
            note(f"the answers were not taken: {exc}")
            continue
        note("answers sent; the planner goes on")


def _answer_with(task: Task) -> None:
    """Tell how to answer the open questions: one `task answer` command each."""
    short = task.id[:8]
    count = len(ask.open_questions(task))
    note(f"the planner asks {count} question{'s' if count > 1 else ''}; answer with:")
    for line in ask.answer_commands(task):
        print(f"  {safe(line, one_line=True)}", file=sys.stderr)
    note(f"or answer several at once: `klaudio task answer {short} --file answers.yaml`")


EPILOG = example(
    'klaudio run "Add a hello script" --repo ./myrepo --auto-approve',
    'klaudio run "Split the parser into modules" --repo . --team dev-review',
    'klaudio run "Fix the flaky test" --repo-template widgets --auto-approve | tail -1',
    "klaudio run - --no-input < task.md",
)
