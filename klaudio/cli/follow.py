"""Following a task's event stream: resume after a cut-off, render for people or as JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from klaudio.cli.common import color_enabled, note, out
from klaudio.cli.render import Renderer
from klaudio.errors import ResourceExhausted, Unavailable

if TYPE_CHECKING:
    from klaudio.client import Client
    from klaudio.rpc.v1.stream_pb2 import Event

KINDS = {1: "agent", 2: "task"}
RECONNECT_SECONDS = 60.0


def events(
    client: Client, task_id: str, agent: str = "", since: int = 0, follow: bool = True
) -> Iterator[Event]:
    """The task's events after since, in order, each once.

    Resumes from the last event seen when the daemon cuts a slow follower off, or restarts (it
    waits up to RECONNECT_SECONDS for the daemon to come back).
    """
    last = since
    while True:
        try:
            for event in client.follow_task(task_id, agent, last, follow):
                last = event.seq
                yield event
            return
        except ResourceExhausted:
            continue
        except Unavailable:
            if not follow:
                raise
            _await_daemon(client)


def _await_daemon(client: Client) -> None:
    from klaudio.client import answers

    note(f"lost the daemon; waiting up to {RECONNECT_SECONDS:g}s for it to come back")
    deadline = time.monotonic() + RECONNECT_SECONDS
    while time.monotonic() < deadline:
        if answers(client, timeout=1.0):
            note("daemon is back; resuming")
            return
        time.sleep(0.2)
    raise Unavailable(f"the daemon did not come back within {RECONNECT_SECONDS:g}s")


class Printer:
    """Prints events for people, or one JSON object per line with as_json."""

    def __init__(self, as_json: bool, show_agent: bool = True) -> None:
        self.as_json = as_json
        self.renderer = Renderer(color=color_enabled() and not as_json, show_agent=show_agent)

    def show(self, event: Event) -> None:
        """Print one event."""
        if self.as_json:
            out(json.dumps(as_dict(event), separators=(",", ":")))
            return
        for line in self.renderer.render(event.seq, event.agent, event.kind, event.json):
            out(line, painted=True)

    def finish(self) -> None:
        """Print the closing summary (cost) for people."""
        if not self.as_json:
            for line in self.renderer.summary():
                out(line, painted=True)


def as_dict(event: Event) -> dict[str, Any]:
    """An event as a plain dict for --json output."""
    try:
        payload: Any = json.loads(event.json)
    except ValueError:
        payload = event.json
    return {
        "seq": event.seq,
        "task": event.task_id,
        "agent": event.agent,
        "kind": KINDS.get(event.kind, "unknown"),
        "time": event.time.ToJsonString() if event.HasField("time") else None,
        "event": payload,
    }


def task_state(event: Event) -> str | None:
    """The task state a lifecycle event announces, if it is one."""
    if event.kind != 2:
        return None
    try:
        payload = json.loads(event.json)
    except ValueError:
        return None
    if isinstance(payload, dict) and payload.get("type") == "task":
        return str(payload.get("state"))
    return None
