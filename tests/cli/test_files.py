"""`klaudio task files|cp|diff|publish` and --input against a real daemon (no Docker needed).

The workspace is changed by the test itself, as an agent would change it: files written,
modified and deleted, links planted pointing out, a FIFO.
"""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from klaudio import errors
from klaudio.cli.files import copy_into
from tests.cli.test_errors import one_error_line
from tests.cli.test_repos import git_repo
from tests.conftest import Instance


@dataclass
class Worked:
    """A task whose workspace an "agent" changed."""

    instance: Instance
    task_id: str
    workspace: Path


@pytest.fixture
def worked(daemon: Instance, tmp_path: Path) -> Worked:
    repo = git_repo(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (repo / "old.txt").write_text("old\n")
    (repo / "src").mkdir()
    (repo / "src" / "app.py").write_text("print('hi')\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "more"], check=True)
    task_id = daemon.cli("task", "create", "x", "--repo", str(repo), check=True).stdout.strip()
    workspace = Path(daemon.show(task_id)["workspace"])
    (workspace / "README.md").write_text("hello\nworld\n")
    (workspace / "old.txt").unlink()
    (workspace / "new.txt").write_text("new\n")
    docs = workspace / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "guide" / "intro.md").write_text("# Intro\n")
    (docs / "index.md").write_text("see guide\n")
    (docs / "latest").symlink_to("guide/intro.md")
    return Worked(daemon, task_id, workspace)


def cp(w: Worked, *args: str) -> subprocess.CompletedProcess[str]:
    return w.instance.cli("task", "cp", *args)


def fresh(tmp_path: Path) -> Path:
    """An empty directory for copies (tmp_path holds the task's repository)."""
    path = tmp_path / "copies"
    path.mkdir()
    return path


def entries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# task files ---------------------------------------------------------------------------------------


def test_files_lists_inputs_changes_and_declared(worked: Worked) -> None:
    result = worked.instance.cli("task", "files", worked.task_id[:4], check=True)

    assert result.stdout.splitlines() == [
        "inputs:",
        "  (none)",
        "changed:",
        "  M  README.md",
        "  A  docs/guide/intro.md",
        "  A  docs/index.md",
        "  A  docs/latest",
        "  A  new.txt",
        "  D  old.txt",
        "declared:",
        "  (none)",
    ]
    data = json.loads(worked.instance.cli("task", "files", worked.task_id, "-o", "json").stdout)
    assert data["inputs"] == [] and data["declared"] == []
    assert data["changed"][0] == {"status": "modified", "path": "README.md"}
    assert {"status": "deleted", "path": "old.txt"} in data["changed"]


def test_files_escapes_control_characters_in_names(worked: Worked) -> None:
    (worked.workspace / "bell\x07\x1b[31m.txt").write_text("x")

    result = worked.instance.cli("task", "files", worked.task_id, check=True)

    assert "  A  bell\\x07\\x1b[31m.txt" in result.stdout.splitlines()
    assert "\x1b" not in result.stdout


def test_inputs_are_copied_in_and_listed(daemon: Instance, tmp_path: Path) -> None:
    (tmp_path / "spec.txt").write_text("the spec\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text("a,b\n")
    create = subprocess.run(
        [sys.executable, "-m", "klaudio", "task", "create", "x",
         "--input", "spec.txt", "-i", "data/"],
        env=daemon.env, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert create.returncode == 0, create.stderr
    task_id = create.stdout.strip()

    listed = daemon.cli("task", "files", task_id, check=True).stdout.splitlines()
    assert listed[:3] == ["inputs:", "  input/spec.txt", "  input/data"]
    task = daemon.show(task_id)
    assert task["inputs"] == ["spec.txt", "data"]
    workspace = Path(task["workspace"])
    assert (workspace / "input" / "data" / "rows.csv").read_text() == "a,b\n"
    shown = daemon.cli("task", "show", task_id, check=True).stdout.splitlines()
    assert "inputs:     spec.txt, data (in input/)" in shown


def test_bad_inputs_exit_2_and_create_nothing(daemon: Instance, tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "same").write_text("1")
    (tmp_path / "b" / "same").write_text("2")
    (tmp_path / "holder").mkdir()
    os.mkfifo(tmp_path / "holder" / "fifo")
    cases = [
        (["--input", str(tmp_path / "missing")], "no such file or directory"),
        (["--input", str(tmp_path / "link")], "a symbolic link; give what it points at"),
        (["--input", str(tmp_path / "fifo")], "not a regular file or directory"),
        (["-i", str(tmp_path / "a/same"), "-i", str(tmp_path / "b/same")], "is named 'same' too"),
        (["--input", str(tmp_path / "holder")], "fifo is not a regular file, directory or link"),
        (["--input", ""], "--input is empty"),
    ]
    for args, message in cases:
        result = daemon.cli("task", "create", "x", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in one_error_line(result), args
    assert daemon.task_ids() == []


# task diff ----------------------------------------------------------------------------------------


DIFF = """\
--- a/README.md
+++ b/README.md
@@ -1 +1,2 @@
 hello
+world
--- /dev/null
+++ b/docs/guide/intro.md
@@ -0,0 +1 @@
+# Intro
--- /dev/null
+++ b/docs/index.md
@@ -0,0 +1 @@
+see guide
--- /dev/null
+++ b/docs/latest
@@ -0,0 +1 @@
+guide/intro.md
\\ No newline at end of file
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+new
--- a/old.txt
+++ /dev/null
@@ -1 +0,0 @@
-old
"""


def test_diff_not_on_a_terminal_is_the_exact_unified_diff(worked: Worked) -> None:
    result = worked.instance.cli("task", "diff", worked.task_id, check=True)

    assert result.stdout == DIFF
    assert result.stderr == ""


def test_diff_stat(worked: Worked) -> None:
    result = worked.instance.cli("task", "diff", worked.task_id, "--stat", check=True)

    assert result.stdout.splitlines() == [
        "modified README.md +1 -0",
        "added    docs/guide/intro.md +1 -0",
        "added    docs/index.md +1 -0",
        "added    docs/latest +1 -0",
        "added    new.txt +1 -0",
        "deleted  old.txt +0 -1",
    ]


def test_a_reader_leaving_early_ends_diff_and_cp_quietly(worked: Worked) -> None:
    (worked.workspace / "big.txt").write_text("".join(f"{n}\n" for n in range(300_000)))
    klaudio = f"{sys.executable} -m klaudio"
    for command in (f"task diff {worked.task_id}", f"task cp {worked.task_id}:. -"):
        result = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {klaudio} {command} | head -c 10 > /dev/null"],
            env=worked.instance.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), command


def test_diff_of_an_unchanged_task_says_so(daemon: Instance, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    task_id = daemon.cli("task", "create", "x", "--repo", str(repo), check=True).stdout.strip()

    result = daemon.cli("task", "diff", task_id, check=True)

    assert result.stdout == ""
    assert result.stderr == f"klaudio: task {task_id} has no changes against its base commit\n"


def on_a_terminal(instance: Instance, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run klaudio with stdout on a pseudo-terminal; its exit code and what the terminal got."""
    main, side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "klaudio", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=side,
        stderr=subprocess.PIPE,
    )
    os.close(side)
    seen = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not data:
            break
        seen += data
    os.close(main)
    code = process.wait(timeout=60)
    assert process.stderr is not None
    assert process.stderr.read() == b""
    return code, seen.decode().replace("\r\n", "\n")


def test_diff_on_a_terminal_is_paged_coloured_and_escaped(worked: Worked, tmp_path: Path) -> None:
    (worked.workspace / "new.txt").write_text("new \x1b]0;owned\x07\n")
    paged = tmp_path / "paged"
    env = {k: v for k, v in worked.instance.env.items() if k != "NO_COLOR"}
    env["PAGER"] = f"cat > {paged}"

    code, seen = on_a_terminal(worked.instance, env, "task", "diff", worked.task_id)

    assert code == 0 and seen == ""
    text = paged.read_text()
    assert "\x1b[1m--- a/README.md\x1b[0m\n" in text
    assert "\x1b[36m@@ -1 +1,2 @@\x1b[0m\n" in text
    assert " hello\n\x1b[32m+world\x1b[0m\n" in text
    assert "\x1b[31m-old\x1b[0m\n" in text
    assert "\x1b[32m+new \\x1b]0;owned\\x07\x1b[0m\n" in text
    assert "\x07" not in text


def test_diff_on_a_terminal_without_a_pager_or_colour(worked: Worked) -> None:
    env = {**worked.instance.env, "PAGER": "", "NO_COLOR": "1"}

    code, seen = on_a_terminal(worked.instance, env, "task", "diff", worked.task_id, "--stat")

    assert code == 0
    assert seen.splitlines()[0] == "modified README.md +1 -0"
    assert "\x1b" not in seen
    env["PAGER"] = "cat"
    _, direct = on_a_terminal(worked.instance, env, "task", "diff", worked.task_id, "--no-pager")
    assert direct == DIFF


# task cp ------------------------------------------------------------------------------------------


def test_cp_a_file_into_a_directory_and_to_a_new_name(worked: Worked, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    into = cp(worked, f"{worked.task_id[:6]}:new.txt", str(out))
    renamed = cp(worked, f"{worked.task_id}:README.md", str(out / "readme.txt"))

    assert into.returncode == 0, into.stderr
    assert into.stderr == f"klaudio: copied {worked.task_id[:6]}:new.txt (4 B) to {out}/new.txt\n"
    assert renamed.returncode == 0, renamed.stderr
    assert (out / "new.txt").read_text() == "new\n"
    assert (out / "readme.txt").read_text() == "hello\nworld\n"
    assert entries(out) == ["new.txt", "readme.txt"]


def test_cp_a_directory_with_its_inner_link(worked: Worked, tmp_path: Path) -> None:
    result = cp(worked, f"{worked.task_id}:docs", str(tmp_path / "d"), "-v")

    assert result.returncode == 0, result.stderr
    assert entries(tmp_path / "d") == ["guide", "guide/intro.md", "index.md", "latest"]
    assert os.readlink(tmp_path / "d" / "latest") == "guide/intro.md"
    assert (tmp_path / "d" / "latest").read_text() == "# Intro\n"
    assert result.stderr == (
        f"klaudio: copied {worked.task_id}:docs (2 files, 1 directory, 1 link, 18 B) to "
        f"{tmp_path}/d\n"
    )
    assert sorted(result.stdout.splitlines()) == sorted(
        str(tmp_path / "d" / p) for p in ["", "guide", "guide/intro.md", "index.md", "latest"]
    )


def test_cp_json_says_what_was_copied(worked: Worked, tmp_path: Path) -> None:
    result = cp(worked, f"{worked.task_id}:docs/guide", str(tmp_path), "-o", "json")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "source": f"{worked.task_id}:docs/guide",
        "dest": f"{tmp_path}/guide",
        "kind": "directory",
        "files": 1,
        "directories": 0,
        "links": 0,
        "bytes": 8,
        "paths": [f"{tmp_path}/guide", f"{tmp_path}/guide/intro.md"],
        "git_left_out": False,
    }


def test_cp_of_the_workspace_leaves_git_out_unless_named(worked: Worked, tmp_path: Path) -> None:
    whole = cp(worked, f"{worked.task_id}:.", str(tmp_path / "ws"))
    git = cp(worked, f"{worked.task_id}:.git", str(tmp_path / "git"))

    assert whole.returncode == 0, whole.stderr
    assert not (tmp_path / "ws" / ".git").exists()
    assert (tmp_path / "ws" / "new.txt").is_file()
    assert "left out .git: agents could write it" in whole.stderr
    assert git.returncode == 0, git.stderr
    assert (tmp_path / "git" / "HEAD").is_file()


def test_cp_to_stdout_writes_the_tar(worked: Worked) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "klaudio", "task", "cp", f"{worked.task_id}:docs", "-"],
        env=worked.instance.env,
        capture_output=True,
        check=True,
    )

    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        assert sorted(tar.getnames()) == [
            "docs", "docs/guide", "docs/guide/intro.md", "docs/index.md", "docs/latest",
        ]  # fmt: skip


def test_cp_replaces_an_existing_file_only_with_force(worked: Worked, tmp_path: Path) -> None:
    tmp_path = fresh(tmp_path)
    target = tmp_path / "new.txt"
    target.write_text("mine\n")

    refused = cp(worked, f"{worked.task_id}:new.txt", str(tmp_path))
    also = cp(worked, f"{worked.task_id}:new.txt", str(target))

    assert refused.returncode == 2 and also.returncode == 2
    assert one_error_line(refused) == f"klaudio: {target} exists; --force replaces it"
    assert target.read_text() == "mine\n"
    forced = cp(worked, f"{worked.task_id}:new.txt", str(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == "new\n"
    assert entries(tmp_path) == ["new.txt"]


def test_cp_never_merges_into_or_replaces_a_directory(worked: Worked, tmp_path: Path) -> None:
    tmp_path = fresh(tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "mine").write_text("mine")
    (tmp_path / "file").write_text("f")

    into = cp(worked, f"{worked.task_id}:docs", str(tmp_path), "--force")
    over = cp(worked, f"{worked.task_id}:docs", str(tmp_path / "file"), "--force")

    assert into.returncode == 2
    assert "a copy is never merged into one" in one_error_line(into)
    assert over.returncode == 2
    assert "a directory does not replace it" in one_error_line(over)
    assert entries(tmp_path) == ["docs", "docs/mine", "file"]


def test_cp_refuses_a_link_at_the_destination(worked: Worked, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "to-dir").symlink_to(elsewhere)
    (tmp_path / "to-file").symlink_to(elsewhere / "f")

    for dest in ("to-dir", "to-file"):
        result = cp(worked, f"{worked.task_id}:new.txt", str(tmp_path / dest), "--force")
        assert result.returncode == 2
        assert one_error_line(result) == (
            f"klaudio: {tmp_path / dest}: a symbolic link; nothing is written through one "
            "(give where it points)"
        )
    assert list(elsewhere.iterdir()) == []


def test_cp_into_a_missing_directory_exits_2(worked: Worked, tmp_path: Path) -> None:
    tmp_path = fresh(tmp_path)
    result = cp(worked, f"{worked.task_id}:new.txt", str(tmp_path / "no" / "x"))
    slash = cp(worked, f"{worked.task_id}:new.txt", f"{tmp_path}/no/")

    assert result.returncode == 2 and slash.returncode == 2
    assert "no such directory" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


def plant(w: Worked, outside: Path) -> None:
    """What a hostile agent leaves: links out (also as a parent), a FIFO, odd names."""
    ws = w.workspace
    (ws / "escape").symlink_to(outside)
    (ws / "secret").symlink_to(outside / "secret.txt")
    (ws / "up").symlink_to("../../..")
    (ws / "tree").mkdir()
    (ws / "tree" / "ok.txt").write_text("ok")
    (ws / "tree" / "out").symlink_to("../../../../etc")
    (ws / "abs").mkdir()
    (ws / "abs" / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(ws / "pipe")
    (ws / "pipes").mkdir()
    os.mkfifo(ws / "pipes" / "p")
    (ws / "a\nb").write_text("newline")


REFUSED = [
    ("..", "'..' is not allowed"),
    ("../x", "'..' is not allowed"),
    ("docs/../../x", "'..' is not allowed"),
    ("/etc/passwd", "an absolute path is not allowed"),
    ("escape", "escape"),
    ("escape/secret.txt", "escape/secret.txt"),
    ("secret", "secret"),
    ("up/etc/passwd", "up/etc/passwd"),
    ("tree", "tree/out: a link pointing out of what is copied"),
    ("abs", "abs/passwd: a link pointing out of what is copied (/etc/passwd)"),
    ("pipe", "pipe"),
    ("pipes", "pipes/p"),
    ("a\nb", "a"),
    ("nope", "nope: no such file or directory in the workspace"),
]


@pytest.mark.parametrize(("path", "message"), REFUSED)
def test_cp_refuses_paths_out_of_the_workspace(
    worked: Worked, tmp_path: Path, path: str, message: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("OUTSIDE-SECRET")
    plant(worked, outside)
    dest = tmp_path / "dest"
    dest.mkdir()

    result = cp(worked, f"{worked.task_id}:{path}", str(dest))

    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)
    assert list(dest.iterdir()) == []
    assert "OUTSIDE-SECRET" not in result.stdout + result.stderr
    assert entries(outside) == ["secret.txt"]


def test_cp_source_refusals(worked: Worked, tmp_path: Path) -> None:
    tmp_path = fresh(tmp_path)
    no_colon = cp(worked, worked.task_id, str(tmp_path))
    unknown = cp(worked, "nosuchtask:new.txt", str(tmp_path))

    assert no_colon.returncode == 2
    assert one_error_line(no_colon) == (
        f"klaudio: {worked.task_id}: expected ID:PATH, a task id and a path in its workspace "
        "(3f2a:src/app.py)"
    )
    assert unknown.returncode == 3
    assert list(tmp_path.iterdir()) == []


# The client's own checks, on archives the daemon would never send ---------------------------------


def archive(*members: tuple[str, str, str]) -> Iterator[bytes]:
    """A tar of (name, kind, content or link target) members, in two chunks."""
    raw = tar_bytes(*members)
    yield raw[:700]
    yield raw[700:]


def tar_bytes(*members: tuple[str, str, str]) -> bytes:
    """A tar of (name, kind, content or link target) members."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value.encode()))
    return data.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("d", "dir", ""), ("d/x", "link", "/etc/passwd")], "is a link to an absolute path"),
        ([("d", "dir", ""), ("d/x", "link", "../../etc")], "would link to"),
        ([("d", "dir", ""), ("d/x", "link", "../e")], "would link to"),
        ([("d", "dir", ""), ("../x", "file", "x")], "outside the destination"),
        ([("d", "dir", ""), ("e", "file", "x")], "outside the destination"),
        ([("l", "link", "d")], ""),
    ],
)
def test_the_client_refuses_a_hostile_archive_and_leaves_nothing(
    tmp_path: Path, members: list[tuple[str, str, str]], message: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()

    with pytest.raises(errors.InvalidArgument, match="refused") as caught:
        copy_into(archive(*members), str(dest), force=False)

    assert message in str(caught.value)
    assert list(dest.iterdir()) == []
    assert entries(tmp_path) == ["dest"]


def test_a_broken_archive_leaves_nothing(tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield tar_bytes(("d", "dir", ""), ("d/f", "file", "x" * 5000))[:3000]
        raise errors.Unavailable("the daemon went away during the call")

    with pytest.raises(errors.Unavailable):
        copy_into(broken(), str(tmp_path / "d"), force=False)

    assert list(tmp_path.iterdir()) == []


# task publish -------------------------------------------------------------------------------------


def test_publish_refusals(worked: Worked) -> None:
    unknown = worked.instance.cli("task", "publish", "nosuchtask")
    not_done = worked.instance.cli("task", "publish", worked.task_id, "--push")

    assert unknown.returncode == 3
    assert not_done.returncode == 4
    assert one_error_line(not_done) == (
        f"klaudio: task {worked.task_id[:8]} is created; only a completed task, or one whose "
        "delivery failed, can be published"
    )


@pytest.mark.parametrize("verb", [["files"], ["diff"], ["diff", "--stat"]])
def test_an_unknown_task_exits_3(daemon: Instance, verb: list[str]) -> None:
    result = daemon.cli("task", verb[0], "nosuchtask", *verb[1:])

    assert result.returncode == 3
    assert one_error_line(result).startswith("klaudio: no task")
