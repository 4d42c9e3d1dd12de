"""Steering benchmarks: `klaudio task stop` with agents working, and a daemon restart.

Agents "work" by waiting on a held fake-model turn (common.Holds): each is a real Claude Code
in a real container with a model request in flight, as during a long answer.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AGENT_TIMEOUT,
    QUICK_TIMEOUT,
    RUN_TIMEOUT,
    TASK_LABEL,
    BenchError,
    Holds,
    Instance,
    Sample,
    Series,
    measured,
    plan_of,
    process_cpu,
    progress,
    running_containers,
    wait_until,
)
from klaudio.client import answers
from klaudio.paths import ensure_private_dir
from klaudiod import states
from klaudiod.plan import PLANNER_AGENT, SubtaskSpec, agent_name
from klaudiod.plan import Plan as PlanSpec
from klaudiod.store import Store
from tests.fakemodel import FakeModel, structured

# Stop ------------------------------------------------------------------------------------------

STOP_AGENTS = 4
STOP_PLAN = "KBSTOP-PLAN"
STOP_HOLDS = [f"KBSTOP-HOLD-{i}" for i in range(1, STOP_AGENTS + 1)]
CHECKPOINT_SECONDS = "checkpoint \\w+ \\(stop, \\d+ bytes, ([\\d.]+)s\\)"


def script_stop(model: FakeModel, holds: Holds) -> None:
    """A plan of STOP_AGENTS independent subtasks whose agents work until stopped.

    Each worker's prompt quotes the task's prompt too, so the workers' markers go first.
    """
    for marker in STOP_HOLDS:
        model.script(marker, [holds.turn(marker)])
    subtasks = [(f"hold{i}", f"{m}: keep working") for i, m in enumerate(STOP_HOLDS, 1)]
    model.script(STOP_PLAN, [[structured(plan_of(subtasks))]])


@dataclass
class StopResult:
    latency: Series
    cli: Series
    checkpoint: list[float] = field(default_factory=list)
    late: int = 0  # stops after whose CLI return a container still ran, or the task was not paused


def bench_stop(inst: Instance, holds: Holds, repeat: int) -> StopResult:
    """Time `klaudio task stop` of a task with STOP_AGENTS agents working, repeat times.

    The latency runs from the invocation of `klaudio task stop ID` until the task is paused and
    no container of it runs (`docker ps` by its label). The CLI returns only once the stop is
    done, so both are checked as soon as it returns; should either not hold yet, they are polled
    and the latency is the end of the first check that finds both. Between stops the task is
    resumed (untimed) and every agent waits until it works again: each repetition stops agents
    that are resumed conversations, as after any earlier stop.
    """
    result = StopResult(
        Series(f"task stop -> paused, no container ({STOP_AGENTS} agents)"),
        Series("klaudio task stop (CLI returned)"),
    )
    before = holds.counts()
    client = inst.client()
    try:
        task_id = client.create_task(f"{STOP_PLAN}: four agents", start=True, auto_approve=True).id
    finally:
        client.close()
    inst.task_ids.add(task_id)
    label = f"{TASK_LABEL}={task_id}"
    for round_ in range(repeat + 1):  # the first is the warm-up
        holds.wait_entered(STOP_HOLDS, before, AGENT_TIMEOUT, lambda: inst.settled(task_id))
        working = running_containers(label)
        if len(working) != STOP_AGENTS:
            raise BenchError(f"{len(working)} containers of the task run, not {STOP_AGENTS}")
        log_start = len(inst.log_text())
        start = time.perf_counter()
        _, cli = measured(inst.cli("task", "stop", task_id), inst.env, RUN_TIMEOUT)
        returned = time.perf_counter() - start

        def done() -> bool:
            return inst.state(task_id) == "paused" and not running_containers(label)

        late = not done()
        if late:
            wait_until(done, QUICK_TIMEOUT, "the task to pause with no container running", 0.01)
        latency = time.perf_counter() - start if late else returned
        logged = _checkpoint_seconds(inst.log_text()[log_start:])
        if round_:
            result.latency.samples.append(Sample(latency, cli.cpu))
            result.cli.samples.append(Sample(returned, cli.cpu))
            result.checkpoint += logged
            result.late += late
        if round_ < repeat:
            before = holds.counts()
            run = subprocess.run(
                inst.cli("task", "resume", task_id), env=inst.env, capture_output=True, text=True
            )
            if run.returncode != 0:
                raise BenchError(f"klaudio task resume: exit {run.returncode}: {run.stderr}")
    return result


def _checkpoint_seconds(log: str) -> list[float]:
    return [float(s) for s in re.findall(CHECKPOINT_SECONDS, log)]


# Restart ---------------------------------------------------------------------------------------

LIVE_TASKS = 5
AGENTS_PER_LIVE_TASK = 4
RESTART_PLAN = "KBRESTART-PLAN"
RESTART_HOLD = "KBRESTART-HOLD"
# Store tasks are written in transactions of this many (the store's calls nest as savepoints).
BATCH = 250
# One stored task in this many has a whole finished history (see fill_store).
HISTORY_EVERY = 10


def script_restart(model: FakeModel, holds: Holds) -> None:
    model.script(RESTART_HOLD, [holds.turn(RESTART_HOLD)])
    subtasks = [(f"w{i}", f"{RESTART_HOLD}: keep working") for i in range(AGENTS_PER_LIVE_TASK)]
    model.script(RESTART_PLAN, [[structured(plan_of(subtasks))]])


def template_task(inst: Instance) -> str:
    """Create one task through the client (not started): what the daemon records for any task.

    Its team and settings snapshot, whatever this version of the daemon records, are given to
    the tasks fill_store writes, so that they are rows like those of tasks made through the
    daemon. The daemon must be running.
    """
    client = inst.client()
    try:
        task = client.create_task(f"{RESTART_PLAN} template: never started")
    finally:
        client.close()
    inst.task_ids.add(task.id)
    return task.id


def fill_store(db_file: Path, tasks_dir: Path, count: int, template: str) -> float:
    """Write count tasks that no agent works on through the daemon's Store; return seconds.

    One in HISTORY_EVERY has a whole finished history: its lifecycle (created, planning,
    planned, approved, running, completed, or failed for one in five of them), a one-subtask
    plan, a planner and a worker agent with one run each and their costs, and the stream events
    of all that. The others were cancelled before they started, or were never started (half
    each). Each gets the team and settings the template task (see template_task) got from the
    daemon. The daemon must not be running. Only the commits are batched (BATCH tasks a
    transaction, the store's own transactions nesting as savepoints): the rows are those the
    daemon's own calls write. No task directory is made (nothing reads them to list or start).
    """
    from klaudiod.models import db

    start = time.perf_counter()
    store = Store(db_file)
    try:
        model = store.task(template)
        # Only what this version records (older ones have neither).
        extra = {k: getattr(model, k) for k in ("team", "settings") if getattr(model, k, None)}
        for first in range(0, count, BATCH):
            with db.atomic():
                for i in range(first, min(count, first + BATCH)):
                    _stored_task(store, tasks_dir, i, extra)
    finally:
        store.close()
    return time.perf_counter() - start


def _stored_task(store: Store, tasks_dir: Path, i: int, extra: dict[str, Any]) -> None:
    task_id = uuid.uuid4().hex[:12]
    root = tasks_dir / task_id
    prompt = f"bench task {i}: make the change described in issue {i} " + "and test it. " * 20
    workspace = str(root / "workspace")
    store.create_task(task_id, f"bench task {i}", prompt, "", workspace, True, **extra)
    if i % HISTORY_EVERY:
        if i % 2:
            store.transition(task_id, states.CANCELLED, "cancelled by user")
        return
    failed = i % (5 * HISTORY_EVERY) == 0
    store.transition(task_id, states.PLANNING)
    planner = store.create_agent(
        task_id, PLANNER_AGENT, PLANNER_AGENT, None, str(uuid.uuid4()), str(root / "planner")
    )
    _run(store, planner.id, task_id, PLANNER_AGENT, root, prompt, True)
    spec = PlanSpec(
        "one change", "dag", (SubtaskSpec("change", "make the change", f"{prompt} (worker)"),)
    )
    store.save_plan(task_id, spec)
    for target in (states.PLANNED, states.APPROVED, states.RUNNING):
        store.transition(task_id, target)
    sub = store.subtasks(task_id)[0]
    store.set_subtask(sub.id, states.SUBTASK_RUNNING)
    name = agent_name("change")
    worker = store.create_agent(
        task_id, name, "developer", sub.id, str(uuid.uuid4()), str(root / name)
    )
    _run(store, worker.id, task_id, name, root, prompt, not failed)
    if failed:
        store.set_subtask(sub.id, states.SUBTASK_FAILED, reason="exit 1: the tests failed")
        store.transition(task_id, states.FAILED, "subtask change failed: exit 1")
    else:
        store.set_subtask(sub.id, states.SUBTASK_COMPLETED, result="done: the change is made")
        store.transition(task_id, states.COMPLETED)


def _run(
    store: Store, agent_id: int, task_id: str, name: str, root: Path, prompt: str, ok: bool
) -> None:
    run, _ = store.start_run(
        agent_id, 0, f"klaudio-{task_id}-0-{name}", str(root / name / "0"), prompt, False
    )
    store.set_run_running(run.id)
    if ok:
        store.end_run(run.id, states.RUN_COMPLETED, exit_code=0, cost_usd=0.05, result="done")
    else:
        store.end_run(run.id, states.RUN_FAILED, exit_code=1, cost_usd=0.05, reason="exit 1")


@dataclass
class RestartResult:
    to_list: Series
    to_answer: Series
    autostart: Series
    warm_list: Series
    adopted: int
    tasks: int


class Daemon:
    """klaudiod started in the foreground by this process, as a service manager would."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        klaudiod = str(Path(self.inst.klaudio).with_name("klaudiod"))
        ensure_private_dir(self.inst.paths.state_dir)
        with open(self.inst.paths.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [klaudiod],
                env=self.inst.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self.proc

    def terminate(self) -> None:
        """SIGTERM, and wait until it has exited (its agents keep running)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(QUICK_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError("klaudiod did not exit within a minute of SIGTERM") from None
        finally:
            self.proc = None


def terminate_recorded(inst: Instance) -> None:
    """SIGTERM the daemon the CLI started (its pid file), and wait until it has gone."""
    from klaudio.procs import alive

    text = inst.paths.pid_file.read_text().strip() if inst.paths.pid_file.exists() else ""
    if not text:
        return
    pid = int(text)
    os.kill(pid, signal.SIGTERM)
    wait_until(
        lambda: not alive(pid) and not inst.paths.socket.exists(),
        QUICK_TIMEOUT,
        "klaudiod to exit after SIGTERM",
        0.01,
    )


def bench_restart(
    inst: Instance, holds: Holds, daemon: Daemon, tasks: int, repeat: int
) -> RestartResult:
    """Restart the daemon (10,000 tasks, 20 agents working) until `task list` answers.

    The instance's daemon must be running, started by daemon, with the store filled.
    """
    agents = LIVE_TASKS * AGENTS_PER_LIVE_TASK
    progress(f"starting {LIVE_TASKS} tasks of {AGENTS_PER_LIVE_TASK} working agents each")
    client = inst.client()
    live = []
    try:
        for i in range(LIVE_TASKS):
            task = client.create_task(f"{RESTART_PLAN} {i}", start=True, auto_approve=True)
            inst.task_ids.add(task.id)
            live.append(task.id)
    finally:
        client.close()
    holds.wait_total([RESTART_HOLD], agents, AGENT_TIMEOUT, lambda: inst.settled(*live))
    label = f"klaudio.instance={inst.paths.instance_id}"
    if len(running_containers(label)) != agents:
        raise BenchError(f"{len(running_containers(label))} containers run, not {agents}")
    daemon.terminate()

    def listed(proc: subprocess.CompletedProcess[str]) -> None:
        rows = len(proc.stdout.splitlines()) - 1
        if rows != tasks:
            raise BenchError(f"klaudio task list: {rows} tasks listed, not {tasks}")

    result = RestartResult(
        Series(f"klaudiod start -> task list done ({tasks} tasks, {agents} agents)"),
        Series("klaudiod start -> answering (health)"),
        Series("klaudio task list, daemon down (starts it)"),
        Series(f"klaudio task list, daemon up ({tasks} tasks)"),
        agents,
        tasks,
    )
    for round_ in range(repeat + 1):  # the first is the warm-up
        still = running_containers(label)
        if len(still) != agents:
            raise BenchError(f"{len(still)} agent containers run, not {agents}, before a start")
        os.sync()
        start = time.perf_counter()
        proc = daemon.start()
        _wait_answering(inst, proc)
        answered = time.perf_counter() - start
        daemon_cpu = process_cpu(proc.pid)
        listing, cli = measured(inst.cli("task", "list"), inst.env, QUICK_TIMEOUT)
        total = time.perf_counter() - start
        listed(listing)
        if round_:
            result.to_answer.samples.append(Sample(answered, daemon_cpu))
            result.to_list.samples.append(Sample(total, process_cpu(proc.pid) + cli.cpu))
        # Let it take up every live task before it goes again.
        wait_until(lambda: _driving(inst) >= LIVE_TASKS, QUICK_TIMEOUT, "the tasks' drivers")
        daemon.terminate()

    for round_ in range(repeat + 1):
        listing, sample = measured(inst.cli("task", "list"), inst.env, QUICK_TIMEOUT)
        listed(listing)
        if round_:
            result.autostart.samples.append(sample)
        # The CLI started the daemon: it is up now, the list measured once more warm.
        listing, warm = measured(inst.cli("task", "list"), inst.env, QUICK_TIMEOUT)
        listed(listing)
        if round_:
            result.warm_list.samples.append(warm)
        wait_until(lambda: _driving(inst) >= LIVE_TASKS, QUICK_TIMEOUT, "the tasks' drivers")
        terminate_recorded(inst)
    if len(running_containers(label)) != agents:
        raise BenchError("agent containers ended during the restarts")
    return result


def _wait_answering(inst: Instance, proc: subprocess.Popen[bytes]) -> None:
    """Wait until the daemon answers, polling lightly: its socket first, then health calls."""
    socket = inst.paths.socket
    deadline = time.monotonic() + QUICK_TIMEOUT
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError("klaudiod exited or made no socket within a minute")
        time.sleep(0.002)
    client = inst.client()
    try:
        while not answers(client, timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("klaudiod exited or did not answer within a minute")
            time.sleep(0.005)
    finally:
        client.close()


def _driving(inst: Instance) -> int:
    """How many tasks the last daemon started drives again (its log: "resuming task")."""
    log = inst.log_text()
    return log.count("resuming task", log.rfind("listening on"))
