"""Runs one agent run to its end: start or adopt its container, stream its output, judge it.

Output is persisted and fanned out as it appears, from the stored offset, so a daemon restart
neither loses nor repeats any of it; the outcome comes from the agent's real result event. A
run always ends recorded (completed, failed or stopped), whatever happens to Docker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path

from klaudio.errors import KlaudioError
from klaudiod import safefs, states
from klaudiod.agent import Outcome, outcome
from klaudiod.db import Db
from klaudiod.janitor import Janitor
from klaudiod.launcher import Launcher
from klaudiod.records import AgentRecord, RunRecord, TaskRecord
from klaudiod.runtime import ContainerState, EngineUnavailable, Runtime, agent_user
from klaudiod.stream import Bus
from klaudiod.workspace import TaskFiles, prepare_run

log = logging.getLogger(__name__)

# The output file is polled quickly while the agent is writing (its exit follows its last
# line at once) and less often the longer it stays quiet.
FAST_POLL_SECONDS = 0.02
SLOW_POLL_SECONDS = 0.25
INSPECT_SECONDS = 2.0
READ_CHUNK = 1 << 20
# A longer output line is not kept (the gRPC stream could not carry it); a marker replaces it.
MAX_LINE = 16 << 20
# How long a run waits for a Docker engine that stopped answering before it gives up.
ENGINE_PATIENCE_SECONDS = 60.0
# How long a killed run's end waits to see whether the engine is going away.
ENGINE_SHUTDOWN_SECONDS = 3.0
EXIT_CODE_LIMIT = 64
# How long a stopped agent gets to end its turn after SIGINT before SIGTERM and SIGKILL.
DEFAULT_GRACE_SECONDS = 10.0


class OutputFile:
    """Reads whole new lines of a run's out.jsonl from a byte offset, link-safely.

    A line of any length comes back whole; memory is bounded by the longest line (and by
    MAX_LINE), never by the file. The offset only moves past complete lines, so after a
    restart an unfinished line is read again from its start.
    """

    def __init__(self, root: Path, rel: str, offset: int) -> None:
        self.root = root
        self.rel = rel
        self.offset = offset
        self._partial = bytearray()
        self._dropped = 0

    def read(self, final: bool = False) -> list[str]:
        """New complete lines (and, when final, a trailing partial line); advances offset.

        Raises:
            safefs.Refused: when the file was replaced by a link or a non-regular file.
        """
        lines: list[bytes] = []
        while not lines:
            try:
                data = safefs.read_at(
                    self.root,
                    self.rel,
                    self.offset + len(self._partial) + self._dropped,
                    READ_CHUNK,
                )
            except FileNotFoundError:
                data = b""
            if not data:
                break
            lines = self._take(data)
        if final and (self._partial or self._dropped):
            lines.append(self._finish_line(len(self._partial) + self._dropped))
        return [text for raw in lines if (text := raw.decode("utf-8", "replace")).strip()]

    def _take(self, data: bytes) -> list[bytes]:
        lines = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            size = len(self._partial) + self._dropped + end - start + 1
            if not self._dropped and len(self._partial) + end - start <= MAX_LINE:
                self._partial += data[start:end]
            else:
                self._dropped += len(self._partial) + end - start
                self._partial.clear()
            lines.append(self._finish_line(size))
            start = end + 1
        rest = data[start:]
        if self._dropped or len(self._partial) + len(rest) > MAX_LINE:
            self._dropped += len(self._partial) + len(rest)
            self._partial.clear()
        else:
            self._partial += rest
        return lines

    def _finish_line(self, size: int) -> bytes:
        """Close the current line: its bytes, or a marker when it was too long to keep."""
        self.offset += size
        line = bytes(self._partial)
        if self._dropped:
            marker = {"type": "klaudio", "subtype": "line_dropped", "bytes": size, "max": MAX_LINE}
            line = json.dumps(marker).encode()
        self._partial.clear()
        self._dropped = 0
        return line


class Stop:
    """A request to stop a task's agents: set once, with each agent's grace and the reason."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.grace = DEFAULT_GRACE_SECONDS
        self.reason = "stopped"
        # A person asked (stop, cancel), as opposed to the daemon after an interruption.
        self.by_user = False

    def set(self, reason: str, grace: float | None = None, by_user: bool = False) -> None:
        """Ask the agents to stop (the first request's reason and grace stand)."""
        if not self._event.is_set():
            self.reason = reason
            self.grace = DEFAULT_GRACE_SECONDS if grace is None else grace
            self.by_user = by_user
            self._event.set()

    def is_set(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    async def wait(self) -> None:
        """Return once a stop is requested."""
        await self._event.wait()


def exit_code_file(run_dir: Path) -> int | None:
    """The exit code the entrypoint wrote, if it has finished.

    Raises:
        safefs.Refused: when the file was replaced by a link or a non-regular file.
    """
    try:
        text = safefs.read_text(run_dir, "exit_code", EXIT_CODE_LIMIT)
    except FileNotFoundError:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


class AgentRunner:
    """Starts, follows and ends agent runs; shared by every task."""

    def __init__(
        self,
        tasks_dir: Path,
        db: Db,
        bus: Bus,
        runtime: Runtime,
        launcher: Launcher,
        janitor: Janitor,
    ) -> None:
        self._tasks_dir = tasks_dir
        self._db = db
        self._bus = bus
        self._runtime = runtime
        self._launcher = launcher
        self._janitor = janitor

    async def run(
        self,
        task: TaskRecord,
        agent: AgentRecord,
        run: RunRecord,
        planner: bool,
        stop: Stop,
    ) -> tuple[Outcome, str]:
        """Take a live run to its end and record it; return its outcome and final run state.

        When stop is set the container is stopped gracefully (SIGINT, then SIGTERM/SIGKILL
        after stop.grace seconds) and the run ends as stopped, with the stop's reason, unless
        it had already completed.
        Cancelling this coroutine (daemon shutdown) leaves the container running for the
        next daemon to adopt.
        """
        try:
            if run.state == states.RUN_STARTING:
                if stop.is_set():
                    result = Outcome(False, None, f"{stop.reason} before it started", "", 0.0, "")
                    await self._end(run, states.RUN_STOPPED, result)
                    return result, states.RUN_STOPPED
                run = await self._start(task, agent, run, planner)
            result = await self._follow_to_end(run, planner, stop)
        except asyncio.CancelledError:
            raise
        except EngineUnavailable as exc:
            result = Outcome(
                False, None, str(exc), "", 0.0, "", engine_lost=run.state != states.RUN_STARTING
            )
        except KlaudioError as exc:
            result = Outcome(False, None, str(exc), "", 0.0, "")
        except Exception as exc:
            log.exception("run %s: internal error", run.container)
            result = Outcome(False, None, f"internal error: {exc}", "", 0.0, "")
        final = _final_state(result, stop.is_set())
        if final == states.RUN_STOPPED and not result.interrupted:
            # Claude Code's own account of an interrupted turn says less than this.
            exit_code = "" if result.exit_code is None else f" (exit {result.exit_code})"
            result = dataclasses.replace(result, reason=stop.reason + exit_code)
        await self._end(run, final, result)
        return result, final

    async def _start(
        self, task: TaskRecord, agent: AgentRecord, run: RunRecord, planner: bool
    ) -> RunRecord:
        files = TaskFiles(self._tasks_dir, task.id)
        uid, gid = agent_user()
        await self._launcher.ensure_image(task.id)

        def prepare() -> None:
            prepare_run(files, agent.name, Path(run.run_dir), run.prompt, uid, gid)
            self._launcher.write_secrets(run.container)

        await asyncio.to_thread(prepare)
        spec = await asyncio.to_thread(self._launcher.spec, task, agent, run, planner)
        await asyncio.to_thread(self._runtime.ensure_started, spec)
        run, event = await self._db.call(self._db.store.set_run_running, run.id)
        self._bus.publish([event])
        return run

    async def _follow_to_end(self, run: RunRecord, planner: bool, stop: Stop) -> Outcome:
        run_dir = Path(run.run_dir)
        out = OutputFile(run_dir, "out.jsonl", run.output_offset)

        async def stop_container() -> None:
            await stop.wait()
            await asyncio.to_thread(self._runtime.stop, run.container, stop.grace)

        stopper = asyncio.create_task(stop_container())
        try:
            exit_code, container = await self._follow(run, out)
            await self._flush(run.id, out, final=True)
        except safefs.Refused as exc:
            # The agent replaced its own output files: judge it by that, not by their content.
            return Outcome(False, None, f"its run directory was tampered with: {exc}", "", 0.0, "")
        finally:
            stopper.cancel()
        engine_lost = False
        if exit_code != 0 and container is None:
            # Look again, now that it has ended: was it killed for memory, or by an engine
            # that went away (it stops every container as it goes)?
            try:
                container = await asyncio.to_thread(self._runtime.state, run.container)
            except EngineUnavailable:
                engine_lost = True
        oom = bool(container and container.oom_killed)
        result = await asyncio.to_thread(outcome, run_dir / "out.jsonl", exit_code, oom, planner)
        if result.killed and not engine_lost and not stop.by_user:
            engine_lost = await self._engine_going()
        if engine_lost and not result.ok:
            reason = f"{result.reason}; the Docker engine went away meanwhile"
            result = dataclasses.replace(result, reason=reason, engine_lost=True)
        return result

    async def _engine_going(self) -> bool:
        """Whether the engine stops answering within a few seconds.

        An engine shutting down stops every container first and answers a moment longer, so a
        killed run is the first sign of it.
        """
        deadline = time.monotonic() + ENGINE_SHUTDOWN_SECONDS
        while time.monotonic() < deadline:
            try:
                await asyncio.to_thread(self._runtime.ping)
            except EngineUnavailable:
                return True
            await asyncio.sleep(0.2)
        return False

    async def _follow(
        self, run: RunRecord, out: OutputFile
    ) -> tuple[int | None, ContainerState | None]:
        """Persist output until the run exits; return its exit code and container state."""
        run_dir = Path(run.run_dir)
        next_inspect = 0.0
        engine_gone: float | None = None
        delay = FAST_POLL_SECONDS
        while True:
            if await self._flush(run.id, out):
                delay = FAST_POLL_SECONDS
            else:
                delay = min(delay * 2, SLOW_POLL_SECONDS)
            code = await asyncio.to_thread(exit_code_file, run_dir)
            if code is not None:
                return code, None
            if time.monotonic() >= next_inspect:
                next_inspect = time.monotonic() + INSPECT_SECONDS
                try:
                    state = await asyncio.to_thread(self._runtime.state, run.container)
                except EngineUnavailable as exc:
                    # The output file may still tell how it ends; give the engine a while.
                    engine_gone = engine_gone or time.monotonic()
                    if time.monotonic() - engine_gone > ENGINE_PATIENCE_SECONDS:
                        raise EngineUnavailable(
                            f"{exc}; gave up after {ENGINE_PATIENCE_SECONDS:g}s"
                        ) from None
                    state = ContainerState(True, None, False, "")
                else:
                    engine_gone = None
                if state is None:
                    return await asyncio.to_thread(exit_code_file, run_dir), None
                if not state.running:
                    # The entrypoint did not record an exit: the container itself was killed.
                    code = await asyncio.to_thread(exit_code_file, run_dir)
                    return (state.exit_code if code is None else code), state
            await asyncio.sleep(delay)

    async def _flush(self, run_id: int, out: OutputFile, final: bool = False) -> int:
        """Persist and publish the output's new lines; return how many there were."""
        count = 0
        while True:
            lines = await asyncio.to_thread(out.read, final)
            if not lines:
                return count
            rows = await self._db.call(self._db.store.append_output, run_id, lines, out.offset)
            self._bus.publish(rows)
            count += len(lines)

    async def _end(self, run: RunRecord, final: str, result: Outcome) -> None:
        """Record how the run ended, then remove its container and credentials."""
        _, event = await self._db.call(
            self._db.store.end_run,
            run.id,
            final,
            exit_code=result.exit_code,
            cost_usd=result.cost_usd,
            reason=result.reason if final != states.RUN_COMPLETED else "",
            result=result.result,
        )
        self._bus.publish([event])
        await asyncio.to_thread(self._launcher.remove_secrets, run.container)
        await self._janitor.remove(run.container)


def _final_state(result: Outcome, stopping: bool) -> str:
    if result.ok:
        return states.RUN_COMPLETED
    return states.RUN_STOPPED if stopping or result.interrupted else states.RUN_FAILED
