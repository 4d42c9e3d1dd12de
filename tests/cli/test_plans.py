"""`klaudio task questions|answer|plan|replan` and `--team` against a real daemon, without Docker.

No task gets to a plan or to questions without the agent image: these are the refusals, the
checks made before anything is sent, and what a task records. tests/e2e/test_plan_cli.py runs
the rest against the real stack.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_errors import one_error_line
from tests.conftest import Instance

VERBS = ("questions", "answer", "plan", "replan")


def create(instance: Instance, *args: str) -> str:
    return instance.cli("task", "create", "a task", *args, check=True).stdout.strip()


def fails(result: subprocess.CompletedProcess[str], code: int, line: str) -> None:
    """The command exited code, printing nothing but the one error line."""
    assert result.returncode == code, result.stderr
    assert one_error_line(result) == f"klaudio: {line}"
    assert result.stdout == ""


# Questions and answers --------------------------------------------------------------------------


def test_questions_of_a_task_that_asked_nothing(daemon: Instance) -> None:
    task_id = create(daemon)

    shown = daemon.cli("task", "questions", task_id[:5])

    assert shown.returncode == 0, shown.stderr
    assert (shown.stdout, shown.stderr) == ("", f"klaudio: task {task_id[:8]} has no questions\n")
    data = json.loads(daemon.cli("task", "questions", task_id, "-o", "json", check=True).stdout)
    assert data == {
        "task": task_id,
        "state": "created",
        "round": 0,
        "max_question_rounds": 3,
        "questions": [],
    }


def test_questions_of_an_unknown_task(daemon: Instance) -> None:
    fails(daemon.cli("task", "questions", "0000"), 3, "no task matches '0000'")


def test_answer_for_a_task_not_awaiting_answers_exits_4(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "answer", task_id, "db", "sqlite")

    fails(result, 4, f"task {task_id[:8]} is created; only a task awaiting answers takes answers")


def test_answer_for_an_unknown_task_exits_3(daemon: Instance) -> None:
    fails(daemon.cli("task", "answer", "0000", "db", "sqlite"), 3, "no task matches '0000'")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("db",), "give the answer to 'db' after its id"),
        (("db", "  "), "the answer to 'db' is empty"),
        ((), "give a question id and an answer, or --file"),
        (("db", "x", "--file", "a.yaml"), "give a question id and an answer, or --file, not both"),
    ],
)
def test_answer_is_checked_before_it_is_sent(
    daemon: Instance, args: tuple[str, ...], line: str
) -> None:
    task_id = create(daemon)

    fails(daemon.cli("task", "answer", task_id, *args), 2, line)


def test_an_answer_from_stdin_reaches_the_daemon(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "answer", task_id, "db", "-", stdin="sqlite, of course\n")

    assert result.returncode == 4  # checked, sent, and refused for the task's state
    empty = daemon.cli("task", "answer", task_id, "db", "-", stdin="\n")
    fails(empty, 2, "the answer to 'db' is empty")


def test_an_answers_file_lists_every_problem(daemon: Instance, tmp_path: Path) -> None:
    task_id = create(daemon)
    answers = tmp_path / "answers.yaml"
    answers.write_text('db: yes\nport: 8080\ncache: "  "\nname: "Ada"\n')

    result = daemon.cli("task", "answer", task_id, "--file", str(answers))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"klaudio: {answers} has 3 problems:",
        f'{answers}: db: the answer must be text (quote it: db: "...")',
        f'{answers}: port: the answer must be text (quote it: port: "...")',
        f"{answers}: the answer to 'cache' is empty",
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"db: [sqlite\n", ":2: not valid YAML: expected ',' or ']', but got '<stream end>'"),
        (b"- db\n- port\n", ": must be a mapping of question id to answer, such as `db: sqlite`"),
        (b"", ": must be a mapping of question id to answer, such as `db: sqlite`"),
        (b'db: "\\0"\n', ": the answer to 'db' contains a NUL character"),
        (b"db: \xff\n", " is not valid UTF-8 (byte 0xff at offset 4)"),
    ],
)
def test_a_bad_answers_file_is_one_line(
    daemon: Instance, tmp_path: Path, content: bytes, problem: str
) -> None:
    task_id = create(daemon)
    answers = tmp_path / "answers.yaml"
    answers.write_bytes(content)

    fails(daemon.cli("task", "answer", task_id, "-f", str(answers)), 2, f"{answers}{problem}")


def test_a_missing_answers_file(daemon: Instance, tmp_path: Path) -> None:
    task_id = create(daemon)
    missing = tmp_path / "nope.yaml"

    result = daemon.cli("task", "answer", task_id, "--file", str(missing))

    fails(result, 2, f"cannot read {missing}: No such file or directory")


def test_answers_as_json_on_stdin_reach_the_daemon(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli(
        "task", "answer", task_id, "--file", "-", stdin=json.dumps({"db": "sqlite", "7": "x"})
    )

    fails(result, 4, f"task {task_id[:8]} is created; only a task awaiting answers takes answers")


# Plans --------------------------------------------------------------------------------------------


def test_a_task_without_a_plan_has_none_to_show_or_edit(daemon: Instance) -> None:
    task_id = create(daemon)
    no_plan = f"task {task_id[:8]} is created; it has no plan"

    fails(daemon.cli("task", "plan", task_id), 4, no_plan)
    fails(daemon.cli("task", "plan", task_id, "-o", "yaml"), 4, no_plan)
    fails(daemon.cli("task", "plan", task_id, "--edit"), 4, no_plan)


def test_set_needs_a_planned_task(daemon: Instance, tmp_path: Path) -> None:
    task_id = create(daemon)
    plan = tmp_path / "plan.yaml"
    plan.write_text("analysis: a\nstrategy: dag\nnotes: ''\nsubtasks: []\n")

    result = daemon.cli("task", "plan", task_id, "--set", str(plan))

    fails(result, 4, f"task {task_id[:8]} is created; only a planned task's plan can change")
    assert daemon.show(task_id)["plan"] is None


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--edit", "--set", "p.yaml"), "--edit and --set do not go together"),
        (("--edit", "-o", "json"), "-o shows a plan; it does not go with --edit or --set"),
        (("--set", "p.yaml", "-o", "yaml"), "-o shows a plan; it does not go with --edit or --set"),
    ],
)
def test_plan_options_that_do_not_go_together(
    daemon: Instance, args: tuple[str, ...], line: str
) -> None:
    fails(daemon.cli("task", "plan", create(daemon), *args), 2, line)


def test_set_checks_the_file_before_sending(daemon: Instance, tmp_path: Path) -> None:
    task_id = create(daemon)
    missing = tmp_path / "nope.yaml"

    fails(
        daemon.cli("task", "plan", task_id, "--set", str(missing)),
        2,
        f"cannot read {missing}: No such file or directory",
    )
    fails(
        daemon.cli("task", "plan", task_id, "--set", "-", stdin=" \n"),
        2,
        "the plan is empty",
    )


def test_plan_of_an_unknown_task(daemon: Instance) -> None:
    fails(daemon.cli("task", "plan", "0000"), 3, "no task matches '0000'")
    fails(
        daemon.cli("task", "plan", "0000", "--set", "-", stdin="a: b"), 3, "no task matches '0000'"
    )


def test_replan_needs_a_planned_or_failed_task(daemon: Instance) -> None:
    task_id = create(daemon)
    refusal = f"task {task_id[:8]} is created; only a planned or failed task can be planned again"

    fails(daemon.cli("task", "replan", task_id), 4, refusal)
    fails(daemon.cli("task", "replan", task_id, "--context", "-", stdin="more\n"), 4, refusal)
    fails(daemon.cli("task", "replan", "0000"), 3, "no task matches '0000'")
    assert daemon.show(task_id)["state"] == "created"


# Teams of tasks -----------------------------------------------------------------------------------


def test_a_task_records_its_team_and_settings(daemon: Instance) -> None:
    task_id = create(daemon, "--team", "dev-review")

    task = daemon.show(task_id)

    assert task["settings"]["team"] == "dev-review"
    assert task["settings"]["max_agents"] == 3  # the team's, under agents.per_task (4)
    assert task["settings"]["max_question_rounds"] == 3
    assert task["approved_plan_version"] is None
    assert "team:       dev-review" in daemon.cli("task", "show", task_id, check=True).stdout
    default = daemon.show(create(daemon))
    assert default["settings"]["team"] == daemon.env["KLAUDIO_TEAMS_DEFAULT"]


def test_an_unknown_team_creates_nothing(daemon: Instance) -> None:
    known = "dev-review, dev-test, full-team, parallel-devs, solo"

    fails(
        daemon.cli("task", "create", "a task", "--team", "nope"),
        3,
        f"no team named 'nope'; known teams: {known}",
    )
    result = daemon.cli("run", "a task", "--team", "nope")
    assert result.returncode == 3
    assert result.stderr == f"klaudio: no team named 'nope'; known teams: {known}\n"
    assert daemon.task_ids() == []


# Help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_an_example_and_the_exit_codes(instance: Instance, verb: str) -> None:
    result = instance.cli("task", verb, "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^  Examples?:\n    klaudio task {verb} 3f2a", result.stdout, re.M)
    assert "Exits 0" in result.stdout
    assert not instance.socket.exists()  # help needs no daemon


def test_run_help_says_how_questions_are_answered(instance: Instance) -> None:
    result = instance.cli("run", "--help", check=True)

    assert "--no-input" in result.stdout and "--team" in result.stdout
    assert "klaudio task answer" in result.stdout
    assert re.search(r"^  Examples:\n    klaudio run ", result.stdout, re.M)
