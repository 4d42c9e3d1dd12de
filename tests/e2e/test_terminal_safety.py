"""End to end: text the model writes can never drive the terminal; JSON output keeps it exact."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import Instance, created_task
from tests.fakemodel import FakeModel, error, structured, text

pytestmark = pytest.mark.docker

TITLE = "\x1b]0;pwned\x07"  # OSC: retitles the window (ends with BEL)
RED = "\x1b[31m"  # CSI: recolours what follows
CLEAR = "\x9b2J"  # C1 CSI: clears the screen
EVIL = f"{TITLE}{RED}{CLEAR}"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[31m\\x9b2J"  # EVIL, as people see it

OK_ID = f"ok{TITLE}"
BOOM_ID = f"boom{CLEAR}"
FINAL = f"all done {EVIL} really"
API_MESSAGE = f"model exploded {EVIL}"


def subtask(sid: str, prompt: str) -> dict[str, Any]:
    return {
        "id": sid,
        "name": f"name {EVIL} of {sid[:2]}",
        "description": f"description {EVIL}",
        "prompt": prompt,
        "depends_on": [],
        "files_involved": [],
        "complexity": "low",
        "agent_role": "developer",
    }


def klaudio(instance: Instance, *args: str) -> tuple[int, bytes, bytes]:
    """Run klaudio and return its exit code and the exact bytes it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "klaudio", *args],
        env=instance.env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr


def assert_inert(output: bytes, what: str) -> str:
    """Output holds no control character a terminal acts on; return it as text."""
    assert b"\x1b" not in output and b"\x07" not in output, f"{what}: {output!r}"
    shown = output.decode("utf-8")  # strict: klaudio prints valid UTF-8 only
    bad = [c for c in shown if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"{what} holds {bad!r}"
    return shown


@pytest.fixture
def failed_task(daemon: Instance, model: FakeModel) -> tuple[Instance, str, bytes, bytes]:
    """A task run through the whole stack whose model writes escape sequences everywhere."""
    # Workers first: their prompts contain the task's prompt, and the first match wins.
    model.script("E2E-SAFE-OK", [[text(FINAL)]])
    model.script("E2E-SAFE-BOOM", [error(500, API_MESSAGE)])
    plan = {
        "kind": "plan",
        "analysis": f"analysis {EVIL}\nsecond line",
        "strategy": "dag",
        "notes": f"notes {EVIL}",
        "subtasks": [
            subtask(OK_ID, "E2E-SAFE-OK say it"),
            subtask(BOOM_ID, "E2E-SAFE-BOOM fail"),
        ],
    }
    model.script("E2E-SAFE-PLAN", [[structured(plan)]])

    # The task is named after its prompt's first line: the name carries the sequences too.
    code, out, err = klaudio(daemon, "run", f"E2E-SAFE-PLAN go {EVIL}", "--auto-approve")

    assert code == 1, err.decode(errors="replace") + daemon.daemon_log()
    task_id = created_task(subprocess.CompletedProcess([], code, "", err.decode()))
    return daemon, task_id, out, err


def test_every_text_output_shows_model_text_escaped(
    failed_task: tuple[Instance, str, bytes, bytes],
) -> None:
    instance, task_id, run_out, run_err = failed_task
    task = instance.show(task_id)
    assert task["state"] == "failed"
    assert EVIL in task["reason"]  # the API error message, relayed by Claude Code

    run = assert_inert(run_out + run_err, "run")
    assert SHOWN in run  # the worker's final message, streamed
    final_line = run_err.decode().splitlines()[-1]
    assert final_line.startswith(f"klaudio: task {task_id[:8]} failed: ")
    assert SHOWN in final_line

    _, show_out, _ = klaudio(instance, "task", "show", task_id)
    show = assert_inert(show_out, "task show")
    assert f"analysis {SHOWN}\\nsecond line" in show
    assert "ok\\x1b]0;pwned\\x07" in show and "boom\\x9b2J" in show  # subtask ids
    assert f"name {SHOWN} of ok" in show
    assert f"model exploded {SHOWN}" in show  # in the task's and the agent's reason
    assert f"  E2E-SAFE-PLAN go {SHOWN}" in show  # the prompt

    _, list_out, _ = klaudio(instance, "task", "list")
    assert f"E2E-SAFE-PLAN go {SHOWN}" in assert_inert(list_out, "task list")

    code, wait_out, wait_err = klaudio(instance, "task", "wait", task_id, "--timeout", "10")
    assert code == 1
    wait = assert_inert(wait_out + wait_err, "task wait")
    assert f"model exploded {SHOWN}" in wait

    _, logs_out, logs_err = klaudio(instance, "task", "logs", task_id)
    logs = assert_inert(logs_out + logs_err, "task logs")
    assert f"all done {SHOWN} really" in logs
    assert "ok\\x1b]0;pwned\\x07" in logs


def test_json_output_keeps_the_exact_text(
    failed_task: tuple[Instance, str, bytes, bytes],
) -> None:
    instance, task_id, _, _ = failed_task

    task = instance.show(task_id)

    plan = task["plan"]
    assert plan["analysis"] == f"analysis {EVIL}\nsecond line"
    assert plan["notes"] == f"notes {EVIL}"
    ok, boom = plan["subtasks"]
    assert (ok["id"], boom["id"]) == (OK_ID, BOOM_ID)
    assert ok["name"] == f"name {EVIL} of ok"
    assert ok["description"] == f"description {EVIL}"
    assert ok["result"] == FINAL
    assert API_MESSAGE in task["reason"]
    assert task["name"] == task["prompt"] == f"E2E-SAFE-PLAN go {EVIL}"
    logs = instance.cli("task", "logs", task_id, "--json", check=True).stdout
    events = [json.loads(line)["event"] for line in logs.splitlines()]
    assert any(e.get("type") == "result" and e.get("result") == FINAL for e in events)
    assert any(OK_ID in {s.get("id") for s in e.get("subtasks", [])} for e in events)


def test_questions_are_shown_escaped(daemon: Instance, model: FakeModel) -> None:
    question = {
        "id": f"q{TITLE}",
        "text": f"Which {EVIL} database?",
        "options": [f"sqlite{RED}", f"postgres{CLEAR}"],
    }
    model.script("E2E-SAFE-ASK", [[structured({"kind": "questions", "questions": [question]})]])

    code, run_out, run_err = klaudio(daemon, "run", "E2E-SAFE-ASK build it")

    assert code == 7, run_err.decode(errors="replace")
    run = assert_inert(run_out + run_err, "run")
    assert f"Which {SHOWN} database?" in run
    task_id = created_task(subprocess.CompletedProcess([], code, "", run_err.decode()))
    _, show_out, _ = klaudio(daemon, "task", "show", task_id)
    show = assert_inert(show_out, "task show")
    assert (
        f"q\\x1b]0;pwned\\x07: Which {SHOWN} database? "
        "(options: sqlite\\x1b[31m, postgres\\x9b2J)" in show
    )
    asked = daemon.show(task_id)["questions"][0]
    assert (asked["id"], asked["text"], asked["options"]) == (
        question["id"],
        question["text"],
        question["options"],
    )


def test_daemon_logs_show_control_characters_escaped(instance: Instance) -> None:
    log = instance.home / "state" / "klaudiod.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(f"one {EVIL}\rtwo\nthree \u202e\n".encode())

    code, out, err = klaudio(instance, "daemon", "logs")

    assert code == 0, err
    shown = assert_inert(out, "daemon logs")
    assert shown == f"one {SHOWN}\\x0dtwo\nthree \\u202e\n"
