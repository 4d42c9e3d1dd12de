"""Runs one agent to its end: start or adopt its container, stream its output, judge it.

Output is persisted and fanned out as it appears, from the stored offset, so a daemon restart
neither loses nor repeats any of it; the outcome comes from the agent's real result event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from klaudiod import states
from klaudiod.agent import Outcome, outcome
from klaudiod.db import Db
from klaudiod.runtime import ContainerSpec, ContainerState, Runtime
from klaudiod.stream import Bus

log = logging.getLogger(__name__)

# The output file is polled quickly while the agent is writing (its exit follows its last
# line at once) and less often the longer it stays quiet.
FAST_POLL_SECONDS = 0.02
SLOW_POLL_SECONDS = 0.25
INSPECT_SECONDS = 2.0
READ_CHUNK = 1 << 20


class OutputFile:
    """Reads whole new lines from an agent's out.jsonl, from a byte offset on."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.offset = offset

    def read(self, final: bool = False) -> list[str]:
        """New complete lines (and, when final, a trailing partial line); advances offset."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read(READ_CHUNK)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        if final and len(data) < READ_CHUNK:
            end = len(data)
        if end == 0:
            return []
        self.offset += end
        text = data[:end].decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]


def exit_code_file(run_dir: Path) -> int | None:
    """The exit code the entrypoint wrote, if it has finished."""
    try:
        return int((run_dir / "exit_code").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


class AgentRunner:
    """Drives agents' containers and output; shared by every task."""

    def __init__(self, db: Db, bus: Bus, runtime: Runtime) -> None:
        self._db = db
        self._bus = bus
        self._runtime = runtime

    async def run(self, agent: Any, spec: ContainerSpec, needs_structured: bool) -> Outcome:
        """Start (or adopt) the agent's container and follow it to its end."""
        store = self._db.store
        if agent.state == states.AGENT_STARTING:
            await asyncio.to_thread(self._runtime.ensure_started, spec)
            agent, event = await self._db.call(
                store.set_agent_state, agent.id, states.AGENT_RUNNING
            )
            self._bus.publish([event])
        run_dir = Path(agent.run_dir)
        out = OutputFile(run_dir / "out.jsonl", agent.output_offset)
        exit_code, container = await self._follow(agent, out, run_dir)
        await self._flush(agent.id, out, final=True)
        if exit_code != 0 and container is None:
            # Look again, now that it has ended: was it killed for memory?
            container = await asyncio.to_thread(self._runtime.state, spec.name)
        oom = bool(container and container.oom_killed)
        result = outcome(run_dir / "out.jsonl", exit_code, oom, needs_structured)
        fields = {
            "exit_code": exit_code,
            "cost_usd": result.cost_usd,
            "reason": result.reason,
            "result": result.result,
        }
        if result.session_id:
            fields["session_id"] = result.session_id
        final = states.AGENT_COMPLETED if result.ok else states.AGENT_FAILED
        _, event = await self._db.call(store.set_agent_state, agent.id, final, **fields)
        self._bus.publish([event])
        await asyncio.to_thread(self._runtime.remove, spec.name)
        return result

    async def _follow(
        self, agent: Any, out: OutputFile, run_dir: Path
    ) -> tuple[int | None, ContainerState | None]:
        """Persist output until the agent exits; return its exit code and container state."""
        next_inspect = 0.0
        delay = FAST_POLL_SECONDS
        while True:
            if await self._flush(agent.id, out):
                delay = FAST_POLL_SECONDS
            else:
                delay = min(delay * 2, SLOW_POLL_SECONDS)
            code = exit_code_file(run_dir)
            if code is not None:
                return code, None
            if time.monotonic() >= next_inspect:
                next_inspect = time.monotonic() + INSPECT_SECONDS
                state = await asyncio.to_thread(self._runtime.state, agent.container)
                if state is None:
                    return exit_code_file(run_dir), None
                if not state.running:
                    # The entrypoint did not record an exit: the container itself was killed.
                    code = exit_code_file(run_dir)
                    return (state.exit_code if code is None else code), state
            await asyncio.sleep(delay)

    async def _flush(self, agent_id: int, out: OutputFile, final: bool = False) -> int:
        """Persist and publish the output's new lines; return how many there were."""
        count = 0
        while True:
            lines = out.read(final)
            if not lines:
                return count
            rows = await self._db.call(self._db.store.append_output, agent_id, lines, out.offset)
            self._bus.publish(rows)
            count += len(lines)


def prepare_run_dir(run_dir: Path, prompt: str, uid: int, gid: int) -> None:
    """Create an agent's run dir (prompt, output files, home) owned by the agent's user."""
    home = run_dir / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    (run_dir / "prompt.txt").write_text(prompt)
    for name in ("out.jsonl", "err.log"):
        (run_dir / name).touch()
    hand_over(run_dir, uid, gid)


def hand_over(path: Path, uid: int, gid: int) -> None:
    """Give a tree to the agent's user when the daemon runs as root (a no-op otherwise)."""
    if os.getuid() == 0 and uid != 0:
        _chown_tree(path, uid, gid)


def take_back(path: Path) -> None:
    """Give a tree back to a root daemon after agents wrote it (a no-op otherwise)."""
    if os.getuid() == 0:
        _chown_tree(path, 0, 0)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
