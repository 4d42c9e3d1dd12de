"""Checkpoint archives on real files: written link-safely, restored link-safely, refusals named."""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from klaudiod import archive, checkpoints
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
    assert not [t.name for t in threading.enumerate() if t.name.startswith("klaudio-")]
    # GNU tar reads it too: it is a plain POSIX archive.
    with tarfile.open(dest) as tar:
        assert "workspace/src/deep/data.bin" in tar.getnames()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_modes_and_times_come_back_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    root = tmp_path / "w"
    root.mkdir()
    modes = {"a": 0o644, "b": 0o755, "c": 0o600, "d": 0o444, "e": 0o000, "f": 0o777}
    for name, mode in modes.items():
        (root / name).write_text(name)
        os.chmod(root / name, mode)
        os.utime(root / name, (1_000_000_000, 1_500_000_000))
    dest, written = write(tmp_path, [("workspace", root)])

    old = os.umask(umask)
    try:
        archive.extract(dest, written.size, tmp_path / "out")
    finally:
        os.umask(old)

    for name, mode in modes.items():
        st = (tmp_path / "out" / "workspace" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (mode, 1_500_000_000)


def test_files_get_their_mode_set_when_a_default_acl_may_change_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "getxattr", lambda *_: b"an ACL")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert archive._creation_mask(fd) == 0o777
    finally:
        os.close(fd)


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


# Headers packed by hand, and read by the archive's own parser -------------------------------

LONG_DIR = "d" * 60
ODD = os.fsdecode(b"caf\xe9-latin1")  # not UTF-8: kept as its bytes (surrogateescape)


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """Names ustar cannot hold (long, non-ASCII, undecodable), long link targets, empty files."""
    root = tmp_path / "odd"
    deep = root / LONG_DIR / LONG_DIR / LONG_DIR  # a path over 100 bytes, split at a "/"
    deep.mkdir(parents=True)
    (deep / "file.txt").write_text("deep\n")
    (root / ("n" * 120)).write_text("a name over 100 bytes: pax\n")
    (root / "naïve-ünïcode.txt").write_text("utf-8\n")
    (root / ODD).write_bytes(b"not utf-8\n")
    (root / "zero").write_bytes(b"")
    (deep / "zero").write_bytes(b"")
    os.symlink("t" * 150, root / "long-link")
    os.symlink(f"{LONG_DIR}/{LONG_DIR}/{LONG_DIR}/file.txt", root / "short-link")
    os.symlink(os.fsdecode(b"caf\xe9"), root / "odd-link")
    return root


def tree_of(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry beneath root: its kind and its contents or link target."""
    found: dict[str, tuple[str, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = os.fsencode(path.relative_to(root)).decode("latin-1")
            if path.is_symlink():
                found[rel] = ("link", os.fsencode(os.readlink(path)))
            elif path.is_dir():
                found[rel] = ("dir", b"")
            else:
                found[rel] = ("file", path.read_bytes())
    return found


def test_names_and_links_ustar_cannot_hold_go_through_pax(tmp_path: Path, odd_tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", odd_tree)])

    archive.extract(dest, written.size, tmp_path / "out")

    assert tree_of(tmp_path / "out" / "workspace") == tree_of(odd_tree)
    with tarfile.open(dest) as tar:  # Python's tarfile reads them the same
        members = {m.name: m for m in tar.getmembers()}
    assert members[f"workspace/{'n' * 120}"].size == len("a name over 100 bytes: pax\n")
    assert members["workspace/long-link"].linkname == "t" * 150
    assert members[f"workspace/{ODD}"].isreg()
    assert members["workspace/zero"].size == 0


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_extracts_the_same_tree(tmp_path: Path, odd_tree: Path, tree: Path) -> None:
    dest, _ = write(tmp_path, [("workspace", odd_tree), ("agents/a/home", tree)])
    (tmp_path / "gnu").mkdir()

    subprocess.run(["tar", "-xf", str(dest), "-C", str(tmp_path / "gnu")], check=True)

    assert tree_of(tmp_path / "gnu" / "workspace") == tree_of(odd_tree)
    assert (tmp_path / "gnu" / "agents/a/home/src/deep/data.bin").read_bytes() == (
        tree / "src/deep/data.bin"
    ).read_bytes()


@pytest.mark.parametrize(
    "name",
    ["a", "workspace/src/main.py", "x" * 100, f"{'p' * 150}/{'n' * 100}", f"{'p' * 155}/n"],
)
def test_a_ustar_header_is_the_one_tarfile_writes(name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mode, info.size, info.mtime, info.uname, info.gname = 0o640, 12345, 1764620000, "", ""
    # tarfile's pax format puts a name over 100 bytes in a pax header; ustar splits it.
    if len(name) <= 100:
        expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    else:
        expected = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")

    assert archive._ustar(name, 0o640, 12345, 1764620000, b"0", "") == expected


@pytest.mark.parametrize(
    ("name", "size", "mtime", "link"),
    [
        ("n" * 101, 0, 0, ""),  # one component over 100 bytes: no "/" to split at
        (f"{'p' * 156}/n", 0, 0, ""),  # a prefix over 155 bytes
        ("naïve", 0, 0, ""),
        (ODD, 0, 0, ""),
        ("link", 0, 0, "t" * 101),
        ("link", 0, 0, "ü"),
        ("big", 8**11, 0, ""),  # 8 GiB: more than 11 octal digits
        ("old", 0, -1, ""),
    ],
)
def test_what_ustar_cannot_hold_is_left_to_pax(name: str, size: int, mtime: int, link: str) -> None:
    assert archive._ustar(name, 0o644, size, mtime, b"0", link) is None


def test_the_archive_ends_with_two_zero_blocks(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])

    data = dest.read_bytes()

    assert written.size == len(data) and len(data) % 512 == 0
    assert data[-1024:] == bytes(1024) and data[-1536:-1024] != bytes(512)


def members_of(path: Path) -> list[archive.Member]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(archive.members(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def test_the_parser_reads_what_tarfile_writes(tmp_path: Path) -> None:
    """ustar headers, pax `x` records (long names, links) and a pax `g` header at the start."""
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}) as tar:
        for info, data in [
            (tarfile.TarInfo("meta.json"), b"{}"),
            (tarfile.TarInfo("n" * 150), b"long"),
            (tarfile.TarInfo("empty"), b""),
            (tarfile.TarInfo(ODD), b"odd"),
        ]:
            info.size, info.mtime = len(data), 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("l")
        link.type, link.linkname = tarfile.SYMTYPE, "t" * 200
        tar.addfile(link)
        folder = tarfile.TarInfo("dir")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o750
        tar.addfile(folder)

    found = members_of(path)

    assert [(m.name, m.kind, m.size) for m in found] == [
        ("meta.json", b"0", 2),
        ("n" * 150, b"0", 4),
        ("empty", b"0", 0),
        (ODD, b"0", 3),
        ("l", b"2", 0),
        ("dir", b"5", 0),
    ]
    data = path.read_bytes()
    assert data[found[1].offset : found[1].offset + 4] == b"long"
    assert found[4].link == "t" * 200 and found[5].mode == 0o750
    assert found[0].mtime == 1_700_000_000


def test_a_pax_size_is_read(tmp_path: Path) -> None:
    """A file of 8 GiB or more has its size in a pax record: here its data is missing."""
    info = tarfile.TarInfo("big")
    info.size = 8**11 + 1
    path = tmp_path / "big.tar"
    path.write_bytes(info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))

    with pytest.raises(ValueError, match=f"big at byte 1024 has {8**11 + 1} bytes of data"):
        members_of(path)


def header_at(data: bytearray, offset: int, **fields: bytes) -> None:
    """Change fields of the header at offset, and its checksum to match."""
    where = {"size": (124, 12), "kind": (156, 1)}
    for key, value in fields.items():
        start, length = where[key]
        data[offset + start : offset + start + length] = value.ljust(length, b"\0")
    block = data[offset : offset + 512]
    block[148:156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(block)


def second_header(path: Path) -> int:
    return members_of(path)[1].offset - 512


def test_a_header_with_a_bad_checksum_is_refused(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    data = bytearray(dest.read_bytes())
    data[second_header(dest) + 5] ^= 0x01  # one bit of a name
    dest.write_bytes(data)

    with pytest.raises(Damaged, match="cannot be read: a header with a bad checksum at byte"):
        archive.extract(dest, written.size, tmp_path / "out")


def test_a_header_claiming_data_beyond_the_end_is_refused(tmp_path: Path, tree: Path) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    data = bytearray(dest.read_bytes())
    last = members_of(dest)[-1].offset - 512
    header_at(data, last, kind=b"0", size=b"%011o" % len(data))
    dest.write_bytes(data)

    with pytest.raises(Damaged, match="beyond the archive's end"):
        archive.extract(dest, written.size, tmp_path / "out")


@pytest.mark.parametrize("size", [b"12x", b"-1", b"9"])
def test_a_header_with_a_bad_number_is_refused(tmp_path: Path, tree: Path, size: bytes) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    data = bytearray(dest.read_bytes())
    header_at(data, second_header(dest), size=size)
    dest.write_bytes(data)

    with pytest.raises(Damaged, match="cannot be read: a header with a bad number at byte"):
        archive.extract(dest, written.size, tmp_path / "out")


@pytest.mark.parametrize(
    ("cut", "message"), [(1024, "without its end blocks"), (512, "a lone zero block")]
)
def test_an_archive_without_its_two_end_blocks_is_refused(
    tmp_path: Path, tree: Path, cut: int, message: str
) -> None:
    dest, written = write(tmp_path, [("workspace", tree)])
    with open(dest, "r+b") as handle:
        handle.truncate(written.size - cut)
        if cut == 512:  # a block of data where the second end block was
            handle.seek(0, os.SEEK_END)
            handle.write(b"x" * 512)

    with pytest.raises(Damaged, match=message):
        archive.extract(dest, written.size - cut + (512 if cut == 512 else 0), tmp_path / "out")


@pytest.mark.parametrize(
    "records",
    # longer than the header, no length, no "=", shorter than the record
    [b"99 path=x\n", b"x path=y\n", b"8 pathy\n", b"5 path=x\n"],
)
def test_a_bad_pax_record_is_refused(tmp_path: Path, records: bytes) -> None:
    path = tmp_path / "pax.tar"
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, len(records)
    body = records + bytes(-len(records) % 512)
    path.write_bytes(pax.tobuf(tarfile.USTAR_FORMAT) + body + tarfile.TarInfo("f").tobuf())

    with pytest.raises(ValueError, match="pax"):
        members_of(path)


# The writer's buffers, and its fallback without O_DIRECT --------------------------------------


@pytest.mark.parametrize("direct", [True, False])
def test_members_across_buffer_boundaries_come_out_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd_tree: Path, direct: bool
) -> None:
    monkeypatch.setattr(archive, "CHUNK", 4096)  # many buffers: members span them
    monkeypatch.setattr(archive, "FLUSH_EVERY", 8192)
    if not direct:
        monkeypatch.setattr(archive, "_DIRECT", 0)
    (odd_tree / "big.bin").write_bytes(os.urandom(50_000))
    (odd_tree / ("p" * 200)).write_bytes(os.urandom(5000))

    dest, written = write(tmp_path, [("workspace", odd_tree)])
    archive.extract(dest, written.size, tmp_path / "out")

    assert tree_of(tmp_path / "out" / "workspace") == tree_of(odd_tree)
    with tarfile.open(dest) as tar:
        assert len(tar.getmembers()) == len(tree_of(odd_tree)) + 2  # meta.json, workspace


def test_a_direct_write_refused_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: Path
) -> None:
    monkeypatch.setattr(archive, "CHUNK", 4096)
    real = os.write
    refused: list[int] = []

    def write_once_refused(fd: int, data: bytes) -> int:
        if not refused and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write_once_refused)
    dest, written = write(tmp_path, [("workspace", tree)])
    archive.extract(dest, written.size, tmp_path / "out")

    assert refused
    assert (tmp_path / "out/workspace/src/deep/data.bin").read_bytes() == (
        tree / "src/deep/data.bin"
    ).read_bytes()


def test_a_failed_write_of_a_buffer_fails_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: Path
) -> None:
    monkeypatch.setattr(archive, "CHUNK", 4096)
    real = os.write

    def full(fd: int, data: bytes) -> int:
        if threading.current_thread().name == "klaudio-archive":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        archive.write(tmp_path / "cp.tar", [("workspace", tree)], {})

    assert list(tmp_path.iterdir()) == [tree]
    assert not any(t.name == "klaudio-archive" for t in threading.enumerate())


# A restore's swap: the replaced trees go aside, removed later -----------------------------------


def test_a_replaced_tree_goes_aside_and_is_removed_later(tmp_path: Path) -> None:
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / "old.txt").write_text("old")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "new.txt").write_text("new")
    doomed: list[Path] = []

    checkpoints._replace(tmp_path / "new", tmp_path / "workspace", doomed)

    assert (tmp_path / "workspace" / "new.txt").read_text() == "new"
    (aside,) = doomed
    assert checkpoints.ASIDE.fullmatch(aside.name) and aside.parent == tmp_path
    assert (aside / "old.txt").read_text() == "old"
    checkpoints.remove_later(lambda: doomed, "test").join(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["workspace"]


def test_the_sweep_finds_what_a_crash_left_aside(tmp_path: Path) -> None:
    task = tmp_path / "tasks" / "t1"
    left = [
        task / ".workspace.0123456789ab.old",
        task / ".restore.tmp.0123456789ab.old",
        task / "agents" / "w" / ".home.0123456789ab.old",
    ]
    for path in left:
        (path / "sub").mkdir(parents=True)
    kept = [task / "workspace", task / "agents" / "w" / "home", task / ".workspace.old.txt"]
    for path in kept:
        path.mkdir(parents=True)
    os.symlink(tmp_path, task / "agents" / "link")  # not followed

    assert sorted(checkpoints.leftovers(tmp_path / "tasks")) == sorted(left)
    checkpoints.remove_later(lambda: checkpoints.leftovers(tmp_path / "tasks"), "test").join(10)
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)
