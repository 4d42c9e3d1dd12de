"""End to end: steering a task through the CLI against the real stack.

stop and resume (the conversation carried over), stop while planning, cancel, retry, relaunch,
checkpoints and restore, a daemon killed mid-checkpoint or mid-stop, and usage-limit pauses.
Only the model is faked. Agents are held still by model turns that block on a threading.Event
(released in `finally`), so a stop always lands in the middle of a turn.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.engine import PrivateEngine
from tests.fakemodel import FakeModel, Request, Turn, error, structured, text, tool_use, usage_limit

pytestmark = pytest.mark.docker

# Claude Code's own words, and the daemon's, that tests look for in the model's requests.
PAUSED = "You were paused"
RETRIED = "Your previous attempt ended with an error"
# How long a held model turn blocks at most (a test releases it long before).
HOLD = 120.0
STOP_BOUND = 15.0  # seconds `task stop --timeout 5` may take, SIGINT to paused


# Helpers ---------------------------------------------------------------------------------------


def agent(fn: Callable[[Request], list[Any]]) -> list[Any]:
    """A script whose every turn is fn (it looks at the request to decide what to do)."""
    return [fn] * 50


def user_texts(req: Request) -> list[str]:
    """Every text the requests' user messages carry (tool results included)."""
    found: list[str] = []
    for m in req.messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            found.append(content)
            continue
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                found.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, str):
                    found.append(inner)
                elif isinstance(inner, list):
                    found += [str(b.get("text", "")) for b in inner if isinstance(b, dict)]
    return found


def told(req: Request, needle: str) -> bool:
    """Whether a user message of the request says needle."""
    return any(needle in t for t in user_texts(req))


def assistant_blocks(req: Request) -> list[dict[str, Any]]:
    """The content blocks of the request's assistant messages (the agent's earlier turns)."""
    blocks: list[dict[str, Any]] = []
    for m in req.messages:
        if m.get("role") == "assistant" and isinstance(m.get("content"), list):
            blocks += [b for b in m["content"] if isinstance(b, dict)]
    return blocks


def said_text(req: Request, words: str) -> bool:
    """Whether an earlier assistant turn in the request has a text block with words."""
    return any(
        b.get("type") == "text" and words in b.get("text", "") for b in assistant_blocks(req)
    )


def used_tool(req: Request, name: str, **fields: str) -> bool:
    """Whether an earlier assistant turn in the request called tool name with those inputs."""
    return any(
        b.get("type") == "tool_use"
        and b.get("name") == name
        and all(str((b.get("input") or {}).get(k)) == v for k, v in fields.items())
        for b in assistant_blocks(req)
    )


def write(path: str, content: str, words: str = "Writing.") -> list[Any]:
    return [text(words), tool_use("Write", {"file_path": f"/workspace/{path}", "content": content})]


def failure(turn: Turn) -> list[Any]:
    """An error turn (error(), usage_limit()) as what a callable turn returns."""
    assert isinstance(turn, list)
    return turn


class Hold:
    """A model turn that blocks until released: the agent is busy while the test acts."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, reply: list[Any]) -> list[Any]:
        self.entered.set()
        self.release.wait(HOLD)
        return reply

    def turn(self, req: Request) -> list[Any]:
        """As a whole script turn: hold, then answer (to nobody, once the agent was stopped)."""
        return self([text("too late")])

    def wait_entered(self, what: str = "the held model turn") -> None:
        wait_for(self.entered.is_set, 120, what)


def release(hold: Hold, model: FakeModel, marker: str) -> int:
    """Release a held turn whose agent was stopped; how many requests marker has then.

    The held request is recorded once its turn returns (its answer goes nowhere).
    """
    count = len(model.requests_for(marker))
    hold.release.set()
    wait_for(lambda: len(model.requests_for(marker)) > count, 10, "the held request recorded")
    return count + 1


@pytest.fixture
def holds() -> Iterator[Callable[[], Hold]]:
    """Make Holds; every one is released at the end so no fake-model thread lingers."""
    made: list[Hold] = []

    def make() -> Hold:
        made.append(Hold())
        return made[-1]

    yield make
    for hold in made:
        hold.release.set()


def create(inst: Instance, prompt: str, *extra: str) -> str:
    """`task create PROMPT --start --auto-approve`; the new task's id."""
    return inst.cli(
        "task", "create", prompt, "--start", "--auto-approve", *extra, check=True
    ).stdout.strip()


def running_containers(task_id: str, engine: PrivateEngine | None = None) -> list[str]:
    args = ["ps", "-q", "--filter", f"label=klaudio.task={task_id}"]
    if engine is not None:
        return engine.docker(*args).stdout.split()
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.split()


def events(inst: Instance, task_id: str) -> list[dict[str, Any]]:
    """`task logs ID --json`, parsed: the task's persisted stream."""
    out = inst.cli("task", "logs", task_id, "--json", check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def task_events(inst: Instance, task_id: str, kind: str) -> list[dict[str, Any]]:
    """The stream's daemon events (not agent output) of a type: task, control, checkpoint..."""
    return [e["event"] for e in events(inst, task_id) if e["event"].get("type") == kind]


def state_of(inst: Instance, task_id: str) -> str:
    return str(inst.show(task_id)["state"])


def wait_state(inst: Instance, task_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    wait_for(lambda: state_of(inst, task_id) == state, timeout, f"task {task_id} {state}")
    return inst.show(task_id)


def settled(inst: Instance, task_id: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return inst.cli("task", "wait", task_id, "--timeout", str(timeout))


def stop(inst: Instance, task_id: str) -> float:
    """`task stop ID --timeout 5`, which must succeed; how long it took."""
    started = time.monotonic()
    result = inst.cli("task", "stop", task_id, "--timeout", "5")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr + inst.daemon_log()
    return took


def agent_of(task: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in task["agents"] if a["name"] == name)


def checkpoints(inst: Instance, task_id: str) -> list[dict[str, Any]]:
    """`task checkpoints ID -o json`, newest first."""
    out = inst.cli("task", "checkpoints", task_id, "-o", "json", check=True).stdout
    return list(json.loads(out))


def checkpoint_dir(inst: Instance, task_id: str) -> Path:
    return inst.home / "data" / "checkpoints" / task_id


# 1. Stop mid-agent, then resume ----------------------------------------------------------------


def test_stop_mid_agent_then_resume_carries_the_conversation_over(
    daemon: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    hold = holds()

    def worker(req: Request) -> list[Any]:
        if told(req, PAUSED):
            return [text("resumed and finished")]
        if req.turn_index == 0:
            return write("before.txt", "written before the stop\n", "Writing before.txt now.")
        return hold([text("too late")])

    model.script("CT1-WORK", agent(worker))
    model.script("CT1-TASK", [[structured(plan(subtask("w", "CT1-WORK write then think")))]])
    task_id = create(daemon, "CT1-TASK go")
    hold.wait_entered("the worker's second model turn")
    first_session = model.requests_for("CT1-WORK")[0].session_id
    assert first_session

    took = stop(daemon, task_id)

    assert took < STOP_BOUND, f"task stop took {took:.1f}s"
    task = daemon.show(task_id)
    assert task["state"] == "paused" and task["reason"] == "stopped by user"
    assert running_containers(task_id) == []
    worker_agent = agent_of(task, "w")
    assert worker_agent["state"] == "stopped"
    assert worker_agent["reason"].startswith("stopped by user"), worker_agent
    assert worker_agent["session_id"] == first_session
    before_resume = release(hold, model, "CT1-WORK")

    resume = daemon.cli("task", "resume", task_id)
    assert resume.returncode == 0, resume.stderr
    done = settled(daemon, task_id)

    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert (Path(task["workspace"]) / "before.txt").read_text() == "written before the stop\n"
    assert task["plan"]["subtasks"][0]["result"] == "resumed and finished"
    after = model.requests_for("CT1-WORK")[before_resume:]
    assert after, "the fake model got no request from the resumed worker"
    carried = [
        r
        for r in after
        if said_text(r, "Writing before.txt now.")
        and used_tool(r, "Write", file_path="/workspace/before.txt")
    ]
    assert carried, "no request after the resume carried the worker's earlier turn"
    assert {r.session_id for r in carried} == {first_session}
    assert told(carried[0], PAUSED)
    # One continuous history with the stop, the pause, the resume and the second run in it.
    stream = events(daemon, task_id)
    assert [e["seq"] for e in stream] == list(range(1, len(stream) + 1))
    kinds = [e["event"] for e in stream]
    control = kinds.index({"type": "control", "control": "stop"})
    paused = kinds.index({"type": "task", "state": "paused", "reason": "stopped by user"})
    running = next(
        i
        for i, e in enumerate(kinds)
        if e.get("type") == "task" and e["state"] == "running" and i > paused
    )
    assert control < paused < running
    second_run = [
        i
        for i, e in enumerate(stream)
        if e["agent"] == "w" and e["event"].get("type") == "agent" and e["event"].get("epoch") == 1
    ]
    assert second_run and min(second_run) > running
    assert any(stream[i]["event"]["state"] == "completed" for i in second_run)


# 2. Stop while planning, then resume -----------------------------------------------------------


def test_stop_while_planning_then_resume_continues_the_planner(
    daemon: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    hold = holds()

    def planner(req: Request) -> list[Any]:
        if told(req, PAUSED):
            return [structured(plan(subtask("only", "CT2-WORK say done")))]
        if req.turn_index == 0:
            return [text("Looking around first."), tool_use("Glob", {"pattern": "*"})]
        return hold([text("too late")])

    model.script("CT2-WORK", [[text("worker done")]])
    model.script("CT2-PLAN", agent(planner))
    task_id = create(daemon, "CT2-PLAN go")
    hold.wait_entered("the planner's second model turn")
    session = model.requests_for("CT2-PLAN")[0].session_id

    took = stop(daemon, task_id)

    assert took < STOP_BOUND, f"task stop took {took:.1f}s"
    task = daemon.show(task_id)
    assert task["state"] == "paused" and task["reason"] == "stopped by user"
    assert task["plan"] is None
    assert agent_of(task, "planner")["state"] == "stopped"
    assert running_containers(task_id) == []
    before_resume = release(hold, model, "CT2-PLAN")

    resume = daemon.cli("task", "resume", task_id)
    assert resume.returncode == 0, resume.stderr
    assert "is planning" in resume.stderr, resume.stderr
    done = settled(daemon, task_id)

    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert [s["id"] for s in task["plan"]["subtasks"]] == ["only"]
    assert task["plan"]["subtasks"][0]["result"] == "worker done"
    planner_agent = agent_of(task, "planner")
    assert planner_agent["runs"] == 2 and planner_agent["session_id"] == session
    resumed = model.requests_for("CT2-PLAN")[before_resume:]
    assert resumed and all(r.session_id == session for r in resumed)
    assert said_text(resumed[0], "Looking around first.") and used_tool(resumed[0], "Glob")
    assert told(resumed[0], PAUSED)


# 3. Cancel from running and from paused --------------------------------------------------------


def test_cancel_from_running_and_from_paused(
    daemon: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    held = {"CT3-RUN-W": holds(), "CT3-PAUSE-W": holds()}
    for marker, hold in held.items():
        model.script(marker, agent(hold.turn))
    model.script("CT3-RUN", [[structured(plan(subtask("w", "CT3-RUN-W hold on")))]])
    model.script("CT3-PAUSE", [[structured(plan(subtask("w", "CT3-PAUSE-W hold on")))]])
    running_id = create(daemon, "CT3-RUN go")
    paused_id = create(daemon, "CT3-PAUSE go")
    for hold in held.values():
        hold.wait_entered("both workers at work")
    stop(daemon, paused_id)
    assert state_of(daemon, paused_id) == "paused"

    for task_id in (running_id, paused_id):
        cancel = daemon.cli("task", "cancel", task_id, "--timeout", "5")

        assert cancel.returncode == 0, cancel.stderr + daemon.daemon_log()
        assert cancel.stderr == f"klaudio: task {task_id[:8]} cancelled (cancelled by user)\n"
        task = daemon.show(task_id)
        assert task["state"] == "cancelled" and task["reason"] == "cancelled by user"
        assert task["plan"]["subtasks"][0]["state"] == "cancelled"
        assert running_containers(task_id) == []
        waited = daemon.cli("task", "wait", task_id, "--timeout", "10")
        assert waited.returncode == 7, waited.stderr
        # Final: nothing brings it back.
        for command in ("resume", "cancel", "stop"):
            again = daemon.cli("task", command, task_id)
            assert again.returncode == 4, (command, again.stderr)
            assert "cancelled" in again.stderr
    running_agent = agent_of(daemon.show(running_id), "w")
    assert running_agent["state"] == "stopped"
    assert running_agent["reason"].startswith("cancelled by user"), running_agent
    assert task_events(daemon, running_id, "control") == [{"type": "control", "control": "cancel"}]


# 4. Retry after a failed subtask ---------------------------------------------------------------


def script_flaky(model: FakeModel, prefix: str, flaky: Callable[[Request], list[Any]]) -> None:
    """steady (completes), flaky (as scripted), after (depends on flaky); workers first."""
    model.script(f"{prefix}-STEADY", [[text("steady done")]])
    model.script(f"{prefix}-FLAKY", agent(flaky))
    model.script(f"{prefix}-AFTER", [[text("after done")]])
    model.script(
        f"{prefix}-PLAN",
        [
            [
                structured(
                    plan(
                        subtask("steady", f"{prefix}-STEADY just finish"),
                        subtask("flaky", f"{prefix}-FLAKY fails once"),
                        subtask("after", f"{prefix}-AFTER runs last", ["flaky"]),
                    )
                )
            ]
        ],
    )


def failed_once(daemon: Instance, task_id: str) -> dict[str, Any]:
    """Wait for the task to fail with flaky failed and after skipped; the task."""
    waited = settled(daemon, task_id)
    assert waited.returncode == 1, waited.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    states = {s["id"]: s["state"] for s in task["plan"]["subtasks"]}
    assert states == {"steady": "completed", "flaky": "failed", "after": "skipped"}, task
    return task


def test_retry_resumes_the_failed_agent_with_the_reason(daemon: Instance, model: FakeModel) -> None:
    def flaky(req: Request) -> list[Any]:
        if told(req, RETRIED):
            return [text("flaky done")]
        if req.turn_index == 0:
            return write("flaky.txt", "half done\n", "Starting the flaky work.")
        return failure(error(500, "flaky exploded"))

    script_flaky(model, "CT4", flaky)
    task_id = create(daemon, "CT4-PLAN go")
    task = failed_once(daemon, task_id)
    assert "subtask flaky failed" in task["reason"] and "skipped: after" in task["reason"]
    session = agent_of(task, "flaky")["session_id"]
    steady_requests = len(model.requests_for("CT4-STEADY"))
    before_retry = len(model.requests_for("CT4-FLAKY"))
    assert steady_requests >= 1 and model.requests_for("CT4-AFTER") == []

    retry = daemon.cli("task", "retry", task_id[:8])

    assert retry.returncode == 0, retry.stderr
    assert "running (retrying after, flaky)" in retry.stderr, retry.stderr
    done = settled(daemon, task_id)
    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert [s["state"] for s in task["plan"]["subtasks"]] == ["completed"] * 3
    retried = model.requests_for("CT4-FLAKY")[before_retry:]
    assert retried and {r.session_id for r in retried} == {session}
    first = retried[0]
    assert told(first, RETRIED) and told(first, "flaky exploded")
    assert said_text(first, "Starting the flaky work.")
    assert used_tool(first, "Write", file_path="/workspace/flaky.txt")
    assert model.requests_for("CT4-AFTER"), "the skipped dependent did not run"
    assert "flaky done" in model.requests_for("CT4-AFTER")[0].first_user_text()
    # The completed subtask was not run again.
    assert len(model.requests_for("CT4-STEADY")) == steady_requests
    assert agent_of(task, "steady")["runs"] == 1 and agent_of(task, "flaky")["runs"] == 2
    assert (Path(task["workspace"]) / "flaky.txt").read_text() == "half done\n"


def test_retry_fresh_starts_a_new_conversation(daemon: Instance, model: FakeModel) -> None:
    calls: list[Request] = []

    def flaky(req: Request) -> list[Any]:
        calls.append(req)
        if len(calls) == 1:
            return failure(error(500, "fresh exploded"))
        return [text("fresh done")]

    script_flaky(model, "CT4F", flaky)
    task_id = create(daemon, "CT4F-PLAN go")
    old_session = agent_of(failed_once(daemon, task_id), "flaky")["session_id"]
    steady_requests = len(model.requests_for("CT4F-STEADY"))

    retry = daemon.cli("task", "retry", task_id, "--subtask", "flaky", "--fresh")

    assert retry.returncode == 0, retry.stderr
    done = settled(daemon, task_id)
    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    new_session = agent_of(task, "flaky")["session_id"]
    assert new_session and new_session != old_session
    fresh = model.requests_for("CT4F-FLAKY")[1:]
    assert fresh and {r.session_id for r in fresh} == {new_session}
    assert "CT4F-FLAKY fails once" in fresh[0].first_user_text()
    assert assistant_blocks(fresh[0]) == []
    assert not any(told(r, RETRIED) or told(r, "fresh exploded") for r in fresh)
    assert len(model.requests_for("CT4F-STEADY")) == steady_requests


# 5. Relaunch with and without context ----------------------------------------------------------


def test_relaunch_with_and_without_context(daemon: Instance, model: FakeModel) -> None:
    relaunched = threading.Event()

    def planner(req: Request) -> list[Any]:
        if relaunched.is_set():
            return [structured(plan(subtask("check", "CT5-CHECK read old.txt")))]
        return [structured(plan(subtask("write", "CT5-WRITE write old.txt")))]

    model.script("CT5-WRITE", [write("old.txt", "from the old task\n"), [text("wrote old.txt")]])
    model.script(
        "CT5-CHECK",
        [
            [tool_use("Bash", {"command": "cat old.txt"})],
            lambda req: [text(f"saw: {(req.last_tool_result_text() or '').strip()}")],
        ],
    )
    model.script("CT5-PLAN", agent(planner))
    old_id = create(daemon, "CT5-PLAN go")
    assert settled(daemon, old_id).returncode == 0, daemon.daemon_log()
    old = daemon.show(old_id)
    relaunched.set()

    planners: dict[str, str] = {}
    for context, prompt in [
        (True, "CT5-PLAN check the old work"),
        (False, "CT5-PLAN check without context"),
    ]:
        seen = len(model.requests_for("CT5-PLAN"))
        flags = [] if context else ["--no-context"]
        result = daemon.cli(
            "task", "relaunch", old_id[:8], "--prompt", prompt, *flags, "--start", "--auto-approve"
        )

        assert result.returncode == 0, result.stderr
        new_id = result.stdout.strip()
        assert len(new_id) == 12 and new_id != old_id and new_id not in planners
        done = settled(daemon, new_id)
        assert done.returncode == 0, done.stderr + daemon.daemon_log()
        new = daemon.show(new_id)
        assert new["state"] == "completed" and new["prompt"] == prompt
        assert new["name"] == prompt  # named after its own prompt, not the old task's
        assert new["workspace"] != old["workspace"]
        assert (Path(new["workspace"]) / "old.txt").read_text() == "from the old task\n"
        assert new["plan"]["subtasks"][0]["result"] == "saw: from the old task"
        planners[new_id] = model.requests_for("CT5-PLAN")[seen].first_user_text()

    with_context, without = planners.values()
    for words in (
        "Context:",
        "continues an earlier one",
        old_id,
        "CT5-PLAN go",  # the old prompt
        "completed",
        "write [completed]",
        "added old.txt",
    ):
        assert words in with_context, f"{words!r} not in the planner's prompt:\n{with_context}"
        if words != "completed":
            assert words not in without, f"{words!r} in a --no-context prompt:\n{without}"
    assert "CT5-PLAN check the old work" in with_context
    # The old task is as it was.
    assert daemon.show(old_id)["state"] == "completed"
    assert (Path(old["workspace"]) / "old.txt").read_text() == "from the old task\n"


# 6. Checkpoints: interval, retention, restore --------------------------------------------------

BIG_SLOW = 1 << 30


def test_checkpoints_every_interval_keep_the_newest(
    instance: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    instance.env["KLAUDIO_CHECKPOINTS_INTERVAL"] = "1"
    instance.env["KLAUDIO_CHECKPOINTS_KEEP"] = "2"
    instance.start_daemon()
    hold = holds()

    def worker(req: Request) -> list[Any]:
        if req.turn_index == 0:
            return write("work.txt", "some work\n")
        return hold([text("too late")])

    model.script("CT6-WORK", agent(worker))
    model.script("CT6-PLAN", [[structured(plan(subtask("w", "CT6-WORK work slowly")))]])
    task_id = create(instance, "CT6-PLAN go")
    hold.wait_entered()

    def written() -> list[dict[str, Any]]:
        return task_events(instance, task_id, "checkpoint")

    wait_for(lambda: len(written()) >= 3, 30, "three interval checkpoints")
    listed = wait_for(lambda: len(found := checkpoints(instance, task_id)) == 2 and found, 10, "2")
    assert {c["reason"] for c in listed} == {"interval"}
    stop(instance, task_id)

    listed = checkpoints(instance, task_id)
    assert len(listed) == 2, listed
    assert [c["reason"] for c in listed] == ["stop", "interval"]
    assert all(c["size_bytes"] > 0 and c["task"] == task_id for c in listed)
    assert listed[0]["created_at"] >= listed[1]["created_at"]
    # Pruned ones are gone from the disk too; nothing half-written is left.
    folder = checkpoint_dir(instance, task_id)
    on_disk = sorted(p.name for p in folder.iterdir())
    assert on_disk == sorted(f"{c['id']}.tar" for c in listed)
    for c in listed:
        assert (folder / f"{c['id']}.tar").stat().st_size == c["size_bytes"]
    history = written()
    assert len(history) >= 4 and history[-1]["reason"] == "stop"
    assert history[0]["id"] not in {c["id"] for c in listed}
    # Each holds the work done so far (a tar with the workspace in it).
    members = subprocess.run(
        ["tar", "-tf", str(folder / f"{listed[0]['id']}.tar")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "workspace/work.txt" in members and "meta.json" in members


def writes(folder: Path) -> set[str]:
    """The names of the checkpoints being written."""
    return {p.name for p in folder.iterdir() if p.name.endswith(".tar.tmp")}


def test_a_stop_during_an_interval_checkpoint_records_it_first(
    instance: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    instance.env["KLAUDIO_CHECKPOINTS_INTERVAL"] = "1"
    instance.start_daemon()
    hold = holds()
    model.script("CT6S-WORK", agent(hold.turn))
    model.script("CT6S-PLAN", [[structured(plan(subtask("w", "CT6S-WORK hold on")))]])
    task_id = create(instance, "CT6S-PLAN go")
    hold.wait_entered()
    folder = checkpoint_dir(instance, task_id)
    wait_for(folder.is_dir, 30, "the first interval checkpoint")
    with open(Path(instance.show(task_id)["workspace"]) / "big.bin", "wb") as big:
        big.truncate(BIG_SLOW)  # sparse: cheap to make, but copying it takes a second or more
    earlier = writes(folder)
    (tmp,) = wait_for(lambda: writes(folder) - earlier, 30, "a checkpoint of big.bin", 0.005)
    interval = tmp.removeprefix(".").removesuffix(".tar.tmp")

    stop(instance, task_id)

    # The interval checkpoint the stop came upon was finished and recorded before the stop's
    # own; no archive was left on disk without a record, nor half-written.
    assert not writes(folder)
    recorded = [(e["id"], e["reason"]) for e in task_events(instance, task_id, "checkpoint")]
    assert (interval, "interval") in recorded and recorded[-1][1] == "stop", recorded
    listed = checkpoints(instance, task_id)
    assert [c["reason"] for c in listed] == ["stop", "interval", "interval"]
    assert listed[1]["id"] == interval
    on_disk = sorted(p.name for p in folder.iterdir())
    assert on_disk == sorted(f"{c['id']}.tar" for c in listed), "an archive without a record"


def test_restore_puts_the_workspace_and_conversation_back(
    instance: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    instance.env["KLAUDIO_CHECKPOINTS_INTERVAL"] = "0"  # checkpoints on stops only
    instance.start_daemon()
    daemon = instance
    first_hold, second_hold = holds(), holds()
    phase = {"now": "first"}

    def worker(req: Request) -> list[Any]:
        now = phase["now"]
        if now == "first":
            if req.turn_index == 0:
                return write("first.txt", "first\n", "Writing the first file.")
            return first_hold([text("too late")])
        if now == "second":
            if req.turn_index == 0:
                return write("second.txt", "second\n", "Writing the second file.")
            return second_hold([text("too late")])
        if req.turn_index == 0:
            return write("third.txt", "third\n", "Writing the third file.")
        return [text("done after the restore")]

    model.script("CT6R-WORK", agent(worker))
    model.script("CT6R-PLAN", [[structured(plan(subtask("w", "CT6R-WORK two files")))]])
    task_id = create(daemon, "CT6R-PLAN go")
    first_hold.wait_entered()
    workspace = Path(daemon.show(task_id)["workspace"])
    stop(daemon, task_id)
    release(first_hold, model, "CT6R-WORK")
    (a,) = checkpoints(daemon, task_id)
    assert a["reason"] == "stop"

    phase["now"] = "second"
    assert daemon.cli("task", "resume", task_id).returncode == 0
    second_hold.wait_entered()
    assert (workspace / "second.txt").read_text() == "second\n"
    busy = daemon.cli("task", "restore", task_id, a["id"])
    assert busy.returncode == 4, busy.stderr
    assert "running" in busy.stderr
    stop(daemon, task_id)
    release(second_hold, model, "CT6R-WORK")
    b, a_again = checkpoints(daemon, task_id)
    assert a_again == a and b["reason"] == "stop"

    unknown = daemon.cli("task", "restore", task_id, "ffffffffffff")
    assert unknown.returncode == 3, unknown.stderr
    assert "ffffffffffff" in unknown.stderr

    # A truncated archive is refused, naming it, and nothing changes.
    archive = checkpoint_dir(daemon, task_id) / f"{b['id']}.tar"
    os.truncate(archive, archive.stat().st_size // 2)
    shown = daemon.show(task_id)
    damaged = daemon.cli("task", "restore", task_id, b["id"][:6])
    assert damaged.returncode == 2, damaged.stderr
    assert b["id"] in damaged.stderr and len(damaged.stderr.splitlines()) == 1, damaged.stderr
    assert daemon.show(task_id) == shown
    assert (workspace / "second.txt").read_text() == "second\n"
    assert checkpoints(daemon, task_id) == [b, a]

    restored = daemon.cli("task", "restore", task_id, a["id"])

    assert restored.returncode == 0, restored.stderr + daemon.daemon_log()
    assert f"restored from checkpoint {a['id']}" in restored.stderr
    task = daemon.show(task_id)
    assert task["state"] == "paused" and a["id"] in task["reason"]
    assert not (workspace / "second.txt").exists()
    assert (workspace / "first.txt").read_text() == "first\n"
    session = agent_of(task, "w")["session_id"]
    seen = len(model.requests_for("CT6R-WORK"))
    phase["now"] = "final"
    assert daemon.cli("task", "resume", task_id).returncode == 0
    done = settled(daemon, task_id)
    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    task = daemon.show(task_id)
    assert task["state"] == "completed"
    assert task["plan"]["subtasks"][0]["result"] == "done after the restore"
    assert sorted(p.name for p in workspace.iterdir() if p.suffix == ".txt") == [
        "first.txt",
        "third.txt",
    ]
    assert (workspace / "third.txt").stat().st_uid == os.getuid()
    # The conversation went back too: the agent resumed from where it was at checkpoint A.
    after = model.requests_for("CT6R-WORK")[seen:]
    assert after and {r.session_id for r in after} == {session}
    assert used_tool(after[0], "Write", file_path="/workspace/first.txt")
    assert not used_tool(after[0], "Write", file_path="/workspace/second.txt")


# 7. SIGKILL while a checkpoint is being written ------------------------------------------------

BIG = 400 << 20  # a sparse file: cheap to make, but each checkpoint copies all of it


def test_sigkill_during_a_checkpoint_write_leaves_no_torn_checkpoint(
    instance: Instance, model: FakeModel, holds: Callable[[], Hold]
) -> None:
    instance.env["KLAUDIO_CHECKPOINTS_INTERVAL"] = "0"
    instance.start_daemon()
    first_hold, second_hold = holds(), holds()
    resumed = threading.Event()

    def worker(req: Request) -> list[Any]:
        if req.turn_index == 0 and not told(req, PAUSED):
            return write("first.txt", "first\n")
        if not resumed.is_set():
            return first_hold([text("too late")])
        return second_hold([text("too late")])

    model.script("CT7-WORK", agent(worker))
    model.script("CT7-PLAN", [[structured(plan(subtask("w", "CT7-WORK hold on")))]])
    task_id = create(instance, "CT7-PLAN go")
    first_hold.wait_entered()
    stop(instance, task_id)
    release(first_hold, model, "CT7-WORK")
    (a,) = checkpoints(instance, task_id)
    workspace = Path(instance.show(task_id)["workspace"])
    with open(workspace / "big.bin", "wb") as big:
        big.truncate(BIG)
    resumed.set()
    assert instance.cli("task", "resume", task_id).returncode == 0
    second_hold.wait_entered()
    folder = checkpoint_dir(instance, task_id)

    def writing() -> list[Path]:
        return [p for p in folder.iterdir() if p.name.endswith(".tar.tmp")]

    stopper = instance.popen("task", "stop", task_id, "--timeout", "5")
    try:
        (tmp,) = wait_for(writing, 30, "the stop's checkpoint being written", interval=0.005)
        assert instance.process is not None
        instance.process.kill()
        instance.process.wait(10)
    finally:
        stopper.wait(30)
    assert tmp.exists(), "the checkpoint was complete before the kill: make BIG bigger"
    torn = tmp.name.removeprefix(".").removesuffix(".tar.tmp")
    assert stopper.returncode != 0

    instance.start_daemon()

    task = wait_state(instance, task_id, "paused")
    assert task["reason"] == "stopped by user"
    assert not tmp.exists() and writing() == []
    listed = checkpoints(instance, task_id)
    assert torn not in {c["id"] for c in listed}
    assert [c["reason"] for c in listed] == ["stop", "stop"] and listed[1] == a
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c['id']}.tar" for c in listed)
    for c in listed:
        archive = folder / f"{c['id']}.tar"
        assert archive.stat().st_size == c["size_bytes"]
        subprocess.run(["tar", "-tf", str(archive)], capture_output=True, check=True)
    assert running_containers(task_id) == []
    os.unlink(workspace / "big.bin")

    restored = instance.cli("task", "restore", task_id, listed[0]["id"])

    assert restored.returncode == 0, restored.stderr + instance.daemon_log()
    assert state_of(instance, task_id) == "paused"
    assert (workspace / "big.bin").stat().st_size == BIG
    assert (workspace / "first.txt").read_text() == "first\n"


# 8. The daemon dies with a stop in flight ------------------------------------------------------


def test_a_stop_in_flight_when_the_daemon_dies_is_finished_after_restart(
    private_daemon: Instance,
    private_engine: PrivateEngine,
    model: FakeModel,
    holds: Callable[[], Hold],
) -> None:
    daemon = private_daemon
    hold = holds()

    def worker(req: Request) -> list[Any]:
        if told(req, PAUSED):
            return [text("resumed and done")]
        return hold([text("too late")])

    model.script("CT8-WORK", agent(worker))
    model.script("CT8-PLAN", [[structured(plan(subtask("w", "CT8-WORK hold on")))]])
    task_id = create(daemon, "CT8-PLAN go")
    hold.wait_entered()
    assert len(running_containers(task_id, private_engine)) == 1
    engine_pid = private_engine.pid
    assert engine_pid is not None and daemon.process is not None

    # Frozen, the engine cannot stop the agent: the stop is recorded and goes no further.
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        stopper = daemon.popen("task", "stop", task_id, "--timeout", "5")
        wait_for(
            lambda: (
                {"type": "control", "control": "stop"} in task_events(daemon, task_id, "control")
            ),
            30,
            "the stop recorded",
        )
        assert state_of(daemon, task_id) == "running"
        daemon.process.kill()
        daemon.process.wait(10)
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    stopper.wait(30)
    assert stopper.returncode != 0  # its daemon died under it

    daemon.start_daemon()

    task = wait_state(daemon, task_id, "paused")
    assert task["reason"] == "stopped by user" and task["control"] == ""
    assert running_containers(task_id, private_engine) == []
    paused = [e for e in task_events(daemon, task_id, "task") if e["state"] == "paused"]
    assert paused == [{"type": "task", "state": "paused", "reason": "stopped by user"}]
    # The stop was carried out on the agent too, so that a resume continues it.
    assert agent_of(task, "w")["state"] == "stopped", task["agents"]
    assert task["plan"]["subtasks"][0]["state"] == "stopped"
    release(hold, model, "CT8-WORK")
    assert daemon.cli("task", "resume", task_id).returncode == 0
    done = settled(daemon, task_id)
    assert done.returncode == 0, done.stderr + daemon.daemon_log()
    assert daemon.show(task_id)["plan"]["subtasks"][0]["result"] == "resumed and done"


# 9. Usage limits -------------------------------------------------------------------------------


def epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize("resumed_by", ["itself", "user"])
def test_a_usage_limit_pauses_until_it_lifts(
    instance: Instance, model: FakeModel, resumed_by: str
) -> None:
    del instance.env["ANTHROPIC_API_KEY"]
    instance.env["CLAUDE_CODE_OAUTH_TOKEN"] = "oauth-test"
    instance.start_daemon()
    wait = 6.0 if resumed_by == "itself" else 3600.0
    limit: dict[str, float] = {}

    def worker(req: Request) -> list[Any]:
        if "resets_at" not in limit:
            limit["resets_at"] = float(int(time.time() + wait))
            return failure(usage_limit(limit["resets_at"]))
        limit.setdefault("resumed", time.time())
        return [text("done after the limit")]

    model.script("CT9-WORK", agent(worker))
    model.script("CT9-PLAN", [[structured(plan(subtask("w", "CT9-WORK hit the limit")))]])
    task_id = create(instance, "CT9-PLAN go")

    task = wait_state(instance, task_id, "paused")
    resets_at = limit["resets_at"]
    assert time.time() < resets_at, "paused too late to tell an automatic resume"
    assert "usage limit" in task["reason"] and "resumes by itself at" in task["reason"], task
    assert task["resume_at"] is not None
    assert resets_at <= epoch(task["resume_at"]) <= resets_at + 2
    assert agent_of(task, "w")["state"] == "stopped"
    assert running_containers(task_id) == []
    waited = instance.cli("task", "wait", task_id, "--timeout", "0")
    assert waited.returncode == 7 and "resumes by itself at" in waited.stderr, waited.stderr
    assert "resumes by itself at" in instance.cli("task", "show", task_id, check=True).stdout

    if resumed_by == "user":
        resume = instance.cli("task", "resume", task_id)
        assert resume.returncode == 0, resume.stderr
    task = wait_state(instance, task_id, "completed", timeout=70)

    assert task["plan"]["subtasks"][0]["result"] == "done after the limit"
    assert task["resume_at"] is None
    if resumed_by == "itself":
        assert limit["resumed"] >= resets_at
    else:
        assert limit["resumed"] < resets_at - 3000
    first, *after = model.requests_for("CT9-WORK")
    assert after and {r.session_id for r in after} == {first.session_id}
    assert told(after[0], PAUSED)
    assert all(r.headers.get("authorization") == "Bearer oauth-test" for r in after)
    reason = "resumed after the usage limit" if resumed_by == "itself" else "resumed by user"
    running = [e for e in task_events(instance, task_id, "task") if e["state"] == "running"]
    assert running[-1]["reason"] == reason
