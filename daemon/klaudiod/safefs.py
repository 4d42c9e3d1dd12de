"""Link-safe access to trees an agent can write: resolve beneath a trusted root, follow no link."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from klaudio.errors import InvalidArgument

# Every function takes a trusted root (a directory the daemon made and no agent can replace)
# and a relative path checked by parts(). Each component is opened beneath the last with
# O_NOFOLLOW, so no link is followed anywhere; what fails a check raises Refused, whose one-line
# message names the path and why. A missing file raises FileNotFoundError: callers decide.

MAX_NAME = 255  # bytes in one component (NAME_MAX)
MAX_PATH = 4096  # bytes in a whole path (PATH_MAX)

# O_NONBLOCK: opening a planted FIFO returns at once instead of waiting for a writer.
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_TRUSTED = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # only for the daemon's own directories
_CHUNK = 1 << 20
# A walk keeps the fds of this many levels open and re-enters deeper ones by "..": an agent's
# very deep tree exhausts neither fds nor the stack. (os.fwalk and shutil.rmtree recurse and
# fail at about 1,000 levels; Python 3.11's rmtree also opens directories without O_NONBLOCK,
# so a directory swapped for a FIFO could hang it.)
_KEEP_OPEN = 64
_GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR)  # vanished or replaced during a walk

_KINDS = {
    stat.S_IFREG: ("file", "a regular file"),
    stat.S_IFDIR: ("dir", "a directory"),
    stat.S_IFLNK: ("link", "a symbolic link"),
    stat.S_IFIFO: ("fifo", "a FIFO"),
    stat.S_IFSOCK: ("socket", "a socket"),
    stat.S_IFCHR: ("char-device", "a character device"),
    stat.S_IFBLK: ("block-device", "a block device"),
}


class Refused(InvalidArgument):
    """A path that was refused: the message names the relative path and why."""


def parts(rel: str) -> tuple[str, ...]:
    """The components of a relative POSIX path given by anyone, without "." and empty ones.

    Raises:
        Refused: empty or absolute, with "..", NUL or newline, or a name or path too long.
    """
    names = _components(rel)
    if not names:
        raise Refused(f"'{_show(rel)}': an empty path is not allowed")
    return names


@contextmanager
def directory(root: Path, rel: str = "", create: bool = False, mode: int = 0o755) -> Iterator[int]:
    """A dir fd of root/rel ("" for root itself), opened link-safely; closed on exit.

    Args:
        root: the trusted root; it may not be a link either.
        rel: the path beneath root.
        create: make missing directories, with mode less the umask.
        mode: permission bits of the directories made.

    Raises:
        Refused: a component is a link or not a directory.
        FileNotFoundError: a component is missing and create is false.
    """
    names = _components(rel)
    fd = _open_dirs(root, names, len(names), create, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def kind(root: Path, rel: str) -> str:
    """What is at rel, not followed: "file", "dir", "link", "fifo", "socket" or "missing".

    Also "char-device" or "block-device"; "missing" too when a parent is missing.
    """
    names = parts(rel)
    try:
        with _parent(root, names) as fd:
            return _kind(os.lstat(names[-1], dir_fd=fd).st_mode)[0]
    except FileNotFoundError:
        return "missing"


def read_bytes(root: Path, rel: str, limit: int) -> bytes:
    """The contents of the regular file rel; Refused if it holds more than limit bytes."""
    names = parts(rel)
    with _regular(root, names) as (fd, st):
        data = bytearray()
        # Read to the end, not st_size bytes: the file may grow meanwhile.
        while st.st_size <= limit and len(data) <= limit:
            chunk = os.read(fd, min(limit + 1 - len(data), _CHUNK))
            if not chunk:
                return bytes(data)
            data += chunk
    raise Refused(f"{_show('/'.join(names))} is larger than {limit} bytes")


def read_text(root: Path, rel: str, limit: int) -> str:
    """The contents of the regular file rel as UTF-8, bad bytes replaced; see read_bytes."""
    return read_bytes(root, rel, limit).decode("utf-8", errors="replace")


def read_at(root: Path, rel: str, offset: int, size: int) -> bytes:
    """Up to size bytes from offset of the regular file rel; b"" at or after its end."""
    if offset < 0 or size < 0:
        raise ValueError(f"negative offset {offset} or size {size}")
    with _regular(root, parts(rel)) as (fd, _):
        return os.pread(fd, size, offset)


def size(root: Path, rel: str) -> int:
    """The size of the regular file rel (from lstat: no need to open it)."""
    names = parts(rel)
    with _parent(root, names) as fd:
        try:
            st = os.lstat(names[-1], dir_fd=fd)
        except FileNotFoundError:
            raise _missing(names) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not(names, len(names), _kind(st.st_mode)[1], "a regular file")
    return st.st_size


@contextmanager
def open_read(root: Path, rel: str) -> Iterator[BinaryIO]:
    """The regular file rel, opened link-safely for streaming reads; closed on exit."""
    with _regular(root, parts(rel)) as (fd, _), open(fd, "rb", closefd=False) as file:
        yield file


def write_bytes(root: Path, rel: str, data: bytes, mode: int = 0o644, parents: bool = True) -> None:
    """Atomically make rel a regular file holding data; a link there is replaced, not followed.

    Args:
        root: the trusted root.
        rel: the path beneath root.
        data: the new contents.
        mode: the file's permission bits, exactly (no umask).
        parents: make missing parent directories (0o755).

    Raises:
        Refused: rel is a directory, or a parent is a link or not a directory.
        FileNotFoundError: a parent is missing and parents is false.
    """
    names = parts(rel)
    with _parent(root, names, create=parents) as fd:
        temp = f".klaudio-{secrets.token_hex(8)}.tmp"  # unguessable, so nobody plants it first
        out = os.open(temp, _NEW, 0o600, dir_fd=fd)
        try:
            try:
                _write_all(out, data)
                os.fchmod(out, mode)
                os.fsync(out)
            finally:
                os.close(out)
            # rename() replaces the entry at the name, whatever it is, and never follows it.
            os.replace(temp, names[-1], src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException as error:
            with suppress(OSError):
                os.unlink(temp, dir_fd=fd)
            if isinstance(error, IsADirectoryError):
                raise _not(names, len(names), "a directory", "a regular file") from None
            raise
        os.fsync(fd)


def write_text(root: Path, rel: str, text: str, mode: int = 0o644, parents: bool = True) -> None:
    """Atomically make rel a regular file holding text as UTF-8; see write_bytes."""
    write_bytes(root, rel, text.encode("utf-8"), mode, parents)


def remove(root: Path, rel: str) -> None:
    """Remove rel, not followed: a directory with all it holds. Missing is fine."""
    names = parts(rel)
    with suppress(FileNotFoundError), _parent(root, names) as fd:
        _remove(fd, names[-1])


def remove_tree(path: Path) -> None:
    """Remove the tree at path, whose parent the daemon owns; Refused if path is a link."""
    if path.name in ("", "..") or path.parent == path:
        raise Refused(f"{_show(str(path))}: not a removable directory")
    with suppress(FileNotFoundError):
        parent = os.open(path.parent, _TRUSTED)
        try:
            if stat.S_ISLNK(os.lstat(path.name, dir_fd=parent).st_mode):
                raise Refused(f"{_show(str(path))} is a symbolic link, not a directory")
            _remove(parent, path.name)
        finally:
            os.close(parent)


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give root and all beneath it to uid:gid; links are re-owned, not followed."""
    with closing(_tree([_open_root(root)])) as tree:
        for _, (fd,), subdirs in tree:
            os.chown(fd, uid, gid)  # the directory itself, through the fd it was opened as
            for entry in _scan(fd):
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(entry.name)
                else:
                    with suppress(FileNotFoundError):  # removed since the listing
                        os.chown(entry.name, uid, gid, dir_fd=fd, follow_symlinks=False)


def walk(root: Path) -> Generator[tuple[str, os.stat_result], None, None]:
    """Each entry beneath root as (relative path, lstat), a directory before its contents.

    Links are reported as links, never followed; a directory's entries come in name order.
    Closing the generator early releases its fds at once.
    """
    for entry in scan(root):
        yield entry.path, entry.stat


@dataclass(frozen=True)
class Entry:
    """An entry met by scan(): its path, lstat, name, and its directory's fd.

    dir_fd is valid until the scan moves on: open the entry with open_entry() meanwhile,
    which costs one openat instead of resolving the path from the root again.
    """

    path: str
    stat: os.stat_result
    name: str
    dir_fd: int


def scan(
    root: Path, enter: Callable[[Entry], bool] | None = None, rel: str = ""
) -> Generator[Entry, None, None]:
    """Each entry beneath root (or root/rel, reached link-safely), with its directory's fd.

    Entries come as walk() gives them; paths are relative to where the scan starts. enter,
    when given, is asked about each directory once it has been yielded: those it answers
    False for are not descended into.
    """
    start = _components(rel)
    with closing(_tree([_open_dirs(root, start, len(start), False, 0)])) as tree:
        for names, (fd,), subdirs in tree:
            prefix = "".join(f"{name}/" for name in names)
            for name in sorted(entry.name for entry in _scan(fd)):
                try:
                    st = os.lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    continue  # removed since the listing
                entry = Entry(prefix + name, st, name, fd)
                yield entry
                if stat.S_ISDIR(st.st_mode) and (enter is None or enter(entry)):
                    subdirs.append(name)


def open_entry(entry: Entry) -> int:
    """An fd of the regular file a scan met (the caller closes it).

    Raises:
        Refused: when it is no longer a regular file (replaced since it was listed).
        FileNotFoundError: when it is gone.
    """
    fd, _ = _open_file(entry.dir_fd, tuple(entry.path.split("/")))
    return fd


def read_link(entry: Entry) -> str:
    """The target text of a link a scan met (never followed)."""
    return os.readlink(entry.name, dir_fd=entry.dir_fd)


def copy_tree(src: Path, dst: Path) -> list[str]:
    """Copy the tree under src into dst, which this makes (its parent is trusted).

    Directories and regular files keep their permission bits and times; links are made anew
    with the same target text, never followed. FIFOs, sockets and devices are skipped.

    Returns:
        The relative paths skipped.
    """
    top = _open_root(src)
    try:
        stats: dict[tuple[str, ...], os.stat_result] = {(): os.fstat(top)}
        os.mkdir(dst, 0o700)
        out = os.open(dst, _DIR)
    except BaseException:
        os.close(top)
        raise

    def settle(fds: list[int], _: list[int] | None, rel: tuple[str, ...]) -> None:
        # Only once the copy is complete: adding entries would change the mtime.
        st = stats.pop(rel)
        os.chmod(fds[1], stat.S_IMODE(st.st_mode) & 0o777)
        os.utime(fds[1], ns=(st.st_atime_ns, st.st_mtime_ns))

    skipped: list[str] = []
    with closing(_tree([top, out], leave=settle)) as tree:
        for rel, (src_fd, dst_fd), subdirs in tree:
            for name in sorted(entry.name for entry in _scan(src_fd)):
                names = (*rel, name)
                try:
                    st = os.lstat(name, dir_fd=src_fd)
                    if stat.S_ISDIR(st.st_mode):
                        os.mkdir(name, 0o700, dir_fd=dst_fd)
                        stats[names] = st
                        subdirs.append(name)
                    elif stat.S_ISREG(st.st_mode):
                        _copy_file(src_fd, dst_fd, names)
                    elif stat.S_ISLNK(st.st_mode):
                        os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
                    else:
                        skipped.append("/".join(names))
                except FileNotFoundError:
                    continue  # removed since the listing
                except Refused:
                    skipped.append("/".join(names))  # no longer a regular file
    return skipped


# Resolution, one component at a time.


def _components(rel: str) -> tuple[str, ...]:
    if "\0" in rel or "\n" in rel:
        raise Refused(f"{_show(rel)}: NUL or newline in a path")
    if rel.startswith("/"):
        raise Refused(f"{_show(rel)}: an absolute path is not allowed")
    try:
        if len(os.fsencode(rel)) > MAX_PATH:
            raise Refused(f"{_show(rel)}: longer than {MAX_PATH} bytes")
    except UnicodeEncodeError:
        raise Refused(f"{_show(rel)}: not encodable as a file name") from None
    names = tuple(name for name in rel.split("/") if name not in ("", "."))
    for name in names:
        if name == "..":
            raise Refused(f"{_show(rel)}: '..' is not allowed")
        if len(os.fsencode(name)) > MAX_NAME:
            raise Refused(f"{_show(rel)}: a name longer than {MAX_NAME} bytes")
    return names


def _open_root(root: Path) -> int:
    try:
        return os.open(root, _DIR)
    except OSError as error:
        what = _what(root) if error.errno != errno.ENOENT else ""
        if what in ("", "a directory"):
            raise
        raise Refused(f"{_show(str(root))} is {what}, not a directory") from None


def _open_dirs(root: Path, names: tuple[str, ...], count: int, create: bool, mode: int) -> int:
    """A dir fd of root joined with names[:count]."""
    top = _open_root(root)
    if count == 0:
        return top
    try:
        return _descend(top, names, count, create, mode)
    finally:
        os.close(top)


def _descend(fd: int, names: tuple[str, ...], count: int, create: bool, mode: int) -> int:
    """A new dir fd of names[:count] (count >= 1) beneath fd, which stays open."""
    current = _open_dir(fd, names, 1, create, mode)
    try:
        for depth in range(2, count + 1):
            child = _open_dir(current, names, depth, create, mode)
            os.close(current)
            current = child
    except BaseException:
        os.close(current)
        raise
    return current


def _open_dir(fd: int, names: tuple[str, ...], depth: int, create: bool, mode: int) -> int:
    """A dir fd of names[depth - 1] beneath fd (names: the whole path, for messages)."""
    name = names[depth - 1]
    try:
        return os.open(name, _DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise _missing(names) from None
    except OSError:
        what = _what(name, fd)
        if what in ("", "a directory"):
            raise  # replaced meanwhile: a race, reported as it happened
        raise _not(names, depth, what, "a directory") from None
    with suppress(FileExistsError):  # made by someone else meanwhile: the open checks it
        os.mkdir(name, mode, dir_fd=fd)
    return _open_dir(fd, names, depth, False, mode)


@contextmanager
def _parent(root: Path, names: tuple[str, ...], create: bool = False) -> Iterator[int]:
    fd = _open_dirs(root, names, len(names) - 1, create, 0o755)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _regular(root: Path, names: tuple[str, ...]) -> Iterator[tuple[int, os.stat_result]]:
    with _parent(root, names) as parent:
        fd, st = _open_file(parent, names)
    try:
        yield fd, st
    finally:
        os.close(fd)


def _open_file(fd: int, names: tuple[str, ...]) -> tuple[int, os.stat_result]:
    """An fd and fstat of the regular file names[-1] beneath fd."""
    try:
        file = os.open(names[-1], _FILE, dir_fd=fd)
    except FileNotFoundError:
        raise _missing(names) from None
    except OSError:  # ELOOP for a link, ENXIO for a socket, anything for a device
        what = _what(names[-1], fd)
        if what in ("", "a regular file"):
            raise
        raise _not(names, len(names), what, "a regular file") from None
    try:
        st = os.fstat(file)
        if not stat.S_ISREG(st.st_mode):
            raise _not(names, len(names), _kind(st.st_mode)[1], "a regular file")
    except BaseException:
        os.close(file)
        raise
    return file, st


# Walking: without recursion, with a bounded number of open fds.

_Visit = tuple[tuple[str, ...], list[int], list[str]]
_Leave = Callable[[list[int], list[int] | None, tuple[str, ...]], None]


@dataclass
class _Level:
    """A directory on the walk's current path: its fds (one per tree), None while shelved."""

    rel: tuple[str, ...]
    fds: list[int] | None
    todo: list[str] = field(default_factory=list)
    ids: list[tuple[int, int]] = field(default_factory=list)


def _tree(tops: list[int], leave: _Leave | None = None) -> Generator[_Visit, None, None]:
    """Walk the directory trees open at tops (one, or two in step) in pre-order.

    Yields (components, fds, subdirs) per directory; the caller appends to subdirs the names to
    enter. leave(fds, parent fds or None, components) runs once a directory's subtree is done.
    Takes the fds in tops. A directory that vanished or was replaced meanwhile is skipped.
    """
    stack = [_Level((), tops)]
    try:
        yield (), tops, stack[0].todo
        stack[0].todo.reverse()  # entered by pop(): in the caller's order
        while stack:
            level = stack[-1]
            if level.todo:
                name = level.todo.pop()
                fds = level.fds if level.fds is not None else _reopen(stack, None)
                child = None if fds is None else _open_each(fds, (name,))
                if fds is None or child is None:
                    continue
                if len(stack) >= _KEEP_OPEN:  # shelved: re-entered by ".." on the way back
                    level.ids = [_ident(fd) for fd in fds]
                    _close(fds)
                    level.fds = None
                stack.append(_Level((*level.rel, name), child))
                yield stack[-1].rel, child, stack[-1].todo
                stack[-1].todo.reverse()
                continue
            stack.pop()
            try:
                if stack and stack[-1].fds is None and level.fds is not None:
                    _reopen(stack, level.fds)
                if leave is not None and level.fds is not None:
                    leave(level.fds, stack[-1].fds if stack else None, level.rel)
            finally:
                _close(level.fds)
    finally:
        for level in stack:
            _close(level.fds)


def _reopen(stack: list[_Level], hint: list[int] | None) -> list[int] | None:
    """Give the shelved stack[-1] its fds again: by ".." from its child's (hint), else by path.

    ".." must lead to the very directory shelved: an agent may have moved the child meanwhile,
    and its ".." may then be elsewhere, even above the root. A directory gone is dropped (None).
    """
    level = stack[-1]
    if hint is not None:
        fds = _open_each(hint, ("..",))
        if fds is not None and [_ident(fd) for fd in fds] == level.ids:
            level.fds = fds
            return fds
        _close(fds)
    base = next(up for up in reversed(stack) if up.fds is not None)  # the top is never shelved
    level.fds = _open_each(base.fds or [], level.rel[len(base.rel) :])
    if level.fds is None:
        level.todo.clear()
    return level.fds


def _open_each(fds: list[int], names: tuple[str, ...]) -> list[int] | None:
    """New dir fds of names beneath each of fds, or None if the path vanished or was replaced."""
    opened: list[int] = []
    try:
        for fd in fds:
            opened.append(_descend(fd, names, len(names), False, 0))
    except (OSError, Refused) as error:
        _close(opened)
        if isinstance(error, OSError) and error.errno not in _GONE:
            raise
        return None
    return opened


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _close(fds: list[int] | None) -> None:
    for fd in fds or ():
        os.close(fd)


def _scan(fd: int) -> list[os.DirEntry[str]]:
    with os.scandir(fd) as entries:
        return list(entries)


def _remove(fd: int, name: str) -> None:
    """Remove name beneath fd, not followed: a directory with everything in it."""
    try:
        os.unlink(name, dir_fd=fd)  # never follows; refuses a directory
        return
    except IsADirectoryError:
        pass
    with closing(_tree([os.open(name, _DIR, dir_fd=fd)], leave=_rmdir)) as tree:
        for _, (dir_fd,), subdirs in tree:
            for entry in _scan(dir_fd):
                # Unlink first, whatever the listing said: what is there now may be a link.
                try:
                    os.unlink(entry.name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except IsADirectoryError:
                    subdirs.append(entry.name)
    os.rmdir(name, dir_fd=fd)


def _rmdir(_: list[int], parent: list[int] | None, rel: tuple[str, ...]) -> None:
    if parent is not None:  # None: the top (its caller removes it), or a parent gone
        with suppress(FileNotFoundError):
            os.rmdir(rel[-1], dir_fd=parent[0])


def _copy_file(src_dir: int, dst_dir: int, names: tuple[str, ...]) -> None:
    fd, st = _open_file(src_dir, names)
    try:
        out = os.open(names[-1], _NEW, 0o600, dir_fd=dst_dir)
        try:
            while chunk := os.read(fd, _CHUNK):
                _write_all(out, chunk)
            os.fchmod(out, stat.S_IMODE(st.st_mode) & 0o777)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# Refusals: one line that names the path and what is wrong with it.


def _kind(mode: int) -> tuple[str, str]:
    return _KINDS.get(stat.S_IFMT(mode), ("unknown", "an unknown kind of file"))


def _what(name: str | Path, fd: int | None = None) -> str:
    """What is at name now ("a symbolic link"); "" if nothing is."""
    try:
        return _kind(os.lstat(name, dir_fd=fd).st_mode)[1]
    except FileNotFoundError:
        return ""


def _not(names: tuple[str, ...], depth: int, what: str, wanted: str) -> Refused:
    """The refusal of a path whose component at depth is what, where wanted was needed."""
    path = _show("/".join(names))
    if depth == len(names):
        return Refused(f"{path} is {what}, not {wanted}")
    return Refused(f"{path}: '{_show('/'.join(names[:depth]))}' is {what}")


def _missing(names: tuple[str, ...]) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/".join(names))


def _show(text: str, limit: int = 300) -> str:
    """Text as one printable line: control, bidi and undecodable characters escaped."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else f"{shown[:limit]}..."
