"""Executors carry out an approved plan, one per strategy behind one interface; the DAG one.

The DAG executor runs subtasks whose dependencies completed, up to the task's agent limit
(the daemon-wide limit is the kit's slots), skips the dependents of failed subtasks, and
passes each completed subtask's final message to its dependents.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from klaudio.errors import KlaudioError
from klaudiod import agent as agentlib
from klaudiod import settings, states, teams
from klaudiod.agent import Outcome
from klaudiod.kit import Kit
from klaudiod.plan import SubtaskSpec, agent_name
from klaudiod.records import SubtaskRecord, TaskRecord
from klaudiod.runner import Stop
from klaudiod.runtime import agent_user
from klaudiod.workspace import CONTEXT_DIR, hand_over, write_context

log = logging.getLogger(__name__)
STOPPED = states.RUN_STOPPED

_SUBTASK_FOR_RUN = {
    states.RUN_COMPLETED: states.SUBTASK_COMPLETED,
    states.RUN_FAILED: states.SUBTASK_FAILED,
    states.RUN_STOPPED: states.SUBTASK_STOPPED,
}


@dataclass(frozen=True)
class Interruption:
    """Something outside the agents stopped one: the task pauses (and may resume by itself).

    Either the model API's usage limit (limited; resets_at is when it lifts, if known) or the
    Docker engine going away.
    """

    reason: str
    resets_at: float | None
    limited: bool
    engine_lost: bool = False

    @classmethod
    def of(cls, result: Outcome) -> Interruption:
        """The interruption that ended a run."""
        return cls(result.reason, result.resets_at, result.limited, result.engine_lost)


class Executor(Protocol):
    """Carries out a task's current plan until it is done or stop is set."""

    async def execute(self, task: TaskRecord, stop: Stop) -> Interruption | None:
        """Run what can run; return what interrupted it (a usage limit, Docker), if anything."""


def executor_for(strategy: str, kit: Kit) -> Executor:
    """The executor of a plan strategy.

    Raises:
        KlaudioError: for a strategy no executor carries out yet.
    """
    if strategy == "dag":
        return DagExecutor(kit)
    raise KlaudioError(f"the {strategy!r} strategy has no executor yet")


STRATEGIES_WITH_EXECUTOR = frozenset({"dag"})


class DagExecutor:
    """Runs a plan's subtasks in dependency order, in parallel within the agent limits."""

    def __init__(self, kit: Kit) -> None:
        self._kit = kit
        self._settings = settings.from_config(kit.config)

    async def execute(self, task: TaskRecord, stop: Stop) -> Interruption | None:
        """Run subtasks until none can run; a stop lets running agents end as stopped."""
        self._settings = settings.of(task, self._kit.config)
        await asyncio.to_thread(hand_over, Path(task.workspace), *agent_user())
        running: dict[asyncio.Task[tuple[Outcome, str]], SubtaskRecord] = {}
        pause: Interruption | None = None
        try:
            while True:
                ready = await self._ready(task.id, set(running.values()), len(running))
                if stop.is_set():
                    # Stopping: only what is running already (adopted after a restart) is
                    # taken on, to be stopped and recorded; nothing new starts.
                    ready = [s for s in ready if s.state == states.SUBTASK_RUNNING]
                for sub in ready:
                    running[asyncio.create_task(self._run(task, sub, stop))] = sub
                if not running:
                    return pause
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    sub = running.pop(finished)
                    result, final = await self._ended(sub, finished)
                    if final == states.RUN_STOPPED and result.interrupted and pause is None:
                        pause = Interruption.of(result)
                        stop.set(f"stopped as agent {agent_name(sub.key)} was interrupted")
        except asyncio.CancelledError:
            for child in running:
                child.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise

    async def _ready(
        self, task_id: str, active: set[SubtaskRecord], count: int
    ) -> list[SubtaskRecord]:
        """Subtasks to start now, admitted ones first, then pending ones within the limit.

        Admitted ones are running (after a restart) or stopped (after a pause); pending ones
        qualify once their dependencies completed.
        """
        busy = {s.id for s in active}
        everything = await self._skip_blocked(task_id)
        subs = [s for s in everything if s.id not in busy]
        admitted = [s for s in subs if s.state == states.SUBTASK_RUNNING]
        resumed = [s for s in subs if s.state == states.SUBTASK_STOPPED]
        done = {s.key for s in everything if s.state == states.SUBTASK_COMPLETED}
        waits = self._waits(everything)
        pending = [
            s
            for s in subs
            if s.state == states.SUBTASK_PENDING and all(d in done for d in waits[s.key])
        ]
        room = max(0, self._settings.max_agents - count - len(admitted))
        return admitted + (resumed + pending)[:room]

    def _waits(self, subs: list[SubtaskRecord]) -> dict[str, tuple[str, ...]]:
        """What each subtask waits for: its dependencies, and more for a run-last role.

        A subtask of a run-last role (a reviewer, say) waits for every subtask of the others.
        """
        team = self._settings.team
        extra = teams.run_last_dependencies(tuple(_spec(s) for s in subs), team) if team else {}
        return {s.key: (*s.depends_on, *extra.get(s.key, ())) for s in subs}

    async def _skip_blocked(self, task_id: str) -> list[SubtaskRecord]:
        """Mark pending subtasks whose dependencies failed as skipped; return all subtasks."""
        kit = self._kit
        while True:
            subs = await kit.db.call(kit.store.subtasks, task_id)
            state = {s.key: s.state for s in subs}
            waits = self._waits(subs)
            blocked = [
                s
                for s in subs
                if s.state == states.SUBTASK_PENDING
                and any(
                    state.get(d) in (states.SUBTASK_FAILED, states.SUBTASK_SKIPPED)
                    for d in waits[s.key]
                )
            ]
            if not blocked:
                return subs
            for sub in blocked:
                _, event = await kit.db.call(kit.store.set_subtask, sub.id, states.SUBTASK_SKIPPED)
                kit.bus.publish([event])

    async def _ended(
        self, sub: SubtaskRecord, finished: asyncio.Task[tuple[Outcome, str]]
    ) -> tuple[Outcome, str]:
        """Record a subtask's end from its run's (an internal error fails it)."""
        kit = self._kit
        error = finished.exception()
        if error is None:
            result, final = finished.result()
        else:
            log.error("subtask %s: internal error", sub.key, exc_info=error)
            final = states.RUN_FAILED
            result = Outcome(False, None, f"internal error: {error}", "", 0.0, "")
        _, event = await kit.db.call(
            kit.store.set_subtask,
            sub.id,
            _SUBTASK_FOR_RUN[final],
            result=result.result,
            reason="" if final == states.RUN_COMPLETED else result.reason,
        )
        kit.bus.publish([event])
        return result, final

    async def _run(self, task: TaskRecord, sub: SubtaskRecord, stop: Stop) -> tuple[Outcome, str]:
        """Run (or adopt, or resume) the subtask's agent to its end."""
        kit = self._kit
        name = agent_name(sub.key)
        if sub.state != states.SUBTASK_RUNNING:
            _, event = await kit.db.call(kit.store.set_subtask, sub.id, states.SUBTASK_RUNNING)
            kit.bus.publish([event])
        async with kit.slots:
            agent = await kit.db.call(kit.store.find_agent, task.id, name)
            if agent is not None and agent.subtask_id != sub.id:
                # An agent of an earlier plan version's subtask of that id: a new conversation.
                agent = await kit.db.call(
                    kit.store.reassign_agent, agent.id, sub.id, sub.agent_role, str(uuid.uuid4())
                )
            run = await kit.db.call(kit.store.live_run, agent.id) if agent else None
            if run is None and stop.is_set():
                reason = f"{stop.reason} before it started"
                return Outcome(False, None, reason, "", 0.0, ""), STOPPED
            if run is None or agent is None:
                try:
                    prompt = await self._prompt(task, sub)
                except KlaudioError as exc:
                    reason = f"cannot start agent {name}: {exc}"
                    return Outcome(False, None, reason, "", 0.0, ""), states.RUN_FAILED
                if agent is None:
                    agent = await kit.db.call(
                        kit.store.create_agent,
                        task.id,
                        name,
                        sub.agent_role,
                        sub.id,
                        str(uuid.uuid4()),
                        str(kit.files(task.id).home(name)),
                    )
                run = await kit.new_run(task, agent, prompt)
            return await kit.runner.run(task, agent, run, planner=False, stop=stop)

    async def _prompt(self, task: TaskRecord, sub: SubtaskRecord) -> str:
        """A worker's first prompt; its dependencies' results also go to .klaudio/context/."""
        kit = self._kit
        subs = {s.key: s for s in await kit.db.call(kit.store.subtasks, task.id)}
        context = {dep: subs[dep].result for dep in sub.depends_on if dep in subs}
        if context:
            workspace = Path(task.workspace)
            await asyncio.to_thread(write_context, workspace, context)
            await asyncio.to_thread(hand_over, workspace / CONTEXT_DIR.split("/")[0], *agent_user())
        team = self._settings.team
        hint = teams.prompt_hint(team, sub.agent_role) if team and team.role(sub.agent_role) else ""
        prompt = agentlib.worker_prompt(
            task.prompt, sub.name, sub.prompt, context, sub.agent_role, hint
        )
        memory = await kit.repository(task)
        return prompt + (
            f"\nThe repository at a glance (a static summary):\n{memory}" if memory else ""
        )


def _spec(sub: SubtaskRecord) -> SubtaskSpec:
    return SubtaskSpec(
        id=sub.key,
        name=sub.name,
        prompt=sub.prompt,
        depends_on=sub.depends_on,
        agent_role=sub.agent_role,
    )
