"""End to end: teams enforced, the settings a task records, repository memory, question rounds.

The real daemon, Docker, agent image and Claude Code; only the model is the scripted fake.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Instance, created_task, wait_for
from tests.fakemodel import FakeModel, Request, structured, text

pytestmark = pytest.mark.docker


def subtask(sid: str, role: str = "developer", after: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": sid,
        "name": f"Subtask {sid}",
        "prompt": f"E2E-TEAMWORK-{sid} do it",
        "depends_on": after or [],
        "complexity": "low",
        "agent_role": role,
    }


def plan(*subtasks: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "plan", "analysis": "scripted", "strategy": "dag", "subtasks": list(subtasks)}


class Tracker:
    """Counts how many workers are inside a model turn at once, and the order they end in."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.ended: list[str] = []

    def turn(self, name: str, hold: float = 1.0) -> Any:
        def answer(request: Request) -> list[Any]:
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            time.sleep(hold)  # the fake model's own think time, not synchronisation
            with self.lock:
                self.inside -= 1
                self.ended.append(name)
            return [text(f"{name} done")]

        return answer


def script_team_plan(
    model: FakeModel, marker: str, tracker: Tracker, *subs: dict[str, Any]
) -> None:
    for sub in subs:
        model.script(f"E2E-TEAMWORK-{sub['id']}", [tracker.turn(sub["id"])])
    model.script(marker, [[structured(plan(*subs))]])


def test_the_default_team_is_solo_and_runs_one_agent_at_a_time(
    instance: Instance, model: FakeModel
) -> None:
    del instance.env["KLAUDIO_TEAMS_DEFAULT"]
    instance.start_daemon()
    tracker = Tracker()
    script_team_plan(model, "E2E-SOLO", tracker, subtask("a"), subtask("b"), subtask("c"))

    result = instance.cli("run", "E2E-SOLO three parts", "--auto-approve")

    assert result.returncode == 0, result.stderr
    task = instance.show(created_task(result))
    assert task["settings"]["team"] == "solo"
    assert task["settings"]["max_agents"] == 1
    assert tracker.most == 1 and sorted(tracker.ended) == ["a", "b", "c"]
    # The planner was told its team.
    assert "solo" in model.requests_for("E2E-SOLO")[0].first_user_text()


def test_a_plan_with_a_role_the_team_lacks_is_refused(daemon: Instance, model: FakeModel) -> None:
    model.script("E2E-NOROLE", [[structured(plan(subtask("a", role="designer")))]])

    result = daemon.cli("run", "E2E-NOROLE draw it", "--team", "solo", "--auto-approve")

    assert result.returncode == 1
    task = daemon.show(created_task(result))
    assert task["state"] == "failed"
    assert task["reason"].startswith("invalid plan: ")
    assert "designer" in task["reason"]


def test_more_subtasks_of_a_role_than_the_team_allows_are_refused(
    daemon: Instance, model: FakeModel
) -> None:
    subs = [subtask(f"s{i}") for i in range(4)]  # solo: developer at most 3
    model.script("E2E-TOOMANY", [[structured(plan(*subs))]])

    result = daemon.cli("run", "E2E-TOOMANY four parts", "--team", "solo", "--auto-approve")

    assert result.returncode == 1
    reason = daemon.show(created_task(result))["reason"]
    assert "developer" in reason and "3" in reason


def test_a_run_last_reviewer_runs_after_every_other_subtask(
    daemon: Instance, model: FakeModel
) -> None:
    tracker = Tracker()
    # The reviewer depends on nothing in the plan as written; its role makes it wait.
    script_team_plan(
        model,
        "E2E-REVIEWED",
        tracker,
        subtask("left"),
        subtask("right"),
        subtask("check", role="reviewer"),
    )

    result = daemon.cli("run", "E2E-REVIEWED two then a review", "--team", "dev-review", "-y")

    assert result.returncode == 0, result.stderr
    assert tracker.ended[-1] == "check"
    assert tracker.most == 2  # the two developers at once; the reviewer alone after them
    reviewer = model.requests_for("E2E-TEAMWORK-check")[0].first_user_text()
    assert "Your role in the team: reviewer." in reviewer


def test_max_agents_holds_counted_from_containers(daemon: Instance, model: FakeModel) -> None:
    team = daemon.home / "two.yaml"
    team.write_text(
        "name: two-at-once\nmode: dag\nmax_agents: 2\nroles:\n"
        "  - name: developer\n    max_instances: 5\n"
    )
    daemon.cli("team", "add", str(team), check=True)
    tracker = Tracker()
    seen: list[int] = []
    subs = [subtask(f"w{i}") for i in range(5)]
    for sub in subs:
        inner = tracker.turn(sub["id"], hold=1.5)

        def counted(request: Request, inner: Any = inner) -> list[Any]:
            seen.append(len(running_containers(daemon)))
            result: list[Any] = inner(request)
            return result

        model.script(f"E2E-TEAMWORK-{sub['id']}", [counted])
    model.script("E2E-TWO", [[structured(plan(*subs))]])

    result = daemon.cli("run", "E2E-TWO five parts", "--team", "two-at-once", "-y")

    assert result.returncode == 0, result.stderr
    assert tracker.most == 2
    assert seen and max(seen) <= 2


def running_containers(instance: Instance) -> list[str]:
    from klaudio.paths import resolve

    label = f"klaudio.instance={resolve(instance.env).instance_id}"
    found = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label={label}",
            "--filter",
            "label=klaudio.role=developer",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return found


def test_a_task_keeps_its_settings_across_a_config_change_and_a_restart(
    instance: Instance, model: FakeModel
) -> None:
    instance.env["KLAUDIO_CLAUDE_MODEL"] = "claude-first-model"
    instance.start_daemon()
    model.script("E2E-SNAPWORK", [[text("before")], [text("after")]])
    model.script("E2E-SNAP", [[structured(plan({**subtask("only"), "prompt": "E2E-SNAPWORK go"}))]])
    task_id = instance.cli(
        "task", "create", "E2E-SNAP keep it", "--start", check=True
    ).stdout.strip()
    wait_for(lambda: instance.show(task_id)["state"] == "planned", 120, "the plan")

    instance.stop_daemon()
    instance.env["KLAUDIO_CLAUDE_MODEL"] = "claude-second-model"
    instance.env["KLAUDIO_CLAUDE_MAX_TURNS"] = "3"
    instance.start_daemon()
    instance.cli("task", "approve", task_id, check=True)
    waited = instance.cli("task", "wait", task_id, "--timeout", "120")

    assert waited.returncode == 0, waited.stderr
    task = instance.show(task_id)
    assert task["settings"]["model"] == "claude-first-model"
    assert task["settings"]["max_turns"] == 100
    workers = model.requests_for("E2E-SNAPWORK")
    assert workers and {r.body.get("model") for r in workers} == {"claude-first-model"}


def git_repo(path: Path) -> Path:
    path.mkdir()
    (path / "README.md").write_text("# widgets\n")
    (path / "pyproject.toml").write_text(
        '[project]\nname = "widgets"\ndependencies = ["flask", "requests"]\n'
    )
    (path / "app.py").write_text("print('hi')\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return path


def test_repository_memory_reaches_the_planner_once_per_commit(
    daemon: Instance, model: FakeModel, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "widgets")
    model.script("E2E-MEMWORK", [[text("done")]])
    model.script("E2E-MEM", [[structured(plan({**subtask("m"), "prompt": "E2E-MEMWORK go"}))]])

    for _ in range(2):
        result = daemon.cli("run", "E2E-MEM look", "--repo", str(repo), "-y")
        assert result.returncode == 0, result.stderr

    prompts = [r.first_user_text() for r in model.requests_for("E2E-MEM") if r.turn_index == 0]
    assert len(prompts) >= 2
    for prompt in prompts:
        assert "The repository at a glance" in prompt
        assert "flask" in prompt and "Python" in prompt
    worker = model.requests_for("E2E-MEMWORK")[0].first_user_text()
    assert "The repository at a glance" in worker
    cached = list((daemon.home / "data" / "memory").iterdir())
    assert len(cached) == 1, cached  # the same repository and commit: analysed once


def test_the_planner_may_ask_only_so_many_rounds(instance: Instance, model: FakeModel) -> None:
    instance.env["KLAUDIO_PLANNING_MAX_QUESTION_ROUNDS"] = "1"
    instance.start_daemon()
    ask = structured({"kind": "questions", "questions": [{"id": "q", "text": "Which?"}]})
    model.script("E2E-ROUNDS", [[ask], [ask]])
    task_id = instance.cli("task", "create", "E2E-ROUNDS ask", "--start", check=True).stdout.strip()
    wait_for(lambda: instance.show(task_id)["state"] == "awaiting_answers", 120, "questions")

    instance.cli("task", "answer", task_id, "q", "this one", check=True)
    waited = instance.cli("task", "wait", task_id, "--timeout", "120")

    assert waited.returncode == 1
    task = instance.show(task_id)
    assert "asked questions again after 1 round" in task["reason"]
    answered = [r for r in model.requests_for("E2E-ROUNDS") if r.turn_index == 0]
    last = json.dumps(answered[-1].messages)
    assert "That was the last round of questions" in last
