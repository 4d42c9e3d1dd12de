"""End to end: `klaudio run` through the real daemon, Docker, agent image and Claude Code."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Instance, created_task
from tests.fakemodel import FakeModel, error, structured, text, tool_use

pytestmark = pytest.mark.docker


def subtask(sid: str, prompt: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": sid,
        "name": f"Subtask {sid}",
        "description": "",
        "prompt": prompt,
        "depends_on": depends_on or [],
        "files_involved": [],
        "complexity": "low",
        "agent_role": "developer",
    }


def plan(*subtasks: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "plan",
        "analysis": "scripted",
        "strategy": "dag",
        "notes": "",
        "subtasks": list(subtasks),
    }


def script_two_step(model: FakeModel, second: list[Any] | None = None) -> None:
    """A plan where 'copy' reads the file 'write' wrote (workers first: markers overlap)."""
    model.script(
        "E2E-WRITE",
        [
            [
                text("Writing."),
                tool_use(
                    "Write",
                    {"file_path": "/workspace/greeting.txt", "content": "hello from write\n"},
                ),
            ],
            [text("wrote greeting.txt with a hello")],
        ],
    )
    model.script(
        "E2E-COPY",
        second
        or [
            [tool_use("Bash", {"command": "cp greeting.txt copy.txt && cat copy.txt"})],
            lambda req: [text(f"copied: {(req.last_tool_result_text() or '').strip()}")],
        ],
    )
    model.script(
        "E2E-TASK",
        [
            [
                structured(
                    plan(
                        subtask("write", "E2E-WRITE: write greeting.txt"),
                        subtask("copy", "E2E-COPY: copy greeting.txt to copy.txt", ["write"]),
                    )
                )
            ]
        ],
    )


def test_two_subtasks_second_reads_what_first_wrote(daemon: Instance, model: FakeModel) -> None:
    script_two_step(model)

    result = daemon.cli("run", "E2E-TASK greet", "--auto-approve")

    assert result.returncode == 0, result.stderr + result.stdout
    assert "started klaudiod" not in result.stderr  # the fixture's daemon answered
    task_id = created_task(result)
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert [s["state"] for s in task["plan"]["subtasks"]] == ["completed", "completed"]
    assert [a["name"] for a in task["agents"]] == ["planner", "write", "copy"]
    assert all(a["exit_code"] == 0 for a in task["agents"])
    assert task["cost_usd"] > 0
    workspace = Path(task["workspace"])
    assert (workspace / "copy.txt").read_text() == "hello from write\n"
    # The files agents wrote belong to the user running the daemon.
    assert (workspace / "copy.txt").stat().st_uid == os.getuid()
    # The first subtask's real final message reached the second: in its prompt and on disk.
    copy_prompt = model.requests_for("E2E-COPY")[0].first_user_text()
    assert "wrote greeting.txt with a hello" in copy_prompt
    assert (
        workspace / ".klaudio/context/write.md"
    ).read_text() == "wrote greeting.txt with a hello"
    assert task["plan"]["subtasks"][1]["result"] == "copied: hello from write"
    # Output was streamed live, rendered for people.
    assert "[write]" in result.stdout and "→ Write greeting.txt" in result.stdout
    assert "cost: $" in result.stdout
    # The planner was offered read-only tools and the structured-output tool only.
    planner_tools = set(model.requests_for("E2E-TASK")[0].tools)
    assert "StructuredOutput" in planner_tools and not planner_tools & {"Write", "Edit", "Bash"}
    # Finished agents' containers are removed.
    assert _containers(task_id) == []
    # The API key reached the agents (the model saw it) but never the DB, the log or the stream.
    secret = daemon.env["ANTHROPIC_API_KEY"]
    assert model.requests_for("E2E-WRITE")[0].headers.get("x-api-key") == secret
    logs = daemon.cli("task", "logs", task_id, "--json", check=True).stdout
    for where, content in [
        ("database", b"".join(p.read_bytes() for p in (daemon.home / "data").glob("klaudio.db*"))),
        ("daemon log", daemon.daemon_log().encode()),
        ("stream", logs.encode()),
        ("run output", result.stdout.encode() + result.stderr.encode()),
    ]:
        assert secret.encode() not in content, f"the API key leaked into the {where}"


def test_failing_agent_fails_the_task_and_skips_dependents(
    daemon: Instance, model: FakeModel
) -> None:
    model.script("E2E-WRITE", [error(500, "model exploded")])
    script_two_step(model)
    model.script("E2E-WRITE", [error(500, "model exploded")])

    result = daemon.cli("run", "E2E-TASK greet", "--auto-approve")

    assert result.returncode == 1, result.stderr
    task_id = created_task(result)
    task = daemon.show(task_id)
    assert task["state"] == "failed"
    assert "subtask write failed: API error" in task["reason"]
    assert "skipped: copy" in task["reason"]
    assert [s["state"] for s in task["plan"]["subtasks"]] == ["failed", "skipped"]
    writer = next(a for a in task["agents"] if a["name"] == "write")
    assert writer["state"] == "failed" and writer["exit_code"] != 0
    assert model.requests_for("E2E-COPY") == []
    assert f"task {task_id[:8]} failed" in result.stderr


def test_logs_replayed_after_the_fact_equal_what_was_followed_live(
    daemon: Instance, model: FakeModel
) -> None:
    script_two_step(model)
    task_id = daemon.cli(
        "task", "create", "E2E-TASK greet", "--start", "--auto-approve", check=True
    ).stdout.strip()
    live = daemon.popen("task", "logs", task_id, "-f", "--json")
    live_human = daemon.popen("task", "logs", task_id, "-f")
    live_out, live_err = live.communicate(timeout=180)
    human_out, _ = live_human.communicate(timeout=180)

    assert live.returncode == 0, live_err
    replay = daemon.cli("task", "logs", task_id, "--json", check=True).stdout
    assert live_out == replay
    seqs = [json.loads(line)["seq"] for line in replay.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert json.loads(replay.splitlines()[-1])["event"] == {
        "type": "task",
        "state": "completed",
        "reason": "",
    }
    # --since and --agent select from the same persisted stream.
    since = daemon.cli("task", "logs", task_id, "--json", "--since", "5", check=True).stdout
    assert since.splitlines() == replay.splitlines()[5:]
    only_copy = daemon.cli("task", "logs", task_id, "--json", "--agent", "copy", check=True).stdout
    agents = {json.loads(line)["agent"] for line in only_copy.splitlines()}
    assert agents <= {"copy", ""} and "copy" in agents
    assert human_out == daemon.cli("task", "logs", task_id, check=True).stdout


def test_repo_is_cloned_into_the_workspace(
    daemon: Instance, model: FakeModel, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("original readme\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "init"], check=True)
    model.script(
        "E2E-READ",
        [
            [tool_use("Read", {"file_path": "/workspace/README.md"})],
            lambda req: [text(f"readme says {(req.last_tool_result_text() or '').strip()}")],
        ],
    )
    model.script("E2E-REPO", [[structured(plan(subtask("read", "E2E-READ the readme")))]])

    result = daemon.cli("run", "E2E-REPO look", "--repo", str(repo), "--auto-approve")

    assert result.returncode == 0, result.stderr
    task_id = created_task(result)
    task = daemon.show(task_id)
    assert task["repo"] == str(repo)
    assert (Path(task["workspace"]) / "README.md").read_text() == "original readme\n"
    assert (Path(task["workspace"]) / ".git").is_dir()
    assert "original readme" in task["plan"]["subtasks"][0]["result"]


def test_invalid_plan_fails_the_task_with_the_reason(daemon: Instance, model: FakeModel) -> None:
    model.script(
        "E2E-CYCLE",
        [
            [
                structured(
                    plan(
                        subtask("a", "do a", ["b"]),
                        subtask("b", "do b", ["a"]),
                    )
                )
            ]
        ],
    )

    result = daemon.cli("run", "E2E-CYCLE plan badly", "--auto-approve")

    assert result.returncode == 1
    task_id = created_task(result)
    task = daemon.show(task_id)
    assert task["state"] == "failed"
    assert task["reason"] == "invalid plan: plan has a dependency cycle among: a, b"
    assert task["plan"] is None


def test_plan_waits_for_approval_then_runs(daemon: Instance, model: FakeModel) -> None:
    script_two_step(model)
    task_id = daemon.cli("task", "create", "E2E-TASK greet", "--start", check=True).stdout.strip()

    # Without --auto-approve the task settles nowhere: it waits in state planned.
    def planned() -> bool:
        return daemon.show(task_id)["state"] == "planned"

    from tests.conftest import wait_for

    wait_for(planned, 120, "the plan")
    assert daemon.show(task_id)["agents"][0]["name"] == "planner"
    assert daemon.cli("task", "approve", task_id[:6], check=True).returncode == 0
    waited = daemon.cli("task", "wait", task_id, "--timeout", "120")
    assert waited.returncode == 0, waited.stderr
    assert daemon.show(task_id)["state"] == "completed"


def test_planner_questions_are_stored_and_shown(daemon: Instance, model: FakeModel) -> None:
    model.script(
        "E2E-ASK",
        [
            [
                structured(
                    {
                        "kind": "questions",
                        "questions": [
                            {
                                "id": "db",
                                "text": "Which database?",
                                "options": ["sqlite", "postgres"],
                            },
                        ],
                    }
                )
            ]
        ],
    )

    result = daemon.cli("run", "E2E-ASK build a thing")

    assert result.returncode == 7, result.stderr
    task_id = created_task(result)
    task = daemon.show(task_id)
    assert task["state"] == "awaiting_answers"
    assert task["questions"][0]["text"] == "Which database?"
    assert task["questions"][0]["options"] == ["sqlite", "postgres"]
    assert "db: Which database?" in daemon.cli("task", "show", task_id, check=True).stdout


def _containers(task_id: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=klaudio.task={task_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def script_meeting(model: FakeModel, patience: float) -> dict[str, bool]:
    """Two independent subtasks whose agents each wait (up to patience) for the other to start.

    Returns, once run, whether each agent saw the other running at the same time.
    """
    entered = {"left": threading.Event(), "right": threading.Event()}
    overlapped: dict[str, bool] = {}

    def meet(me: str, other: str) -> Any:
        def turn(req: Any) -> list[Any]:
            entered[me].set()
            overlapped[me] = entered[other].wait(patience)
            return [text(f"{me} done")]

        return turn

    model.script("E2E-LEFT", [meet("left", "right")])
    model.script("E2E-RIGHT", [meet("right", "left")])
    model.script(
        "E2E-PAIR",
        [[structured(plan(subtask("left", "E2E-LEFT go"), subtask("right", "E2E-RIGHT go")))]],
    )
    return overlapped


def test_independent_subtasks_run_at_the_same_time(daemon: Instance, model: FakeModel) -> None:
    overlapped = script_meeting(model, patience=60)

    result = daemon.cli("run", "E2E-PAIR two at once", "--auto-approve")

    assert result.returncode == 0, result.stderr
    assert overlapped == {"left": True, "right": True}


@pytest.mark.parametrize("limit", ["KLAUDIO_AGENTS_MAX_CONCURRENT", "KLAUDIO_AGENTS_PER_TASK"])
def test_agent_limits_hold(instance: Instance, model: FakeModel, limit: str) -> None:
    instance.env[limit] = "1"
    instance.start_daemon()
    inside = {"now": 0, "most": 0}
    lock = threading.Lock()

    def held(name: str) -> Any:
        def turn(req: Any) -> list[Any]:
            with lock:
                inside["now"] += 1
                inside["most"] = max(inside["most"], inside["now"])
            # Each agent stays in its model turn long enough for the other to start, were it
            # allowed to: with one slot, it never is (the fake's think time, not a sync).
            time.sleep(2)
            with lock:
                inside["now"] -= 1
            return [text(f"{name} done")]

        return turn

    model.script("E2E-LEFT", [held("left")])
    model.script("E2E-RIGHT", [held("right")])
    model.script(
        "E2E-PAIR",
        [[structured(plan(subtask("left", "E2E-LEFT go"), subtask("right", "E2E-RIGHT go")))]],
    )

    result = instance.cli("run", "E2E-PAIR one at a time", "--auto-approve")

    assert result.returncode == 0, result.stderr
    assert inside["most"] == 1  # never both at once
    assert len(model.requests_for("E2E-LEFT")) == len(model.requests_for("E2E-RIGHT")) == 1


def test_an_oauth_token_reaches_the_agents_instead_of_an_api_key(
    instance: Instance, model: FakeModel
) -> None:
    del instance.env["ANTHROPIC_API_KEY"]
    instance.env["CLAUDE_CODE_OAUTH_TOKEN"] = "oauth-test-token"
    instance.start_daemon()
    # Workers first: their prompts contain the task's prompt, and the first match wins.
    model.script("E2E-TOKEN-WORK", [[text("done with a token")]])
    model.script("E2E-OAUTH", [[structured(plan(subtask("only", "E2E-TOKEN-WORK do it")))]])

    result = instance.cli("run", "E2E-OAUTH go", "--auto-approve")

    assert result.returncode == 0, result.stderr + instance.daemon_log()
    planner, worker = model.requests_for("E2E-OAUTH"), model.requests_for("E2E-TOKEN-WORK")
    assert planner and worker
    for request in planner + worker:
        assert request.headers.get("authorization") == "Bearer oauth-test-token"
        assert "x-api-key" not in request.headers


def test_a_credentials_file_is_mounted_for_the_agents(
    instance: Instance, model: FakeModel, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": "file-test-token",
                    "refreshToken": "file-test-refresh",
                    "expiresAt": 4102444800000,
                    "scopes": ["user:inference"],
                    "subscriptionType": "max",
                }
            }
        )
    )
    credentials.chmod(0o644)  # a root daemon's agents run as uid 1000 and must read it
    del instance.env["ANTHROPIC_API_KEY"]
    instance.env["KLAUDIO_CLAUDE_CREDENTIALS_FILE"] = str(credentials)
    instance.start_daemon()
    model.script("E2E-FILE-WORK", [[text("done with a file")]])
    model.script("E2E-CREDFILE", [[structured(plan(subtask("only", "E2E-FILE-WORK do it")))]])

    result = instance.cli("run", "E2E-CREDFILE go", "--auto-approve")

    assert result.returncode == 0, result.stderr + instance.daemon_log()
    requests = model.requests_for("E2E-CREDFILE") + model.requests_for("E2E-FILE-WORK")
    assert len(requests) >= 2
    assert {r.headers.get("authorization") for r in requests} == {"Bearer file-test-token"}
    task_id = created_task(result)
    logs = instance.cli("task", "logs", task_id, "--json", check=True).stdout
    assert "file-test-token" not in logs
