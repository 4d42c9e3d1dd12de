"""A task's files for people: what it was given and changed, copies out, and its diff.

Everything a user or an agent names is resolved inside the workspace without following a
link (safefs); a copy refuses, before anything is sent, any link in it pointing out of what
is copied, and any FIFO, socket or device.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from klaudio.errors import InvalidArgument
from klaudiod import changes, delivery, repo, safefs
from klaudiod.records import Detail
from klaudiod.workspace import TaskFiles

CHUNK = 1 << 20
# A file larger than this is summarised in a diff, not shown line by line.
DIFF_FILE_LIMIT = 4 << 20


@dataclass(frozen=True)
class Listing:
    """What `task files` shows."""

    inputs: tuple[str, ...]
    changed: list[changes.Change]
    declared: list[str]


def listing(detail: Detail, files: TaskFiles) -> Listing:
    """The task's inputs, its changes against its base commit, and what its plan declared."""
    changed = changes.changed(
        files.workspace, changes.load(files.base), delivery.inputs_given(detail.task)
    )
    declared = sorted({path for sub in detail.subtasks for path in sub.files_involved})
    return Listing(detail.task.inputs, changed, declared)


def copy(files: TaskFiles, path: str, scratch: Path) -> Iterator[bytes]:
    """A tar archive of path (file or directory) in the workspace, in chunks.

    Raises:
        InvalidArgument: naming what is refused; nothing is sent then.
    """
    rel = "" if path in ("", ".", "./") else "/".join(safefs.parts(path))
    found = safefs.kind(files.workspace, rel) if rel else "dir"
    if found == "missing":
        raise InvalidArgument(f"{path}: no such file or directory in the workspace")
    if found not in ("file", "dir"):
        raise InvalidArgument(f"{path}: a {found.replace('-', ' ')}, not a file or directory")
    name = posixpath.basename(rel) or "workspace"
    if found == "dir":
        _check_tree(files.workspace, rel, path)
    # A file without a name in the daemon's own scratch directory, gone once closed.
    with tempfile.TemporaryFile(dir=scratch, prefix=".copy-") as archive:
        _tar(archive, name, files.workspace, rel, found == "dir")
        archive.seek(0)
        while chunk := archive.read(CHUNK):
            yield chunk


def _tar(archive: IO[bytes], name: str, workspace: Path, rel: str, tree: bool) -> None:
    """Write the archive of rel (a file, or a tree) under the member name name."""
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if not tree:
            parent, _, base = rel.rpartition("/")
            with safefs.open_read(workspace / parent if parent else workspace, base) as handle:
                st = os.fstat(handle.fileno())
                tar.addfile(_info(name, st), handle)
            return
        top = tarfile.TarInfo(name)
        top.type = tarfile.DIRTYPE
        top.mode = 0o755
        tar.addfile(top)
        for entry in safefs.scan(workspace, rel=rel):
            info = _info(f"{name}/{entry.path}", entry.stat)
            if stat.S_ISREG(entry.stat.st_mode):
                try:
                    fd = safefs.open_entry(entry)
                except (FileNotFoundError, safefs.Refused):
                    continue  # gone or swapped since the check
                with os.fdopen(fd, "rb") as handle:
                    info.size = os.fstat(handle.fileno()).st_size
                    tar.addfile(info, handle)
            elif stat.S_ISDIR(entry.stat.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif stat.S_ISLNK(entry.stat.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = safefs.read_link(entry)
                tar.addfile(info)


def _info(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.mtime = int(st.st_mtime)
    info.size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    return info


def _check_tree(workspace: Path, rel: str, shown: str) -> None:
    """Refuse a tree holding a link that points out of it, a FIFO, a socket or a device."""
    for entry in safefs.scan(workspace, rel=rel):
        mode = entry.stat.st_mode
        where = posixpath.join(shown.rstrip("/") or ".", entry.path)
        if stat.S_ISLNK(mode):
            target = safefs.read_link(entry)
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(entry.path), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise InvalidArgument(f"{where}: a link pointing out of what is copied ({target})")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            kind = safefs.kind(workspace, posixpath.join(rel, entry.path)).replace("-", " ")
            raise InvalidArgument(f"{where}: a {kind}, not a file, directory or link")


def diff(detail: Detail, files: TaskFiles, summary: bool) -> Iterator[str]:
    """The task's change against its base commit: a unified diff, or one line per file."""
    task = detail.task
    given = delivery.inputs_given(task)
    for change in changes.changed(files.workspace, changes.load(files.base), given):
        old = (
            repo.blob(files.git, task.base_commit, change.path)
            if task.base_commit and change.status != "added" and files.git.is_dir()
            else None
        )
        if change.status != "deleted" and _too_large(files, change.path):
            yield f"{change.status} {change.path}: too large to show\n"
            continue
        new = _current(files, change.path) if change.status != "deleted" else None
        yield from (_stat if summary else _unified)(change, old, new)


def _too_large(files: TaskFiles, path: str) -> bool:
    try:
        return safefs.kind(files.workspace, path) == "file" and (
            safefs.size(files.workspace, path) > DIFF_FILE_LIMIT
        )
    except (FileNotFoundError, safefs.Refused):
        return False


def _current(files: TaskFiles, path: str) -> bytes | None:
    try:
        if safefs.kind(files.workspace, path) == "link":
            parent, _, name = path.rpartition("/")
            with safefs.directory(files.workspace, parent) as fd:
                return os.readlink(name, dir_fd=fd).encode("utf-8", "surrogateescape")
        return safefs.read_bytes(files.workspace, path, DIFF_FILE_LIMIT)
    except (FileNotFoundError, safefs.Refused):
        return None


def _text(data: bytes | None) -> list[str] | None:
    if data is None:
        return []
    if b"\0" in data:
        return None
    return data.decode("utf-8", "replace").splitlines(keepends=True)


def _unified(change: changes.Change, old: bytes | None, new: bytes | None) -> Iterator[str]:
    a, b = _text(old), _text(new)
    label_a = "/dev/null" if change.status == "added" else f"a/{change.path}"
    label_b = "/dev/null" if change.status == "deleted" else f"b/{change.path}"
    if a is None or b is None:
        yield f"Binary files {label_a} and {label_b} differ\n"
        return
    for line in difflib.unified_diff(a, b, label_a, label_b):
        yield line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"


def _stat(change: changes.Change, old: bytes | None, new: bytes | None) -> Iterator[str]:
    a, b = _text(old), _text(new)
    if a is None or b is None:
        yield f"{change.status:<8} {change.path} (binary)\n"
        return
    added = removed = 0
    for line in difflib.unified_diff(a, b, n=0):
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    yield f"{change.status:<8} {change.path} +{added} -{removed}\n"
