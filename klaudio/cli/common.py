"""What every command shares: the instance's paths, a connected client, printing helpers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from klaudio import errors
from klaudio.cli.textsafe import safe
from klaudio.paths import Paths, resolve

if TYPE_CHECKING:
    from klaudio.client import Client


class Interrupted(BaseException):
    """Ctrl-C. Not a KeyboardInterrupt, which click would turn into "Aborted!" and exit 1."""


def interrupt(signum: int, frame: object) -> None:
    """SIGINT handler: raise Interrupted wherever the CLI is."""
    raise Interrupted


@dataclass
class Options:
    """Global options, set by the root callback."""

    config_file: str | None = None
    debug: bool = False


OPTIONS = Options()


def paths() -> Paths:
    """This invocation's paths (KLAUDIO_HOME and --config respected)."""
    return resolve(config_file=OPTIONS.config_file)


def connect(start: bool = True) -> Client:
    """A client of a daemon that answers, starting one first when none does (and start is set)."""
    from klaudio.client import Client, answers, start_daemon

    instance = paths()
    client = Client(instance)
    if start and not answers(client):
        pid = start_daemon(instance, OPTIONS.config_file)
        note(f"no daemon answered; started klaudiod (pid {pid}, log {instance.log_file})")
    return client


def note(message: str) -> None:
    """A one-line message for the person, on stderr (it may quote task text: made safe)."""
    print(f"klaudio: {safe(message, one_line=True)}", file=sys.stderr, flush=True)


def out(line: str = "", painted: bool = False) -> None:
    """Output on stdout, control characters escaped.

    Args:
        line: the text; it may span lines.
        painted: the renderer made the line safe itself and added its own colours: print it as
            it is.
    """
    print(line if painted else safe(line), flush=True)


def read_file(path: str) -> str:
    """A text file's content: at most 4 MiB of UTF-8 (undecodable bytes refused, not replaced).

    Raises:
        InvalidArgument: naming the file and the problem.
    """
    from pathlib import Path

    from klaudio.validate import MAX_PROMPT_BYTES

    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_PROMPT_BYTES + 1)
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PROMPT_BYTES:
        raise errors.InvalidArgument(
            f"{path} is over the limit of {MAX_PROMPT_BYTES} bytes (4 MiB)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidArgument(
            f"{path} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start})"
        ) from None


def refusal(head: str, problems: list[str]) -> errors.InvalidArgument:
    """A refusal listing problems, in the shape the daemon sends one (see problems()).

    One problem is the whole message; several are "<head>:" and one "- <problem>" line each.
    """
    if len(problems) == 1:
        return errors.InvalidArgument(problems[0])
    return errors.InvalidArgument("\n".join([f"{head}:", *(f"- {p}" for p in problems)]))


def problems(exc: errors.KlaudioError) -> tuple[str, list[str]] | None:
    """The head line and problems of a refusal that lists them (a plan, a team file); else None.

    The daemon (and refusal()) write such a refusal as "<head>:" and one "- <problem>" line each.
    """
    if not isinstance(exc, errors.InvalidArgument):
        return None
    head, *rest = str(exc).split("\n")
    if not rest or not head.endswith(":") or not all(line.startswith("- ") for line in rest):
        return None
    return head, [line[2:] for line in rest]


def error_lines(exc: errors.KlaudioError) -> list[str]:
    """What the CLI prints for an error: one safe line, or a head line and a line per problem."""
    listed = problems(exc)
    if listed is None:
        return [f"klaudio: {safe(str(exc), one_line=True)}"]
    head, found = listed
    return [f"klaudio: {safe(head, one_line=True)}", *(safe(p, one_line=True) for p in found)]


def color_enabled() -> bool:
    """Whether stdout is a terminal that wants color (NO_COLOR respected)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
