"""`klaudio task questions|answer|plan|replan`: the planner's questions and the task's plan."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from klaudio import errors, validate
from klaudio.cli import ask
from klaudio.cli import format as fmt
from klaudio.cli.common import connect, note, out, read_file, refusal
from klaudio.cli.planview import plan_dict, plan_lines, to_yaml
from klaudio.cli.task import Output, OutputOption, TaskId, example, print_task, read_stdin
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.client import Client
    from klaudio.rpc.v1.tasks_pb2 import Task


class PlanOutput(StrEnum):
    """Output formats of `task plan`."""

    text = "text"
    json = "json"
    yaml = "yaml"


def questions(task_id: TaskId, output: OutputOption = Output.text) -> None:
    """Show the planner's questions: open ones with options and hints, and answered ones.

    Exits 0 (also when the planner asked nothing), 3 unknown task.
    """
    task = connect().get_task(task_id)
    if output == Output.json:
        out(json.dumps(questions_dict(task), indent=2))
        return
    if not task.questions:
        note(f"task {task.id[:8]} has no questions")
        return
    for line in question_lines(task):
        out(line)
    if ask.open_questions(task):
        note(f'answer with `klaudio task answer {task.id[:8]} QUESTION "ANSWER"`')


def questions_dict(task: Task) -> dict[str, Any]:
    """`task questions -o json`: the task, its state, the round limit and every question."""
    opened = {q.id for q in ask.open_questions(task)}
    return {
        "task": task.id,
        "state": fmt.state(task),
        "round": ask.current_round(task),
        "max_question_rounds": task.settings.max_question_rounds,
        "questions": [
            {
                "id": q.id,
                "round": q.round,
                "text": q.text,
                "context": q.context,
                "options": list(q.options),
                "suggestions": list(q.suggestions),
                "answer": q.answer,
                "open": q.id in opened and q.round == ask.current_round(task),
            }
            for q in task.questions
        ],
    }


def question_lines(task: Task) -> list[str]:
    """`task questions` as text: each round, its questions, their hints and answers."""
    lines: list[str] = []
    opened = {q.id for q in ask.open_questions(task)}
    latest = ask.current_round(task)
    limit = task.settings.max_question_rounds
    for number in sorted({q.round for q in task.questions}):
        asked = [q for q in task.questions if q.round == number]
        waiting = number == latest and bool(opened)
        of = f" of at most {limit}" if limit else ""
        said = f"{len(opened)} open" if waiting else "answered"
        if not waiting and any(not q.answer for q in asked):
            said = "not answered"
        lines.append(f"Round {number}{of} ({said})")
        for q in asked:
            lines += ["  " + line for line in ask.describe(q)]
            if q.answer:
                lines.append(f"  answer: {_one(q.answer)}")
    return lines


def answer(
    task_id: TaskId,
    question_id: Annotated[
        str | None,
        typer.Argument(
            help="The question's id (see `klaudio task questions`).", show_default=False
        ),
    ] = None,
    text: Annotated[
        str | None,
        typer.Argument(help="The answer; - reads it from stdin.", show_default=False),
    ] = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            help="Answer several: a YAML or JSON mapping of question id to answer (- for stdin).",
            show_default=False,
        ),
    ] = None,
    output: OutputOption = Output.text,
) -> None:
    """Answer the planner's open questions: one by its id, or several from a file.

    Answers are recorded all or none. Once every open question is answered, the planner goes
    on in its own session with the answers. Without a question id or --file, on a terminal,
    each open question is asked in turn. Exits 0, 2 bad or empty answer or an answered
    question, 3 unknown task or question, 4 when the task is not awaiting answers.
    """
    client = connect()
    if file is not None:
        if question_id is not None:
            raise errors.InvalidArgument("give a question id and an answer, or --file, not both")
        given = read_answers(file)
    elif question_id is not None:
        if text is None:
            raise errors.InvalidArgument(f"give the answer to {question_id!r} after its id")
        qid = validate.utf8(question_id, "the question id")
        reply = read_stdin("the answer") if text == "-" else text
        given = {qid: validate.prompt(reply, f"the answer to {qid!r}")}
    else:
        given = _asked(client, task_id)
    task = client.answer_questions(task_id, given)
    if output == Output.json:
        print_task(task)
        return
    left = ask.open_questions(task)
    done = f"recorded {_count(len(given), 'answer')}"
    if left:
        names = ", ".join(_one(q.id) for q in left)
        note(f"{done}; task {task.id[:8]} still awaits {_count(len(left), 'answer')} ({names})")
    else:
        note(f"{done}; the planner goes on: `klaudio task logs -f {task.id[:8]}`")


def _asked(client: Client, task_id: str) -> dict[str, str]:
    """The open questions' answers, asked on the terminal."""
    if not ask.interactive():
        raise errors.InvalidArgument("give a question id and an answer, or --file")
    task = client.get_task(task_id)
    if fmt.state(task) != "awaiting_answers":
        raise errors.FailedPrecondition(
            f"task {task.id[:8]} is {fmt.state(task)}; only a task awaiting answers takes answers"
        )
    given = ask.ask(task)
    if not given:
        raise errors.InvalidArgument("no answers given; nothing was sent")
    return given


def read_answers(source: str) -> dict[str, str]:
    """Answers from a YAML or JSON file (- for stdin): a mapping of question id to answer.

    Raises:
        InvalidArgument: listing every problem of the file (each answer checked as text).
    """
    label = "stdin" if source == "-" else source
    raw = read_stdin("the answers") if source == "-" else read_file(source)
    import yaml

    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise errors.InvalidArgument(f"{label}{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or not data:
        raise errors.InvalidArgument(
            f"{label}: must be a mapping of question id to answer, such as `db: sqlite`"
        )
    answers: dict[str, str] = {}
    found: list[str] = []
    for key, value in data.items():
        if isinstance(key, bool) or not isinstance(key, str | int):
            found.append(f"{label}: {key!r}: a question id must be text")
            continue
        qid = str(key)
        if not isinstance(value, str):
            found.append(f'{label}: {qid}: the answer must be text (quote it: {qid}: "...")')
            continue
        try:
            answers[validate.utf8(qid, "the question id")] = validate.prompt(
                value, f"the answer to {qid!r}"
            )
        except errors.InvalidArgument as exc:
            found.append(f"{label}: {exc}")
    if found:
        raise refusal(f"{label} has {len(found)} problems", found)
    return answers


def plan(
    task_id: TaskId,
    output: Annotated[
        PlanOutput,
        typer.Option("--output", "-o", help="text, json or yaml (the plan as you edit it)."),
    ] = PlanOutput.text,
    edit: Annotated[
        bool,
        typer.Option("--edit", "-e", help="Edit the plan in $VISUAL or $EDITOR, as YAML."),
    ] = False,
    set_from: Annotated[
        str | None,
        typer.Option(
            "--set",
            help="Replace the plan with this YAML or JSON file (- for stdin).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show a task's plan grouped by what runs in parallel, or change a planned task's plan.

    -o json and -o yaml print the plan exactly, in the shape --set takes. A changed plan is
    checked as a whole before anything is stored: a refusal lists every problem and keeps the
    old plan; after --edit, the editor can reopen your text. Exits 0, 2 a refused plan or bad
    file, 3 unknown task, 4 when the task has no plan or (to change it) is not planned, or its
    plan changed while you edited it.
    """
    if edit and set_from is not None:
        raise errors.InvalidArgument("--edit and --set do not go together")
    if (edit or set_from is not None) and output != PlanOutput.text:
        raise errors.InvalidArgument("-o shows a plan; it does not go with --edit or --set")
    client = connect()
    if set_from is not None:
        text = read_stdin("the plan") if set_from == "-" else read_file(set_from)
        _saved(client.set_plan(task_id, validate.prompt(text, "the plan")))
        return
    task = client.get_task(task_id)
    if not task.HasField("plan"):
        raise errors.FailedPrecondition(f"task {task.id[:8]} is {fmt.state(task)}; it has no plan")
    if edit:
        _edit(client, task)
    elif output == PlanOutput.json:
        out(json.dumps(plan_dict(task.plan), indent=2))
    elif output == PlanOutput.yaml:
        out(to_yaml(plan_dict(task.plan)).rstrip("\n"))
    else:
        for line in plan_lines(task, _run_last(client, task)):
            out(line)


def _edit(client: Client, task: Task) -> None:
    from klaudio.cli.editor import edit

    if fmt.state(task) != "planned":
        raise errors.FailedPrecondition(
            f"task {task.id[:8]} is {fmt.state(task)}; only a planned task's plan can change"
        )
    head = [
        f"# The plan of task {task.id[:8]}, version {task.plan.version}. Save to replace it: the",
        "# new version is checked as a whole first. Leave it unchanged, or empty, to send nothing.",
    ]
    roles = _roles(client, task)
    if roles:
        head.append(f"# Team {task.settings.team}: {roles}.")
    text = "\n".join(head) + "\n" + to_yaml(plan_dict(task.plan))
    version = task.plan.version

    def send(saved: str, path: Path) -> Task:
        return client.set_plan(task.id, saved, version)

    changed = edit(text, send, "plan")
    if changed is not None:
        _saved(changed)


def _saved(task: Task) -> None:
    short = task.id[:8]
    said = fmt.plan_version(task)
    note(f"task {short}: plan {said}; approve it with `klaudio task approve {short}`")


def _run_last(client: Client, task: Task) -> set[str]:
    """The run-last roles of the task's team."""
    team = _team(client, task)
    return {r.name for r in team.roles if r.run_last} if team is not None else set()


def _roles(client: Client, task: Task) -> str:
    """'developer (up to 3), reviewer (1, runs last)': the roles a plan may use, for the editor."""
    team = _team(client, task)
    if team is None:
        return ""
    from klaudio.cli.teams import roles_text

    return "roles " + roles_text(team)


def _team(client: Client, task: Task) -> Any:
    """The task's team as it was when the task was created (older tasks: as it is now)."""
    if task.settings.HasField("team_template"):
        return task.settings.team_template
    if not task.settings.team:
        return None
    try:
        return client.get_team(task.settings.team)
    except (errors.NotFound, errors.InvalidArgument):
        return None  # removed or broken since: levels without run-last roles


def replan(
    task_id: TaskId,
    context: Annotated[
        str,
        typer.Option(
            "--context", "-c", help="More context for the planner; - reads it from stdin."
        ),
    ] = "",
    output: OutputOption = Output.text,
) -> None:
    """Plan a planned or failed task again, in the planner's own session.

    The planner is told to replace its plan, with --context as more to go on; it writes a new
    plan version (or asks questions). Exits 0, 2 bad --context, 3 unknown task, 4 when the
    task is neither planned nor failed.
    """
    extra = read_stdin("the context") if context == "-" else context
    task = connect().replan_task(task_id, validate.utf8(extra, "--context"))
    if output == Output.json:
        print_task(task)
    else:
        note(f"task {task.id[:8]} is {fmt.state(task)}: `klaudio task logs -f {task.id[:8]}`")


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


def _one(text: str) -> str:
    return safe(text, one_line=True)


EPILOGS = {
    "questions": example("klaudio task questions 3f2a", "klaudio task questions 3f2a -o json"),
    "answer": example(
        'klaudio task answer 3f2a db "PostgreSQL 16"',
        "klaudio task answer 3f2a --file answers.yaml",
    ),
    "plan": example(
        "klaudio task plan 3f2a",
        "klaudio task plan 3f2a --edit",
        "klaudio task plan 3f2a -o yaml > plan.yaml && klaudio task plan 3f2a --set plan.yaml",
    ),
    "replan": example('klaudio task replan 3f2a --context "Keep the public API unchanged"'),
}
