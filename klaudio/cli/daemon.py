"""`klaudio daemon start|stop|status|logs`: manage the background daemon."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from klaudio import errors
from klaudio.cli.common import OPTIONS, note, out, paths

app = typer.Typer(
    help="Start, stop and inspect the klaudio daemon (klaudiod).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
STOP_TIMEOUT = 10.0


@app.command("start")
def start() -> None:
    """Start the daemon in the background unless one already answers."""
    from klaudio.client import Client, answers, start_daemon

    instance = paths()
    if answers(Client(instance)):
        note(f"klaudiod already running on {instance.socket}")
        return
    pid = start_daemon(instance, OPTIONS.config_file)
    note(f"started klaudiod (pid {pid}, log {instance.log_file})")


@app.command("stop")
def stop() -> None:
    """Stop the daemon; running agents keep running and are adopted on the next start."""
    from klaudio.client import Client, answers, read_pid
    from klaudio.procs import alive

    instance = paths()
    client = Client(instance)
    if not answers(client):
        note("klaudiod is not running")
        return
    pid = read_pid(instance)
    client.stop_daemon()
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not instance.socket.exists() and (pid is None or not alive(pid)):
            note("klaudiod stopped")
            return
        time.sleep(0.05)
    raise errors.Timeout(f"klaudiod did not stop within {STOP_TIMEOUT:g}s")


@app.command("status")
def status() -> None:
    """Show whether the daemon runs, its version, pid, socket and load. Exit 5 if not running."""
    from klaudio.client import Client, answers

    instance = paths()
    client = Client(instance)
    if not answers(client):
        raise errors.Unavailable(f"klaudiod is not running (socket {instance.socket})")
    health = client.health()
    uptime = int(time.time() - health.started_at.seconds)
    out(f"klaudiod {health.version} running (pid {health.pid}, up {uptime}s)")
    out(f"socket:  {health.socket}")
    out(f"data:    {health.data_dir}")
    out(f"image:   {health.image}")
    out(f"tasks:   {health.tasks_active} active, {health.agents_running} agents running")


@app.command("logs")
def logs(
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="How many lines.")] = 50,
) -> None:
    """Print the end of the daemon's log."""
    log_file = paths().log_file
    if not log_file.exists():
        raise errors.NotFound(f"no daemon log at {log_file}")
    # Split on newlines only: other line breaks (CR, U+0085) are shown escaped, not obeyed.
    text = log_file.read_bytes().decode(errors="replace").removesuffix("\n")
    tail = text.split("\n")[-lines:] if lines and text else []
    for line in tail:
        out(line)
