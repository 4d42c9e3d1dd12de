"""End to end: questions answered from the CLI and on a terminal, plans shown, set, edited, redone.

The real daemon, Docker, agent image and Claude Code; only the model is the scripted fake.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Instance, created_task, wait_for
from tests.fakemodel import FakeModel, Request, structured, text

pytestmark = pytest.mark.docker

ANSWERS = "Answers to your questions:"
DB = {
    "id": "db",
    "text": "Which database?",
    "context": "The service stores user profiles.",
    "options": ["sqlite", "postgres"],
}
PORT = {"id": "port", "text": "Which port?", "suggestions": ["8080", "9090"]}
CACHE = {"id": "cache", "text": "Which cache, if any?"}


def subtask(sid: str, role: str = "developer", after: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": sid,
        "name": f"Subtask {sid}",
        "description": f"does {sid}",
        "prompt": f"E2E-PLANWORK do {sid}",
        "depends_on": after or [],
        "files_involved": [f"{sid}.py"],
        "complexity": "low",
        "agent_role": role,
    }


def reviewed_plan() -> dict[str, Any]:
    """A plan for the dev-review team: two developers at once, a third after one, a reviewer."""
    return {
        "kind": "plan",
        "analysis": "Two independent parts, then a step after the first, then a review.",
        "strategy": "dag",
        "notes": "scripted",
        "subtasks": [
            subtask("write"),
            subtask("lint"),
            subtask("copy", after=["write"]),
            subtask("review", role="reviewer"),
        ],
    }


def said(request: Request, needle: str) -> bool:
    """Whether any message of the request carries needle in its text."""
    for message in request.messages:
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else content or []
        for block in blocks:
            value = block if isinstance(block, str) else block.get("text", "")
            if isinstance(value, str) and needle in value:
                return True
    return False


def asked_before(request: Request) -> bool:
    """Whether the request carries the planner's earlier turn: its questions, as it asked them."""
    return any(
        message.get("role") == "assistant"
        and isinstance(message.get("content"), list)
        and any(
            block.get("type") == "tool_use"
            and block.get("name") == "StructuredOutput"
            and block.get("input", {}).get("kind") == "questions"
            for block in message["content"]
        )
        for message in request.messages
    )


def script_asking_planner(
    model: FakeModel, marker: str, rounds: list[list[dict[str, Any]]]
) -> None:
    """A planner asking each round of questions in turn (one per answers message), then planning."""
    model.script("E2E-PLANWORK", [[text("done")]])  # workers first: their prompts hold the task's

    def turn(request: Request) -> list[Any]:
        answered = sum(
            1
            for message in request.messages
            if message.get("role") == "user" and said_in(message, ANSWERS)
        )
        if answered < len(rounds):
            return [structured({"kind": "questions", "questions": rounds[answered]})]
        return [structured({**reviewed_plan(), "subtasks": [subtask("only")]})]

    model.script(marker, [turn])


def said_in(message: dict[str, Any], needle: str) -> bool:
    content = message.get("content")
    blocks = [content] if isinstance(content, str) else content or []
    return any(
        needle in (block if isinstance(block, str) else str(block.get("text", "")))
        for block in blocks
    )


def questions(instance: Instance, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        instance.cli("task", "questions", task_id, "-o", "json", check=True).stdout
    )
    return data


def state(instance: Instance, task_id: str) -> str:
    return str(instance.show(task_id)["state"])


def settled_in(instance: Instance, task_id: str, wanted: str) -> None:
    wait_for(lambda: state(instance, task_id) == wanted, 120, f"task {task_id} {wanted}")


# -- questions ----------------------------------------------------------------------------------


def test_questions_answered_with_task_answer_go_on_in_the_planners_session(
    daemon: Instance, model: FakeModel, tmp_path: Path
) -> None:
    script_asking_planner(model, "E2E-ASKCLI", [[DB, PORT]])

    result = daemon.cli("run", "E2E-ASKCLI build it", "--no-input")

    assert result.returncode == 7, result.stderr
    task_id = created_task(result)
    short = task_id[:8]
    assert "── planner asks (round 1):" in result.stdout
    commands = [
        line.strip() for line in result.stderr.splitlines() if line.startswith("  klaudio ")
    ]
    assert commands == [
        f"klaudio task answer {short} db 'ANSWER'",
        f"klaudio task answer {short} port 'ANSWER'",
    ]
    assert f"`klaudio task answer {short} --file answers.yaml`" in result.stderr

    shown = daemon.cli("task", "questions", short, check=True)
    assert shown.stdout.splitlines() == [
        "Round 1 of at most 3 (2 open)",
        "  db: Which database?",
        "    The service stores user profiles.",
        "    1) sqlite",
        "    2) postgres",
        "  port: Which port?",
        "    suggested: 8080; 9090",
    ]
    data = questions(daemon, short)
    assert (data["state"], data["round"]) == ("awaiting_answers", 1)
    assert [(q["id"], q["open"], q["options"]) for q in data["questions"]] == [
        ("db", True, ["sqlite", "postgres"]),
        ("port", True, []),
    ]

    # The printed command, its placeholder replaced, is the command to run.
    first = [*shlex.split(commands[0])[1:-1], "postgres"]
    answered = daemon.cli(*first)
    assert answered.returncode == 0, answered.stderr
    assert "still awaits 1 answer (port)" in answered.stderr
    assert daemon.cli("task", "answer", short, "db", "sqlite").returncode == 2  # answered already
    unknown = daemon.cli("task", "answer", short, "nope", "x")
    assert unknown.returncode == 3
    assert unknown.stderr == f"klaudio: task {short} has no question 'nope' (open: port)\n"
    assert state(daemon, task_id) == "awaiting_answers"

    answers = tmp_path / "answers.yaml"
    answers.write_text('port: "9090"\n')
    assert daemon.cli("task", "answer", short, "--file", str(answers)).returncode == 0
    settled_in(daemon, task_id, "planned")

    after = next(r for r in model.requests_for("E2E-ASKCLI") if said(r, ANSWERS))
    assert said(after, "db (Which database?): postgres")
    assert said(after, "port (Which port?): 9090")
    assert asked_before(after)  # the planner's own earlier turn: the same conversation
    first_request = model.requests_for("E2E-ASKCLI")[0]
    assert after.session_id == first_request.session_id
    late = daemon.cli("task", "answer", short, "port", "1")
    assert late.returncode == 4
    assert late.stderr == (
        f"klaudio: task {short} is planned; only a task awaiting answers takes answers\n"
    )


class Terminal:
    """klaudio on a pseudo-terminal: stdin, stdout and stderr all the terminal, as for a person."""

    def __init__(self, instance: Instance, *args: str) -> None:
        master, slave = os.openpty()
        self.master = master
        self.output = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "klaudio", *args],
            env=instance.env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)

    def expect(self, pattern: str, timeout: float = 120) -> str:
        """Read until pattern shows up in what was printed since the last match; return that."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.output.decode(errors="replace"))
            if found:
                seen = self.output.decode(errors="replace")[: found.end()]
                self.output = self.output[len(seen.encode()) :]
                return seen
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"no {pattern!r} in:\n{self.output.decode(errors='replace')}")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other end is closed
            return False
        self.output += chunk
        return bool(chunk)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """The exit code and everything printed after the last match."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.1, deadline - time.monotonic())):
            pass
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code, self.output.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def test_run_on_a_terminal_asks_round_after_round_and_carries_on(
    daemon: Instance, model: FakeModel
) -> None:
    script_asking_planner(model, "E2E-ASKPTY", [[DB, PORT], [CACHE]])
    terminal = Terminal(daemon, "run", "E2E-ASKPTY build it", "--auto-approve", "--team", "solo")
    try:
        asked = terminal.expect(r"answer \(a number or your own answer\): ")
        task_id = re.search(r"task ([0-9a-f]{12}) created", asked)
        assert task_id, asked
        assert "Question 1 of 2 (db): Which database?" in asked
        assert "The service stores user profiles." in asked and "2) postgres" in asked
        terminal.type("2")
        asked = terminal.expect(r"answer \(your answer; Enter for 8080\): ")
        assert "Question 2 of 2 (port): Which port?" in asked
        assert "suggested: 8080; 9090" in asked
        terminal.type("")  # Enter: the first suggestion
        asked = terminal.expect(r"answer \(your answer\): ")
        assert "answers sent; the planner goes on" in asked
        assert "── planner asks (round 2):" in asked
        assert "Question 1 of 1 (cache): Which cache, if any?" in asked
        terminal.type("")  # no suggestion to take: asked again
        terminal.expect(r"type an answer\s+answer \(your answer\): ")
        terminal.type("redis, please")
        code, rest = terminal.finish()
    finally:
        terminal.kill()

    assert code == 0, rest
    assert f"task {task_id.group(1)[:8]} completed" in rest
    data = questions(daemon, task_id.group(1))
    assert [(q["id"], q["round"], q["answer"]) for q in data["questions"]] == [
        ("db", 1, "postgres"),
        ("port", 1, "8080"),
        ("cache", 2, "redis, please"),
    ]
    planner = model.requests_for("E2E-ASKPTY")
    first = next(r for r in planner if said(r, "port (Which port?): 8080"))
    assert said(first, "db (Which database?): postgres") and asked_before(first)
    second = next(r for r in planner if said(r, "cache (Which cache, if any?): redis, please"))
    assert said(second, "port (Which port?): 8080")  # the whole conversation, both rounds
    assert {r.session_id for r in planner} == {planner[0].session_id}


# -- plans --------------------------------------------------------------------------------------


@pytest.fixture
def planned(daemon: Instance, model: FakeModel) -> tuple[Instance, str]:
    """A dev-review task whose planner wrote reviewed_plan(), waiting for approval."""
    model.script("E2E-PLANWORK", [[text("done")]])
    model.script("E2E-PLANNED", [[structured(reviewed_plan())]])
    task_id = daemon.cli(
        "task", "create", "E2E-PLANNED plan it", "--team", "dev-review", "--start", check=True
    ).stdout.strip()
    settled_in(daemon, task_id, "planned")
    return daemon, task_id


def editor(tmp_path: Path, *texts: str) -> dict[str, str]:
    """An EDITOR that writes texts[n] on its n-th run, keeping what it found in seen-<n>."""
    (tmp_path / "edits.json").write_text(json.dumps(list(texts)))
    script = tmp_path / "editor"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"base = pathlib.Path({str(tmp_path)!r})\n"
        "n = len(list(base.glob('seen-*')))\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "(base / f'seen-{n}').write_text(path.read_text())\n"
        "path.write_text(json.loads((base / 'edits.json').read_text())[n])\n"
    )
    script.chmod(0o755)
    return {"EDITOR": str(script), "VISUAL": ""}


def plan_yaml(instance: Instance, task_id: str) -> dict[str, Any]:
    out = instance.cli("task", "plan", task_id, "-o", "yaml", check=True).stdout
    data: dict[str, Any] = yaml.safe_load(out)
    return data


def test_plan_shows_levels_and_prints_the_stored_plan(planned: tuple[Instance, str]) -> None:
    daemon, task_id = planned
    short = task_id[:8]

    shown = daemon.cli("task", "plan", short, check=True).stdout.splitlines()

    assert shown == [
        f"task {short}: plan v1 (by the planner), not approved yet",
        "team dev-review, strategy dag",
        "analysis:",
        "  Two independent parts, then a step after the first, then a review.",
        "notes:",
        "  scripted",
        "",
        "Level 1 (runs first, 2 in parallel)",
        "  write   Subtask write  (role developer, complexity low)",
        "          files: write.py",
        "  lint    Subtask lint  (role developer, complexity low)",
        "          files: lint.py",
        "",
        "Level 2",
        "  copy    Subtask copy  (role developer, complexity low)",
        "          after: write",
        "          files: copy.py",
        "",
        "Level 3 (runs last, after every other subtask)",
        "  review  Subtask review  (role reviewer, complexity low)",
        "          files: review.py",
    ]
    stored = {k: v for k, v in reviewed_plan().items() if k != "kind"}
    assert plan_yaml(daemon, short) == stored
    assert json.loads(daemon.cli("task", "plan", short, "-o", "json", check=True).stdout) == stored
    task = daemon.show(task_id)
    assert (task["plan"]["version"], task["plan"]["source"]) == (1, "planner")
    assert task["settings"]["team"] == "dev-review"
    assert task["approved_plan_version"] is None


def test_set_refuses_a_plan_with_every_problem_listed_and_keeps_the_old_one(
    planned: tuple[Instance, str], tmp_path: Path
) -> None:
    daemon, task_id = planned
    bad = plan_yaml(daemon, task_id)
    bad["subtasks"][1]["depends_on"] = ["nowhere"]
    bad["subtasks"][2]["prompt"] = ""
    bad["subtasks"].append({**bad["subtasks"][3], "id": "review2"})  # a second reviewer
    bad["subtasks"][0]["agent_role"] = "tester"  # not a dev-review role
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(bad))

    refused = daemon.cli("task", "plan", task_id, "--set", str(path))

    assert refused.returncode == 2
    lines = refused.stderr.splitlines()
    assert lines[0] == f"klaudio: the plan has {len(lines) - 1} problems:"
    assert len(lines) >= 5, refused.stderr
    assert any("nowhere" in line for line in lines[1:])
    assert any("tester" in line for line in lines[1:])
    assert any("prompt" in line for line in lines[1:])
    assert any("reviewer" in line for line in lines[1:])
    assert not any(line.startswith("klaudio:") for line in lines[1:])
    task = daemon.show(task_id)
    assert task["plan"]["version"] == 1 and len(task["plan"]["subtasks"]) == 4

    good = plan_yaml(daemon, task_id)
    good["subtasks"][1]["name"] = "Lint it all"
    path.write_text(json.dumps(good))
    accepted = daemon.cli("task", "plan", task_id[:6], "--set", str(path))
    assert accepted.returncode == 0, accepted.stderr
    assert "plan v2 (edited), not approved yet" in accepted.stderr
    assert daemon.show(task_id)["plan"]["subtasks"][1]["name"] == "Lint it all"
    from_stdin = daemon.cli("task", "plan", task_id, "--set", "-", stdin=yaml.safe_dump(good))
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert daemon.show(task_id)["plan"]["version"] == 3


def test_edit_sends_the_saved_plan_and_keeps_a_refused_one(
    planned: tuple[Instance, str], tmp_path: Path
) -> None:
    daemon, task_id = planned
    good = plan_yaml(daemon, task_id)
    good["subtasks"][0]["name"] = "Write it well"
    daemon.env.update(editor(tmp_path, yaml.safe_dump(good), "subtasks: [what]\n"))

    edited = daemon.cli("task", "plan", task_id, "--edit")

    assert edited.returncode == 0, edited.stderr
    opened = (tmp_path / "seen-0").read_text()
    assert opened.startswith(f"# The plan of task {task_id[:8]}, version 1.")
    assert "# Team dev-review: roles developer (up to 3), reviewer (1, runs last)." in opened
    assert yaml.safe_load(opened) == {k: v for k, v in reviewed_plan().items() if k != "kind"}
    task = daemon.show(task_id)
    assert (task["plan"]["version"], task["plan"]["source"]) == (2, "edit")
    assert task["plan"]["subtasks"][0]["name"] == "Write it well"

    # Not on a terminal: a refusal is printed, the text kept, exit 2.
    refused = daemon.cli("task", "plan", task_id, "--edit")
    assert refused.returncode == 2
    kept = re.search(r"your plan is saved in (\S+)", refused.stderr)
    assert kept, refused.stderr
    assert Path(kept.group(1)).read_text() == "subtasks: [what]\n"
    Path(kept.group(1)).unlink()
    assert "klaudio: " in refused.stderr.splitlines()[0]
    assert daemon.show(task_id)["plan"]["version"] == 2


def test_a_refused_edit_reopens_on_the_persons_text(
    planned: tuple[Instance, str], tmp_path: Path
) -> None:
    daemon, task_id = planned
    fixed = plan_yaml(daemon, task_id)
    fixed["notes"] = "fixed on the second try"
    broken = yaml.safe_dump({**fixed, "subtasks": [{**fixed["subtasks"][0], "depends_on": ["x"]}]})
    daemon.env.update(editor(tmp_path, broken, yaml.safe_dump(fixed)))
    terminal = Terminal(daemon, "task", "plan", task_id, "--edit")
    try:
        refused = terminal.expect(r"Edit again\? \[Y/n\] ")
        assert "depends on unknown subtask 'x'" in refused
        terminal.type("")
        code, rest = terminal.finish()
    finally:
        terminal.kill()

    assert code == 0, rest
    assert (tmp_path / "seen-1").read_text() == broken  # their text, not the original
    task = daemon.show(task_id)
    assert (task["plan"]["version"], task["plan"]["notes"]) == (2, "fixed on the second try")
    assert "plan v2 (edited), not approved yet" in rest


def test_show_says_which_version_was_approved_and_a_running_plan_stays(
    planned: tuple[Instance, str], tmp_path: Path
) -> None:
    daemon, task_id = planned
    path = tmp_path / "plan.yaml"
    path.write_text(daemon.cli("task", "plan", task_id, "-o", "yaml", check=True).stdout)
    assert daemon.cli("task", "plan", task_id, "--set", str(path)).returncode == 0
    daemon.cli("task", "approve", task_id, check=True)
    assert daemon.cli("task", "wait", task_id, "--timeout", "120").returncode == 0

    shown = daemon.cli("task", "show", task_id, check=True).stdout
    assert "team:       dev-review" in shown
    assert "plan:       v2 (edited), approved" in shown
    assert daemon.show(task_id)["approved_plan_version"] == 2
    late = daemon.cli("task", "plan", task_id, "--set", str(path))
    assert late.returncode == 4
    assert late.stderr == (
        f"klaudio: task {task_id[:8]} is completed; only a planned task's plan can change\n"
    )
    assert daemon.cli("task", "plan", task_id, "--edit").returncode == 4


def test_replan_with_context_goes_on_in_the_planners_session(
    planned: tuple[Instance, str], model: FakeModel
) -> None:
    daemon, task_id = planned

    result = daemon.cli("task", "replan", task_id, "--context", "Keep the API as it is")

    assert result.returncode == 0, result.stderr
    assert f"task {task_id[:8]} is planning" in result.stderr
    wait_for(
        lambda: (
            daemon.show(task_id)["plan"]["version"] == 2 and state(daemon, task_id) == "planned"
        ),
        120,
        "the second plan",
    )
    again = next(r for r in model.requests_for("E2E-PLANNED") if said(r, "Keep the API as it is"))
    assert said(again, "Plan this task again")
    assert again.session_id == model.requests_for("E2E-PLANNED")[0].session_id
    assert daemon.show(task_id)["plan"]["source"] == "planner"
    assert daemon.cli("task", "plan", task_id, check=True).stdout.startswith(
        f"task {task_id[:8]}: plan v2 (by the planner), not approved yet"
    )


def test_an_edit_of_a_plan_that_changed_meanwhile_is_refused_and_kept(
    planned: tuple[Instance, str], tmp_path: Path
) -> None:
    daemon, task_id = planned
    theirs = plan_yaml(daemon, task_id)
    theirs["notes"] = "changed by someone else"
    (tmp_path / "theirs.yaml").write_text(yaml.safe_dump(theirs))
    script = tmp_path / "editor"
    script.write_text(
        f"#!{sys.executable}\n"
        "import pathlib, subprocess, sys\n"
        f"subprocess.run([{sys.executable!r}, '-m', 'klaudio', 'task', 'plan', {task_id!r},"
        f" '--set', {str(tmp_path / 'theirs.yaml')!r}], check=True)\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "path.write_text(path.read_text().replace('notes: scripted', 'notes: mine'))\n"
    )
    script.chmod(0o755)
    daemon.env.update(EDITOR=str(script), VISUAL="")

    result = daemon.cli("task", "plan", task_id, "--edit")

    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    kept = re.fullmatch(r"klaudio: your plan is saved in (\S+)", lines[-2])
    assert kept, result.stderr
    assert "notes: mine" in Path(kept.group(1)).read_text()
    Path(kept.group(1)).unlink()
    assert lines[-1] == (
        f"klaudio: task {task_id[:8]}'s plan is version 2 now, not 1: edit it again"
    )
    assert daemon.show(task_id)["plan"]["notes"] == "changed by someone else"


def test_task_answer_on_a_terminal_asks_each_open_question(
    daemon: Instance, model: FakeModel
) -> None:
    script_asking_planner(model, "E2E-ASKANSWER", [[DB, PORT]])
    result = daemon.cli("run", "E2E-ASKANSWER build it")  # stdin is not a terminal: exit 7
    assert result.returncode == 7, result.stderr
    task_id = created_task(result)
    daemon.cli("task", "answer", task_id, "port", "9090", check=True)
    terminal = Terminal(daemon, "task", "answer", task_id[:4])
    try:
        asked = terminal.expect(r"answer \(a number or your own answer\): ")
        assert "Question 1 of 1 (db): Which database?" in asked  # port is answered already
        terminal.type("1")
        code, rest = terminal.finish()
    finally:
        terminal.kill()

    assert code == 0, rest
    assert "recorded 1 answer; the planner goes on" in rest
    settled_in(daemon, task_id, "planned")
    data = questions(daemon, task_id)
    assert [(q["id"], q["answer"]) for q in data["questions"]] == [
        ("db", "sqlite"),
        ("port", "9090"),
    ]
