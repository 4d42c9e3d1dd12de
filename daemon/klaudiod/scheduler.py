"""The one scheduler: drives each task from planning through execution to its end.

Subtasks run in dependency order within the task's and the daemon's agent limits; after a
restart every active task is picked up again where its records say it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from klaudio.config import SECRET_ENV, Config
from klaudio.errors import FailedPrecondition, InvalidArgument, KlaudioError, Timeout
from klaudio.paths import Paths
from klaudiod import agent as agentlib
from klaudiod import image, plan, repo, states
from klaudiod.agent import Outcome
from klaudiod.db import Db
from klaudiod.runner import AgentRunner, hand_over, prepare_run_dir, take_back
from klaudiod.runtime import (
    LABEL_AGENT,
    LABEL_EPOCH,
    LABEL_ROLE,
    LABEL_TASK,
    ContainerSpec,
    Runtime,
    agent_user,
)
from klaudiod.store import Store
from klaudiod.stream import Bus, Overflow

log = logging.getLogger(__name__)

PLANNER = plan.PLANNER_AGENT


class Scheduler:
    """Owns every task's driver coroutine and the daemon-wide agent slots."""

    def __init__(self, config: Config, paths: Paths, db: Db, bus: Bus, runtime: Runtime) -> None:
        self._config = config
        self._paths = paths
        self._db = db
        self._bus = bus
        self._runtime = runtime
        self._runner = AgentRunner(db, bus, runtime)
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.agents.max_concurrent)
        self._image_lock = asyncio.Lock()
        self._image_checked = False

    @property
    def store(self) -> Store:
        return self._db.store

    # Commands ----------------------------------------------------------------------------

    async def create(
        self, prompt: str, name: str, source: str, start: bool, auto_approve: bool
    ) -> Any:
        """Create a task (cloning its repo into the workspace) and optionally start it."""
        if not prompt.strip():
            raise InvalidArgument("prompt is empty")
        task_id = uuid.uuid4().hex[:12]
        task_dir = self._paths.tasks_dir / task_id
        workspace = task_dir / "workspace"
        task_dir.mkdir(parents=True)
        try:
            if source:
                await asyncio.to_thread(repo.clone, source, workspace)
            else:
                workspace.mkdir()
            task, event = await self._db.call(
                self.store.create_task,
                task_id,
                name.strip() or _default_name(prompt),
                prompt,
                source,
                str(workspace),
                auto_approve,
            )
        except BaseException:
            shutil.rmtree(task_dir, ignore_errors=True)
            raise
        self._bus.publish([event])
        if start:
            task = await self.start(task_id)
        return task

    async def start(self, task_id: str) -> Any:
        """Start planning a created task."""
        task = await self._transition(task_id, states.PLANNING, only_from=[states.CREATED])
        self._spawn(task_id)
        return task

    async def approve(self, task_id: str) -> Any:
        """Approve a planned task's plan; execution starts at once."""
        task = await self._transition(task_id, states.APPROVED, only_from=[states.PLANNED])
        self._spawn(task_id)
        return task

    async def delete(self, task_id: str) -> None:
        """Delete a task that is not being worked on, with its containers and files."""
        task = await self._db.call(self.store.task, task_id)
        if task.state in states.ACTIVE or task_id in self._drivers:
            raise FailedPrecondition(
                f"task {task_id[:8]} is {task.state}; wait for it to settle first"
            )
        for found in await asyncio.to_thread(self._runtime.labelled, task_id):
            await asyncio.to_thread(self._runtime.remove, found["name"])
        await self._db.call(self.store.delete_task, task_id)
        await asyncio.to_thread(shutil.rmtree, self._paths.tasks_dir / task_id, True)

    async def wait(self, task_id: str, timeout: float | None = None) -> Any:
        """Return the task once it has settled (see states.SETTLED).

        Raises:
            Timeout: when it has not settled within timeout seconds (0: it has not settled).
        """
        sub = self._bus.subscribe(task_id)
        try:
            task = await self._db.call(self.store.task, task_id)
            async with asyncio.timeout(timeout):
                while task.state not in states.SETTLED:
                    try:
                        event = await sub.get()
                    except Overflow:
                        sub = self._resubscribe(sub)
                        event = None
                    if event is None or event.settles():
                        task = await self._db.call(self.store.task, task_id)
            return task
        except TimeoutError:
            raise Timeout(f"task {task_id} did not settle within {timeout:g}s") from None
        finally:
            self._bus.unsubscribe(sub)

    def _resubscribe(self, sub: Any) -> Any:
        self._bus.unsubscribe(sub)
        return self._bus.subscribe(sub.task_id)

    # Lifecycle of the scheduler ----------------------------------------------------------

    async def recover(self) -> None:
        """After a (re)start: remove orphaned containers and drive every active task again."""
        live = {(a.task_id, a.name) for a in await self._db.call(self.store.live_agents)}
        try:
            for found in await asyncio.to_thread(self._runtime.labelled):
                if (found.get(LABEL_TASK), found.get(LABEL_AGENT)) not in live:
                    log.info("removing orphaned container %s", found["name"])
                    await asyncio.to_thread(self._runtime.remove, found["name"])
        except KlaudioError as exc:
            # Docker may be down; the tasks below then fail with its error, one by one.
            log.error("cannot look for orphaned containers: %s", exc)
        for task in await self._db.call(self.store.tasks, list(states.ACTIVE)):
            log.info("resuming task %s (%s)", task.id, task.state)
            self._spawn(task.id)

    async def close(self) -> None:
        """Stop driving tasks; their containers keep running and are adopted on restart."""
        drivers = list(self._drivers.values())
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    def active(self) -> int:
        """How many tasks are being driven."""
        return len(self._drivers)

    # Driving a task ----------------------------------------------------------------------

    def _spawn(self, task_id: str) -> None:
        if task_id not in self._drivers:
            self._drivers[task_id] = asyncio.create_task(self._drive(task_id), name=task_id)

    async def _drive(self, task_id: str) -> None:
        try:
            task = await self._db.call(self.store.task, task_id)
            if task.state == states.PLANNING:
                task = await self._plan(task)
            if task.state == states.APPROVED:
                task = await self._transition(task_id, states.RUNNING)
            if task.state == states.RUNNING:
                await self._execute(task)
        except asyncio.CancelledError:
            raise
        except KlaudioError as exc:
            await self._fail(task_id, str(exc))
        except Exception as exc:
            log.exception("task %s: internal error", task_id)
            await self._fail(task_id, f"internal error: {exc}")
        finally:
            self._drivers.pop(task_id, None)

    async def _plan(self, task: Any) -> Any:
        existing = await self._db.call(self.store.find_agent, task.id, PLANNER)
        if existing is not None and existing.state not in states.AGENT_LIVE:
            # The planner finished before a restart: judge it again from its output.
            result = agentlib.outcome(
                Path(existing.run_dir) / "out.jsonl", existing.exit_code, needs_structured=True
            )
        else:
            agent = existing or await self._new_agent(
                task, PLANNER, PLANNER, None, agentlib.planner_prompt(task.prompt)
            )
            result = await self._run(task, agent, planner=True)
        if not result.ok:
            return await self._fail(task.id, f"planner failed: {result.reason}")
        try:
            parsed = plan.parse(result.structured)
        except InvalidArgument as exc:
            return await self._fail(task.id, f"invalid plan: {exc}")
        if isinstance(parsed, plan.Questions):
            self._bus.publish(
                [await self._db.call(self.store.save_questions, task.id, parsed.questions)]
            )
            return await self._transition(
                task.id, states.AWAITING_ANSWERS, "the planner has questions"
            )
        _, event = await self._db.call(self.store.save_plan, task.id, parsed)
        self._bus.publish([event])
        task = await self._transition(task.id, states.PLANNED)
        if task.auto_approve:
            task = await self._transition(task.id, states.APPROVED, "auto-approved")
        return task

    async def _execute(self, task: Any) -> None:
        running: dict[asyncio.Task[Outcome], Any] = {}
        limit = self._config.agents.per_task
        try:
            for sub in await self._db.call(self.store.subtasks, task.id):
                if sub.state == states.SUBTASK_RUNNING:
                    running[asyncio.create_task(self._run_subtask(task, sub))] = sub
            while True:
                subs = await self._skip_blocked(task.id)
                ready = [
                    s for s in subs if s.state == states.SUBTASK_PENDING and _deps_done(s, subs)
                ]
                for sub in ready[: max(0, limit - len(running))]:
                    sub, event = await self._db.call(
                        self.store.set_subtask, sub.id, states.SUBTASK_RUNNING
                    )
                    self._bus.publish([event])
                    running[asyncio.create_task(self._run_subtask(task, sub))] = sub
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    sub = running.pop(finished)
                    if finished.exception() is not None:
                        log.error(
                            "subtask %s: internal error", sub.key, exc_info=finished.exception()
                        )
                        _, event = await self._db.call(
                            self.store.set_subtask, sub.id, states.SUBTASK_FAILED
                        )
                        self._bus.publish([event])
        except asyncio.CancelledError:
            for child in running:
                child.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        await self._finish(task)

    async def _skip_blocked(self, task_id: str) -> list[Any]:
        """Mark pending subtasks whose dependencies failed as skipped; return all subtasks."""
        while True:
            subs = await self._db.call(self.store.subtasks, task_id)
            state = {s.key: s.state for s in subs}
            blocked = [
                s
                for s in subs
                if s.state == states.SUBTASK_PENDING
                and any(
                    state.get(d) in (states.SUBTASK_FAILED, states.SUBTASK_SKIPPED)
                    for d in _deps(s)
                )
            ]
            if not blocked:
                return subs
            for sub in blocked:
                _, event = await self._db.call(
                    self.store.set_subtask, sub.id, states.SUBTASK_SKIPPED
                )
                self._bus.publish([event])

    async def _finish(self, task: Any) -> None:
        """Complete the task when every subtask completed; otherwise fail it, saying why."""
        subs = await self._db.call(self.store.subtasks, task.id)
        if all(s.state == states.SUBTASK_COMPLETED for s in subs):
            await asyncio.to_thread(take_back, Path(task.workspace))
            await self._transition(task.id, states.COMPLETED)
            return
        reasons = []
        for sub in subs:
            if sub.state == states.SUBTASK_FAILED:
                agent = await self._db.call(
                    self.store.find_agent, task.id, plan.agent_name(sub.key)
                )
                why = agent.reason if agent and agent.reason else "its agent did not start"
                reasons.append(f"subtask {sub.key} failed: {why}")
        skipped = [s.key for s in subs if s.state == states.SUBTASK_SKIPPED]
        if skipped:
            reasons.append("skipped: " + ", ".join(skipped))
        unfinished = [
            s.key for s in subs if s.state in (states.SUBTASK_PENDING, states.SUBTASK_RUNNING)
        ]
        if unfinished:
            reasons.append("not finished: " + ", ".join(unfinished))
        await self._fail(task.id, "; ".join(reasons))

    async def _run_subtask(self, task: Any, sub: Any) -> Outcome:
        name = plan.agent_name(sub.key)
        try:
            agent = await self._db.call(self.store.find_agent, task.id, name)
            if agent is None:
                context = await self._context(task, sub)
                prompt = agentlib.worker_prompt(task.prompt, sub.name, sub.prompt, context)
                agent = await self._new_agent(task, name, sub.agent_role, sub.id, prompt)
        except (KlaudioError, OSError) as exc:
            result = Outcome(False, None, f"cannot start agent {name}: {exc}", "", 0.0, "")
        else:
            if agent.state in states.AGENT_LIVE:
                result = await self._run(task, agent, planner=False)
            else:
                result = agentlib.outcome(Path(agent.run_dir) / "out.jsonl", agent.exit_code)
        final = states.SUBTASK_COMPLETED if result.ok else states.SUBTASK_FAILED
        _, event = await self._db.call(self.store.set_subtask, sub.id, final, result.result)
        self._bus.publish([event])
        return result

    async def _context(self, task: Any, sub: Any) -> dict[str, str]:
        """Dependencies' final messages, also written to .klaudio/context/<id>.md."""
        subs = {s.key: s for s in await self._db.call(self.store.subtasks, task.id)}
        context = {dep: subs[dep].result for dep in _deps(sub) if dep in subs}
        if context:
            folder = Path(task.workspace) / ".klaudio" / "context"
            folder.mkdir(parents=True, exist_ok=True)
            for key, text in context.items():
                (folder / f"{plan.agent_name(key)}.md").write_text(text)
        return context

    # Agents ------------------------------------------------------------------------------

    async def _new_agent(
        self, task: Any, name: str, role: str, subtask_id: int | None, prompt: str
    ) -> Any:
        run_dir = self._paths.tasks_dir / task.id / "agents" / name
        uid, gid = agent_user()

        def prepare() -> None:
            shutil.rmtree(run_dir, ignore_errors=True)
            prepare_run_dir(run_dir, prompt, uid, gid)

        await asyncio.to_thread(prepare)
        return await self._db.call(
            self.store.create_agent,
            task.id,
            name,
            role,
            subtask_id,
            f"klaudio-{task.id}-{name}",
            str(uuid.uuid4()),
            str(run_dir),
        )

    async def _run(self, task: Any, agent: Any, planner: bool) -> Outcome:
        """Run a live agent to its end; a failure to run it (Docker down, say) fails the agent."""
        try:
            await self._ensure_image(task.id)
            async with self._slots:
                if not planner:
                    await asyncio.to_thread(hand_over, Path(task.workspace), *agent_user())
                return await self._runner.run(agent, self._spec(task, agent, planner), planner)
        except KlaudioError as exc:
            _, event = await self._db.call(
                self.store.set_agent_state, agent.id, states.AGENT_FAILED, reason=str(exc)
            )
            self._bus.publish([event])
            return Outcome(False, None, str(exc), "", 0.0, "")

    def _spec(self, task: Any, agent: Any, planner: bool) -> ContainerSpec:
        uid, gid = agent_user()
        run_dir = Path(agent.run_dir)
        mounts = [
            (task.workspace, "/workspace", planner),
            (str(run_dir), "/klaudio/run", False),
            (str(run_dir / "home"), "/klaudio/home", False),
        ]
        creds = self._credentials_file()
        if creds:
            mounts.append((creds, "/klaudio/home/.claude/.credentials.json", True))
        return ContainerSpec(
            name=agent.container,
            image=self._config.docker.image,
            command=agentlib.command(self._config, agent.session_id, planner),
            labels={
                LABEL_TASK: task.id,
                LABEL_AGENT: agent.name,
                LABEL_ROLE: agent.role,
                LABEL_EPOCH: str(agent.epoch),
            },
            environment=self._environment(),
            mounts=mounts,
            user=f"{uid}:{gid}",
            network=self._config.docker.network,
            memory=self._config.docker.memory,
            cpus=self._config.docker.cpus,
            pids_limit=self._config.docker.pids_limit,
        )

    def _environment(self) -> dict[str, str]:
        env = {
            "CLAUDE_CODE_MAX_RETRIES": str(self._config.claude.max_retries),
            "GIT_AUTHOR_NAME": "klaudio agent",
            "GIT_AUTHOR_EMAIL": "agent@klaudio.invalid",
            "GIT_COMMITTER_NAME": "klaudio agent",
            "GIT_COMMITTER_EMAIL": "agent@klaudio.invalid",
        }
        if self._config.claude.base_url:
            env["ANTHROPIC_BASE_URL"] = self._config.claude.base_url
        for name in SECRET_ENV:
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def _credentials_file(self) -> str:
        configured = self._config.claude.credentials_file
        if configured:
            return str(Path(configured).expanduser())
        default = Path.home() / ".claude" / ".credentials.json"
        if not any(os.environ.get(n) for n in SECRET_ENV) and default.is_file():
            return str(default)
        return ""

    async def _ensure_image(self, task_id: str) -> None:
        """Build the agent image before the first agent when it is missing or stale."""
        async with self._image_lock:
            if self._image_checked:
                return
            docker = self._config.docker
            tag = docker.image
            if not await asyncio.to_thread(
                image.is_current, self._runtime, tag, docker.base_image, docker.extra_ca_file
            ):
                log.info("building agent image %s", tag)
                notice = f"building the agent image {tag} (first use; this takes a minute)"
                event = await self._db.call(
                    self.store.emit, task_id, {"type": "notice", "text": notice}
                )
                self._bus.publish([event])

                def build() -> None:
                    for line in image.build(
                        self._runtime,
                        tag,
                        self._config.docker.base_image,
                        self._config.docker.extra_ca_file,
                    ):
                        log.debug("image build: %s", line)

                await asyncio.to_thread(build)
            self._image_checked = True

    # Transitions -------------------------------------------------------------------------

    async def _transition(
        self, task_id: str, target: str, reason: str = "", only_from: list[str] | None = None
    ) -> Any:
        task, event = await self._db.call(self.store.transition, task_id, target, reason, only_from)
        self._bus.publish([event])
        log.info("task %s: %s%s", task_id, target, f" ({reason})" if reason else "")
        return task

    async def _fail(self, task_id: str, reason: str) -> Any:
        await asyncio.to_thread(take_back, self._paths.tasks_dir / task_id / "workspace")
        try:
            return await self._transition(task_id, states.FAILED, reason)
        except FailedPrecondition:
            return await self._db.call(self.store.task, task_id)


def _deps(sub: Any) -> list[str]:
    return list(json.loads(sub.depends_on))


def _deps_done(sub: Any, subs: list[Any]) -> bool:
    state = {s.key: s.state for s in subs}
    return all(state.get(d) == states.SUBTASK_COMPLETED for d in _deps(sub))


def _default_name(prompt: str) -> str:
    first = prompt.strip().splitlines()[0] if prompt.strip() else "task"
    return first[:60].strip()
