"""Drives one task from planning through execution to where it settles; carries out stops.

A stop or cancel is recorded on the task first (its control) and then carried out here: the
agents are stopped gracefully, their runs recorded as stopped, and the task moves to paused
or cancelled. A driver started after a crash finds the control still set and finishes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from klaudio import events
from klaudio.errors import FailedPrecondition, KlaudioError
from klaudiod import delivery, states
from klaudiod.delivery import Target
from klaudiod.executor import Interruption, executor_for
from klaudiod.kit import Kit
from klaudiod.planner import Planning
from klaudiod.records import TaskRecord
from klaudiod.runner import Stop
from klaudiod.workspace import take_back

log = logging.getLogger(__name__)

STOP = "stop"
CANCEL = "cancel"
STOPPED_BY_USER = "stopped by user"
CANCELLED_BY_USER = "cancelled by user"
# Without a reset time from the API, a usage-limited task waits 1 min, doubling up to 30 min.
BACKOFF_FIRST_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 1800.0
_BY_USER = {STOP: STOPPED_BY_USER, CANCEL: CANCELLED_BY_USER}


class Driver:
    """The coroutine that owns one task while it is active."""

    def __init__(self, kit: Kit, task_id: str) -> None:
        self._kit = kit
        self.task_id = task_id
        self.stopping = Stop()

    def request_stop(self, reason: str, grace: float | None = None) -> None:
        """Stop the task's agents (the stop or cancel itself is already recorded)."""
        self.stopping.set(reason, grace, by_user=True)

    async def drive(self) -> None:
        """Drive the task until it settles; never raises but for cancellation."""
        try:
            await self._drive()
        except asyncio.CancelledError:
            raise
        except KlaudioError as exc:
            await self._fail(str(exc))
        except Exception as exc:
            log.exception("task %s: internal error", self.task_id)
            await self._fail(f"internal error: {exc}")

    async def _drive(self) -> None:
        kit = self._kit
        task = await kit.db.call(kit.store.task, self.task_id)
        if task.control:
            self.stopping.set(_BY_USER[task.control], by_user=True)
        pause: Interruption | None = None
        if task.state == states.PLANNING:
            target, reason, pause = await Planning(kit).plan(task, self.stopping)
            if target != states.PLANNING:
                task = await self._transition(target, reason)
            if task.state == states.PLANNED and task.auto_approve:
                task = await self._transition(states.APPROVED, "auto-approved")
        if task.state == states.APPROVED and not self.stopping.is_set():
            task = await self._transition(states.RUNNING)
        if task.state == states.RUNNING:
            plan = await kit.db.call(kit.store.plan, task.id)
            strategy = plan.strategy if plan else "dag"
            ran = asyncio.Event()
            autosave = asyncio.create_task(self._autosave(ran), name=f"autosave-{task.id}")
            try:
                pause = await executor_for(strategy, kit).execute(task, self.stopping)
            finally:
                # Not cancelled: a checkpoint being written is finished and recorded first.
                ran.set()
                await autosave
        await self._settle(pause)

    async def _autosave(self, ran: asyncio.Event) -> None:
        """Checkpoint the running task every checkpoints.interval seconds until ran is set."""
        interval = self._kit.config.checkpoints.interval
        if interval <= 0:
            return
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await ran.wait()
                    return
            await self._checkpoint("interval")

    async def _checkpoint(self, reason: str) -> None:
        """Write a checkpoint; a failure is logged and shown, never fatal to the task."""
        kit = self._kit
        try:
            await kit.checkpoints.save(self.task_id, reason)
        except (KlaudioError, OSError) as exc:
            log.error("task %s: checkpoint failed: %s", self.task_id, exc)
            event = await kit.db.call(
                kit.store.emit,
                self.task_id,
                events.notice(f"checkpoint failed: {exc}"),
            )
            kit.bus.publish([event])

    async def _settle(self, pause: Interruption | None) -> None:
        """Move the task on from where planning or execution left it."""
        kit = self._kit
        task = await kit.db.call(kit.store.task, self.task_id)
        if task.state not in states.ACTIVE:
            await self._take_back(task)
            return
        if task.control == CANCEL:
            await self._cancel_subtasks(task)
            await self._transition(states.CANCELLED, CANCELLED_BY_USER)
        elif task.control == STOP:
            await self._checkpoint("stop")
            await self._transition(states.PAUSED, STOPPED_BY_USER)
        elif pause is not None:
            await self._checkpoint("pause")
            await self._pause_for(task, pause)
        elif task.state == states.RUNNING:
            await self._finish(task)
        elif task.state == states.PLANNING:
            await self._transition(states.FAILED, "the planner was stopped")
        await self._take_back(await kit.db.call(kit.store.task, self.task_id))

    async def _pause_for(self, task: TaskRecord, pause: Interruption) -> None:
        """Pause an interrupted task until a usage limit lifts, or a person resumes it.

        Without a reset time, a usage limit pauses for a backoff; when Docker went away, the
        task waits for `klaudio task resume`.
        """
        if not pause.limited:
            resume = f"`klaudio task resume {task.id[:8]}`"
            if pause.engine_lost:
                reason = (
                    f"the Docker engine went away ({pause.reason}); resume with {resume} once "
                    "it is back"
                )
            else:
                reason = (
                    f"an agent was killed from outside klaudio ({pause.reason}), by the Docker "
                    f"engine stopping or by someone; resume with {resume}"
                )
            await self._transition(states.PAUSED, reason)
            return
        limit = pause
        pauses = task.limit_pauses + 1
        backoff = min(BACKOFF_FIRST_SECONDS * 2 ** (pauses - 1), BACKOFF_MAX_SECONDS)
        now = time.time()
        resume_at = (
            limit.resets_at + 1 if limit.resets_at and limit.resets_at > now else now + backoff
        )
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(resume_at))
        reason = f"usage limit reached ({limit.reason}); resumes by itself at {when}"
        await self._transition(states.PAUSED, reason, resume_at=resume_at, limit_pauses=pauses)
        self._kit.wake()

    async def _finish(self, task: TaskRecord) -> None:
        """Complete the task when every subtask completed; otherwise fail it, saying why."""
        kit = self._kit
        subs = await kit.db.call(kit.store.subtasks, task.id)
        if all(s.state == states.SUBTASK_COMPLETED for s in subs):
            failure = await deliver(kit, task)
            if failure:
                await self._transition(states.FAILED, f"delivery failed: {failure}")
            else:
                await self._transition(states.COMPLETED, limit_pauses=0)
            return
        reasons = [
            f"subtask {s.key} failed: {s.reason or 'no reason recorded'}"
            for s in subs
            if s.state == states.SUBTASK_FAILED
        ]
        skipped = [s.key for s in subs if s.state == states.SUBTASK_SKIPPED]
        if skipped:
            reasons.append("skipped: " + ", ".join(skipped))
        unfinished = [s.key for s in subs if s.state not in states.SUBTASK_DONE]
        if unfinished:
            reasons.append("not finished: " + ", ".join(unfinished))
        await self._transition(states.FAILED, "; ".join(reasons))

    async def _cancel_subtasks(self, task: TaskRecord) -> None:
        await cancel_subtasks(self._kit, task.id)

    async def _transition(
        self,
        target: str,
        reason: str = "",
        resume_at: float | None = None,
        limit_pauses: int | None = None,
    ) -> TaskRecord:
        kit = self._kit
        task, event = await kit.db.call(
            kit.store.transition, self.task_id, target, reason, None, resume_at, limit_pauses
        )
        kit.bus.publish([event])
        log.info("task %s: %s%s", self.task_id, target, f" ({reason})" if reason else "")
        return task

    async def _fail(self, reason: str) -> None:
        try:
            await self._transition(states.FAILED, reason)
        except FailedPrecondition:
            pass
        except KlaudioError as exc:
            log.error("task %s: cannot record its failure: %s", self.task_id, exc)
        kit = self._kit
        task = await kit.db.call(kit.store.task, self.task_id)
        await self._take_back(task)

    async def _take_back(self, task: TaskRecord) -> None:
        if task.state in states.SETTLED:
            await asyncio.to_thread(take_back, Path(task.workspace))


async def cancel_subtasks(kit: Kit, task_id: str) -> None:
    """Mark the unfinished subtasks of a task being cancelled as cancelled."""
    for sub in await kit.db.call(kit.store.subtasks, task_id):
        if states.can_transition_subtask(sub.state, states.SUBTASK_CANCELLED):
            _, event = await kit.db.call(kit.store.set_subtask, sub.id, states.SUBTASK_CANCELLED)
            kit.bus.publish([event])


async def deliver(kit: Kit, task: TaskRecord, override: Target | None = None) -> str:
    """Deliver a task whose subtasks completed, as its target says; return why it failed ("").

    Each step shows in the stream; a failure leaves the work as it is.
    """
    chosen = override or Target.from_dict(task.delivery)
    if chosen is None or not chosen.delivers:
        return ""
    event = await kit.db.call(kit.store.set_delivery, task.id, "delivering")
    kit.bus.publish([event])
    detail = await kit.db.call(kit.store.detail, task.id)
    git = kit.config.git
    author = f"{git.author_name} <{git.author_email}>"
    try:
        done = await asyncio.to_thread(
            delivery.deliver, task, detail, chosen, kit.files(task.id).git, author
        )
    except Exception as exc:
        if not isinstance(exc, delivery.DeliveryFailed):
            log.exception("task %s: delivery: internal error", task.id)
            exc = delivery.DeliveryFailed(f"internal error: {exc}")
        event = await kit.db.call(kit.store.set_delivery, task.id, "failed", str(exc))
        kit.bus.publish([event])
        log.info("task %s: delivery failed: %s", task.id, exc)
        return str(exc)
    event = await kit.db.call(
        kit.store.set_delivery,
        task.id,
        "delivered",
        done.get("delivery_reason", ""),
        done.get("delivered_commit"),
        done.get("pr_url"),
    )
    kit.bus.publish([event])
    return ""
