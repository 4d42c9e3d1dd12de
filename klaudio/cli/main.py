"""The klaudio command: global options, sub-commands, and the one place errors become exits."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from klaudio import __version__, errors
from klaudio.cli import checkpoints, config, daemon, files, image, plans, repos, task, teams
from klaudio.cli import run as run_command
from klaudio.cli.common import OPTIONS, Interrupted, error_lines, interrupt
from klaudio.cli.textsafe import safe

EPILOG = (
    "Exit codes: 0 ok (task completed); 1 task failed; 2 bad input; 3 not found; "
    "4 not allowed in the current state; 5 daemon or Docker unavailable; 6 timed out; "
    "7 task paused, cancelled or awaiting answers; 70 internal error; 130 interrupted."
)

app = typer.Typer(
    name="klaudio",
    help="Run teams of Claude Code agents in Docker containers: a planner writes a plan, you "
    "approve it, agents carry it out while their output streams to your terminal.",
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for verb in ("questions", "answer", "plan", "replan"):
    task.app.command(verb, epilog=plans.EPILOGS[verb])(getattr(plans, verb))
task.app.command("checkpoints", epilog=checkpoints.EPILOGS["checkpoints"])(checkpoints.checkpoints)
task.app.command("restore", epilog=checkpoints.EPILOGS["restore"])(checkpoints.restore)
for verb in ("files", "cp", "diff", "publish"):
    task.app.command(verb, epilog=files.EPILOGS[verb])(getattr(files, verb))
app.add_typer(task.app, name="task")
app.add_typer(teams.app, name="team")
app.add_typer(repos.app, name="repo")
app.add_typer(daemon.app, name="daemon")
app.add_typer(config.app, name="config")
app.add_typer(image.app, name="image")
app.command("run", epilog=run_command.EPILOG + "\n\n" + EPILOG)(run_command.run)


def _version(value: bool) -> None:
    if value:
        print(f"klaudio {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config_file: Annotated[
        str | None, typer.Option("--config", help="Config file (default: platform config dir).")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options."""
    OPTIONS.config_file = config_file
    OPTIONS.debug = debug


def main() -> None:
    """Entry point: run the CLI, turning every error into one line and a documented exit code."""
    signal.signal(signal.SIGINT, interrupt)
    code = run()
    # Skip the interpreter's teardown (gRPC's threads, module cleanup): 40 ms on every command.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> int:
    """Run the CLI and return its exit code."""
    try:
        app()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(safe(exc.code), file=sys.stderr)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except errors.KlaudioError as exc:
        if OPTIONS.debug:
            raise
        # The daemon's messages may quote model or repository text: every line is made safe.
        for line in error_lines(exc):
            print(line, file=sys.stderr)
        return exc.exit_code
    except (Interrupted, KeyboardInterrupt):
        return errors.EXIT_INTERRUPTED
    except Exception as exc:
        if OPTIONS.debug:
            raise
        detail = safe(str(exc), one_line=True)
        print(f"klaudio: internal error: {detail} (run with --debug for details)", file=sys.stderr)
        return errors.EXIT_INTERNAL
    return errors.EXIT_OK
