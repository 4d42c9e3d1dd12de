"""CLI errors through a real daemon: one `klaudio: ` line on stderr and the documented exit code."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import pytest

from klaudio.client import Client
from klaudio.paths import resolve
from tests.conftest import Instance, wait_for

# A Docker endpoint that does not exist: planning fails at once and no container is started.
NO_DOCKER = "unix:///nonexistent/klaudio-test/docker.sock"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `klaudio: ...` line a failed command prints, checked for shape."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("klaudio: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


def create(instance: Instance, prompt: str = "a task") -> str:
    return instance.cli("task", "create", prompt, check=True).stdout.strip()


def listed(instance: Instance) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = json.loads(
        instance.cli("task", "list", "-o", "json", check=True).stdout
    )
    return tasks


@pytest.fixture
def no_docker(instance: Instance) -> Instance:
    """A running daemon whose Docker engine cannot be reached."""
    instance.env["DOCKER_HOST"] = NO_DOCKER
    instance.start_daemon()
    return instance


def started_and_failed(instance: Instance) -> str:
    """A task that was started and failed for want of Docker."""
    task_id = create(instance, "plan something")
    instance.cli("task", "start", task_id, check=True)
    wait_for(lambda: instance.show(task_id)["state"] == "failed", 15, "the task to fail")
    return task_id


# Not found, bad input -----------------------------------------------------------------------------


def test_an_unknown_task_exits_3_with_one_line(daemon: Instance) -> None:
    result = daemon.cli("task", "show", "nosuchid")

    assert result.returncode == 3
    assert one_error_line(result) == "klaudio: no task matches 'nosuchid'"
    assert result.stdout == ""


def test_an_ambiguous_prefix_exits_2(daemon: Instance) -> None:
    # 17 ids over 16 hex digits: at least two share their first character.
    client = Client(resolve(env=daemon.env))
    try:
        ids = [client.create_task(f"task {n}").id for n in range(17)]
    finally:
        client.close()
    prefix, count = Counter(i[0] for i in ids).most_common(1)[0]
    assert count >= 2

    result = daemon.cli("task", "show", prefix)

    assert result.returncode == 2
    line = one_error_line(result)
    assert f"'{prefix}'" in line and "ambiguous" in line
    assert daemon.cli("task", "approve", prefix).returncode == 2


def test_an_empty_prompt_exits_2(daemon: Instance) -> None:
    result = daemon.cli("task", "create", "")

    assert result.returncode == 2
    assert one_error_line(result) == "klaudio: prompt is empty"
    assert listed(daemon) == []


def test_a_missing_repo_exits_2_and_creates_no_task(daemon: Instance) -> None:
    result = daemon.cli("task", "create", "x", "--repo", "/nonexistent")

    assert result.returncode == 2
    assert "/nonexistent" in one_error_line(result)
    assert listed(daemon) == []
    assert daemon.task_ids() == []


def test_logs_of_an_unknown_agent_exits_3(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "logs", task_id, "--agent", "nobody")

    assert result.returncode == 3
    line = one_error_line(result)
    assert "'nobody'" in line and "agents: none yet" in line


def test_logs_of_an_unknown_agent_names_the_agents_there_are(no_docker: Instance) -> None:
    task_id = started_and_failed(no_docker)

    result = no_docker.cli("task", "logs", task_id, "--agent", "nobody")

    assert result.returncode == 3
    assert "(agents: planner)" in one_error_line(result)


def test_an_unknown_state_filter_exits_2(daemon: Instance) -> None:
    result = daemon.cli("task", "list", "--state", "bogus")

    assert result.returncode == 2
    assert "'bogus'" in one_error_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("task", "list", "--bogus"),
        ("task", "show"),
        ("task", "nosuchcommand"),
        ("task", "wait", "abc", "--timeout", "soon"),
        ("task", "list", "-o", "yaml"),
    ],
)
def test_usage_errors_exit_2(instance: Instance, args: tuple[str, ...]) -> None:
    # Typer refuses these before any daemon is needed (the instance has none running).
    result = instance.cli(*args)

    assert result.returncode == 2, result.stderr
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not instance.socket.exists()


# Not allowed in the current state -----------------------------------------------------------------


def test_approving_a_created_task_exits_4_naming_the_state(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "approve", task_id)

    assert result.returncode == 4
    assert "is created" in one_error_line(result)
    assert daemon.show(task_id)["state"] == "created"


def test_starting_a_task_twice_exits_4(no_docker: Instance) -> None:
    task_id = create(no_docker)
    first = no_docker.cli("task", "start", task_id)
    assert first.returncode == 0, first.stderr

    second = no_docker.cli("task", "start", task_id)

    assert second.returncode == 4
    assert "cannot become planning" in one_error_line(second)


def test_a_task_that_cannot_reach_docker_fails_with_the_reason(no_docker: Instance) -> None:
    task_id = started_and_failed(no_docker)

    task = no_docker.show(task_id)
    assert task["reason"].startswith("planner failed: Docker engine unavailable")
    waited = no_docker.cli("task", "wait", task_id, "--timeout", "10")
    assert waited.returncode == 1
    assert f"task {task_id[:8]} failed: planner failed: Docker engine unavailable" in waited.stderr


def test_a_failed_planning_leaves_no_live_agent(no_docker: Instance) -> None:
    # Regression: the planner agent used to stay 'starting' and count as running.
    task_id = started_and_failed(no_docker)

    planner = no_docker.show(task_id)["agents"][0]
    status = no_docker.cli("daemon", "status", check=True).stdout

    assert planner["name"] == "planner"
    assert planner["state"] == "failed"
    assert planner["reason"].startswith("Docker engine unavailable")
    assert "0 agents running" in status


# Timeouts -----------------------------------------------------------------------------------------


def test_waiting_for_a_task_that_never_started_times_out_with_6(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "wait", task_id, "--timeout", "0.5")

    assert result.returncode == 6
    assert "did not settle within 0.5s" in one_error_line(result)


def test_waiting_with_timeout_0_on_a_settled_task_reports_its_state(no_docker: Instance) -> None:
    # Regression: a deadline of 0 used to time out even for a task that had settled.
    task_id = started_and_failed(no_docker)

    result = no_docker.cli("task", "wait", task_id, "--timeout", "0")

    assert result.returncode == 1, result.stderr
    assert f"task {task_id[:8]} failed" in result.stderr


def test_waiting_with_timeout_0_on_an_unsettled_task_exits_6(daemon: Instance) -> None:
    task_id = create(daemon)

    result = daemon.cli("task", "wait", task_id, "--timeout", "0")

    assert result.returncode == 6
    assert task_id in one_error_line(result)


# Errors of the Docker engine are not errors of the daemon -----------------------------------------


def test_docker_being_unreachable_is_not_reported_as_the_daemon_missing(
    no_docker: Instance,
) -> None:
    # Regression: any UNAVAILABLE mentioning "connect" used to become "daemon not running".
    result = no_docker.cli("image", "build")

    assert result.returncode == 5
    line = one_error_line(result)
    assert "Docker engine unavailable" in line
    assert "daemon not running" not in line


def test_a_settled_task_is_deleted_while_docker_is_unreachable(no_docker: Instance) -> None:
    # Its containers, if any, are removed as orphans once the engine answers again.
    task_id = started_and_failed(no_docker)

    result = no_docker.cli("task", "delete", task_id)

    assert result.returncode == 0, result.stderr
    assert no_docker.cli("task", "show", task_id).returncode == 3
    assert task_id not in no_docker.task_ids()
