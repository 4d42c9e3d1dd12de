"""What every command shares: the instance's paths, a connected client, printing helpers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    """A message for the person, on stderr."""
    print(f"klaudio: {message}", file=sys.stderr, flush=True)


def out(line: str = "") -> None:
    """A line of the command's output, on stdout."""
    print(line, flush=True)


def color_enabled() -> bool:
    """Whether stdout is a terminal that wants color (NO_COLOR respected)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
