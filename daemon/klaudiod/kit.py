"""What a task driver works with: configuration, store, stream, Docker, and the agent pool."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from klaudio.config import Config
from klaudio.paths import Paths
from klaudiod import agent as agentlib
from klaudiod import safefs
from klaudiod.checkpoints import Checkpoints
from klaudiod.db import Db
from klaudiod.janitor import Janitor
from klaudiod.launcher import Launcher, container_name
from klaudiod.memory import Memory
from klaudiod.records import AgentRecord, RunRecord, TaskRecord
from klaudiod.runner import AgentRunner
from klaudiod.runtime import Runtime
from klaudiod.store import Store
from klaudiod.stream import Bus
from klaudiod.workspace import TaskFiles

# Where Claude Code keeps a session's transcript in the agent's home (cwd /workspace).
TRANSCRIPTS = ".claude/projects/-workspace"


@dataclass
class Kit:
    """The daemon's shared parts, handed to every driver and executor."""

    config: Config
    paths: Paths
    db: Db
    bus: Bus
    runtime: Runtime
    launcher: Launcher
    runner: AgentRunner
    janitor: Janitor
    checkpoints: Checkpoints
    # Repository memory: static summaries, cached per repository and commit.
    memory: Memory
    # Daemon-wide agent slots (agents.max_concurrent); admission is atomic on the loop.
    slots: asyncio.Semaphore
    # Set when a task gets (or loses) an automatic resume time: the scheduler's timer re-reads.
    timers: asyncio.Event

    def wake(self) -> None:
        """Tell the automatic-resume timer that resume times changed."""
        self.timers.set()

    @property
    def store(self) -> Store:
        return self.db.store

    def files(self, task_id: str) -> TaskFiles:
        """The task's files on the host."""
        return TaskFiles(self.paths.tasks_dir, task_id)

    async def new_run(
        self, task: TaskRecord, agent: AgentRecord, fresh_prompt: str, message: str = ""
    ) -> RunRecord:
        """Record the agent's next run (intent before effect).

        The run resumes the agent's conversation when it has one on disk, with message (the
        task's pending planner message: answers, a replan's context) or else the message its
        last run's end calls for; otherwise it starts afresh with fresh_prompt (and message).
        """
        last = await self.db.call(self.store.latest_run, agent.id)
        resume = last is not None and await asyncio.to_thread(self.has_transcript, agent)
        if resume and last is not None:
            prompt = message or (
                agentlib.retry_message(last.reason or agent.reason)
                if last.state == "failed"
                else agentlib.PAUSED_MESSAGE
            )
        else:
            prompt = fresh_prompt + (f"\n{message}\n" if message else "")
        epoch = 0 if last is None else last.epoch + 1
        run, event = await self.db.call(
            self.store.start_run,
            agent.id,
            epoch,
            container_name(task.id, agent.name, epoch),
            str(self.files(task.id).run_dir(agent.name, epoch)),
            prompt,
            resume,
            bool(message),
        )
        self.bus.publish([event])
        return run

    async def repository(self, task: TaskRecord) -> str:
        """The static summary of the task's repository, for prompts ("" without one)."""
        if not task.base_commit or not task.settings.get("repo_memory", True):
            return ""
        key = hashlib.sha256(task.repo.encode()).hexdigest()[:16] + ":" + task.base_commit
        summary = await asyncio.to_thread(self.memory.get, Path(task.workspace), key)
        return summary.render()

    def has_transcript(self, agent: AgentRecord) -> bool:
        """Whether the agent's conversation exists on disk, so that a run can --resume it."""
        if not agent.home:
            return False
        home = Path(agent.home)
        try:
            return safefs.kind(home, f"{TRANSCRIPTS}/{agent.session_id}.jsonl") == "file"
        except safefs.Refused:
            return False  # a link planted on the way: there is no conversation to trust
