"""Checkpoint archives: a task's workspace and agent homes, written and restored link-safely.

An archive is a POSIX tar file:

    meta.json                      what the task looked like (agents' sessions, subtask states)
    workspace/...                  the workspace
    agents/<agent>/home/...        each agent's home: Claude Code's transcripts and session ids

It is written to a temporary name, fsynced and renamed, and only then recorded, so a crash
never leaves a torn newest checkpoint. Members come from safefs.scan (no link followed, links
archived as links, FIFOs and devices left out, credentials left out) and file contents are
copied by the kernel (sendfile), which keeps writing close to `tar -c`. Restoring extracts
into a fresh directory with the same care: a member with an absolute path or "..", a hard
link, a device, or a path that would pass through a link is refused and named; a link is
made as a link and never followed.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klaudio.errors import InvalidArgument
from klaudiod import safefs

META = "meta.json"
BLOCK = 512
# Never archived: credentials (a link to the run's secrets in fact, but never worth keeping).
LEFT_OUT = frozenset({".claude/.credentials.json"})
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Damaged(InvalidArgument):
    """A checkpoint archive that cannot be restored (truncated, corrupt, or unsafe)."""


@dataclass
class Written:
    """What write() archived."""

    size: int
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def write(dest: Path, trees: list[tuple[str, Path]], meta: dict[str, Any]) -> Written:
    """Archive trees (member prefix, root) with meta into dest, atomically.

    Raises:
        FileExistsError: when dest exists already.
    """
    tmp = dest.with_name(f".{dest.name}.tmp")
    fd = os.open(tmp, _NEW | os.O_TRUNC, 0o600)
    written = Written(0)
    try:
        out = _Tar(fd)
        out.data(META, json.dumps(meta, sort_keys=True).encode())
        for prefix, root in trees:
            out.directory(prefix)
            for entry in safefs.scan(root):
                if entry.path in LEFT_OUT:
                    continue
                if not out.entry(f"{prefix}/{entry.path}", entry):
                    written.skipped.append(f"{prefix}/{entry.path}")
        out.finish()
        os.fsync(fd)
        written.files = out.count
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if dest.exists():
        tmp.unlink()
        raise FileExistsError(dest)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    written.size = dest.stat().st_size
    return written


class _Tar:
    """A minimal POSIX (pax) tar writer whose file contents go through sendfile."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.count = 0

    def data(self, name: str, content: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mode = 0o600
        self._header(info)
        _write_all(self._fd, content + _padding(len(content)))

    def directory(self, name: str) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self._header(info)

    def entry(self, name: str, entry: safefs.Entry) -> bool:
        """Archive one scanned entry; False when it cannot be (a FIFO, or replaced)."""
        st = entry.stat
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            self._header(info)
            return True
        if stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            try:
                info.linkname = safefs.read_link(entry)
            except OSError:
                return False
            self._header(info)
            return True
        if not stat.S_ISREG(st.st_mode):
            return False
        try:
            src = safefs.open_entry(entry)
        except (OSError, safefs.Refused):
            return False  # gone, or swapped for something else since the listing
        try:
            info.size = os.fstat(src).st_size
            self._header(info)
            self._copy(src, info.size)
        finally:
            os.close(src)
        self.count += 1
        return True

    def _copy(self, src: int, size: int) -> None:
        # Exactly size bytes, even if the file shrinks meanwhile (an agent may be writing it).
        done = 0
        while done < size:
            sent = os.sendfile(self._fd, src, done, size - done)
            if sent == 0:
                break
            done += sent
        _write_all(self._fd, b"\0" * (size - done) + _padding(size))

    def _header(self, info: tarfile.TarInfo) -> None:
        info.uname = info.gname = ""
        _write_all(self._fd, info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def finish(self) -> None:
        _write_all(self._fd, b"\0" * (2 * BLOCK))


def read_meta(path: Path) -> dict[str, Any]:
    """The meta.json of an archive.

    Raises:
        Damaged: when the archive cannot be read.
    """
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != META:
                raise Damaged(f"{path.name}: no {META} at its start")
            handle = tar.extractfile(first)
            if handle is None:
                raise Damaged(f"{path.name}: {META} is not a file")
            data = json.loads(handle.read())
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise Damaged(f"{path.name}: cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise Damaged(f"{path.name}: {META} is not an object")
    return data


def extract(path: Path, size: int, dest: Path) -> dict[str, Any]:
    """Extract an archive into dest (created; its parent is the daemon's own); return meta.

    Raises:
        Damaged: naming the member refused or what is wrong with the archive; dest is then
            left for the caller to remove.
    """
    actual = path.stat().st_size
    if actual != size:
        raise Damaged(f"{path.name} is {actual} bytes, not the {size} written: truncated")
    os.mkdir(dest, 0o700)
    meta = read_meta(path)
    with open(path, "rb") as raw, _Extractor(dest, raw.fileno()) as out:
        try:
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                for member in _members(tar):
                    out.member(member)
        except (tarfile.TarError, EOFError) as exc:
            raise Damaged(f"{path.name}: cannot be read: {exc}") from None
    return meta


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tar.next()) is not None:
        if member.name != META:
            yield member


class _Extractor:
    """Makes archive members beneath dest, link-safely, one directory fd at a time."""

    def __init__(self, dest: Path, archive: int) -> None:
        self._archive = archive
        self._root = os.open(dest, _DIR)
        self._dirs: dict[tuple[str, ...], int] = {(): self._root}
        self._times: list[tuple[tuple[str, ...], int, int]] = []

    def __enter__(self) -> _Extractor:
        return self

    def __exit__(self, *exc: object) -> None:
        for names, mode, mtime in reversed(self._times):
            with suppress(OSError):
                fd = self._dir(names)
                os.chmod(fd, mode)
                os.utime(fd, (mtime, mtime))
        for fd in self._dirs.values():
            os.close(fd)

    def member(self, member: tarfile.TarInfo) -> None:
        try:
            names = safefs.parts(member.name)
        except safefs.Refused as exc:
            raise Damaged(f"member {exc} refused") from None
        parent = self._dir(names[:-1], member.name)
        name = names[-1]
        try:
            if member.isdir():
                with suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=parent)
                self._times.append((names, member.mode & 0o777, int(member.mtime)))
            elif member.issym():
                os.symlink(member.linkname, name, dir_fd=parent)
            elif member.isreg():
                self._file(parent, name, member)
            else:
                raise Damaged(f"member {_show(member.name)} refused: a {_type(member)}")
        except FileExistsError:
            raise Damaged(f"member {_show(member.name)} refused: it is there twice") from None

    def _file(self, parent: int, name: str, member: tarfile.TarInfo) -> None:
        fd = os.open(name, _NEW, 0o600, dir_fd=parent)
        try:
            done = 0
            while done < member.size:
                copied = os.sendfile(
                    fd, self._archive, member.offset_data + done, member.size - done
                )
                if copied == 0:
                    raise Damaged(f"member {_show(member.name)} is cut short: truncated")
                done += copied
            os.fchmod(fd, member.mode & 0o777)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _dir(self, names: tuple[str, ...], member: str = "") -> int:
        """The fd of the directory names beneath dest; every step refuses a link."""
        if names in self._dirs:
            return self._dirs[names]
        parent = self._dir(names[:-1], member)
        try:
            fd = os.open(names[-1], _DIR, dir_fd=parent)
        except FileNotFoundError:
            os.mkdir(names[-1], 0o700, dir_fd=parent)
            fd = os.open(names[-1], _DIR, dir_fd=parent)
        except OSError:
            where = "/".join(names)
            raise Damaged(
                f"member {_show(member)} refused: it would be written through {where!r}, "
                "which is not a directory"
            ) from None
        if len(self._dirs) > 256:
            self._forget(names)
        self._dirs[names] = fd
        return fd

    def _forget(self, keep: tuple[str, ...]) -> None:
        # Members come in walk order: only the current directory's ancestors are needed.
        for names in list(self._dirs):
            if names and names != keep[: len(names)]:
                os.close(self._dirs.pop(names))


def _type(member: tarfile.TarInfo) -> str:
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    return "special member"


def _show(name: str) -> str:
    return name.encode("unicode_escape").decode("ascii")[:300]


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
