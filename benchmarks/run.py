"""Wall-time benchmarks of the klaudio CLI and daemon against baselines run alongside them."""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    from klaudio.client import Client
    from klaudio.config import load as load_config
    from klaudio.paths import resolve
    from klaudiod.agent import command as claude_args
    from klaudiod.agent import outcome, planner_prompt, worker_prompt
    from tests.fakemodel import FakeModel, structured, text, tool_use
except ImportError as exc:  # a usage error, not a measurement
    sys.exit(f"benchmarks: {exc}; run it with the project's venv: .venv/bin/python {__file__}")

DEFAULT_IMAGE = "klaudio-agent:bench"
BASE_IMAGE = "klaudio-base:bookworm"
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
AGENT_USER = "1000:1000"
BENCH_LABEL = "klaudio.bench"
TASK_LABEL = "klaudio.task"

# The planner's prompt quotes the task prompt; the worker's quotes both the task and its subtask.
PLANNER_MARKER = "BENCH-TASK"
WORKER_MARKER = "BENCH-WRITE"
TASK_PROMPT = f"{PLANNER_MARKER}: write x.txt in the workspace"
SUBTASK_PROMPT = f"{WORKER_MARKER}: create /workspace/x.txt"
OUTPUT_FILE = "x.txt"

HELP_TARGET_S = 0.120
LIST_TARGET_S = 0.250
RUN_TARGET_RATIO = 1.25

QUICK_TIMEOUT = 60.0
RUN_TIMEOUT = 300.0
BUILD_TIMEOUT = 1800.0


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


def interleaved(pairs: Sequence[tuple[Series, Callable[[], Sample]]], repeat: int) -> None:
    """One untimed warm-up of each measure, then repeat rounds of each once, in turn.

    Alternating spreads any drift of a shared machine over all the series alike.
    """
    for _, measure in pairs:
        measure()
    for _ in range(repeat):
        for series, measure in pairs:
            series.samples.append(measure())


# The klaudio instance -------------------------------------------------------------------------


@dataclass
class Instance:
    """An isolated klaudio (KLAUDIO_HOME in a temp dir), its agents pointed at the fake model."""

    home: Path
    image: str
    model_url: str
    klaudio: str
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

    def cli(self, *args: str) -> list[str]:
        return [self.klaudio, *args]

    def client(self) -> Client:
        return Client(resolve(self.env))

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
            pid_file = resolve(self.env).pid_file
            with suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the daemon's log, to explain a failure (the log goes with the temp dir)."""
        log = resolve(self.env).log_file
        if not log.exists():
            return "(no daemon log)"
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return "daemon log, last lines:\n" + "\n".join("  " + line for line in tail)


def script_model(model: FakeModel) -> None:
    """A one-subtask plan for the planner; the worker writes one file, then says done.

    The worker's prompt quotes the task prompt too, so its more specific marker goes first
    (the first registered marker found in the first user message wins).
    """
    write = tool_use("Write", {"file_path": f"/workspace/{OUTPUT_FILE}", "content": "x\n"})
    model.script(WORKER_MARKER, [[write], [text("done")]])
    subtask = {
        "id": "write", "name": "write x.txt", "description": "", "prompt": SUBTASK_PROMPT,
        "depends_on": [], "files_involved": [], "complexity": "low", "agent_role": "developer",
    }  # fmt: skip
    plan = {"kind": "plan", "analysis": "one file", "strategy": "dag", "notes": ""}
    model.script(PLANNER_MARKER, [[structured({**plan, "subtasks": [subtask]})]])


# `klaudio run` and its baseline: the same two claude runs straight through docker -------------


def baseline_script(inst: Instance, work: Path) -> str:
    """A shell script doing the planner's and the worker's `docker run`, one after the other.

    The claude arguments and prompts are the daemon's own, so both sides do the same work.
    """
    config = load_config(resolve(inst.env), env=inst.env)
    worker = worker_prompt(TASK_PROMPT, "write", SUBTASK_PROMPT, {})
    runs = [
        ("plan", planner_prompt(TASK_PROMPT), claude_args(config, str(uuid.uuid4()), True)),
        ("write", worker, claude_args(config, str(uuid.uuid4()), False)),
    ]
    ws = work / "workspace"
    lines = ["#!/bin/sh", "set -eu"]
    for name, prompt, args in runs:
        run_dir = work / name
        docker = [
            "docker", "run", "--rm", "--label", f"{BENCH_LABEL}={inst.run_id}",
            "--network", "host", "--user", AGENT_USER,
            "-e", f"ANTHROPIC_BASE_URL={inst.model_url}", "-e", "ANTHROPIC_API_KEY=sk-test",
            "-e", "CLAUDE_CODE_MAX_RETRIES=0",
            "-v", f"{ws}:/workspace", "-v", f"{run_dir}:/klaudio/run",
            "--entrypoint", "claude", inst.image, "-p", prompt, *args,
        ]  # fmt: skip
        dirs = shlex.join([str(ws), str(run_dir)])
        out = shlex.quote(str(run_dir / "out.jsonl"))
        lines += [
            f"mkdir -p {dirs}",
            f"chmod 0777 {dirs}",
            f"{shlex.join(docker)} </dev/null >{out}",
        ]
    return "\n".join(lines) + "\n"


def time_baseline(inst: Instance, scratch: Path) -> Sample:
    """Wall time of the baseline script in a fresh directory; checks both runs did their work."""
    work = Path(tempfile.mkdtemp(prefix="baseline-", dir=scratch))
    script = work / "run.sh"
    script.write_text(baseline_script(inst, work))
    sample = timed(["sh", str(script)], inst.env, RUN_TIMEOUT)
    planned = outcome(work / "plan" / "out.jsonl", 0, needs_structured=True)
    if not planned.ok:
        raise BenchError(f"baseline: the planner run failed: {planned.reason}")
    if not (work / "workspace" / OUTPUT_FILE).is_file():
        raise BenchError(f"baseline: the worker run did not write {OUTPUT_FILE}")
    shutil.rmtree(work, ignore_errors=True)
    return sample


def time_klaudio_run(inst: Instance) -> Sample:
    """What one `klaudio run --auto-approve` took; checks the worker wrote its file."""
    cmd = inst.cli("run", TASK_PROMPT, "--auto-approve")
    proc, sample = measured(cmd, inst.env, RUN_TIMEOUT)
    found = re.search(r"task ([0-9a-f]+) created", proc.stderr)
    if not found:
        raise BenchError(f"klaudio run: no task id in its output:\n{proc.stderr[-800:]}")
    inst.task_ids.add(found.group(1))
    client = inst.client()
    try:
        workspace = Path(client.get_task(found.group(1)).workspace)
    finally:
        client.close()
    if not (workspace / OUTPUT_FILE).is_file():
        raise BenchError(f"klaudio run: the worker did not write {OUTPUT_FILE} in {workspace}")
    return sample


# The benchmarks -------------------------------------------------------------------------------


def bench_help(inst: Instance, repeat: int) -> tuple[Series, Series, Series]:
    """klaudio --help, docker ps, and the bare interpreter's start and exit (the floor)."""
    help_, ps = Series("klaudio --help"), Series("docker ps")
    floor = Series("python -c pass (interpreter floor)")
    interleaved(
        [
            (help_, lambda: timed(inst.cli("--help"), inst.env)),
            (ps, lambda: timed(["docker", "ps"], inst.env)),
            (floor, lambda: timed([sys.executable, "-c", "pass"], inst.env)),
        ],
        repeat,
    )
    return help_, ps, floor


def create_tasks(inst: Instance, count: int) -> float:
    """Create count tasks through the Python client; return how long that took."""
    client = inst.client()
    start = time.perf_counter()
    try:
        for i in range(count):
            inst.task_ids.add(client.create_task(f"bench prompt {i}").id)
    finally:
        client.close()
    return time.perf_counter() - start


def bench_list(inst: Instance, repeat: int, tasks: int) -> tuple[Series, Series]:
    """klaudio task list (checking it lists every task) next to docker ps."""
    listing, ps = Series(f"klaudio task list ({tasks} tasks)"), Series("docker ps")

    def list_once() -> Sample:
        proc, sample = measured(inst.cli("task", "list"), inst.env)
        listed = len(proc.stdout.splitlines()) - 1
        if listed < tasks:
            raise BenchError(f"klaudio task list: {listed} tasks listed, expected {tasks}")
        return sample

    interleaved([(listing, list_once), (ps, lambda: timed(["docker", "ps"], inst.env))], repeat)
    return listing, ps


def bench_run(inst: Instance, scratch: Path, repeat: int) -> tuple[Series, Series]:
    """klaudio run of a one-subtask plan next to the two plain docker runs it amounts to."""
    run = Series("klaudio run (1-subtask plan)")
    base = Series("2x docker run (shell script)")
    interleaved(
        [(run, lambda: time_klaudio_run(inst)), (base, lambda: time_baseline(inst, scratch))],
        repeat,
    )
    return run, base


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


def verdicts(
    help_: Sequence[Series], listing: Sequence[Series], run: Sequence[Series]
) -> list[str]:
    (h, ps1, *_), (lst, ps2), (r, base) = help_, listing, run
    ratio = r.median / base.median
    return [
        f"klaudio --help     median {fmt_time(h.median)}  (docker ps {fmt_time(ps1.median)})"
        f"  target < {fmt_time(HELP_TARGET_S)}  {verdict(h.median < HELP_TARGET_S)}",
        f"klaudio task list  median {fmt_time(lst.median)}  (docker ps {fmt_time(ps2.median)},"
        f" ratio {lst.median / ps2.median:.1f})"
        f"  target < {fmt_time(LIST_TARGET_S)}  {verdict(lst.median < LIST_TARGET_S)}",
        f"klaudio run        median {fmt_time(r.median)}  (2x docker run {fmt_time(base.median)},"
        f" ratio {ratio:.2f})  target ratio < {RUN_TARGET_RATIO:.2f}"
        f"  {verdict(ratio < RUN_TARGET_RATIO)}",
    ]


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


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


# Set-up and clean-up --------------------------------------------------------------------------


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


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so clean-up runs on either."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def klaudio_executable() -> str:
    beside = Path(sys.executable).parent / "klaudio"
    found = str(beside) if beside.is_file() else shutil.which("klaudio")
    if not found:
        raise BenchError("no `klaudio` executable beside this Python or on PATH")
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--repeat", type=int, default=20, help="runs of --help, task list, docker ps (20)")
    add("--run-repeat", type=int, default=5, help="runs of klaudio run and its baseline (5)")
    add("--tasks", type=int, default=1000, help="tasks in the store for task list (1000)")
    add("--image", default=DEFAULT_IMAGE, help=f"agent image tag, built if stale ({DEFAULT_IMAGE})")
    args = parser.parse_args(argv)
    if min(args.repeat, args.run_repeat, args.tasks) < 1:
        parser.error("--repeat, --run-repeat and --tasks must be at least 1")
    return args


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    """Measure everything, cleaning up the daemon and containers whatever happens; print."""
    with FakeModel() as model:
        script_model(model)
        inst = Instance(scratch / "home", args.image, model.url, klaudio_executable())
        inst.home.mkdir()
        progress(f"klaudio --help, docker ps and python -c pass, {args.repeat} runs each")
        help_ = bench_help(inst, args.repeat)
        try:
            progress(f"starting the daemon; building {args.image} unless it is up to date")
            inst.start()
            inst.ensure_image()
            progress(f"creating {args.tasks} tasks")
            created = create_tasks(inst, args.tasks)
            progress(f"klaudio task list and docker ps, {args.repeat} runs each")
            listing = bench_list(inst, args.repeat, args.tasks)
            progress(f"klaudio run and its docker baseline, {args.run_repeat} runs each")
            run = bench_run(inst, scratch, args.run_repeat)
        except BenchError as exc:
            raise BenchError(f"{exc}\n{inst.log_tail()}") from None
        finally:
            inst.stop()
            remove_containers(inst)
    print(f"klaudio benchmarks on {machine()}; agent image {args.image}")
    print(
        f"set-up: {args.tasks} tasks created through the client in {created:.1f} s; "
        "Python bytecode cached (as an installed wheel has it)"
    )
    print()
    print("\n".join(table([*help_, *listing, *run])))
    print()
    print("\n".join(verdicts(help_, listing, run)))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="kbench-"))
    try:
        with terminate_as_interrupt():
            benchmark(args, scratch)
    except BenchError as exc:
        print(f"benchmarks: a measured command failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmarks: interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
