"""A task's inputs: files and directories given at creation, kept with it and copied in.

Each input is copied twice: into the task's own `inputs/` (the daemon's, so a later look at
what was given cannot be changed by an agent) and into the workspace under `input/`. An input
must be a regular file or a directory, named by an absolute path; inside a directory, links
are copied as links (never followed) and anything but files, directories and links is
refused, naming it.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from klaudio.errors import InvalidArgument
from klaudiod import safefs
from klaudiod.workspace import TaskFiles

# Where inputs appear in the workspace.
WORKSPACE_DIR = "input"


def check(paths: list[str], own: tuple[Path, ...] = ()) -> list[Path]:
    """The inputs as paths, checked before anything is created.

    own are the daemon's own directories (data, state): an input may neither be inside one
    nor hold one (it would copy itself without end).

    Raises:
        InvalidArgument: naming a path that is not absolute, missing, a link, not a regular
            file or directory, the daemon's own, or whose name another input has too.
    """
    checked: list[Path] = []
    names: set[str] = set()
    for given in paths:
        shown = given.encode("unicode_escape").decode("ascii")
        if "\0" in given or "\n" in given:
            raise InvalidArgument(f"--input {shown}: NUL or newline in a path")
        if ".." in given.split("/"):
            raise InvalidArgument(f"--input {shown}: '..' is not allowed")
        path = Path(given)
        if not path.is_absolute():
            raise InvalidArgument(f"--input {given}: not an absolute path")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise InvalidArgument(f"--input {given}: no such file or directory") from None
        except OSError as exc:
            raise InvalidArgument(f"--input {given}: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise InvalidArgument(f"--input {given}: a symbolic link; give what it points at")
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise InvalidArgument(f"--input {given}: not a regular file or directory")
        real = path.resolve()
        for mine in own:
            mine = mine.resolve()
            if real == mine or mine in real.parents or real in mine.parents:
                raise InvalidArgument(
                    f"--input {given}: holds or is inside klaudio's own directory {mine}"
                )
        if path.name in names:
            raise InvalidArgument(f"--input {given}: another input is named {path.name!r} too")
        names.add(path.name)
        checked.append(path)
    return checked


def copy(files: TaskFiles, given: list[Path]) -> list[str]:
    """Copy the inputs into the task's inputs/ and the workspace's input/; return their names.

    Raises:
        InvalidArgument: when a directory holds a FIFO, device or socket (named).
    """
    if not given:
        return []
    keep = files.root / "inputs"
    keep.mkdir()
    for path in given:
        _copy_one(path, keep / path.name)
    with safefs.directory(files.workspace, WORKSPACE_DIR, create=True):
        pass
    for path in given:
        _copy_one(keep / path.name, files.workspace / WORKSPACE_DIR / path.name)
    return [path.name for path in given]


def _copy_one(source: Path, target: Path) -> None:
    if stat.S_ISDIR(os.lstat(source).st_mode):
        skipped = safefs.copy_tree(source, target)
        if skipped:
            raise InvalidArgument(
                f"--input {source}: {skipped[0]} is not a regular file, directory or link"
            )
        return
    # Both ends are fresh or checked: the workspace has had no agent yet.
    shutil.copy2(source, target, follow_symlinks=False)
