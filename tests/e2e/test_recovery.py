"""Daemon restarts: SIGTERM leaves agents running; the next daemon adopts them and their output."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import FakeModel, Request, structured, text, tool_use

pytestmark = pytest.mark.docker


def test_restart_mid_agent_adopts_it_with_no_gap_or_duplicate(
    daemon: Instance, model: FakeModel
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(req: Request) -> list[Any]:
        entered.set()
        release.wait(120)
        return [
            text("writing now"),
            tool_use(
                "Write", {"file_path": "/workspace/late.txt", "content": "written after restart\n"}
            ),
        ]

    model.script("E2E-SLOW", [slow, [text("slow worker done")]])
    model.script("E2E-RESTART", [[structured(plan(subtask("slow", "E2E-SLOW take your time")))]])
    task_id = daemon.cli(
        "task", "create", "E2E-RESTART go", "--start", "--auto-approve", check=True
    ).stdout.strip()
    wait_for(entered.is_set, 120, "the worker's model request")
    before = daemon.cli("task", "logs", task_id, "--json", check=True).stdout.splitlines()
    follower = daemon.popen("task", "logs", task_id, "-f", "--json")
    assert follower.stdout is not None
    first = follower.stdout.readline()  # connected and replaying before the daemon goes away
    assert first == before[0] + "\n"

    assert daemon.process is not None
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    daemon.process.wait(timeout=5)
    # A hang detector, not a speed test: the daemon does not wait for its agents.
    assert time.monotonic() - started < 10.0, "SIGTERM must stop the daemon without waiting"
    running = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label=klaudio.task={task_id}",
            "--filter",
            "label=klaudio.agent=slow",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(running) == 1, "the agent keeps running while the daemon is down"

    release.set()  # the agent goes on producing output with no daemon reading it
    daemon.start_daemon()
    waited = daemon.cli("task", "wait", task_id, "--timeout", "120")
    assert waited.returncode == 0, waited.stderr + daemon.daemon_log()

    after = daemon.cli("task", "logs", task_id, "--json", check=True).stdout.splitlines()
    assert after[: len(before)] == before
    # A follower that was live across the restart saw exactly the persisted stream.
    rest, errors = follower.communicate(timeout=60)
    assert follower.returncode == 0, errors
    assert (first + rest).splitlines() == after
    assert "daemon is back; resuming" in errors
    events = [json.loads(line) for line in after]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    worker = [e["event"] for e in events if e["agent"] == "slow" and e["kind"] == "agent"]
    kinds = Counter(e.get("type") for e in worker)
    assert kinds["result"] == 1
    assert sum(1 for e in worker if e.get("type") == "system" and e.get("subtype") == "init") == 1
    texts = [
        block.get("text")
        for e in worker
        if e.get("type") == "assistant"
        for block in e["message"]["content"]
        if block.get("type") == "text"
    ]
    assert texts == ["writing now", "slow worker done"]
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert task["plan"]["subtasks"][0]["result"] == "slow worker done"
