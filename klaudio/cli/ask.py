"""The planner's open questions: asked on a terminal, or the `task answer` commands to use."""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING

from klaudio import errors, validate
from klaudio.cli import format as fmt
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    from klaudio.rpc.v1.tasks_pb2 import Question, Task


def current_round(task: Task) -> int:
    """The latest round of questions the planner asked (0: none)."""
    return max((q.round for q in task.questions), default=0)


def open_questions(task: Task) -> list[Question]:
    """The current round's questions still waiting for an answer; none unless the task awaits."""
    if fmt.state(task) != "awaiting_answers":
        return []
    latest = current_round(task)
    return [q for q in task.questions if q.round == latest and not q.answer]


def interactive() -> bool:
    """Whether a person can be asked: stdin is a terminal."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def ask(task: Task) -> dict[str, str] | None:
    """Ask each open question on the terminal; the answers by question id.

    Options are numbered (a number picks one, other text is the answer itself); Enter takes
    the first suggestion when there is one. None when stdin ends before every question is
    answered (nothing is sent then).
    """
    questions = open_questions(task)
    answers: dict[str, str] = {}
    for number, question in enumerate(questions, 1):
        _say("")
        for line in describe(question, f"Question {number} of {len(questions)}"):
            _say(line)
        while True:
            _say(_prompt(question), end="")
            try:
                reply = sys.stdin.readline()
            except UnicodeDecodeError:
                _say("that is not valid UTF-8; type it again")
                continue
            if not reply:
                _say("")
                return None
            answer = choose(question, reply)
            if answer is None:
                _say(_hint(question))
                continue
            try:
                answers[question.id] = validate.prompt(answer, "the answer")
            except errors.InvalidArgument as exc:
                _say(safe(str(exc), one_line=True))
                continue
            break
    return answers


def choose(question: Question, reply: str) -> str | None:
    """The answer a typed line gives: an option by its number, or the text itself.

    An empty line takes the first suggestion; None when there is none to take.
    """
    text = reply.strip()
    if not text:
        return question.suggestions[0] if question.suggestions else None
    if question.options and text.isdigit() and 1 <= int(text) <= len(question.options):
        return question.options[int(text) - 1]
    return text


def describe(question: Question, title: str = "") -> list[str]:
    """A question as safe lines: id and text, its context, numbered options, suggestions.

    With a title: 'Question 1 of 2 (db): Which database?'; else 'db: Which database?'.
    """
    text = _lines(question.text)
    first = f"{title} ({_one(question.id)})" if title else _one(question.id)
    lines = [f"{first}: {text[0] if text else ''}".rstrip()]
    lines += ["  " + line for line in text[1:]]
    lines += ["  " + line for line in _lines(question.context)]
    lines += [f"  {n}) {_one(option)}" for n, option in enumerate(question.options, 1)]
    if question.suggestions:
        lines.append(f"  suggested: {'; '.join(_one(s) for s in question.suggestions)}")
    return lines


def answer_commands(task: Task) -> list[str]:
    """The exact `klaudio task answer` commands for the open questions, one each."""
    short = task.id[:8]
    lines = []
    for question in open_questions(task):
        # A question id is the model's text: quoted for the shell, after "--" if it looks like
        # an option.
        ends = "-- " if question.id.startswith("-") else ""
        lines.append(f"klaudio task answer {short} {ends}{shlex.quote(question.id)} 'ANSWER'")
    return [safe(line, one_line=True) for line in lines]


def _prompt(question: Question) -> str:
    parts = ["a number or your own answer" if question.options else "your answer"]
    if question.suggestions:
        parts.append(f"Enter for {_one(question.suggestions[0])}")
    return f"answer ({'; '.join(parts)}): "


def _hint(question: Question) -> str:
    if question.options:
        return f"type an answer, or a number from 1 to {len(question.options)}"
    return "type an answer"


def _say(line: str, end: str = "\n") -> None:
    print(line, end=end, file=sys.stderr, flush=True)


def _one(text: str) -> str:
    return safe(text, one_line=True)


def _lines(text: str) -> list[str]:
    stripped = text.replace("\r\n", "\n").strip()
    return [_one(line) for line in stripped.split("\n")] if stripped else []
