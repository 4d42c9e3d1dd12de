"""Stop, resume, cancel, retry and relaunch through a real daemon, without Docker work.

Refusals name the task's state (exit 4), unknown tasks exit 3, bad input exits 2 and changes
nothing. A stop and resume of working agents is in tests/e2e/test_control_cli.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_errors import NO_DOCKER, listed, one_error_line
from tests.conftest import Instance, wait_for

VERBS = ("stop", "resume", "cancel", "retry", "relaunch")


@pytest.fixture
def no_docker(instance: Instance) -> Instance:
    """A running daemon whose Docker engine cannot be reached: planning fails at once."""
    instance.env["DOCKER_HOST"] = NO_DOCKER
    instance.start_daemon()
    return instance


def create(instance: Instance, prompt: str = "a task") -> str:
    return instance.cli("task", "create", prompt, check=True).stdout.strip()


def failed_in_planning(instance: Instance) -> str:
    """A task whose planner failed for want of Docker (so it has no plan)."""
    task_id = instance.cli("task", "create", "plan it", "--start", check=True).stdout.strip()
    wait_for(lambda: instance.show(task_id)["state"] == "failed", 15, "the task to fail")
    return task_id


def cancelled(instance: Instance) -> str:
    task_id = create(instance)
    instance.cli("task", "cancel", task_id, check=True)
    return task_id


# Refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "says"),
    [
        ("stop", "it cannot be stopped"),
        ("resume", "only a paused task can be resumed"),
        ("retry", "only a failed task can be retried"),
        ("relaunch", "only a completed, failed or cancelled task can be relaunched"),
    ],
)
def test_a_created_task_is_refused_with_4_naming_its_state(
    daemon: Instance, verb: str, says: str
) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", verb, task_id[:6])

    assert result.returncode == 4, result.stderr
    assert one_error_line(result) == f"klaudio: task {task_id[:8]} is created; {says}"
    assert result.stdout == ""
    assert daemon.show(task_id)["state"] == "created"
    assert len(listed(daemon)) == 1


@pytest.mark.parametrize("verb", VERBS)
def test_an_unknown_task_exits_3(daemon: Instance, verb: str) -> None:
    result = daemon.cli("task", verb, "nosuchid")

    assert result.returncode == 3
    assert one_error_line(result) == "klaudio: no task matches 'nosuchid'"
    assert result.stdout == ""


def test_retrying_a_created_task_with_a_subtask_is_refused_for_its_state(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "retry", task_id, "--subtask", "tests", "--fresh")

    assert result.returncode == 4
    assert "is created" in one_error_line(result)


# Cancel -------------------------------------------------------------------------------------------


def test_cancelling_a_created_task_then_again(daemon: Instance) -> None:
    task_id = create(daemon)

    first = daemon.cli("task", "cancel", task_id[:5])

    assert first.returncode == 0, first.stderr
    assert first.stderr == f"klaudio: task {task_id[:8]} cancelled (cancelled by user)\n"
    assert first.stdout == ""
    task = daemon.show(task_id)
    assert (task["state"], task["reason"], task["control"]) == (
        "cancelled",
        "cancelled by user",
        "",
    )

    again = daemon.cli("task", "cancel", task_id)

    assert again.returncode == 4
    assert one_error_line(again) == (
        f"klaudio: task {task_id[:8]} is cancelled; it cannot be cancelled"
    )
    waited = daemon.cli("task", "wait", task_id, "--timeout", "0")
    assert waited.returncode == 7
    assert waited.stderr == f"klaudio: task {task_id[:8]} cancelled: cancelled by user\n"


def test_stopping_a_cancelled_task_exits_4(daemon: Instance) -> None:
    task_id = cancelled(daemon)

    result = daemon.cli("task", "stop", task_id)

    assert result.returncode == 4
    assert (
        one_error_line(result) == f"klaudio: task {task_id[:8]} is cancelled; it cannot be stopped"
    )


@pytest.mark.parametrize("verb", ["stop", "cancel"])
@pytest.mark.parametrize(
    ("value", "says"),
    [("nan", "must be a finite number"), ("inf", "must be a finite number"), ("-1", "negative")],
)
def test_a_bad_timeout_exits_2_and_changes_nothing(
    daemon: Instance, verb: str, value: str, says: str
) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", verb, task_id, "--timeout", value)

    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("klaudio: --timeout ") and says in line
    assert daemon.show(task_id)["state"] == "created"


# Relaunch -----------------------------------------------------------------------------------------


def test_relaunching_a_cancelled_task_prints_the_new_id(daemon: Instance) -> None:
    old = cancelled(daemon)
    (Path(daemon.show(old)["workspace"]) / "notes.txt").write_text("kept\n")

    result = daemon.cli("task", "relaunch", old[:4])

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    new = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", new), result.stdout
    assert new != old
    task = daemon.show(new)
    assert task["state"] == "created"
    assert task["prompt"] == "a task"
    workspace = Path(task["workspace"])
    assert workspace.is_dir() and new in str(workspace)
    assert (workspace / "notes.txt").read_text() == "kept\n"
    assert daemon.show(old)["state"] == "cancelled"
    assert sorted(daemon.task_ids()) == sorted([old, new])


def test_relaunch_with_a_prompt_from_stdin_and_start(no_docker: Instance) -> None:
    old = cancelled(no_docker)

    result = no_docker.cli(
        "task", "relaunch", old, "--prompt", "-", "--start", "--no-context", stdin="do it again\n"
    )

    assert result.returncode == 0, result.stderr
    new = result.stdout.strip()
    task = no_docker.show(new)
    assert task["prompt"] == "do it again\n"
    assert task["state"] in ("planning", "failed")  # no Docker: the planner fails at once


@pytest.mark.parametrize(("prompt", "stdin"), [("", None), ("  \n", None), ("-", "")])
def test_relaunch_with_an_empty_prompt_exits_2_and_creates_nothing(
    daemon: Instance, prompt: str, stdin: str | None
) -> None:
    old = cancelled(daemon)

    result = daemon.cli("task", "relaunch", old, "--prompt", prompt, stdin=stdin)

    assert result.returncode == 2
    assert one_error_line(result) in (
        "klaudio: --prompt is empty",
        "klaudio: the --prompt read from stdin is empty",
    )
    assert result.stdout == ""
    assert daemon.task_ids() == [old]


def test_relaunching_a_failed_task(no_docker: Instance) -> None:
    old = failed_in_planning(no_docker)

    result = no_docker.cli("task", "relaunch", old)

    assert result.returncode == 0, result.stderr
    assert no_docker.show(result.stdout.strip())["state"] == "created"


# Retry --------------------------------------------------------------------------------------------


def test_retrying_a_task_that_failed_in_planning_plans_again(no_docker: Instance) -> None:
    task_id = failed_in_planning(no_docker)

    result = no_docker.cli("task", "retry", task_id)

    assert result.returncode == 0, result.stderr
    assert result.stderr == (f"klaudio: task {task_id[:8]} is planning (retrying the planner)\n")


def test_retrying_a_named_subtask_of_a_task_without_a_plan_exits_3(no_docker: Instance) -> None:
    task_id = failed_in_planning(no_docker)

    result = no_docker.cli("task", "retry", task_id, "--subtask", "tests")

    assert result.returncode == 3, result.stderr
    assert "'tests'" in one_error_line(result)
    assert no_docker.show(task_id)["state"] == "failed"


def test_a_subtask_name_must_be_utf8(daemon: Instance) -> None:
    result = daemon.cli("task", "retry", "abc", "--subtask", "t\udcffx")

    assert result.returncode == 2
    assert one_error_line(result) == "klaudio: --subtask is not valid UTF-8"


# -o json ------------------------------------------------------------------------------------------


def show_keys(instance: Instance, task_id: str) -> set[str]:
    return set(instance.show(task_id))


def test_json_of_cancel_and_relaunch_is_the_task_as_show_prints_it(daemon: Instance) -> None:
    task_id = create(daemon)

    cancel = daemon.cli("task", "cancel", task_id, "-o", "json")

    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stderr == ""
    data: dict[str, Any] = json.loads(cancel.stdout)
    assert data == daemon.show(task_id)
    assert data["state"] == "cancelled"
    assert data["resume_at"] is None and data["control"] == ""

    relaunch = daemon.cli("task", "relaunch", task_id, "--output", "json")

    assert relaunch.returncode == 0, relaunch.stderr
    new = json.loads(relaunch.stdout)
    assert new["id"] != task_id and new["state"] == "created"
    assert set(new) == show_keys(daemon, task_id)
    assert new == daemon.show(new["id"])


def test_json_of_retry_is_the_task(no_docker: Instance) -> None:
    task_id = failed_in_planning(no_docker)

    result = no_docker.cli("task", "retry", task_id, "-o", "json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["id"] == task_id
    assert data["state"] == "planning" and data["reason"] == "retrying the planner"
    assert data["agents"][0]["runs"] >= 1
    assert set(data) == show_keys(no_docker, task_id)


def test_show_json_has_the_new_keys(no_docker: Instance) -> None:
    task_id = failed_in_planning(no_docker)

    task = no_docker.show(task_id)

    assert {"resume_at", "control"} <= set(task)
    assert task["agents"][0]["runs"] == 1
    listed_task = listed(no_docker)[0]
    assert listed_task["resume_at"] is None and listed_task["control"] == ""


# Help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
def test_help_shows_an_example_and_the_exit_codes(instance: Instance, verb: str) -> None:
    result = instance.cli("task", verb, "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^  Examples?:\n    klaudio task {verb} 3f2a", result.stdout, re.M)
    assert "Exits 0" in result.stdout
    assert not instance.socket.exists()  # help needs no daemon


def test_every_task_command_has_an_example(instance: Instance) -> None:
    commands = instance.cli("task", "--help", check=True).stdout.split("Commands:")[1]
    verbs = [line.split()[0] for line in commands.strip().splitlines()]
    assert set(VERBS) <= set(verbs)
    for verb in verbs:
        text = instance.cli("task", verb, "--help", check=True).stdout
        assert f"    klaudio task {verb} " in text, verb
