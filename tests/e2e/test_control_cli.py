"""End to end: `klaudio task stop` pauses a working agent, `klaudio task resume` continues it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import FakeModel, Request, structured, text

pytestmark = pytest.mark.docker


def test_stop_then_resume_continues_the_agent(daemon: Instance, model: FakeModel) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_once(req: Request) -> list[Any]:
        # The resumed run asks again from the same first prompt: only the first call hangs.
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(120)
        return [text("slow worker done")]

    model.script("E2E-STOPME", [slow_once])
    model.script("E2E-CONTROL", [[structured(plan(subtask("slow", "E2E-STOPME take your time")))]])
    try:
        task_id = daemon.cli(
            "task", "create", "E2E-CONTROL go", "--start", "--auto-approve", check=True
        ).stdout.strip()
        short = task_id[:8]
        wait_for(entered.is_set, 120, "the worker's model request")

        stop = daemon.cli("task", "stop", short, "--timeout", "5")

        assert stop.returncode == 0, stop.stderr + daemon.daemon_log()
        assert stop.stderr == f"klaudio: task {short} paused (stopped by user)\n"
        task = daemon.show(task_id)
        assert task["state"] == "paused" and task["control"] == ""
        assert task["plan"]["subtasks"][0]["state"] == "stopped"
        assert task["agents"][-1]["state"] == "stopped"

        again = daemon.cli("task", "stop", task_id)
        assert again.returncode == 0, again.stderr
        assert again.stderr == f"klaudio: task {short} is already paused; nothing to stop\n"
        waited = daemon.cli("task", "wait", task_id, "--timeout", "0")
        assert waited.returncode == 7
        assert waited.stderr == (
            f"klaudio: task {short} paused: stopped by user; "
            f"resume it with `klaudio task resume {short}`\n"
        )

        resume = daemon.cli("task", "resume", short)

        assert resume.returncode == 0, resume.stderr
        assert resume.stderr == f"klaudio: task {short} is running (resumed by user)\n"
        done = daemon.cli("task", "wait", task_id, "--timeout", "120")
        assert done.returncode == 0, done.stderr + daemon.daemon_log()
        final = daemon.show(task_id)
        assert final["state"] == "completed"
        assert final["agents"][-1]["runs"] == 2
        logs = daemon.cli("task", "logs", task_id, check=True).stdout.splitlines()
        for line in (
            "── stop requested",
            "── task paused: stopped by user",
            "── task running: resumed by user",
            "── subtask slow running",
            "── agent slow resumed (run 2)",
            "── task completed",
        ):
            assert line in logs, "\n".join(logs)
        # The daemon gives Claude Code's own account of the interrupted turn as the reason.
        assert any(line.startswith("── subtask slow stopped: ") for line in logs), logs
        assert any(line.startswith("── agent slow stopped") for line in logs), logs
    finally:
        release.set()
