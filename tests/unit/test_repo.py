"""Cloning task workspaces with dulwich from real git repositories (path, bare, file:// URL)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from klaudio.errors import InvalidArgument
from klaudiod import repo

GIT = [
    "git",
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@example.invalid",
    "-c",
    "init.defaultBranch=main",
]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    subprocess.run([*GIT, "init", "-q", str(src)], check=True)
    (src / "hello.txt").write_text("hello\n")
    (src / "pkg").mkdir()
    (src / "pkg" / "mod.py").write_text("X = 1\n")
    subprocess.run([*GIT, "-C", str(src), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(src), "commit", "-qm", "first"], check=True)
    return src


def _head(path: Path) -> str:
    return subprocess.run(
        [*GIT, "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_clone_local_path_checks_out_the_files(source: Path, tmp_path: Path) -> None:
    target = tmp_path / "ws"
    repo.clone(str(source), target)
    assert (target / "hello.txt").read_text() == "hello\n"
    assert (target / "pkg/mod.py").read_text() == "X = 1\n"
    assert _head(target) == _head(source)


def test_clone_bare_repo_by_file_url(source: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run([*GIT, "clone", "-q", "--bare", str(source), str(bare)], check=True)
    target = tmp_path / "ws"
    repo.clone(f"file://{bare}", target)
    assert (target / "hello.txt").read_text() == "hello\n"
    assert _head(target) == _head(source)


def test_missing_path_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "ws"
    with pytest.raises(InvalidArgument, match="no such directory"):
        repo.clone(str(tmp_path / "nope"), target)
    assert not target.exists()


def test_a_directory_that_is_not_a_repo_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    target = tmp_path / "ws"
    with pytest.raises(InvalidArgument, match="cannot clone"):
        repo.clone(str(plain), target)
    assert not target.exists()
