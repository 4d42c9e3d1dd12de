"""A task's files on the host: workspace, agent homes and run dirs, context files, ownership.

Layout under `<data>/tasks/<task id>/` (the daemon's own directories in plain, agent-writable
ones marked *):

    workspace/*                 /workspace of every agent
    agents/<agent>/home/*       /klaudio/home of every run of that agent (Claude's session state)
    agents/<agent>/runs/<n>/*   /klaudio/run of the agent's run n (prompt, output, exit code)

Every bind-mount source is a child of a directory no container can write, so an agent cannot
swap it for a link between runs. Inside the starred trees every access goes through safefs.
"""

from __future__ import annotations

import os
from pathlib import Path

from klaudiod import safefs
from klaudiod.plan import agent_name

# Files the entrypoint writes in a run dir; the daemon creates them empty, owned by the agent.
RUN_FILES = ("out.jsonl", "err.log")
CONTEXT_DIR = ".klaudio/context"


class TaskFiles:
    """Where one task's files live."""

    def __init__(self, tasks_dir: Path, task_id: str) -> None:
        self.root = tasks_dir / task_id
        self.workspace = self.root / "workspace"
        # The base commit's files (path -> blob id), recorded at clone time (changes.py).
        self.base = self.root / "base.json"
        # The daemon's own bare clone of the task's repository (repo.py): delivery happens
        # there, never in the agents' workspace.
        self.git = self.root / "repo.git"

    def agent_dir(self, agent: str) -> Path:
        """The agent's own directory (the daemon's; no container mounts it)."""
        return self.root / "agents" / agent

    def home(self, agent: str) -> Path:
        """The agent's home: Claude Code's config dir, transcripts and session ids."""
        return self.agent_dir(agent) / "home"

    def run_dir(self, agent: str, epoch: int) -> Path:
        """The run dir of the agent's run number epoch."""
        return self.agent_dir(agent) / "runs" / str(epoch)


def prepare_run(
    files: TaskFiles, agent: str, run_dir: Path, prompt: str, uid: int, gid: int
) -> None:
    """Create a run's directory with its prompt, and the agent's home, owned by the agent's user.

    Everything is created link-safely from the task's root: an agent of a task upgraded from
    0.1.0 could write its agent directory. Idempotent: after a crash the same run is prepared
    again (the prompt is rewritten).
    """
    home = _rel(files, files.home(agent))
    run = _rel(files, run_dir)
    fresh_home = safefs.kind(files.root, home) == "missing"
    for rel in (home, run):
        with safefs.directory(files.root, rel, create=True):
            pass
    safefs.write_text(files.root, f"{run}/prompt.txt", prompt, parents=False)
    for name in RUN_FILES:
        if safefs.kind(files.root, f"{run}/{name}") == "missing":
            safefs.write_bytes(files.root, f"{run}/{name}", b"", parents=False)
    hand_over(run_dir, uid, gid)
    if fresh_home:
        hand_over(files.home(agent), uid, gid)


def check_mount_source(files: TaskFiles, path: Path) -> None:
    """Refuse to bind-mount path unless it is a real directory beneath the task.

    It must be reached without any link: Docker would follow a link on the host.
    """
    rel = _rel(files, path)
    found = safefs.kind(files.root, rel)
    if found != "dir":
        raise safefs.Refused(f"{rel} is a {found}, not a directory")


def _rel(files: TaskFiles, path: Path) -> str:
    return path.relative_to(files.root).as_posix()


def write_context(workspace: Path, results: dict[str, str]) -> None:
    """Write dependencies' final messages to .klaudio/context/<agent>.md in the workspace.

    Raises:
        safefs.Refused: when an agent planted a link or other file on the way.
    """
    for key, text in results.items():
        safefs.write_text(workspace, f"{CONTEXT_DIR}/{agent_name(key)}.md", text)


def hand_over(path: Path, uid: int, gid: int) -> None:
    """Give a tree to the agent's user when the daemon runs as root (a no-op otherwise)."""
    if os.getuid() == 0 and uid != 0:
        safefs.chown_tree(path, uid, gid)


def take_back(path: Path) -> None:
    """Give a tree back to a root daemon after agents wrote it (a no-op otherwise)."""
    if os.getuid() == 0 and path.exists():
        safefs.chown_tree(path, 0, 0)


def remove(files: TaskFiles) -> None:
    """Remove every file of the task, following no link."""
    safefs.remove_tree(files.root)
