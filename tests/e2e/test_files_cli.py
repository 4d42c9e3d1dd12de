"""End to end: an agent changes a repository; task files, diff and cp show and copy its work.

What the agent planted to reach outside the workspace (links out, a FIFO) is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_repos import git_repo
from tests.conftest import Instance, created_task
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import FakeModel, structured, text, tool_use

pytestmark = pytest.mark.docker

# What the agent does with its Bash tool besides writing hello.txt: a tree, a change, a
# deletion, and what a hostile agent plants (links out of the workspace, a FIFO).
AGENT_SHELL = (
    "mkdir -p out/sub && printf 'a\\n' > out/sub/a.txt && printf 'b\\n' > out/b.txt"
    " && ln -s sub/a.txt out/latest"
    " && printf 'hello\\nagain\\n' > README.md && rm old.txt"
    " && ln -s /etc/passwd leak && ln -s ../../.. up && mkdir trap && ln -s /etc trap/etc"
    " && mkfifo pipe && echo planted"
)


@pytest.fixture
def worked(daemon: Instance, model: FakeModel, tmp_path: Path) -> tuple[Instance, str]:
    """A completed task whose agent changed the repository cloned into its workspace."""
    repo = git_repo(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (repo / "old.txt").write_text("old\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    model.script(
        "E2E-FILES-WORK",
        [
            [tool_use("Write", {"file_path": "/workspace/hello.txt", "content": "hi there\n"})],
            [tool_use("Bash", {"command": AGENT_SHELL})],
            [text("wrote the files")],
        ],
    )
    model.script(
        "E2E-FILES-TASK", [[structured(plan(subtask("work", "E2E-FILES-WORK change things")))]]
    )

    result = daemon.cli("run", "E2E-FILES-TASK change", "--repo", str(repo), "--auto-approve")

    assert result.returncode == 0, result.stderr + result.stdout
    return daemon, created_task(result)


def test_files_diff_and_cp_of_an_agents_work(worked: tuple[Instance, str], tmp_path: Path) -> None:
    instance, task_id = worked
    short = task_id[:6]

    files = instance.cli("task", "files", short, check=True).stdout.splitlines()
    assert files[:2] == ["inputs:", "  (none)"]
    changed = files[files.index("changed:") + 1 : files.index("declared:")]
    assert {"  M  README.md", "  A  hello.txt", "  A  out/sub/a.txt", "  D  old.txt"} <= set(
        changed
    )
    data = json.loads(instance.cli("task", "files", short, "-o", "json", check=True).stdout)
    assert {"status": "added", "path": "out/b.txt"} in data["changed"]

    diff = instance.cli("task", "diff", short, check=True).stdout
    assert "--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n hello\n+again\n" in diff
    assert "--- /dev/null\n+++ b/hello.txt\n@@ -0,0 +1 @@\n+hi there\n" in diff
    assert "--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-old\n" in diff
    stat = instance.cli("task", "diff", short, "--stat", check=True).stdout.splitlines()
    assert "modified README.md +1 -0" in stat
    assert "added    hello.txt +1 -0" in stat
    assert "deleted  old.txt +0 -1" in stat

    dest = tmp_path / "copies"
    dest.mkdir()
    one = instance.cli("task", "cp", f"{short}:hello.txt", str(dest))
    tree = instance.cli("task", "cp", f"{short}:out", str(dest / "tree"))
    assert one.returncode == 0, one.stderr
    assert tree.returncode == 0, tree.stderr
    assert (dest / "hello.txt").read_text() == "hi there\n"
    assert (dest / "tree" / "sub" / "a.txt").read_text() == "a\n"
    assert (dest / "tree" / "b.txt").read_text() == "b\n"
    assert os.readlink(dest / "tree" / "latest") == "sub/a.txt"
    # What the agent wrote belongs to the user, not to the container's.
    assert (dest / "hello.txt").stat().st_uid == os.getuid()
    assert "(2 files, 1 directory, 1 link, 4 B)" in tree.stderr


REFUSED = [
    ("..", "'..' is not allowed"),
    ("out/../..", "'..' is not allowed"),
    ("/etc/passwd", "an absolute path is not allowed"),
    ("leak", "leak: a link, not a file or directory"),
    ("up/etc/passwd", "up/etc/passwd: 'up' is a symbolic link"),
    ("trap", "trap/etc: a link pointing out of what is copied (/etc)"),
    ("trap/etc/passwd", "'trap/etc' is a symbolic link"),
    ("pipe", "pipe: a fifo, not a file or directory"),
    (".", "a link pointing out of what is copied"),
]


def test_cp_refuses_what_the_agent_planted(worked: tuple[Instance, str], tmp_path: Path) -> None:
    instance, task_id = worked
    dest = tmp_path / "copies"
    dest.mkdir()

    for path, message in REFUSED:
        result = instance.cli("task", "cp", f"{task_id}:{path}", str(dest))

        assert result.returncode == 2, (path, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("klaudio: "), result.stderr
        assert message in lines[0], path
        assert list(dest.iterdir()) == [], path
        assert "root:x:0:0" not in result.stdout + result.stderr
