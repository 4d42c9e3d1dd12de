"""Text edited in $VISUAL or $EDITOR, sent when saved, reopened after a refusal, never lost."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from klaudio import errors
from klaudio.cli.common import error_lines, note

T = TypeVar("T")
FALLBACK_EDITOR = "vi"


class NoEditor(Exception):
    """The editor could not be run at all."""


def editor_command() -> list[str]:
    """The editor to run: $VISUAL, else $EDITOR, else vi (with its arguments, as a shell splits)."""
    value = os.environ.get("VISUAL", "").strip() or os.environ.get("EDITOR", "").strip()
    try:
        command = shlex.split(value or FALLBACK_EDITOR)
    except ValueError as exc:
        raise errors.InvalidArgument(f"cannot read the editor command {value!r}: {exc}") from None
    return command or [FALLBACK_EDITOR]


def edit(
    text: str,
    send: Callable[[str, Path], T],
    what: str,
    check: Callable[[str], None] | None = None,
) -> T | None:
    """Open the editor on text in a temporary file and send what the person saves.

    A refusal (InvalidArgument) is printed, every problem on its line, and on a terminal the
    person is asked "Edit again? [Y/n]": the editor reopens on their own text. The file is
    removed once its text is accepted, or when nothing is sent; otherwise it stays and its
    path is said, so an edit is never lost.

    Args:
        text: what the editor opens first.
        send: sends the saved text (given with the file's path, for messages about its lines).
        what: what is edited, for file names and messages ("plan", "team").
        check: a check of the saved text before it is sent; raises InvalidArgument.

    Returns:
        What send returned; None when nothing was sent (the text unchanged, or empty).

    Raises:
        typer.Exit: 2 after a refusal the person does not edit again.
        KlaudioError: any other error of send (the path of the kept text said first).
    """
    fd, name = tempfile.mkstemp(prefix=f"klaudio-{what}-", suffix=".yaml")
    path = Path(name)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    try:
        edited = False
        while True:
            try:
                _run_editor(path)
            except NoEditor as exc:
                if edited:
                    raise errors.InvalidArgument(f"{exc}; your {what} is in {path}") from None
                path.unlink()  # it holds only what the person was shown
                raise errors.InvalidArgument(str(exc)) from None
            edited = True
            saved = _read(path)
            if saved is not None and saved == text:
                note(f"the {what} is unchanged; nothing was sent")
                path.unlink()
                return None
            if saved is not None and not _meaningful(saved):
                note(f"the {what} is empty; nothing was sent")
                path.unlink()
                return None
            try:
                if saved is None:
                    raise errors.InvalidArgument(f"{path} is not valid UTF-8")
                if check is not None:
                    check(saved)
                result = send(saved, path)
            except errors.InvalidArgument as exc:
                for line in error_lines(exc):
                    print(line, file=sys.stderr, flush=True)
                if _again():
                    continue
                note(f"nothing was changed; your {what} is saved in {path}")
                raise typer.Exit(errors.EXIT_USAGE) from None
            path.unlink()
            return result
    except (typer.Exit, errors.InvalidArgument):
        raise  # the path was said
    except BaseException:
        if path.exists():
            note(f"your {what} is saved in {path}")
        raise


def _run_editor(path: Path) -> None:
    command = editor_command()
    try:
        code = subprocess.call([*command, str(path)])
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise NoEditor(
            f"cannot run the editor {command[0]!r} ({why}); set $VISUAL or $EDITOR"
        ) from None
    if code != 0:
        raise errors.InvalidArgument(
            f"the editor {command[0]!r} exited {code}; nothing was sent (your text is in {path})"
        )


def _read(path: Path) -> str | None:
    """The saved text; None when it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


def _meaningful(text: str) -> bool:
    """Whether text holds more than blank lines and YAML comments."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _again() -> bool:
    """On a terminal, whether the person wants to edit again ("Edit again? [Y/n]")."""
    if not sys.stdin.isatty():
        return False
    while True:
        print("Edit again? [Y/n] ", end="", file=sys.stderr, flush=True)
        reply = sys.stdin.readline()
        if not reply:
            print(file=sys.stderr)
            return False
        answer = reply.strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
