"""Checkpoint archives on real files: written link-safely, restored link-safely, refusals named."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from klaudiod import archive
from klaudiod.archive import Damaged


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A workspace with files, a nested dir, a link inside, a link out, and a FIFO."""
    root = tmp_path / "workspace"
    (root / "src" / "deep").mkdir(parents=True)
    (root / "README.md").write_text("hello\n")
    (root / "src" / "deep" / "data.bin").write_bytes(os.urandom(70_000))
    (root / "empty").write_bytes(b"")
    os.chmod(root / "README.md", 0o640)
    os.symlink("README.md", root / "inside")
    os.symlink("/etc/passwd", root / "outside")
    os.mkfifo(root / "pipe")
    return root


def write(tmp_path: Path, trees: list[tuple[str, Path]]) -> tuple[Path, archive.Written]:
    dest = tmp_path / "cp.tar"
    written = archive.write(dest, trees, {"format": 1, "task": "t"})
    return dest, written


def test_a_written_archive_restores_the_same_tree(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])

    meta = archive.extract(dest, written.size, tmp_path / "out")

    out = tmp_path / "out" / "workspace"
    assert meta == {"format": 1, "task": "t"}
    assert (out / "README.md").read_text() == "hello\n"
    assert stat.S_IMODE((out / "README.md").stat().st_mode) == 0o640
    assert (out / "src/deep/data.bin").read_bytes() == (tree / "src/deep/data.bin").read_bytes()
    assert (out / "empty").read_bytes() == b""
    assert os.readlink(out / "inside") == "README.md"
    assert os.readlink(out / "outside") == "/etc/passwd"  # kept as a link, never followed
    assert not os.path.lexists(out / "pipe")
    assert written.skipped == ["workspace/pipe"]
    assert written.files == 3
    # GNU tar reads it too: it is a plain POSIX archive.
    with tarfile.open(dest) as tar:
        assert "workspace/src/deep/data.bin" in tar.getnames()


def test_writing_follows_no_link_out_of_the_tree(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    root = tmp_path / "w"
    root.mkdir()
    os.symlink(secret, root / "link")
    os.symlink(tmp_path, root / "dirlink")

    dest, _ = write(tmp_path, [("workspace", root)])

    assert b"host secret" not in dest.read_bytes()


def test_credentials_are_left_out_of_an_agent_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / ".credentials.json").write_text('{"token": "sekrit"}')
    (home / ".claude" / "history.jsonl").write_text("{}")

    dest, _ = write(tmp_path, [("agents/a/home", home)])

    with tarfile.open(dest) as tar:
        names = tar.getnames()
    assert "agents/a/home/.claude/history.jsonl" in names
    assert not any("credentials" in n for n in names)
    assert b"sekrit" not in dest.read_bytes()


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "cp.tar"
    with pytest.raises(FileNotFoundError):
        archive.write(dest, [("workspace", tmp_path / "missing")], {})

    assert list(tmp_path.iterdir()) == []


def test_a_truncated_archive_is_refused(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    with open(dest, "r+b") as handle:
        handle.truncate(written.size // 2)

    with pytest.raises(Damaged, match="truncated"):
        archive.extract(dest, written.size, tmp_path / "out")


def test_a_corrupt_archive_is_refused(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    data = bytearray(dest.read_bytes())
    data[:512] = os.urandom(512)
    dest.write_bytes(bytes(data))

    with pytest.raises(Damaged, match=r"cannot be read|no meta\.json"):
        archive.extract(dest, written.size, tmp_path / "out")


def crafted(tmp_path: Path, *members: tarfile.TarInfo, data: bytes = b"x") -> tuple[Path, int]:
    """An archive as an attacker would write it: meta.json first, then members."""
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        meta = json.dumps({"format": 1}).encode()
        info = tarfile.TarInfo("meta.json")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
        for member in members:
            tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return path, path.stat().st_size


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ([member("/etc/evil")], "/etc/evil"),
        ([member("../evil")], "../evil"),
        ([member("workspace/../../evil")], "workspace/../../evil"),
        ([member("workspace/hard", tarfile.LNKTYPE, "/etc/passwd")], "hard link"),
        ([member("workspace/dev", tarfile.CHRTYPE)], "device"),
        ([member("workspace/fifo", tarfile.FIFOTYPE)], "FIFO"),
        (
            [member("workspace/out", tarfile.SYMTYPE, "/tmp"), member("workspace/out/evil")],
            "written through 'workspace/out'",
        ),
        (
            [member("w", tarfile.SYMTYPE, "../../.."), member("w/evil")],
            "written through 'w'",
        ),
        ([member("workspace/a"), member("workspace/a")], "there twice"),
    ],
)
def test_unsafe_members_are_refused_and_named(
    tmp_path: Path, members: list[tarfile.TarInfo], named: str
) -> None:
    path, size = crafted(tmp_path, *members)
    outside = set(os.listdir(tmp_path))

    with pytest.raises(Damaged) as raised:
        archive.extract(path, size, tmp_path / "out")

    assert named in str(raised.value)
    assert "\n" not in str(raised.value)
    assert set(os.listdir(tmp_path)) == outside | {"out"}
    assert not Path("/tmp/evil").exists() and not (tmp_path / "evil").exists()
