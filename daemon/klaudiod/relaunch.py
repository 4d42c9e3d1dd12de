"""What a relaunched task starts from: a copy of the old workspace, and the old task's story."""

from __future__ import annotations

import shutil

from klaudiod import changes, safefs, states
from klaudiod.records import Detail
from klaudiod.workspace import TaskFiles

# The most changed files the story names one by one.
FILES_SHOWN = 200


def prepare(old: Detail, was: TaskFiles, files: TaskFiles) -> str:
    """Copy a task's workspace and base for its relaunch; return its story for the planner."""
    skipped = safefs.copy_tree(was.workspace, files.workspace)
    if was.git.is_dir():
        # The daemon's own repository (no agent writes it): the new task delivers from it.
        shutil.copytree(was.git, files.git, symlinks=True)
    if (was.root / "inputs").is_dir():
        safefs.copy_tree(was.root / "inputs", files.root / "inputs")
    base = changes.load(was.base)
    changes.save(files.base, base)
    changed = changes.changed(was.workspace, base)
    return story(old, changed, skipped)


def story(old: Detail, changed: list[changes.Change], skipped: list[str]) -> str:
    """What the planner of a relaunched task is told about the task it continues."""
    task = old.task
    outcome = task.state + (f": {task.reason}" if task.reason else "")
    lines = [
        f"This task continues an earlier one ({task.id}, {task.name!r}), which ended {outcome}.",
        "Its prompt was:",
        task.prompt,
    ]
    if old.plan is not None:
        lines.append(f"Its plan ({old.plan.strategy}), with how each subtask ended:")
        for sub in old.subtasks:
            why = f" ({sub.reason})" if sub.reason and sub.state != states.SUBTASK_COMPLETED else ""
            lines.append(f"- {sub.key} [{sub.state}]: {sub.name}{why}")
    shown = changed[:FILES_SHOWN]
    lines.append(f"Files it changed ({len(changed)}), now in this task's workspace:")
    lines += [f"- {c.status} {c.path}" for c in shown]
    if len(changed) > len(shown):
        lines.append(f"- and {len(changed) - len(shown)} more")
    if skipped:
        lines.append("Not copied (not regular files): " + ", ".join(skipped[:20]))
    return "\n".join(lines)
