"""Task commands, the drivers they start, and recovery after a restart.

The commands: create, start, approve, stop, resume, cancel, retry, relaunch, delete, wait.

Commands on one task are decided one at a time (a per-task lock), so of a delete and an
approve sent together exactly one wins, and a deleted task never gets a driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from klaudio.config import Config
from klaudio.errors import FailedPrecondition, InvalidArgument, NotFound, Timeout
from klaudio.paths import Paths
from klaudiod import agent as agentlib
from klaudiod import (
    changes,
    delivery,
    inputs,
    plan,
    relaunch,
    repo,
    settings,
    states,
    teams,
    workspace,
)
from klaudiod.checkpoints import Checkpoints
from klaudiod.db import Db
from klaudiod.driver import (
    CANCEL,
    CANCELLED_BY_USER,
    STOP,
    STOPPED_BY_USER,
    Driver,
    cancel_subtasks,
    deliver,
)
from klaudiod.executor import STRATEGIES_WITH_EXECUTOR
from klaudiod.janitor import Janitor
from klaudiod.kit import Kit
from klaudiod.launcher import Launcher
from klaudiod.memory import Memory
from klaudiod.plan import agent_name
from klaudiod.records import CheckpointRecord, Detail, QuestionRecord, SubtaskRecord, TaskRecord
from klaudiod.runner import AgentRunner
from klaudiod.runtime import EngineUnavailable, Runtime
from klaudiod.store import Store
from klaudiod.stream import Bus, Overflow, Subscription
from klaudiod.workspace import TaskFiles

log = logging.getLogger(__name__)

# A task in one of these can be cancelled without a driver (no agent is working on it).
IDLE_CANCELLABLE = frozenset(
    {states.CREATED, states.AWAITING_ANSWERS, states.PLANNED, states.PAUSED}
)


class Scheduler:
    """Owns every task's driver and the daemon-wide agent slots."""

    def __init__(self, config: Config, paths: Paths, db: Db, bus: Bus, runtime: Runtime) -> None:
        janitor = Janitor(runtime)
        launcher = Launcher(config, paths, db, bus, runtime)
        runner = AgentRunner(paths.tasks_dir, db, bus, runtime, launcher, janitor)
        saved = config.checkpoints
        checkpoints = Checkpoints(
            paths.data_dir / "checkpoints",
            paths.tasks_dir,
            db,
            bus,
            saved.keep,
            saved.retention_days,
        )
        self._kit = Kit(
            config=config,
            paths=paths,
            db=db,
            bus=bus,
            runtime=runtime,
            launcher=launcher,
            runner=runner,
            janitor=janitor,
            checkpoints=checkpoints,
            memory=Memory(paths.data_dir / "memory"),
            slots=asyncio.Semaphore(config.agents.max_concurrent),
            timers=asyncio.Event(),
        )
        self.teams = teams.Teams(paths.data_dir / "teams")
        self._drivers: dict[str, tuple[Driver, asyncio.Task[None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._timer: asyncio.Task[None] | None = None

    @property
    def store(self) -> Store:
        return self._kit.store

    @contextlib.asynccontextmanager
    async def _deciding(self, task_id: str) -> AsyncIterator[None]:
        """Hold the task's lock: commands on one task are decided one at a time."""
        lock = self._locks.setdefault(task_id, asyncio.Lock())
        async with lock:
            yield

    async def _detail(self, task_id: str) -> Detail:
        return await self._kit.db.call(self.store.detail, task_id)

    # Commands ----------------------------------------------------------------------------

    async def create(self, request: NewTask) -> Detail:
        """Create a task (cloning its repo into the workspace) and optionally start it.

        The task records its team (or teams.default), the settings it runs with, and how its
        work is delivered (its repository template's, or --push/--pr).
        """
        if not request.prompt.strip():
            raise InvalidArgument("prompt is empty")
        config = self._kit.config
        chosen = await asyncio.to_thread(self.teams.get, request.team or config.teams.default)
        template = (
            await self._kit.db.call(self.store.repo, request.template) if request.template else None
        )
        source = template.url if template and not request.source else request.source
        if template and request.source and request.source != template.url:
            raise InvalidArgument(
                f"--repo {request.source} is not the template's repository {template.url}"
            )
        target = delivery.target(source, template, request.push, request.pr, request.pr_target)
        paths = self._kit.paths
        given = inputs.check(list(request.inputs), (paths.data_dir, paths.state_dir))
        task_id = uuid.uuid4().hex[:12]
        files = self._kit.files(task_id)
        branch = config.git.branch_prefix + task_id[:8] if target.branch else ""
        clone_branch = request.branch or (template.branch if template else "")
        files.root.mkdir(parents=True)
        try:
            cloned = await asyncio.to_thread(_clone, source, files, target, clone_branch, branch)
            names = await asyncio.to_thread(inputs.copy, files, given)
            _, event = await self._kit.db.call(
                self.store.create_task,
                task_id,
                request.name.strip() or _default_name(request.prompt),
                request.prompt,
                source,
                str(files.workspace),
                request.auto_approve,
                "",
                cloned.commit,
                chosen.name,
                {
                    **settings.snapshot(config, chosen),
                    "repo_memory": not template or template.memory,
                },
                {
                    "delivery": target.to_dict() if target.delivers else {},
                    "branch": branch if cloned.commit else "",
                    "base_branch": cloned.branch,
                    "inputs": names,
                },
            )
        except BaseException:
            await asyncio.to_thread(workspace.remove, files)
            raise
        self._kit.bus.publish([event])
        if request.start:
            return await self.start(task_id)
        return await self._detail(task_id)

    async def answer(self, task_id: str, answers: dict[str, str]) -> Detail:
        """Record answers to a task's open questions (all, or none of them).

        Once every open question is answered, planning goes on in the planner's own session,
        the answers its next message.
        """
        if not answers:
            raise InvalidArgument("no answers given")
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            limit = settings.of(task, self._kit.config).max_question_rounds
            asked = await self._kit.db.call(self.store.question_rounds, task_id)

            def message(questions: list[QuestionRecord]) -> str:
                asked_of = [(q.key, q.text, q.answer) for q in questions]
                return agentlib.answers_message(asked_of, last_round=asked >= limit)

            _, events, planning = await self._kit.db.call(
                self.store.answer, task_id, answers, message
            )
            self._kit.bus.publish(events)
            if planning:
                self._spawn(task_id)
            return await self._detail(task_id)

    async def replan(self, task_id: str, context: str) -> Detail:
        """Plan a planned or failed task again, in the planner's own session."""
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state not in (states.PLANNED, states.FAILED):
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a planned or failed task can be "
                    "planned again"
                )
            current = await self._kit.db.call(self.store.plan, task_id)
            message = agentlib.replan_message(current.version if current else 0, context)
            _, event = await self._kit.db.call(
                self.store.transition,
                task_id,
                states.PLANNING,
                "planning again",
                None,
                None,
                None,
                message,
            )
            self._kit.bus.publish([event])
            self._spawn(task_id)
            return await self._detail(task_id)

    async def set_plan(self, task_id: str, data: dict[str, Any], based_on: int) -> Detail:
        """Replace a planned task's plan with a new version, validated as a whole first.

        Raises:
            PlanProblems: listing every problem; the old plan is kept.
        """
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state != states.PLANNED:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a planned task's plan can change"
                )
            current = await self._kit.db.call(self.store.plan, task_id)
            version = current.version if current else 0
            if based_on and based_on != version:
                raise FailedPrecondition(
                    f"task {task_id[:8]}'s plan is version {version} now, not {based_on}: "
                    "edit it again"
                )
            team = settings.of(task, self._kit.config).team
            spec = plan.plan_from_dict(data, teams.rules(team) if team else None)
            if spec.strategy not in STRATEGIES_WITH_EXECUTOR:
                raise plan.PlanProblems(
                    [f"the {spec.strategy!r} strategy is not supported yet; plan as 'dag'"]
                )
            _, event = await self._kit.db.call(self.store.save_plan, task_id, spec, "edit")
            self._kit.bus.publish([event])
            return await self._detail(task_id)

    async def relaunch(
        self, task_id: str, prompt: str | None, with_context: bool, start: bool, auto_approve: bool
    ) -> Detail:
        """A new task from a finished one, with the same source and a copy of its workspace.

        With context, the planner is told the old task's story: prompt, outcome, plan and the
        files it changed.
        """
        async with self._deciding(task_id):
            old = await self._detail(task_id)
            if old.task.state not in states.RELAUNCHABLE:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {old.task.state}; only a completed, failed or "
                    "cancelled task can be relaunched"
                )
            new_id = uuid.uuid4().hex[:12]
            files = self._kit.files(new_id)
            files.root.mkdir(parents=True)
            try:
                story = await asyncio.to_thread(
                    relaunch.prepare, old, self._kit.files(task_id), files
                )
                _, event = await self._kit.db.call(
                    self.store.create_task,
                    new_id,
                    _default_name(prompt) if prompt else old.task.name,
                    prompt or old.task.prompt,
                    old.task.repo,
                    str(files.workspace),
                    auto_approve,
                    story if with_context else "",
                    old.task.base_commit,
                    old.task.team,
                    old.task.settings,
                    {
                        "delivery": old.task.delivery,
                        "branch": (
                            self._kit.config.git.branch_prefix + new_id[:8]
                            if old.task.branch
                            else ""
                        ),
                        "base_branch": old.task.base_branch,
                        "inputs": list(old.task.inputs),
                    },
                )
            except BaseException:
                await asyncio.to_thread(workspace.remove, files)
                raise
        self._kit.bus.publish([event])
        log.info("task %s relaunched as %s", task_id, new_id)
        if start:
            return await self.start(new_id)
        return await self._detail(new_id)

    async def start(self, task_id: str) -> Detail:
        """Start planning a created task."""
        async with self._deciding(task_id):
            await self._transition(task_id, states.PLANNING, only_from=[states.CREATED])
            self._spawn(task_id)
            return await self._detail(task_id)

    async def approve(self, task_id: str) -> Detail:
        """Approve a planned task's plan; execution starts at once."""
        async with self._deciding(task_id):
            await self._transition(task_id, states.APPROVED, only_from=[states.PLANNED])
            self._spawn(task_id)
            return await self._detail(task_id)

    async def stop(self, task_id: str, grace: float) -> tuple[Detail, bool]:
        """Stop a planning or running task: its agents end gracefully, the task is paused.

        Returns the task and whether anything was stopped (a paused task is left as it is).
        """
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state == states.PAUSED:
                return await self._detail(task_id), False
            await self._control(task_id, STOP, grace)
            return await self._detail(task_id), True

    async def cancel(self, task_id: str, grace: float) -> Detail:
        """Cancel an unfinished task for good, stopping its agents."""
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state in IDLE_CANCELLABLE and task_id not in self._drivers:
                await cancel_subtasks(self._kit, task_id)
                await self._transition(task_id, states.CANCELLED, CANCELLED_BY_USER)
            else:
                await self._control(task_id, CANCEL, grace)
            return await self._detail(task_id)

    async def _control(self, task_id: str, control: str, grace: float) -> None:
        """Record a stop or cancel, have the task's driver carry it out, and wait for it."""
        _, event = await self._kit.db.call(
            self.store.set_control, task_id, control, states.STOPPABLE
        )
        self._kit.bus.publish([event])
        driver = self._spawn(task_id)
        driver.request_stop(STOPPED_BY_USER if control == STOP else CANCELLED_BY_USER, grace)
        entry = self._drivers.get(task_id)
        if entry is not None:
            # Shielded: a caller that goes away must not cancel the driver mid-stop.
            await asyncio.shield(entry[1])

    async def resume(self, task_id: str) -> Detail:
        """Resume a paused task: each interrupted agent continues its own conversation."""
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state != states.PAUSED:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a paused task can be resumed"
                )
            await self._resume(task, "resumed by user", limit_pauses=0)
            return await self._detail(task_id)

    async def _resume(self, task: TaskRecord, reason: str, limit_pauses: int | None) -> None:
        before = await self._kit.db.call(self.store.paused_from, task.id)
        planned = await self._kit.db.call(self.store.plan, task.id) is not None
        target = states.RUNNING if planned and before != states.PLANNING else states.PLANNING
        await self._transition(task.id, target, reason, limit_pauses=limit_pauses)
        self._kit.wake()
        self._spawn(task.id)

    async def retry(self, task_id: str, names: Sequence[str], fresh: bool) -> Detail:
        """Run a failed task's failed (or named) subtasks again, and those skipped for them.

        Completed subtasks stay. Each retried agent resumes its conversation with the failure's
        reason, unless fresh asks for a new conversation.
        """
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state != states.FAILED:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a failed task can be retried"
                )
            subs = await self._kit.db.call(self.store.subtasks, task_id)
            if not subs and names:
                raise NotFound(
                    f"task {task_id[:8]} has no plan, so no subtask {names[0]!r}; retry it "
                    "without --subtask to plan again"
                )
            if not subs:
                await self._transition(task_id, states.PLANNING, "retrying the planner")
                self._spawn(task_id)
                return await self._detail(task_id)
            chosen = _retried(subs, names)
            for sub in subs:
                if sub.key in chosen:
                    _, event = await self._kit.db.call(
                        self.store.set_subtask, sub.id, states.SUBTASK_PENDING, None, ""
                    )
                    self._kit.bus.publish([event])
                    agent = await self._kit.db.call(
                        self.store.find_agent, task_id, agent_name(sub.key)
                    )
                    if fresh and agent is not None:
                        await self._kit.db.call(self.store.set_session, agent.id, str(uuid.uuid4()))
            await self._transition(task_id, states.RUNNING, "retrying " + ", ".join(sorted(chosen)))
            self._spawn(task_id)
            return await self._detail(task_id)

    async def publish(self, task_id: str, push: bool, pr: bool) -> Detail:
        """Deliver a completed task's work, or try a failed delivery again.

        push and pr add to what the task was created to deliver. A failed delivery leaves the
        task failed (exit 1) with the reason; one that succeeds completes it.
        """
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            retry = task.state == states.FAILED and task.delivery_state == "failed"
            if task.state != states.COMPLETED and not retry:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a completed task, or one whose "
                    "delivery failed, can be published"
                )
            recorded = delivery.Target.from_dict(task.delivery)
            if recorded is not None:
                # What the task was created with, and what this publication adds to it.
                chosen = dataclasses.replace(
                    recorded,
                    pr=recorded.pr or pr,
                    push=recorded.push or push or pr,
                    commit=True,
                    branch=True,
                )
            else:
                chosen = delivery.target(task.repo, None, push, pr, "")
            if not chosen.delivers:
                raise InvalidArgument(
                    f"task {task_id[:8]} has nothing to deliver: give --push or --pr"
                )
            if not task.branch:
                raise FailedPrecondition(
                    f"task {task_id[:8]} has no task branch (it was created without a "
                    "repository or delivery)"
                )
            failure = await deliver(self._kit, task, chosen)
            if not failure and retry:
                _, event = await self._kit.db.call(self.store.delivered, task_id)
                self._kit.bus.publish([event])
            elif failure and task.state == states.COMPLETED:
                log.info("task %s: publication failed: %s", task_id, failure)
            return await self._detail(task_id)

    async def checkpoints(self, task_id: str) -> list[CheckpointRecord]:
        """The task's checkpoints, newest first."""
        await self._kit.db.call(self.store.task, task_id)  # NotFound for an unknown task
        return await self._kit.db.call(self.store.checkpoints, task_id)

    async def restore(self, task_id: str, checkpoint: str) -> tuple[Detail, CheckpointRecord]:
        """Put a paused or failed task's workspace and agent sessions back as in a checkpoint.

        The task is paused afterwards, ready to resume from there.
        """
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state not in (states.PAUSED, states.FAILED) or task_id in self._drivers:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; only a paused or failed task can be "
                    "restored"
                )
            record = await self._kit.checkpoints.restore(task, checkpoint)
            return await self._detail(task_id), record

    async def delete(self, task_id: str) -> None:
        """Delete a task that is not being worked on, with its containers and files."""
        async with self._deciding(task_id):
            task = await self._kit.db.call(self.store.task, task_id)
            if task.state in states.ACTIVE or task_id in self._drivers:
                raise FailedPrecondition(
                    f"task {task_id[:8]} is {task.state}; stop or cancel it first"
                )
            try:
                for found in await asyncio.to_thread(self._kit.runtime.labelled, task_id):
                    await asyncio.to_thread(self._kit.runtime.remove, found["name"])
            except EngineUnavailable:
                # Its containers (if any) are removed as orphans once the engine answers.
                self._kit.janitor.sweep_later(self._sweep_orphans)
            await self._kit.db.call(self.store.delete_task, task_id)
            await asyncio.to_thread(workspace.remove, self._kit.files(task_id))
            await self._kit.checkpoints.remove(task_id)
        self._locks.pop(task_id, None)

    async def wait(self, task_id: str, timeout: float | None = None) -> Detail:
        """Return the task once it has settled (see states.SETTLED).

        Raises:
            Timeout: when it has not settled within timeout seconds (0: it has not settled).
        """
        bus = self._kit.bus
        sub = bus.subscribe(task_id)
        try:
            task = await self._kit.db.call(self.store.task, task_id)
            async with asyncio.timeout(timeout):
                while task.state not in states.SETTLED:
                    try:
                        event = await sub.get()
                    except Overflow:
                        sub = self._resubscribe(sub)
                        continue
                    if event.settles():
                        task = await self._kit.db.call(self.store.task, task_id)
            return await self._detail(task_id)
        except TimeoutError:
            raise Timeout(f"task {task_id} did not settle within {timeout:g}s") from None
        finally:
            bus.unsubscribe(sub)

    def _resubscribe(self, sub: Subscription) -> Subscription:
        self._kit.bus.unsubscribe(sub)
        return self._kit.bus.subscribe(sub.task_id)

    # Lifecycle of the scheduler ----------------------------------------------------------

    async def recover(self) -> None:
        """After a (re)start: remove orphaned containers and drive every active task again."""
        try:
            await self._sweep_orphans()
        except EngineUnavailable as exc:
            log.error("%s; orphaned containers are removed once it answers", exc)
            self._kit.janitor.sweep_later(self._sweep_orphans)
        live = await self._kit.db.call(self.store.live_runs)
        await asyncio.to_thread(self._kit.launcher.sweep_secrets, {r.container for r in live})
        await self._kit.checkpoints.sweep()
        for task in await self._kit.db.call(self.store.tasks, list(states.ACTIVE)):
            log.info("resuming task %s (%s)", task.id, task.state)
            self._spawn(task.id)
        self._timer = asyncio.create_task(self._resume_when_due(), name="klaudio-timers")

    async def _sweep_orphans(self) -> None:
        """Remove this instance's containers that belong to no live run.

        Containers are listed before the live runs are read: a run is recorded before its
        container is created, so a container listed first is never mistaken for an orphan.
        """
        runtime = self._kit.runtime
        found = await asyncio.to_thread(runtime.labelled)
        live = {r.container for r in await self._kit.db.call(self.store.live_runs)}
        for container in found:
            if container["name"] not in live:
                log.info("removing orphaned container %s", container["name"])
                await asyncio.to_thread(runtime.remove, container["name"])

    async def _resume_when_due(self) -> None:
        """Resume tasks paused by a usage limit when their time comes."""
        kit = self._kit
        while True:
            kit.timers.clear()
            due = await kit.db.call(self.store.auto_resumable)
            now = time.time()
            for task in due:
                if task.resume_at is not None and task.resume_at <= now:
                    async with self._deciding(task.id):
                        fresh = await kit.db.call(self.store.task, task.id)
                        if fresh.state == states.PAUSED and fresh.resume_at is not None:
                            log.info("task %s: usage limit over; resuming", task.id)
                            await self._resume(fresh, "resumed after the usage limit", None)
            pending = [t.resume_at for t in due if t.resume_at and t.resume_at > now]
            delay = min(pending) - now if pending else 3600.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, delay)):
                    await kit.timers.wait()

    async def close(self) -> None:
        """Stop driving tasks; their containers keep running and are adopted on restart."""
        tasks = [task for _, task in self._drivers.values()]
        if self._timer is not None:
            tasks.append(self._timer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._kit.janitor.close()

    def active(self) -> int:
        """How many tasks are being driven."""
        return len(self._drivers)

    # Drivers -----------------------------------------------------------------------------

    def _spawn(self, task_id: str) -> Driver:
        """The task's driver, started if it has none."""
        if task_id in self._drivers:
            return self._drivers[task_id][0]
        driver = Driver(self._kit, task_id)
        task = asyncio.create_task(self._drive(driver), name=f"task-{task_id}")
        self._drivers[task_id] = (driver, task)
        return driver

    async def _drive(self, driver: Driver) -> None:
        try:
            await driver.drive()
        finally:
            self._drivers.pop(driver.task_id, None)

    async def _transition(
        self,
        task_id: str,
        target: str,
        reason: str = "",
        only_from: list[str] | None = None,
        limit_pauses: int | None = None,
    ) -> TaskRecord:
        task, event = await self._kit.db.call(
            self.store.transition, task_id, target, reason, only_from, None, limit_pauses
        )
        self._kit.bus.publish([event])
        log.info("task %s: %s%s", task_id, target, f" ({reason})" if reason else "")
        return task


def _retried(subs: Sequence[SubtaskRecord], names: Sequence[str]) -> set[str]:
    """The subtasks a retry puts back in line: the named (or failed) ones and their skipped.

    Raises:
        NotFound: for a name that is no subtask of the plan.
        FailedPrecondition: for a named subtask that did not fail (nor was skipped).
    """
    by_key = {s.key: s for s in subs}
    for name in names:
        if name not in by_key:
            known = ", ".join(by_key)
            raise NotFound(f"no subtask {name!r} in the plan (subtasks: {known})")
        if by_key[name].state not in (states.SUBTASK_FAILED, states.SUBTASK_SKIPPED):
            raise FailedPrecondition(
                f"subtask {name} is {by_key[name].state}; only failed or skipped subtasks "
                "can be retried"
            )
    chosen = set(names) or {s.key for s in subs if s.state == states.SUBTASK_FAILED}
    grew = True
    while grew:
        grew = False
        for sub in subs:
            blocked = any(dep in chosen for dep in sub.depends_on)
            if sub.state == states.SUBTASK_SKIPPED and sub.key not in chosen and blocked:
                chosen.add(sub.key)
                grew = True
    return chosen


@dataclass(frozen=True)
class NewTask:
    """What CreateTask asks for."""

    prompt: str
    name: str = ""
    source: str = ""
    start: bool = False
    auto_approve: bool = False
    team: str = ""
    template: str = ""
    push: bool = False
    pr: bool = False
    pr_target: str = ""
    branch: str = ""
    inputs: tuple[str, ...] = ()


def _clone(
    source: str, files: TaskFiles, target: delivery.Target, clone_branch: str, task_branch: str
) -> repo.Cloned:
    """Fill a new task's workspace: empty, or a clone of source on its task branch.

    The daemon first makes a bare clone of its own (credentials passed for that call only),
    then the workspace from it; the base commit's files are recorded for what the task
    changes.
    """
    if not source:
        files.workspace.mkdir()
        return repo.Cloned("", "")
    cloned = repo.clone(source, files.git, delivery.credentials(target), clone_branch, bare=True)
    repo.checkout(files.git, files.workspace, source, cloned.commit, task_branch)
    changes.save(files.base, repo.manifest(files.git, cloned.commit))
    return cloned


def _default_name(prompt: str) -> str:
    first = prompt.strip().splitlines()[0] if prompt.strip() else "task"
    return first[:60].strip()
