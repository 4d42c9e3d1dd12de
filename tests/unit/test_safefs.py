"""safefs as an agent would attack it: links, FIFOs, devices and races never lead outside a root."""

from __future__ import annotations

import os
import resource
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from klaudiod import safefs
from klaudiod.safefs import Refused
from tests.needs import need

# A planted FIFO must never block a call: a hang fails the test instead of the suite.
pytestmark = pytest.mark.timeout(10)

SECRET = b"host secret\n"
LINKS = ["to-file", "to-dir", "dangling", "proc-environ", "proc-root"]
NOT_REGULAR = [*LINKS, "fifo", "sock", "dir"]
# Paths through a planted link, each with the component that must be refused.
THROUGH = {
    "to-dir/secret": "to-dir",
    "to-dir/sub/deeper": "to-dir",
    "dangling/x": "dangling",
    "proc-root/etc/passwd": "proc-root",
    "to-file/x": "to-file",
    "dir/inner-link/secret": "dir/inner-link",
}
ESCAPING = ["../outside/secret", "dir/../../outside/secret", "/etc/passwd", "a\0b", "a\nb"]


@dataclass
class Scene:
    root: Path  # the agent's tree
    outside: Path  # a host directory the agent must never reach

    def state(self) -> dict[str, tuple[Any, ...]]:
        """Everything about the outside tree that a stray write, chown or removal would change."""
        found: dict[str, tuple[Any, ...]] = {}
        for path in [self.outside, *sorted(self.outside.rglob("*"))]:
            st = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
        return found


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    """A root full of planted traps; on teardown, the outside tree must be exactly as it was."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "sub" / "deeper").write_bytes(SECRET)
    root.mkdir()
    (root / "file.txt").write_bytes(b"0123456789")
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_bytes(b"inner")
    (root / "dir" / "inner-link").symlink_to(outside)
    (root / "to-file").symlink_to(outside / "secret")
    (root / "to-dir").symlink_to(outside)
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    (root / "proc-environ").symlink_to("/proc/self/environ")
    (root / "proc-root").symlink_to("/proc/1/root")
    os.mkfifo(root / "fifo")
    cwd = os.getcwd()
    os.chdir(root)  # a relative name: a socket's path may hold only 107 bytes
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("sock")
    finally:
        os.chdir(cwd)
    scene = Scene(root, outside)
    before = scene.state()
    yield scene
    assert scene.state() == before, "something outside the root changed"
    assert not (tmp_path / "nowhere").exists()


@pytest.fixture
def device(scene: Scene) -> str:
    """A character device in the root (the null device, harmless if it ever were opened)."""
    need(os.getuid() == 0, "root, to make a device node")
    try:
        os.mknod(scene.root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        need(False, "a machine that lets root make device nodes")
    return "null"


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    """A place for 2,000-level trees, with fewer fds allowed than levels.

    Removed afterwards by rm: pytest's own cleanup recurses, and would fail on it next session.
    """
    base = tmp_path / "deep"
    (base / "root").mkdir(parents=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    try:
        yield base
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        subprocess.run(["rm", "-rf", "--", str(base)], check=True)


def make_deep(base: Path, depth: int) -> None:
    """base/d/d/.../d, depth levels, each with a file: deeper than PATH_MAX allows naming."""
    fd = os.open(base, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    os.close(fd)


def deepest(base: Path, depth: int) -> os.stat_result:
    fd = os.open(base, os.O_RDONLY)
    for _ in range(depth):
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    try:
        return os.stat("f", dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def stream(root: Path, rel: str) -> bytes:
    with safefs.open_read(root, rel) as file:
        return file.read()


def enter(root: Path, rel: str, create: bool = False) -> os.stat_result:
    with safefs.directory(root, rel, create=create) as fd:
        return os.fstat(fd)


READERS: dict[str, Callable[[Path, str], object]] = {
    "read_bytes": lambda root, rel: safefs.read_bytes(root, rel, 1 << 20),
    "read_text": lambda root, rel: safefs.read_text(root, rel, 1 << 20),
    "read_at": lambda root, rel: safefs.read_at(root, rel, 0, 100),
    "size": safefs.size,
    "open_read": stream,
}
EVERY = {
    **READERS,
    "kind": safefs.kind,
    "write_bytes": lambda root, rel: safefs.write_bytes(root, rel, b"x"),
    "write_text": lambda root, rel: safefs.write_text(root, rel, "x", parents=False),
    "remove": safefs.remove,
    "directory": enter,
    "directory-create": lambda root, rel: enter(root, rel, create=True),
}


# Paths given by anyone.


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("a", ("a",)),
        ("a/b/c.txt", ("a", "b", "c.txt")),
        ("./a//b/", ("a", "b")),
        ("a/./b", ("a", "b")),
        ("..a/b..", ("..a", "b..")),
        ("é t\tx", ("é t\tx",)),
        ("n" * 255, ("n" * 255,)),
    ],
)
def test_parts_splits_relative_paths(rel: str, expected: tuple[str, ...]) -> None:
    assert safefs.parts(rel) == expected


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("./", "empty"),
        ("..", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a\0b", "NUL or newline"),
        ("a\nb", "NUL or newline"),
        ("n" * 256, "longer than 255"),
        ("é" * 128, "longer than 255"),  # 256 bytes in 128 characters
        ("a/" * 2049, "longer than 4096"),
        ("\udcff\ud800", "not encodable"),
    ],
)
def test_parts_refuses_with_a_one_line_message(rel: str, why: str) -> None:
    with pytest.raises(Refused, match=why) as refused:
        safefs.parts(rel)
    assert "\n" not in str(refused.value) and "\0" not in str(refused.value)


def test_refusals_escape_control_characters_in_names(scene: Scene) -> None:
    os.mkfifo(scene.root / "evil\x1b[2J\u202e")
    with pytest.raises(Refused) as refused:
        safefs.read_bytes(scene.root, "evil\x1b[2J\u202e", 100)
    assert str(refused.value) == "evil\\x1b[2J\\u202e is a FIFO, not a regular file"


@pytest.mark.parametrize("rel", ESCAPING)
@pytest.mark.parametrize("call", EVERY.values(), ids=EVERY)
def test_every_function_refuses_escaping_paths(scene: Scene, call: Any, rel: str) -> None:
    with pytest.raises(Refused):
        call(scene.root, rel)


@pytest.mark.parametrize("call", EVERY.values(), ids=EVERY)
def test_every_function_refuses_a_root_that_is_a_link(scene: Scene, call: Any) -> None:
    link = scene.root.parent / "root-link"
    link.symlink_to(scene.outside)
    with pytest.raises(Refused, match="root-link is a symbolic link, not a directory"):
        call(link, "secret")


@pytest.mark.parametrize(
    "call",
    [
        lambda root: list(safefs.walk(root)),
        lambda root: safefs.chown_tree(root, os.getuid(), os.getgid()),
        lambda root: safefs.copy_tree(root, root.parent / "copy"),
    ],
    ids=["walk", "chown_tree", "copy_tree"],
)
def test_tree_functions_refuse_a_root_that_is_a_link(scene: Scene, call: Any) -> None:
    link = scene.root.parent / "root-link"
    link.symlink_to(scene.outside)
    with pytest.raises(Refused, match="root-link is a symbolic link"):
        call(link)


@pytest.mark.parametrize(("rel", "link"), THROUGH.items())
@pytest.mark.parametrize("call", EVERY.values(), ids=EVERY)
def test_every_function_refuses_a_link_in_a_parent(
    scene: Scene, call: Any, rel: str, link: str
) -> None:
    with pytest.raises(Refused) as refused:
        call(scene.root, rel)
    assert str(refused.value) == f"{rel}: '{link}' is a symbolic link"


# Reading.


@pytest.mark.parametrize("rel", NOT_REGULAR)
@pytest.mark.parametrize("read", READERS.values(), ids=READERS)
def test_readers_refuse_what_is_not_a_regular_file(scene: Scene, read: Any, rel: str) -> None:
    with pytest.raises(Refused, match=f"^{rel} is an? [a-zA-Z ]+, not a regular file$") as refused:
        read(scene.root, rel)
    assert str(scene.outside) not in str(refused.value)


@pytest.mark.parametrize("read", READERS.values(), ids=READERS)
def test_readers_refuse_a_device(scene: Scene, device: str, read: Any) -> None:
    with pytest.raises(Refused, match="null is a character device, not a regular file"):
        read(scene.root, device)


@pytest.mark.parametrize("read", READERS.values(), ids=READERS)
def test_readers_refuse_a_fifo_at_once(scene: Scene, read: Any) -> None:
    started = time.monotonic()
    with pytest.raises(Refused, match="FIFO"):
        read(scene.root, "fifo")
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("rel", ["missing.txt", "missing/dir/x.txt"])
@pytest.mark.parametrize("read", READERS.values(), ids=READERS)
def test_readers_raise_file_not_found(scene: Scene, read: Any, rel: str) -> None:
    with pytest.raises(FileNotFoundError, match=rel):
        read(scene.root, rel)


def test_a_regular_file_reads_back(scene: Scene) -> None:
    root = scene.root
    assert safefs.read_bytes(root, "file.txt", 10) == b"0123456789"
    assert safefs.read_bytes(root, "./dir//inner.txt", 100) == b"inner"
    assert safefs.read_text(root, "file.txt", 10) == "0123456789"
    assert safefs.size(root, "file.txt") == 10
    assert stream(root, "file.txt") == b"0123456789"


def test_read_bytes_refuses_a_file_over_the_limit(scene: Scene) -> None:
    with pytest.raises(Refused, match=r"^file\.txt is larger than 9 bytes$"):
        safefs.read_bytes(scene.root, "file.txt", 9)


def test_read_text_replaces_bad_utf8(scene: Scene) -> None:
    (scene.root / "bad").write_bytes(b"ok \xff\xfe end")
    assert safefs.read_text(scene.root, "bad", 100) == "ok \ufffd\ufffd end"


def test_read_at_reads_from_an_offset(scene: Scene) -> None:
    root = scene.root
    assert safefs.read_at(root, "file.txt", 0, 4) == b"0123"
    assert safefs.read_at(root, "file.txt", 8, 4) == b"89"
    assert safefs.read_at(root, "file.txt", 10, 4) == b""
    assert safefs.read_at(root, "file.txt", 100, 4) == b""
    with pytest.raises(ValueError, match="negative"):
        safefs.read_at(root, "file.txt", -1, 4)


def test_kind_names_each_entry_without_following_it(scene: Scene) -> None:
    expected = {
        "file.txt": "file",
        "dir": "dir",
        "fifo": "fifo",
        "sock": "socket",
        "missing": "missing",
        "missing/x": "missing",
        **dict.fromkeys(LINKS, "link"),
    }
    assert {rel: safefs.kind(scene.root, rel) for rel in expected} == expected


def test_kind_names_devices(scene: Scene, device: str) -> None:
    os.mknod(scene.root / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    assert safefs.kind(scene.root, device) == "char-device"
    assert safefs.kind(scene.root, "loop") == "block-device"


# Directories.


def test_directory_opens_root_and_subdirectories(scene: Scene) -> None:
    assert enter(scene.root, "").st_ino == scene.root.stat().st_ino
    assert enter(scene.root, "dir").st_ino == (scene.root / "dir").stat().st_ino


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("to-dir", "to-dir is a symbolic link, not a directory"),
        ("proc-root", "proc-root is a symbolic link, not a directory"),
        ("dangling", "dangling is a symbolic link, not a directory"),
        ("sock", "sock is a socket, not a directory"),
        ("file.txt", "file.txt is a regular file, not a directory"),
        ("fifo", "fifo is a FIFO, not a directory"),
        ("file.txt/x", "file.txt/x: 'file.txt' is a regular file"),
        ("dir/inner-link", "dir/inner-link is a symbolic link, not a directory"),
    ],
)
@pytest.mark.parametrize("create", [False, True])
def test_directory_refuses_links_and_non_directories(
    scene: Scene, rel: str, message: str, create: bool
) -> None:
    with pytest.raises(Refused) as refused:
        enter(scene.root, rel, create=create)
    assert str(refused.value) == message


def test_directory_creates_missing_components(scene: Scene) -> None:
    with safefs.directory(scene.root, "new/a/b", create=True, mode=0o750) as fd:
        assert stat.S_ISDIR(os.fstat(fd).st_mode)
    assert (scene.root / "new" / "a" / "b").is_dir()
    with pytest.raises(FileNotFoundError):
        enter(scene.root, "other/a")


def test_directory_closes_its_fds(scene: Scene) -> None:
    before = open_fds()
    enter(scene.root, "dir")
    with pytest.raises(Refused):
        enter(scene.root, "to-dir/sub")
    assert open_fds() == before


# Writing.


@pytest.mark.parametrize("rel", [*LINKS, "fifo", "sock"])
def test_write_replaces_what_is_planted_rather_than_writing_through(scene: Scene, rel: str) -> None:
    safefs.write_bytes(scene.root, rel, b"new")
    assert stat.S_ISREG((scene.root / rel).lstat().st_mode)
    assert (scene.root / rel).read_bytes() == b"new"


def test_write_replaces_a_device(scene: Scene, device: str) -> None:
    safefs.write_text(scene.root, device, "new")
    assert (scene.root / device).read_text() == "new"


def test_write_refuses_a_directory_and_leaves_no_temporary_file(scene: Scene) -> None:
    with pytest.raises(Refused, match=r"^dir is a directory, not a regular file$"):
        safefs.write_bytes(scene.root, "dir", b"x")
    assert not [name for name in os.listdir(scene.root) if name.startswith(".klaudio-")]


def test_write_is_atomic_and_sets_the_exact_mode(scene: Scene) -> None:
    old = os.open(scene.root / "file.txt", os.O_RDONLY)
    try:
        safefs.write_text(scene.root, "file.txt", "replaced", mode=0o640)
        assert os.pread(old, 100, 0) == b"0123456789"  # a reader never sees a half-written file
    finally:
        os.close(old)
    assert (scene.root / "file.txt").read_text() == "replaced"
    assert stat.S_IMODE((scene.root / "file.txt").stat().st_mode) == 0o640


def test_write_makes_parents_only_when_asked(scene: Scene) -> None:
    safefs.write_text(scene.root, "a/b/c.txt", "deep")
    assert (scene.root / "a" / "b" / "c.txt").read_text() == "deep"
    with pytest.raises(FileNotFoundError):
        safefs.write_text(scene.root, "x/y.txt", "no", parents=False)
    assert not (scene.root / "x").exists()


# Removing.


@pytest.mark.parametrize("rel", [*LINKS, "fifo", "sock", "file.txt", "dir"])
def test_remove_removes_the_entry_itself(scene: Scene, rel: str) -> None:
    safefs.remove(scene.root, rel)
    assert safefs.kind(scene.root, rel) == "missing"


def test_remove_removes_a_device(scene: Scene, device: str) -> None:
    safefs.remove(scene.root, device)
    assert not os.path.lexists(scene.root / device)


def test_remove_of_what_is_missing_is_fine(scene: Scene) -> None:
    safefs.remove(scene.root, "missing")
    safefs.remove(scene.root, "missing/deeper/x")


def test_remove_tree_removes_everything_but_what_links_point_to(scene: Scene) -> None:
    """The fixture checks the outside tree, which links in the removed tree point into."""
    safefs.remove_tree(scene.root)
    assert not os.path.lexists(scene.root)
    safefs.remove_tree(scene.root)  # missing is fine


def test_remove_tree_refuses_a_link(scene: Scene) -> None:
    link = scene.root.parent / "root-link"
    link.symlink_to(scene.outside)
    with pytest.raises(Refused, match="root-link is a symbolic link"):
        safefs.remove_tree(link)
    assert link.is_symlink()


def test_remove_tree_refuses_dot_dot(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(Refused, match="not a removable directory"):
        safefs.remove_tree(tmp_path / "a" / "..")
    assert (tmp_path / "a").is_dir()


def test_deep_trees_are_removed(deep: Path) -> None:
    make_deep(deep / "root", 2000)
    safefs.remove(deep / "root", "d")
    assert os.listdir(deep / "root") == []
    make_deep(deep / "root", 2000)
    safefs.remove_tree(deep / "root")
    assert not (deep / "root").exists()


# Re-owning.


def target_ids() -> tuple[int, int]:
    """A stranger's ids when root; else our own, which still walks the whole tree."""
    return (4321, 4322) if os.getuid() == 0 else (os.getuid(), os.getgid())


def test_chown_tree_reowns_links_not_their_targets(scene: Scene) -> None:
    uid, gid = target_ids()
    safefs.chown_tree(scene.root, uid, gid)
    for path in [scene.root, *scene.root.rglob("*")]:
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (uid, gid), path


def test_chown_tree_reowns_a_deep_tree(deep: Path) -> None:
    uid, gid = target_ids()
    make_deep(deep / "root", 2000)
    safefs.chown_tree(deep / "root", uid, gid)
    st = deepest(deep / "root", 2000)
    assert (st.st_uid, st.st_gid) == (uid, gid)


# Walking.


def test_walk_reports_links_as_links_and_directories_first(scene: Scene) -> None:
    found = dict(safefs.walk(scene.root))
    assert list(found) == [
        "dangling",
        "dir",
        "fifo",
        "file.txt",
        "proc-environ",
        "proc-root",
        "sock",
        "to-dir",
        "to-file",
        "dir/inner-link",
        "dir/inner.txt",
    ]
    assert all(stat.S_ISLNK(found[rel].st_mode) for rel in [*LINKS, "dir/inner-link"])
    assert stat.S_ISFIFO(found["fifo"].st_mode)
    assert found["file.txt"].st_size == 10


def test_walk_closes_its_fds_when_left_early(scene: Scene) -> None:
    before = open_fds()
    entries = safefs.walk(scene.root)
    next(entries)
    assert open_fds() > before
    entries.close()
    assert open_fds() == before


def branching(root: Path) -> set[str]:
    """A tree deeper than the walk keeps fds for, with siblings at each level; its paths."""
    expected: set[str] = set()
    rel = ""
    for level in range(8):
        for name in ("a", "b", "z.txt"):
            expected.add(f"{rel}{name}")
            if name.endswith(".txt"):
                (root / rel / name).write_text(str(level))
            else:
                (root / rel / name).mkdir()
        (root / rel / "b" / "leaf.txt").write_text("leaf")
        expected.add(f"{rel}b/leaf.txt")
        rel = f"{rel}a/"
    return expected


@pytest.mark.parametrize("keep", [2, 3, 64])
def test_tree_functions_agree_however_few_fds_they_keep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: int
) -> None:
    monkeypatch.setattr(safefs, "_KEEP_OPEN", keep)
    root = tmp_path / "root"
    root.mkdir()
    expected = branching(root)
    before = open_fds()
    assert {rel for rel, _ in safefs.walk(root)} == expected
    safefs.copy_tree(root, tmp_path / "copy")
    assert {rel for rel, _ in safefs.walk(tmp_path / "copy")} == expected
    safefs.chown_tree(root, *target_ids())
    safefs.remove(tmp_path, "copy")
    assert not (tmp_path / "copy").exists()
    assert open_fds() == before


def test_walk_of_a_deep_tree(deep: Path) -> None:
    make_deep(deep / "root", 2000)
    assert sum(1 for _ in safefs.walk(deep / "root")) == 4000


def test_walk_stays_beneath_root_when_an_agent_moves_a_directory_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Re-entering a shelved directory by ".." must check it is the same one: moved up, a
    directory's ".." is elsewhere, and two levels up from the root lies the host."""
    monkeypatch.setattr(safefs, "_KEEP_OPEN", 2)
    root = tmp_path / "root"
    (root / "a" / "b" / "c" / "d" / "e").mkdir(parents=True)
    (root / "a" / "b" / "c" / "d" / "e" / "f").write_text("f")
    (root / "a" / "b" / "zz").mkdir()
    (root / "a" / "b" / "c" / "zz").mkdir()
    (tmp_path / "zz").mkdir()  # what a ".." past the root would find
    (tmp_path / "zz" / "host-file").write_text("host")
    seen = []
    for rel, _ in safefs.walk(root):
        seen.append(rel)
        if rel == "a/b/c/d/e/f":
            (root / "a" / "b" / "c" / "d").rename(root / "moved")
    assert "a/b/zz" in seen and "a/b/c/zz" in seen
    assert not [rel for rel in seen if "host-file" in rel]


RACERS: dict[str, Callable[[Path], object]] = {
    "walk": lambda root: list(safefs.walk(root)),
    "chown_tree": lambda root: safefs.chown_tree(root, *target_ids()),
    "copy_tree": lambda root: safefs.copy_tree(root, root.parent / "copy"),
    "remove_tree": safefs.remove_tree,
}


@pytest.mark.parametrize("call", RACERS.values(), ids=RACERS)
def test_tree_functions_survive_entries_swapped_after_the_listing(
    scene: Scene, monkeypatch: pytest.MonkeyPatch, call: Any
) -> None:
    """Right after the root is listed, a file vanishes and a directory becomes a host link."""
    listing = safefs._scan
    swapped: list[bool] = []

    def swap_after_listing(fd: int) -> list[os.DirEntry[str]]:
        entries = listing(fd)
        if not swapped:
            swapped.append(True)
            (scene.root / "file.txt").unlink()
            (scene.root / "dir").rename(scene.root.parent / "moved-dir")
            (scene.root / "dir").symlink_to(scene.outside)
        return entries

    monkeypatch.setattr(safefs, "_scan", swap_after_listing)
    result = call(scene.root)
    assert swapped and "secret" not in repr(result)
    assert not list(scene.root.parent.rglob("copy/**/secret"))


# Copying.


def test_copy_tree_keeps_links_as_links_and_skips_special_files(scene: Scene) -> None:
    dst = scene.root.parent / "copy"
    os.chmod(scene.root / "file.txt", 0o600)
    os.utime(scene.root / "file.txt", ns=(1_000_000_000, 2_000_000_000))
    os.chmod(scene.root / "dir", 0o750)
    assert safefs.copy_tree(scene.root, dst) == ["fifo", "sock"]
    for link in [*LINKS, "dir/inner-link"]:
        assert os.readlink(dst / link) == os.readlink(scene.root / link)
    copied = (dst / "file.txt").stat()
    assert (dst / "file.txt").read_bytes() == b"0123456789"
    assert (stat.S_IMODE(copied.st_mode), copied.st_mtime_ns) == (0o600, 2_000_000_000)
    assert stat.S_IMODE((dst / "dir").stat().st_mode) == 0o750
    assert (dst / "dir" / "inner.txt").read_bytes() == b"inner"
    assert not [path for path in dst.rglob("*") if path.name in ("secret", "sub")]


def test_copy_tree_skips_devices(scene: Scene, device: str) -> None:
    assert device in safefs.copy_tree(scene.root, scene.root.parent / "copy")


def test_copy_tree_refuses_an_existing_destination(scene: Scene) -> None:
    with pytest.raises(FileExistsError):
        safefs.copy_tree(scene.root, scene.outside)


def test_copy_tree_copies_a_deep_tree(deep: Path) -> None:
    make_deep(deep / "root", 2000)
    assert safefs.copy_tree(deep / "root", deep / "copy") == []
    assert stat.S_ISREG(deepest(deep / "copy", 2000).st_mode)
