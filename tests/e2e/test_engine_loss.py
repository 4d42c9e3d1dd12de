"""The Docker engine goes away mid-run: truthful states, no leftovers, and the task resumes.

The tests run the daemon against the private engine (tests/engine.py), which they stop and start
while three agents are running. Stopped with SIGTERM, dockerd stops the containers first: each
agent's entrypoint passes SIGTERM on to Claude Code and records exit 143.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.engine import PrivateEngine
from tests.fakemodel import Block, FakeModel, Request, structured, text, tool_use

pytestmark = pytest.mark.docker

AGENTS = ("alpha", "beta", "gamma")
HOLD_SECONDS = 120.0
LIVE = ("starting", "running")
SETTLED = ("completed", "failed", "paused", "cancelled", "awaiting_answers")


@pytest.fixture
def engine_daemon(instance: Instance, private_engine: PrivateEngine) -> Instance:
    """A daemon on the private engine with room for three agents of one task at once."""
    instance.env["DOCKER_HOST"] = private_engine.host
    instance.env["KLAUDIO_AGENTS_PER_TASK"] = "3"
    instance.env["KLAUDIO_AGENTS_MAX_CONCURRENT"] = "3"
    instance.start_daemon()
    return instance


class Agents:
    """Three workers that each take a first step, then hold their second turn until released.

    Resumed (a new user turn after the first step), they finish at once.
    """

    def __init__(self, model: FakeModel) -> None:
        self.entered = {name: threading.Event() for name in AGENTS}
        self.release = threading.Event()
        for name in AGENTS:
            model.script(f"E2E-LOSS-{name.upper()}", [self._turn(name)] * 2)
        subs = [subtask(name, f"E2E-LOSS-{name.upper()} work") for name in AGENTS]
        model.script("E2E-ENGINE", [[structured(plan(*subs))]])

    def _turn(self, name: str) -> Callable[[Request], list[Block]]:
        def turn(req: Request) -> list[Block]:
            assistants = [m for m in req.messages if m.get("role") == "assistant"]
            if not assistants:
                return [
                    text(f"{name} step one"),
                    tool_use("Bash", {"command": f"echo one > {name}.txt"}),
                ]
            if req.last_tool_result_text() is None:  # a new user turn: it was resumed
                return [text(f"{name} resumed and done")]
            self.entered[name].set()
            self.release.wait(HOLD_SECONDS)
            return [text(f"{name} done")]

        return turn

    def wait_all_holding(self) -> None:
        for name, event in self.entered.items():
            wait_for(event.is_set, 120, f"agent {name} to hold its turn")


def containers(engine: PrivateEngine, task_id: str) -> list[str]:
    return engine.docker("ps", "-aq", "--filter", f"label=klaudio.task={task_id}").stdout.split()


def agents_running(instance: Instance) -> int:
    status = instance.cli("daemon", "status")
    assert status.returncode == 0, status.stderr
    found = re.search(r"(\d+) agents running", status.stdout)
    assert found, status.stdout
    return int(found.group(1))


def assert_engine_loss_recorded(
    instance: Instance, task_id: str, engine_named: bool = True
) -> dict[str, Any]:
    """Each agent stopped, with its exit code (and the engine named); the task paused for it."""
    task = instance.show(task_id)
    agents = {a["name"]: a for a in task["agents"]}
    assert not [a for a in task["agents"] if a["state"] in LIVE], task["agents"]
    for name in AGENTS:
        agent = agents[name]
        assert agent["state"] == "stopped", agent
        assert agent["exit_code"] == 143, agent
        assert "143" in agent["reason"], agent
        if engine_named:
            assert "the Docker engine went away" in agent["reason"], agent
        assert "did not start" not in agent["reason"], agent
    assert task["state"] == "paused", task
    assert "Docker engine" in task["reason"], task["reason"]
    assert [s["state"] for s in task["plan"]["subtasks"]] == ["stopped"] * len(AGENTS)
    return task


def resume_to_completion(
    instance: Instance, model: FakeModel, task_id: str, engine: PrivateEngine
) -> None:
    """Resume the task: each agent continues its own conversation, and the task completes."""
    seen = len(model.requests)
    resumed = instance.cli("task", "resume", task_id)
    assert resumed.returncode == 0, resumed.stderr
    waited = instance.cli("task", "wait", task_id, "--timeout", "120", timeout=180)
    assert waited.returncode == 0, waited.stderr + instance.daemon_log()[-3000:]
    task = instance.show(task_id)
    assert task["state"] == "completed", task["reason"]
    results = {s["id"]: s["result"] for s in task["plan"]["subtasks"]}
    assert results == {name: f"{name} resumed and done" for name in AGENTS}
    later = model.requests[seen:]
    for name in AGENTS:
        mine = [r for r in later if r.marker == f"E2E-LOSS-{name.upper()}"]
        assert mine, f"{name} made no request after the resume"
        earlier = [
            block.get("text")
            for m in mine[0].messages
            if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for block in m["content"]
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        assert f"{name} step one" in earlier, f"{name}'s conversation was not resumed"
    wait_for(lambda: containers(engine, task_id) == [], 30, "the finished agents' containers")
    assert agents_running(instance) == 0


def start_and_lose_the_engine(
    instance: Instance, model: FakeModel, engine: PrivateEngine
) -> tuple[str, dict[str, Any]]:
    """Start a task of three agents, stop the engine while they run; return the settled task.

    The task settles while the engine is still down.
    """
    agents = Agents(model)
    task_id = instance.cli(
        "task", "create", "E2E-ENGINE go", "--start", "--auto-approve", check=True
    ).stdout.strip()
    try:
        agents.wait_all_holding()
        assert len(containers(engine, task_id)) == len(AGENTS)
        engine.stop()  # SIGTERM: dockerd stops the three containers, then exits
    finally:
        agents.release.set()
    settled = wait_for(
        lambda: (task := instance.show(task_id))["state"] in SETTLED and task,
        120,
        "the task to settle",
    )
    return task_id, settled


def test_engine_stopped_mid_run_leaves_nothing_running_or_behind(
    engine_daemon: Instance, model: FakeModel, private_engine: PrivateEngine
) -> None:
    task_id, task = start_and_lose_the_engine(engine_daemon, model, private_engine)

    # However the runs were judged: they ended with their real exit code, none is left
    # running in the store, and none "did not start".
    assert not [a for a in task["agents"] if a["state"] in LIVE], task["agents"]
    for agent in task["agents"]:
        if agent["name"] in AGENTS:
            assert agent["exit_code"] == 143, agent
            assert "143" in agent["reason"] and "did not start" not in agent["reason"], agent
    assert agents_running(engine_daemon) == 0

    private_engine.start()

    # The containers the engine kept (exited) are removed once it answers again.
    wait_for(lambda: containers(private_engine, task_id) == [], 60, "the leftover containers")
    assert engine_daemon.cli("daemon", "status").returncode == 0
    log = engine_daemon.daemon_log()
    assert "Traceback" not in log, log[-4000:]


def test_engine_stopped_mid_run_pauses_the_task_and_it_resumes(
    engine_daemon: Instance, model: FakeModel, private_engine: PrivateEngine
) -> None:
    task_id, _ = start_and_lose_the_engine(engine_daemon, model, private_engine)

    # Judged while the engine is still down: each run stopped naming the engine, the task paused.
    assert_engine_loss_recorded(engine_daemon, task_id, engine_named=True)
    assert agents_running(engine_daemon) == 0

    private_engine.start()

    wait_for(lambda: containers(private_engine, task_id) == [], 60, "the leftover containers")
    assert_engine_loss_recorded(engine_daemon, task_id, engine_named=True)
    log = engine_daemon.daemon_log()
    assert "Traceback" not in log, log[-4000:]

    resume_to_completion(engine_daemon, model, task_id, private_engine)
    log = engine_daemon.daemon_log()
    assert "Traceback" not in log, log[-4000:]


def test_a_daemon_started_while_the_engine_is_down_reconciles_when_it_returns(
    engine_daemon: Instance, model: FakeModel, private_engine: PrivateEngine
) -> None:
    agents = Agents(model)
    task_id = engine_daemon.cli(
        "task", "create", "E2E-ENGINE go", "--start", "--auto-approve", check=True
    ).stdout.strip()
    try:
        agents.wait_all_holding()
        process = engine_daemon.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        assert len(containers(private_engine, task_id)) == len(AGENTS), "agents outlive it"
        private_engine.stop()
    finally:
        agents.release.set()

    engine_daemon.start_daemon()  # it must start and answer without the engine
    assert engine_daemon.show(task_id)["state"] in ("running", "paused")

    private_engine.start()

    wait_for(lambda: engine_daemon.show(task_id)["state"] == "paused", 120, "the task to be paused")
    assert_engine_loss_recorded(engine_daemon, task_id)
    assert agents_running(engine_daemon) == 0
    wait_for(lambda: containers(private_engine, task_id) == [], 60, "the leftover containers")
    log = engine_daemon.daemon_log()
    assert "Traceback" not in log, log[-4000:]

    resume_to_completion(engine_daemon, model, task_id, private_engine)
