"""`klaudio task create|list|show|delete|logs` against a real daemon (no task is started)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import Instance

SHOW_KEYS = {
    "id",
    "name",
    "state",
    "reason",
    "prompt",
    "repo",
    "workspace",
    "cost_usd",
    "plan",
    "agents",
    "questions",
}


def create(instance: Instance, *args: str) -> str:
    return instance.cli("task", "create", *args, check=True).stdout.strip()


def listed(instance: Instance) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = json.loads(
        instance.cli("task", "list", "-o", "json", check=True).stdout
    )
    return tasks


def test_create_prints_a_12_hex_id(daemon: Instance) -> None:
    result = daemon.cli("task", "create", "write a haiku")

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{12}\n", result.stdout)
    assert "started klaudiod" not in result.stderr  # the fixture's daemon answered


def test_ids_are_distinct(daemon: Instance) -> None:
    ids = {create(daemon, f"task {n}") for n in range(3)}

    assert len(ids) == 3


def test_list_json_shows_the_created_task(daemon: Instance) -> None:
    task_id = create(daemon, "write a haiku\nabout the sea", "--name", "haiku")

    tasks = listed(daemon)

    assert [t["id"] for t in tasks] == [task_id]
    assert tasks[0]["state"] == "created"
    assert tasks[0]["name"] == "haiku"
    assert tasks[0]["cost_usd"] == 0.0
    assert "prompt" not in tasks[0]  # lists carry summaries; `task show` has the prompt
    assert daemon.show(task_id)["prompt"] == "write a haiku\nabout the sea"


def test_a_task_without_a_name_is_named_after_its_first_line(daemon: Instance) -> None:
    create(daemon, "  first line of the prompt\nsecond line")
    create(daemon, "y" * 100)

    names = [t["name"] for t in listed(daemon)]

    assert names == ["y" * 60, "first line of the prompt"]


def test_list_is_newest_first(daemon: Instance) -> None:
    older = create(daemon, "older")
    newer = create(daemon, "newer")

    assert [t["id"] for t in listed(daemon)] == [newer, older]


def test_list_state_filter(daemon: Instance) -> None:
    task_id = create(daemon, "x")

    created = json.loads(
        daemon.cli("task", "list", "-s", "created", "-o", "json", check=True).stdout
    )
    running = json.loads(
        daemon.cli("task", "list", "-s", "running", "-o", "json", check=True).stdout
    )

    assert [t["id"] for t in created] == [task_id]
    assert running == []


def test_an_empty_list(daemon: Instance) -> None:
    assert listed(daemon) == []
    lines = daemon.cli("task", "list", check=True).stdout.splitlines()
    assert len(lines) == 1 and lines[0].split() == ["ID", "STATE", "AGE", "COST", "NAME"]


def test_list_text_has_a_header_and_the_short_id(daemon: Instance) -> None:
    task_id = create(daemon, "write a haiku", "--name", "haiku")

    lines = daemon.cli("task", "list", check=True).stdout.splitlines()

    assert lines[0].split() == ["ID", "STATE", "AGE", "COST", "NAME"]
    assert len(lines) == 2
    cells = lines[1].split()
    assert cells[0] == task_id[:8]
    assert task_id not in lines[1]
    assert cells[1] == "created"
    assert cells[3] == "$0.0000"
    assert cells[4] == "haiku"
    assert lines[0].index("STATE") == lines[1].index("created")


def test_show_json_has_the_stable_keys_and_a_workspace(daemon: Instance) -> None:
    task_id = create(daemon, "write a haiku")

    task = daemon.show(task_id)

    assert set(task) >= SHOW_KEYS
    assert task["id"] == task_id
    assert task["state"] == "created"
    assert task["reason"] == "" and task["repo"] == ""
    assert task["plan"] is None
    assert task["agents"] == [] and task["questions"] == []
    workspace = Path(task["workspace"])
    assert workspace.is_dir()
    assert workspace == daemon.home / "data" / "tasks" / task_id / "workspace"
    assert list(workspace.iterdir()) == []


def test_show_text(daemon: Instance) -> None:
    task_id = create(daemon, "line one\nline two", "--name", "two lines")

    lines = daemon.cli("task", "show", task_id, check=True).stdout.splitlines()

    assert f"id:         {task_id}" in lines
    assert "name:       two lines" in lines
    assert "state:      created" in lines
    assert "repo:       (empty workspace)" in lines
    assert lines[-2:] == ["  line one", "  line two"]


def test_a_unique_prefix_works_like_the_id(daemon: Instance) -> None:
    task_id = create(daemon, "x")

    task = json.loads(daemon.cli("task", "show", task_id[:6], "-o", "json", check=True).stdout)

    assert task["id"] == task_id


def test_a_local_git_repo_is_cloned_into_the_workspace(daemon: Instance, tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "README.md").write_text("hello\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)

    task_id = create(daemon, "read it", "--repo", str(repo))

    task = daemon.show(task_id)
    assert task["repo"] == str(repo)
    workspace = Path(task["workspace"])
    assert (workspace / "README.md").read_text() == "hello\n"
    assert (workspace / ".git").is_dir()


def test_a_directory_that_is_not_a_git_repo_is_refused(daemon: Instance, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("x")

    result = daemon.cli("task", "create", "read it", "--repo", str(plain))

    assert result.returncode == 2
    assert result.stderr.startswith(f"klaudio: --repo {plain}: cannot clone")
    assert listed(daemon) == []
    assert daemon.task_ids() == []


def test_delete_removes_the_task_and_its_directory(daemon: Instance) -> None:
    keep = create(daemon, "keep me")
    task_id = create(daemon, "delete me")
    task_dir = Path(daemon.show(task_id)["workspace"]).parent
    assert task_dir.is_dir()

    result = daemon.cli("task", "delete", task_id[:8])

    assert result.returncode == 0, result.stderr
    assert f"deleted task {task_id[:8]}" in result.stderr
    assert not task_dir.exists()
    assert [t["id"] for t in listed(daemon)] == [keep]
    again = daemon.cli("task", "delete", task_id)
    assert again.returncode == 3
    assert again.stderr.startswith("klaudio: ") and task_id in again.stderr


def test_logs_json_of_a_created_task(daemon: Instance) -> None:
    task_id = create(daemon, "x")

    lines = daemon.cli("task", "logs", task_id, "--json", check=True).stdout.splitlines()

    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["seq"] == 1
    assert event["task"] == task_id
    assert event["agent"] == ""
    assert event["kind"] == "task"
    assert event["event"] == {"type": "task", "state": "created", "reason": ""}
    assert event["time"].endswith("Z")


def test_logs_since_the_last_event_is_empty(daemon: Instance) -> None:
    task_id = create(daemon, "x")

    result = daemon.cli("task", "logs", task_id, "--json", "--since", "1", check=True)

    assert result.stdout == ""


def test_logs_for_people_of_a_created_task(daemon: Instance) -> None:
    task_id = create(daemon, "x")

    result = daemon.cli("task", "logs", task_id, check=True)

    assert "created" in result.stdout
    assert "{" not in result.stdout


def test_a_prompt_of_dash_is_read_from_stdin(daemon: Instance) -> None:
    prompt = "a long prompt\nwith several lines\n"
    task_id = daemon.cli("task", "create", "-", stdin=prompt, check=True).stdout.strip()

    assert daemon.show(task_id)["prompt"] == prompt
    empty = daemon.cli("task", "create", "-", stdin="  \n")
    assert empty.returncode == 2
    assert empty.stderr == "klaudio: the prompt read from stdin is empty\n"


def test_ctrl_c_ends_a_follow_with_exit_130_and_no_traceback(daemon: Instance) -> None:
    task_id = create(daemon, "never started, so never settles")
    follower = daemon.popen("task", "logs", task_id, "-f")
    assert follower.stdout is not None
    assert "task created" in follower.stdout.readline()  # following live now

    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=10)

    assert follower.returncode == 130
    assert "Traceback" not in err and "Aborted" not in err
