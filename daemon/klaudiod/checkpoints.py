"""A task's checkpoints: saved on stops and every interval, pruned, listed and restored.

Archives live under `<data>/checkpoints/<task id>/<checkpoint id>.tar` (archive.py). One is
recorded in the store only once it is complete on disk; a start-up sweep removes files no
record names (a write cut short by a crash) and records whose file is gone.

A restore extracts into a staging directory beside the workspace and renames trees into place.
The trees it replaces are renamed aside (`.<name>.<token>.old`, beside them) and removed in a
thread of their own once the restore is recorded: removing 50,000 files can take longer than
the whole restore, and nobody needs to wait for it. The start-up sweep removes what a crash
left aside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from klaudio.events import CheckpointEvent
from klaudiod import archive, safefs, states
from klaudiod.db import Db
from klaudiod.records import CheckpointRecord, Detail, TaskRecord
from klaudiod.runtime import agent_user
from klaudiod.stream import Bus
from klaudiod.workspace import TaskFiles, hand_over

log = logging.getLogger(__name__)

FORMAT = 1
RESTORING = "restore.tmp"
# A tree put aside by a restore, to be removed: `.<name>.<12 hex digits>.old`.
ASIDE = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.old")


class Checkpoints:
    """Writes and restores checkpoints; keeps the newest `keep`, none older than `days`."""

    def __init__(
        self, root: Path, tasks_dir: Path, db: Db, bus: Bus, keep: int, days: float
    ) -> None:
        self._root = root
        self._tasks_dir = tasks_dir
        self._db = db
        self._bus = bus
        self._keep = keep
        self._days = days
        self._writing: dict[str, asyncio.Lock] = {}

    def folder(self, task_id: str) -> Path:
        """Where a task's archives are."""
        return self._root / task_id

    async def save(self, task_id: str, reason: str) -> CheckpointRecord:
        """Write a checkpoint of the task as it is now, then prune the old ones."""
        store = self._db.store
        async with self._writing.setdefault(task_id, asyncio.Lock()):
            detail = await self._db.call(store.detail, task_id)
            files = TaskFiles(self._tasks_dir, task_id)
            checkpoint_id = uuid.uuid4().hex[:12]
            folder = self.folder(task_id)
            started = time.monotonic()

            def write() -> archive.Written:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                return archive.write(
                    folder / f"{checkpoint_id}.tar", _trees(detail, files), _meta(detail, reason)
                )

            written = await asyncio.to_thread(write)
            record = await self._db.call(
                store.add_checkpoint,
                checkpoint_id,
                task_id,
                reason,
                written.size,
                str(folder / f"{checkpoint_id}.tar"),
            )
            written_event: CheckpointEvent = {
                "type": "checkpoint",
                "id": checkpoint_id,
                "reason": reason,
                "size": written.size,
                "files": written.files,
            }
            event = await self._db.call(store.emit, task_id, written_event)
            self._bus.publish([event])
            log.info(
                "task %s: checkpoint %s (%s, %d bytes, %.2fs)",
                task_id,
                checkpoint_id,
                reason,
                written.size,
                time.monotonic() - started,
            )
        await self.prune(task_id)
        return record

    async def prune(self, task_id: str | None = None) -> None:
        """Forget and remove checkpoints beyond the newest `keep` per task, or too old."""
        store = self._db.store
        records = await self._db.call(store.checkpoints, task_id)
        cutoff = time.time() - self._days * 86400
        seen: dict[str, int] = {}
        doomed: list[CheckpointRecord] = []
        for record in records:  # newest first
            seen[record.task_id] = seen.get(record.task_id, 0) + 1
            if seen[record.task_id] > self._keep or record.created_at < cutoff:
                doomed.append(record)
        if doomed:
            # Records first: a crash in between leaves files the start-up sweep removes.
            await self._db.call(store.delete_checkpoints, [r.id for r in doomed])
            for record in doomed:
                Path(record.path).unlink(missing_ok=True)

    async def sweep(self) -> None:
        """After a start: drop unfinished writes and files or records without the other."""
        records = await self._db.call(self._db.store.checkpoints, None)
        known = {Path(r.path) for r in records}
        missing = [r.id for r in records if not Path(r.path).is_file()]
        if missing:
            await self._db.call(self._db.store.delete_checkpoints, missing)

        def clean() -> None:
            if not self._root.is_dir():
                return
            for folder in self._root.iterdir():
                for path in folder.iterdir() if folder.is_dir() else ():
                    if path not in known:
                        log.info("removing %s: no checkpoint record names it", path)
                        path.unlink(missing_ok=True)
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()

        await asyncio.to_thread(clean)
        await self.prune()
        # What restores cut short by a crash left aside: removed without holding up the start.
        remove_later(
            lambda: leftovers(self._tasks_dir), f"leftovers of restores in {self._tasks_dir}"
        )

    async def remove(self, task_id: str) -> None:
        """Remove every archive of a deleted task."""
        await asyncio.to_thread(safefs.remove_tree, self.folder(task_id))

    async def restore(self, task: TaskRecord, prefix: str) -> CheckpointRecord:
        """Put a paused or failed task's workspace and agent sessions back as in a checkpoint.

        The task ends up paused, so that `resume` continues from there.

        Raises:
            archive.Damaged: for an archive that is truncated, corrupt or holds an unsafe
                member; nothing is changed then.
        """
        store = self._db.store
        record = await self._db.call(store.checkpoint, task.id, prefix)
        detail = await self._db.call(store.detail, task.id)
        files = TaskFiles(self._tasks_dir, task.id)
        staging = files.root / RESTORING
        doomed: list[Path] = []
        try:
            doomed += await asyncio.to_thread(_put_aside, staging)
            meta = await asyncio.to_thread(archive.extract, Path(record.path), record.size, staging)
            _check(meta, detail, record)
            sessions = await asyncio.to_thread(_swap, staging, files, detail, meta, doomed)
            subtasks = {
                key: states.SUBTASK_STOPPED if state == states.SUBTASK_RUNNING else state
                for key, state in dict(meta.get("subtasks", {})).items()
            }
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
            reason = f"restored from checkpoint {record.id} ({record.reason}, {when})"
            _, event = await self._db.call(store.restore, task.id, reason, subtasks, sessions)
            self._bus.publish([event])
        finally:
            # What is left of the staging directory (all of it, for an archive refused) too.
            doomed += await asyncio.to_thread(_put_aside, staging)
            if doomed:
                remove_later(lambda: doomed, f"what task {task.id} had before its restore")
        return record


def _trees(detail: Detail, files: TaskFiles) -> list[tuple[str, Path]]:
    trees = [("workspace", files.workspace)]
    for agent in detail.agents:
        home = Path(agent.home) if agent.home else None
        if home is not None and safefs.kind(files.root, _rel(files, home)) == "dir":
            trees.append((f"agents/{agent.name}/home", home))
    return trees


def _meta(detail: Detail, reason: str) -> dict[str, object]:
    return {
        "format": FORMAT,
        "task": detail.task.id,
        "reason": reason,
        "created_at": time.time(),
        "plan_version": detail.plan.version if detail.plan else 0,
        "agents": {a.name: a.session_id for a in detail.agents},
        "subtasks": {s.key: s.state for s in detail.subtasks},
    }


def _check(meta: dict[str, object], detail: Detail, record: CheckpointRecord) -> None:
    if meta.get("format") != FORMAT or meta.get("task") != detail.task.id:
        raise archive.Damaged(f"checkpoint {record.id} is not one of task {detail.task.id[:8]}")
    version = detail.plan.version if detail.plan else 0
    if meta.get("plan_version") != version:
        raise archive.Damaged(
            f"checkpoint {record.id} was taken under plan version {meta.get('plan_version')}; "
            f"the task's plan is now version {version}"
        )


def _swap(
    staging: Path,
    files: TaskFiles,
    detail: Detail,
    meta: dict[str, object],
    doomed: list[Path],
) -> dict[str, str]:
    """Move the extracted trees into place; return the agents' sessions to record.

    The trees replaced are put aside and added to doomed, for the caller to remove. Agents the
    checkpoint does not know (they started after it) start a new conversation.
    """
    known = dict(meta.get("agents", {}))  # type: ignore[call-overload]
    uid, gid = agent_user()
    _replace(staging / "workspace", files.workspace, doomed)
    sessions: dict[str, str] = {}
    for agent in detail.agents:
        saved = staging / "agents" / agent.name / "home"
        if agent.name in known and saved.is_dir() and agent.home:
            _replace(saved, Path(agent.home), doomed)
            hand_over(Path(agent.home), uid, gid)
            sessions[agent.name] = str(known[agent.name])
        else:
            sessions[agent.name] = str(uuid.uuid4())
    return sessions


def _replace(new: Path, old: Path, doomed: list[Path]) -> None:
    """Put the tree new where old is (both the daemon's own names); old goes aside, to doomed."""
    aside = _put_aside(old)
    try:
        os.rename(new, old)
    except BaseException:
        for path in aside:
            os.rename(path, old)  # back: never leave the task without the tree
        raise
    doomed += aside


def _put_aside(path: Path) -> list[Path]:
    """Rename path (if it is there) to a new `.<name>.<token>.old` beside it; [that], or []."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.old")
    try:
        os.rename(path, aside)  # a link is renamed, not followed
    except FileNotFoundError:
        return []
    return [aside]


def leftovers(tasks_dir: Path) -> list[Path]:
    """The trees restores put aside that are still there (cut short by a crash, say).

    They are beside what they replaced: in a task's directory (its workspace, the staging
    directory) and in its agents' directories (their homes).
    """
    found: list[Path] = []
    for folder in _listing(tasks_dir):
        found += (p for p in _listing(folder) if ASIDE.fullmatch(p.name))
        for agent in _listing(folder / "agents"):
            found += (p for p in _listing(agent) if ASIDE.fullmatch(p.name))
    return found


def _listing(folder: Path) -> list[Path]:
    """The entries of a directory (not of a link to one); [] if it is not one."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def remove_later(find: Callable[[], list[Path]], what: str) -> threading.Thread:
    """Remove the trees find() lists, in a thread of their own; the caller does not wait.

    A daemon thread: a daemon that stops meanwhile leaves the rest to its next start-up sweep.
    """

    def remove() -> None:
        started = time.monotonic()
        doomed = find()
        for path in doomed:
            try:
                safefs.remove_tree(path)
            except (OSError, safefs.Refused) as exc:
                log.warning("removing %s: %s", path, exc)
        if doomed:
            log.info("removed %s (%.2fs)", what, time.monotonic() - started)

    thread = threading.Thread(target=remove, name="klaudio-remove", daemon=True)
    thread.start()
    return thread


def _rel(files: TaskFiles, path: Path) -> str:
    return path.relative_to(files.root).as_posix()
