"""What every benchmark shares: samples and series, timed commands, the isolated instance."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from klaudio.client import Client, answers
from klaudio.paths import Paths, resolve
from klaudio.rpc.v1 import tasks_pb2
from tests.fakemodel import Request, text

DEFAULT_IMAGE = "klaudio-agent:bench"
BASE_IMAGE = "klaudio-base:bookworm"
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
BENCH_LABEL = "klaudio.bench"
TASK_LABEL = "klaudio.task"

QUICK_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0
BUILD_TIMEOUT = 1800.0
# Agents reach their model request this long after their task starts, at most (a loaded machine
# starting a few containers at once takes a while).
AGENT_TIMEOUT = 300.0
# A held model turn answers after this long at most (every benchmark is over well before).
HOLD_LIMIT = 1800.0


class BenchError(Exception):
    """A measured (or set-up) command failed: the figures of this run would mean nothing."""


# Measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One run's wall time, and the CPU time (user + sys) of the processes it waited for."""

    wall: float
    cpu: float


@dataclass
class Series:
    """Samples of one command, repeated."""

    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def low(self) -> float:
        return min(s.wall for s in self.samples)

    @property
    def high(self) -> float:
        return max(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)


def run_checked(
    cmd: Sequence[str], env: dict[str, str], timeout: float, what: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run cmd to its end, capturing its output; raise BenchError unless it exits 0."""
    what = what or shlex.join(cmd)
    try:
        proc = subprocess.run(
            list(cmd),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{what}: exit {proc.returncode}\n{tail}")
    return proc


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU time (user + sys) a live process has used so far; 0 when /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(
    cmd: Sequence[str], env: dict[str, str], timeout: float = QUICK_TIMEOUT, what: str = ""
) -> tuple[subprocess.CompletedProcess[str], Sample]:
    """One successful run of cmd, and what it took."""
    cpu, start = children_cpu(), time.perf_counter()
    proc = run_checked(cmd, env, timeout, what)
    return proc, Sample(time.perf_counter() - start, children_cpu() - cpu)


def timed(cmd: Sequence[str], env: dict[str, str], timeout: float = QUICK_TIMEOUT) -> Sample:
    """What one successful run of cmd took."""
    return measured(cmd, env, timeout)[1]


def interleaved(
    pairs: Sequence[tuple[Series, Callable[[], Sample]]], repeat: int, warm_up: bool = True
) -> None:
    """One untimed warm-up of each measure, then repeat rounds of each once, in turn.

    Alternating spreads any drift of a shared machine over all the series alike.
    """
    if warm_up:
        for _, measure in pairs:
            measure()
    for _ in range(repeat):
        for series, measure in pairs:
            series.samples.append(measure())


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll condition until it returns something true; BenchError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


# The klaudio instance -------------------------------------------------------------------------


@dataclass
class Instance:
    """An isolated klaudio (KLAUDIO_HOME in a temp dir), its agents pointed at the fake model.

    settings are more environment variables (KLAUDIO_AGENTS_PER_TASK and the like).
    """

    home: Path
    image: str
    model_url: str
    klaudio: str
    settings: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(init=False)
    run_id: str = field(init=False)
    task_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.run_id = self.home.parent.name
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KLAUDIO_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        self.env.update(
            # Cached bytecode, as an installed wheel has it, kept out of the source tree.
            PYTHONPYCACHEPREFIX=str(self.home.parent / "pycache"),
            KLAUDIO_HOME=str(self.home),
            KLAUDIO_CLAUDE_BASE_URL=self.model_url,
            KLAUDIO_CLAUDE_MAX_RETRIES="0",
            KLAUDIO_DOCKER_NETWORK="host",
            KLAUDIO_DOCKER_IMAGE=self.image,
            KLAUDIO_DOCKER_BASE_IMAGE=BASE_IMAGE,
            KLAUDIO_DOCKER_EXTRA_CA_FILE=CA_FILE,
            ANTHROPIC_API_KEY="sk-test",
            NO_COLOR="1",
        )
        self.env.update(self.settings)

    @property
    def paths(self) -> Paths:
        return resolve(self.env)

    def cli(self, *args: str) -> list[str]:
        return [self.klaudio, *args]

    def client(self) -> Client:
        return Client(self.paths)

    def answers(self) -> bool:
        """Whether a daemon answers on the instance's socket."""
        client = self.client()
        try:
            return answers(client, timeout=0.5)
        finally:
            client.close()

    def start(self) -> None:
        run_checked(self.cli("daemon", "start"), self.env, QUICK_TIMEOUT, "klaudio daemon start")

    def ensure_image(self) -> None:
        """Build the agent image under the bench tag; a no-op when it is up to date."""
        cmd = self.cli(
            "image", "build", "--base-image", BASE_IMAGE, "--extra-ca-file", CA_FILE,
            "--tag", self.image,
        )  # fmt: skip
        run_checked(cmd, self.env, BUILD_TIMEOUT, "klaudio image build")

    def stop(self) -> None:
        """Stop the daemon: politely, else by the pid it recorded."""
        try:
            run_checked(self.cli("daemon", "stop"), self.env, QUICK_TIMEOUT, "klaudio daemon stop")
        except BenchError as exc:
            print(f"benchmarks: {exc}", file=sys.stderr)
            with suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(self.paths.pid_file.read_text().strip()), signal.SIGKILL)

    def state(self, task_id: str) -> str:
        """The task's state name ("paused", "running", ...)."""
        return self.state_and_reason(task_id)[0]

    def state_and_reason(self, task_id: str) -> tuple[str, str]:
        client = self.client()
        try:
            task = client.get_task(task_id)
        finally:
            client.close()
        name = tasks_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_").lower()
        return name, task.reason

    def settled(self, *task_ids: str) -> str:
        """Why one of the tasks will not get its agents working (it settled), or ""."""
        for task_id in task_ids:
            state, reason = self.state_and_reason(task_id)
            if state in ("failed", "cancelled", "completed", "awaiting_answers"):
                return f"task {task_id[:8]} is {state}" + (f": {reason}" if reason else "")
        return ""

    def log_text(self) -> str:
        log = self.paths.log_file
        return log.read_text(errors="replace") if log.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, to explain a failure (the log goes with the temp dir)."""
        if not self.paths.log_file.exists():
            return "(no daemon log)"
        tail = self.log_text().splitlines()[-lines:]
        return "daemon log, last lines:\n" + "\n".join("  " + line for line in tail)


def running_containers(label: str) -> list[str]:
    """Ids of the running containers with this label (key=value)."""
    return subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
        check=True,
    ).stdout.split()


def remove_containers(inst: Instance) -> None:
    """Remove what this run left: the daemon's containers of its tasks, the baseline's ones."""
    fmt = '{{.ID}} {{.Label "' + TASK_LABEL + '"}}'
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={TASK_LABEL}", "--format", fmt],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    ).stdout
    ids = [
        cid
        for cid, _, task in (ln.partition(" ") for ln in listed.splitlines())
        if task in inst.task_ids
    ]
    ids += subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={BENCH_LABEL}={inst.run_id}"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=QUICK_TIMEOUT)


# Agents that keep working ---------------------------------------------------------------------


class Holds:
    """Fake-model turns that never end on their own: an agent working for as long as needed.

    A held turn waits (in the fake model's request thread) until its agent's container is
    stopped; the agent sees a model request in flight, as with a long answer. Each turn counts
    its entries by marker, so a benchmark can wait until every agent it started is working.
    Held threads are never released (answering a closed connection would only print errors);
    they are daemon threads and end with the process, or after HOLD_LIMIT.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._entered: Counter[str] = Counter()
        self._never = threading.Event()

    def turn(self, marker: str) -> Callable[[Request], list[dict[str, Any]]]:
        def held(req: Request) -> list[dict[str, Any]]:
            with self._cond:
                self._entered[marker] += 1
                self._cond.notify_all()
            self._never.wait(HOLD_LIMIT)
            return [text("held turn over")]

        return held

    def counts(self) -> Counter[str]:
        with self._cond:
            return Counter(self._entered)

    def wait_entered(
        self,
        markers: Iterable[str],
        since: Counter[str],
        timeout: float,
        failed: Callable[[], str] = lambda: "",
    ) -> None:
        """Wait until every marker's turn was entered again after the counts since.

        failed is asked every second or so; what it returns (why waiting is pointless, such as
        a task that failed) ends the wait with a BenchError.
        """
        wanted = list(markers)
        self._wait(lambda: all(self._entered[m] > since[m] for m in wanted), timeout, failed)

    def wait_total(
        self,
        markers: Iterable[str],
        count: int,
        timeout: float,
        failed: Callable[[], str] = lambda: "",
    ) -> None:
        """Wait until the turns of markers were entered count times in all; see wait_entered."""
        wanted = list(markers)
        self._wait(lambda: sum(self._entered[m] for m in wanted) >= count, timeout, failed)

    def _wait(self, done: Callable[[], bool], timeout: float, failed: Callable[[], str]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if done():
                    return
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                if done():
                    return
            why = failed()
            if why:
                raise BenchError(f"agents never got to work: {why}")
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g}s waiting for agents to work")


def plan_of(subtasks: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A DAG plan (the planner's structured output) of independent subtasks (id, prompt)."""
    return {
        "kind": "plan", "analysis": "benchmark", "strategy": "dag", "notes": "",
        "subtasks": [
            {
                "id": key, "name": f"subtask {key}", "description": "", "prompt": prompt,
                "depends_on": [], "files_involved": [], "complexity": "low",
                "agent_role": "developer",
            }
            for key, prompt in subtasks
        ],
    }  # fmt: skip


# Report ---------------------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    """Milliseconds below a second, seconds with two decimals from there on."""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def table(rows: Sequence[Series]) -> list[str]:
    """Wall-time median, min and max, and the median CPU time of the processes waited for."""
    width = max(len(s.label) for s in rows)
    columns = ("median", "min", "max", "cpu")
    head = f"{'command'.ljust(width)}  {'runs':>4}  " + "  ".join(f"{c:>8}" for c in columns)
    lines = [head, "-" * len(head)]
    for s in rows:
        times = "  ".join(f"{fmt_time(t):>8}" for t in (s.median, s.low, s.high, s.cpu))
        lines.append(f"{s.label.ljust(width)}  {len(s.samples):>4}  {times}")
    return lines


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def machine() -> str:
    docker = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
    ).stdout.strip()
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, Docker {docker or '?'}"
    )


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """A line on stderr saying what is being measured, with the time since the start."""
    elapsed = int(time.monotonic() - _STARTED)
    print(f"... {elapsed // 60}:{elapsed % 60:02d} {message}", file=sys.stderr, flush=True)
