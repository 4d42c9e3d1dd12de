"""What every command shares: the instance's paths, a connected client, printing helpers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def color_enabled() -> bool:
    """Whether stdout is a terminal that wants color (NO_COLOR respected)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
