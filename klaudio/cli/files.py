"""`klaudio task files|cp|diff|publish`: a task's files, copies out, its diff, its delivery."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from klaudio import errors, validate
from klaudio.cli import format as fmt
from klaudio.cli.common import color_enabled, connect, note, out
from klaudio.cli.task import Output, OutputOption, TaskId, example, print_task
from klaudio.cli.textsafe import safe

if TYPE_CHECKING:
    import tarfile

# Where a task's inputs are in its workspace.
INPUT_DIR = "input"
# Left out of directory copies: agents could write its hooks and config (core.fsmonitor, ...),
# which git would run on this machine. Copied only when asked for by name (ID:.git).
GIT_DIR = ".git"
STATUS_LETTERS = {"added": "A", "modified": "M", "deleted": "D"}
DEFAULT_PAGER = "less"
_STAT_COUNTS = re.compile(r"(\+\d+) (-\d+)$")
_GREEN, _RED, _CYAN, _BOLD = "32", "31", "36", "1"


def files(task_id: TaskId, output: OutputOption = Output.text) -> None:
    """List a task's inputs, the files it changed, and the files its plan declared.

    Changed files are those added (A), modified (M) or deleted (D) in the workspace since the
    commit it was cloned from. Paths are relative to the workspace, as `klaudio task cp` takes
    them. Exits 0, 3 unknown task.
    """
    found = connect().list_files(task_id)
    inputs = [f"{INPUT_DIR}/{name}" for name in found.inputs]
    if output == Output.json:
        data = {
            "inputs": inputs,
            "changed": [{"status": c.status, "path": c.path} for c in found.changed],
            "declared": list(found.declared),
        }
        out(json.dumps(data, indent=2))
        return
    changed = [f"{STATUS_LETTERS.get(c.status, '?')}  {_one(c.path)}" for c in found.changed]
    for head, lines in (
        ("inputs", [_one(p) for p in inputs]),
        ("changed", changed),
        ("declared", [_one(p) for p in found.declared]),
    ):
        out(f"{head}:")
        for line in lines or ["(none)"]:
            out(f"  {line}")


@dataclass
class Copied:
    """What `task cp` wrote: the members of the archive as they landed."""

    dest: str = ""
    kind: str = "file"
    members: list[str] = field(default_factory=list)
    files: int = 0
    directories: int = 0
    links: int = 0
    size: int = 0
    # A .git directory inside what was copied, left out.
    git_left_out: bool = False


def cp(
    source: Annotated[
        str,
        typer.Argument(
            help="A task id (or prefix), ':' and a path in its workspace ('ID:.' for all of it).",
            show_default=False,
            metavar="ID:PATH",
        ),
    ],
    dest: Annotated[
        str,
        typer.Argument(
            help="A new file or directory name, or an existing directory to copy into; - writes "
            "the tar archive to stdout.",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Replace an existing file at the destination.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every path written, on stdout.")
    ] = False,
    output: OutputOption = Output.text,
) -> None:
    """Copy a file or directory out of a task's workspace.

    Like cp: DEST is the new name, or an existing directory to copy into. An existing file is
    replaced only with --force; a directory is never merged into or replaced, and DEST being a
    link is refused (nothing is written through it). The copy is written next to DEST and
    renamed into place once whole, so a refused or broken copy leaves nothing. A .git directory
    inside a directory copied is left out (agents could write it, and git would run its hooks
    and config here): name it (ID:.git) to copy it. Paths leaving the workspace, passing
    through links, links pointing out of what is copied, FIFOs and devices are refused. With
    DEST -, the archive goes to stdout as it is. Exits 0, 2 a refused path or destination
    (named), 3 unknown task.
    """
    task_id, path = split_source(source)
    if dest == "-":
        _to_stdout(connect().copy_files(task_id, path))
        return
    copied = copy_into(connect().copy_files(task_id, path), dest, force)
    if output == Output.json:
        data = {
            "source": source,
            "dest": copied.dest,
            "kind": copied.kind,
            "files": copied.files,
            "directories": copied.directories,
            "links": copied.links,
            "bytes": copied.size,
            "paths": copied.members,
            "git_left_out": copied.git_left_out,
        }
        out(json.dumps(data, indent=2))
        return
    if verbose:
        for member in copied.members:
            out(member)
    note(f"copied {source} ({_counts(copied)}) to {copied.dest}")
    if copied.git_left_out:
        note(
            f"left out {GIT_DIR}: agents could write it, and git would run its hooks and config "
            f"here (copy it on purpose with {task_id}:{GIT_DIR})"
        )


def split_source(source: str) -> tuple[str, str]:
    """ID:PATH as the task id and the path, each checked as text (the daemon checks the path).

    Raises:
        InvalidArgument: without a colon or a task id.
    """
    validate.utf8(source, "ID:PATH")
    task_id, colon, path = source.partition(":")
    if not colon or not task_id:
        raise errors.InvalidArgument(
            f"{source}: expected ID:PATH, a task id and a path in its workspace (3f2a:src/app.py)"
        )
    return task_id, path


def _to_stdout(chunks: Iterator[bytes]) -> None:
    if sys.stdout.isatty():
        raise errors.InvalidArgument("not writing a tar archive to a terminal; redirect stdout")
    sys.stdout.flush()
    with _reader_may_leave():
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


@contextmanager
def _reader_may_leave() -> Iterator[None]:
    """Stop quietly when what reads stdout has gone (`| head`), as a pipeline expects."""
    try:
        yield
    except BrokenPipeError:
        # Nothing more can be written: later flushes go nowhere instead of failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def copy_into(chunks: Iterator[bytes], dest: str, force: bool) -> Copied:
    """Extract the tar archive of chunks to dest, as `task cp` does (see its help).

    Raises:
        InvalidArgument: naming the destination or the member that is refused; nothing of the
            copy is left then.
    """
    import shutil
    import tempfile

    into, target = _destination(dest, force)
    parent = into if into is not None else (target.parent if target else Path("."))
    try:
        scratch = Path(tempfile.mkdtemp(prefix=".klaudio-cp-", dir=parent))
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot write in {parent}: {exc.strerror}") from None
    try:
        copied = _extract(chunks, scratch / "x")
        (top,) = list((scratch / "x").iterdir())
        final = into / top.name if into is not None else target
        assert final is not None
        _place(top, final, copied.kind, force)
        copied.dest = str(final)
        copied.members = [str(final / m) if m else str(final) for m in copied.members]
        return copied
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _destination(dest: str, force: bool) -> tuple[Path | None, Path | None]:
    """(an existing directory to copy into, None) or (None, the path to write).

    Raises:
        InvalidArgument: for a link, a missing parent directory, or (without force) a file.
    """
    path = Path(dest)
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise errors.InvalidArgument(f"{dest}: {exc.strerror}") from None
    if st is None:
        parent = path.parent
        if dest.endswith("/") or not parent.is_dir():
            where = dest if dest.endswith("/") else str(parent)
            raise errors.InvalidArgument(f"{dest}: no such directory {where}")
        return None, path
    import stat

    if stat.S_ISLNK(st.st_mode):
        raise errors.InvalidArgument(
            f"{dest}: a symbolic link; nothing is written through one (give where it points)"
        )
    if stat.S_ISDIR(st.st_mode):
        return path, None
    if not force:
        raise errors.InvalidArgument(f"{dest} exists; --force replaces it")
    return None, path


def _extract(chunks: Iterator[bytes], into: Path) -> Copied:
    """Extract the streamed archive into the new directory into with tarfile's data filter.

    One top-level member is allowed, and links must stay inside it.
    """
    import tarfile

    copied = Copied()
    top: list[str] = []

    def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        member = tarfile.data_filter(member, dest)
        name = member.name.rstrip("/")
        head, _, rest = name.partition("/")
        if not top:
            top.append(head)
            if not rest:
                copied.kind = "directory" if member.isdir() else "file"
            if member.issym() or member.islnk():
                raise tarfile.SpecialFileError(member)
        if head != top[0]:
            raise tarfile.OutsideDestinationError(member, name)
        if GIT_DIR in rest.split("/"):
            copied.git_left_out = True
            return None
        if member.issym() or member.islnk():
            base = "" if member.islnk() else os.path.dirname(name)
            points = os.path.normpath(os.path.join(base, member.linkname))
            if points != head and not points.startswith(head + "/"):
                raise tarfile.LinkOutsideDestinationError(member, points)
        copied.members.append(rest)
        if member.isdir():
            copied.directories += bool(rest)
        elif member.issym() or member.islnk():
            copied.links += 1
        else:
            copied.files += 1
            copied.size += member.size
        return member

    into.mkdir()
    try:
        stream = io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            tar.extractall(into, filter=checked)
    except tarfile.FilterError as exc:
        raise errors.InvalidArgument(f"refused: {exc}") from None
    except tarfile.TarError as exc:
        raise errors.InvalidArgument(f"the copy is not a usable archive: {exc}") from None
    if not top:
        raise errors.InvalidArgument("the copy is empty")
    return copied


def _place(top: Path, final: Path, kind: str, force: bool) -> None:
    """Move the extracted top into place: never merging directories, never following a link."""
    import stat

    try:
        st = final.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise errors.InvalidArgument(
            f"{final} is a directory; a copy is never merged into one (give a new name)"
        )
    if st is not None and not force:
        raise errors.InvalidArgument(f"{final} exists; --force replaces it")
    if st is not None and kind == "directory":
        raise errors.InvalidArgument(f"{final} is not a directory; a directory does not replace it")
    if st is not None or kind == "directory":
        # rename never follows a link at final (it replaces the link) and fails on a directory
        # that appeared meanwhile and is not empty.
        os.rename(top, final)
        return
    try:
        os.link(top, final, follow_symlinks=False)  # fails if final appeared meanwhile
    except FileExistsError:
        raise errors.InvalidArgument(f"{final} exists; --force replaces it") from None
    except OSError:
        os.rename(top, final)  # a file system without hard links


class _Chunks(io.RawIOBase):
    """A read-only raw file over an iterator of byte chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = memoryview(chunk)
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def _counts(copied: Copied) -> str:
    if copied.kind == "file":
        return fmt.size(copied.size)
    parts = [_plural(copied.files, "file"), _plural(copied.directories, "directory")]
    if copied.links:
        parts.append(_plural(copied.links, "link"))
    return ", ".join([*parts, fmt.size(copied.size)])


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def diff(
    task_id: TaskId,
    stat: Annotated[
        bool,
        typer.Option("--stat", help="One line per changed file: status, path, +added -removed."),
    ] = False,
    no_pager: Annotated[bool, typer.Option("--no-pager", help="Never page the output.")] = False,
) -> None:
    """Show the task's change against the commit its workspace was cloned from.

    On a terminal the diff goes through $PAGER (default less, with LESS=FRX unless LESS is
    set; PAGER='' or cat: no pager), coloured unless NO_COLOR is set, with control characters
    shown escaped. Otherwise it is written exactly as it is, to be saved or applied. Exits 0
    (also when nothing changed), 3 unknown task.
    """
    pieces = connect().diff_files(task_id, stat)
    first = next(pieces, None)  # an unknown task is refused before a pager opens
    if first is None:
        note(f"task {task_id} has no changes against its base commit")
        return
    if not sys.stdout.isatty():
        with _reader_may_leave():
            sys.stdout.write(first)
            for piece in pieces:
                sys.stdout.write(piece)
            sys.stdout.flush()
        return
    paint = _painter(color_enabled(), stat)
    with _pager(no_pager) as sink:
        try:
            for piece in _chain(first, pieces):
                sink.write("".join(paint(line) for line in piece.splitlines(keepends=True)))
        except BrokenPipeError:
            return  # the pager was quit before the end


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _painter(color: bool, stat: bool) -> Any:
    """A function turning one diff line into what the terminal shows: escaped, maybe coloured."""

    def paint(line: str) -> str:
        text = safe(line.removesuffix("\n"))
        if not color:
            return text + "\n"
        if stat:
            return _STAT_COUNTS.sub(f"\x1b[{_GREEN}m\\1\x1b[0m \x1b[{_RED}m\\2\x1b[0m", text) + "\n"
        code = ""
        if text.startswith(("+++ ", "--- ")):
            code = _BOLD
        elif text.startswith("@@"):
            code = _CYAN
        elif text.startswith("+"):
            code = _GREEN
        elif text.startswith("-"):
            code = _RED
        return (f"\x1b[{code}m{text}\x1b[0m" if code and text else text) + "\n"

    return paint


@contextmanager
def _pager(no_pager: bool) -> Iterator[IO[str]]:
    """Where to write for a person on a terminal: $PAGER's stdin (like git), else stdout."""
    import shutil
    import signal
    import subprocess

    command = "" if no_pager else os.environ.get("PAGER", DEFAULT_PAGER).strip()
    if command == DEFAULT_PAGER and shutil.which(DEFAULT_PAGER) is None:
        command = ""
    if command in ("", "cat"):
        yield sys.stdout
        sys.stdout.flush()
        return
    env = {**os.environ}
    env.setdefault("LESS", "FRX")
    env.setdefault("LV", "-c")
    process = subprocess.Popen(
        command, shell=True, stdin=subprocess.PIPE, env=env, text=True, encoding="utf-8"
    )
    assert process.stdin is not None
    # Ctrl-C belongs to the pager (less uses it), as with git: q ends both.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield process.stdin
    finally:
        with suppress(BrokenPipeError):
            process.stdin.close()
        process.wait()
        signal.signal(signal.SIGINT, previous)


def publish(
    task_id: TaskId,
    push: Annotated[bool, typer.Option("--push", help="Push the task branch too.")] = False,
    pr: Annotated[
        bool, typer.Option("--pr", help="Open or update a pull request too (and push).")
    ] = False,
    output: OutputOption = Output.text,
) -> None:
    """Deliver a completed task's work, or try its failed delivery again.

    Commits the work on the task branch and, as the task was created to (or --push, --pr on
    top), pushes it and opens or updates its pull request; the pull request URL is printed
    last. A task failed only by its delivery is completed once it succeeds. Exits 0
    delivered, 1 the delivery failed (the reason is said; the work is kept), 2 nothing to
    deliver (give --push or --pr), 3 unknown task, 4 when the task is neither completed nor
    failed in its delivery, or has no task branch.
    """
    task = connect().publish_task(task_id, push, pr)
    delivery = task.delivery
    note(f"task {task.id[:8]} {fmt.delivery_said(task, pushed=push or pr or None)}")
    if output == Output.json:
        print_task(task)
    elif delivery.state == "delivered" and delivery.pr_url:
        out(delivery.pr_url)
    if delivery.state == "failed":
        raise typer.Exit(errors.EXIT_TASK_FAILED)


def _one(text: str) -> str:
    return safe(text, one_line=True)


EPILOGS = {
    "files": example("klaudio task files 3f2a", "klaudio task files 3f2a -o json"),
    "cp": example(
        "klaudio task cp 3f2a:src/parser.py .",
        "klaudio task cp 3f2a:docs ./task-docs",
        "klaudio task cp 3f2a:. - | tar -t",
    ),
    "diff": example(
        "klaudio task diff 3f2a",
        "klaudio task diff 3f2a --stat",
        "klaudio task diff 3f2a > change.patch",
    ),
    "publish": example("klaudio task publish 3f2a", "klaudio task publish 3f2a --pr"),
}
