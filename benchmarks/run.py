"""Wall-time benchmarks of the klaudio CLI and daemon against baselines run alongside them."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

try:
    from benchmarks import checkpoint, control
    from benchmarks.common import (
        BENCH_LABEL,
        DEFAULT_IMAGE,
        QUICK_TIMEOUT,
        RUN_TIMEOUT,
        BenchError,
        Holds,
        Instance,
        Sample,
        Series,
        fmt_time,
        interleaved,
        machine,
        measured,
        progress,
        remove_containers,
        table,
        timed,
        verdict,
        wait_until,
    )
    from klaudio.config import Config
    from klaudio.config import load as load_config
    from klaudiod.agent import command as claude_args
    from klaudiod.agent import outcome, planner_prompt, worker_prompt
    from tests.fakemodel import FakeModel, structured, text, tool_use
except ImportError as exc:  # a usage error, not a measurement
    sys.exit(f"benchmarks: {exc}; run it with the project's venv: .venv/bin/python {__file__}")

AGENT_USER = "1000:1000"

# The planner's prompt quotes the task prompt; the worker's quotes both the task and its subtask.
PLANNER_MARKER = "BENCH-TASK"
WORKER_MARKER = "BENCH-WRITE"
TASK_PROMPT = f"{PLANNER_MARKER}: write x.txt in the workspace"
SUBTASK_PROMPT = f"{WORKER_MARKER}: create /workspace/x.txt"
OUTPUT_FILE = "x.txt"

HELP_TARGET_S = 0.120
LIST_TARGET_S = 0.250
RUN_TARGET_RATIO = 1.25
STOP_TARGET_S = 2.0
CHECKPOINT_TARGET_RATIO = 1.2
RESTART_TARGET_S = 2.0

BENCHMARKS = ("help", "list", "run", "stop", "checkpoint", "restart")
# The benchmarks that use the main instance's daemon.
WITH_DAEMON = frozenset({"list", "run", "stop", "checkpoint"})


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
    config = load_config(inst.paths, env=inst.env)
    claude = claude_settings(config)
    worker = worker_prompt(TASK_PROMPT, "write", SUBTASK_PROMPT, {})
    runs = [
        ("plan", planner_prompt(TASK_PROMPT), claude_args(claude, str(uuid.uuid4()), True)),
        ("write", worker, claude_args(claude, str(uuid.uuid4()), False)),
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


def claude_settings(config: Any) -> Any:
    """What klaudiod.agent.command takes: a task's settings where tasks record them (from the
    configuration, as a new task gets them), else the configuration itself."""
    try:
        module = importlib.import_module("klaudiod.settings")
    except ImportError:
        return config
    return module.from_config(config)


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


def klaudio_executable() -> str:
    beside = Path(sys.executable).parent / "klaudio"
    found = str(beside) if beside.is_file() else shutil.which("klaudio")
    if not found:
        raise BenchError("no `klaudio` executable beside this Python or on PATH")
    return found


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


def selection(value: str) -> frozenset[str]:
    chosen = frozenset(v.strip() for v in value.split(",") if v.strip())
    unknown = chosen - set(BENCHMARKS)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(sorted(unknown)) or '(none)'}; "
            f"choose from {','.join(BENCHMARKS)}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add(
        "--only",
        type=selection,
        default=frozenset(BENCHMARKS),
        help=f"comma-separated benchmarks to run, of {','.join(BENCHMARKS)} (all)",
    )
    add("--repeat", type=int, default=20, help="runs of --help, task list, docker ps (20)")
    add("--run-repeat", type=int, default=5, help="runs of klaudio run and its baseline (5)")
    add("--tasks", type=int, default=1000, help="tasks in the store for task list (1000)")
    add("--stop-repeat", type=int, default=5, help="stops of a task of 4 working agents (5)")
    add(
        "--checkpoint-repeat",
        type=int,
        default=3,
        help="runs of checkpoint write and restore and of tar -cf / -xf (3)",
    )
    add("--checkpoint-files", type=int, default=50_000, help="files in the workspace (50000)")
    add("--checkpoint-mib", type=int, default=1024, help="MiB in the workspace (1024)")
    add(
        "--restart-repeat",
        type=int,
        default=5,
        help="daemon restarts, each way (5)",
    )
    add("--restart-tasks", type=int, default=10_000, help="tasks in the restarted store (10000)")
    add("--image", default=DEFAULT_IMAGE, help=f"agent image tag, built if stale ({DEFAULT_IMAGE})")
    args = parser.parse_args(argv)
    counts = (
        args.repeat, args.run_repeat, args.tasks, args.stop_repeat, args.checkpoint_repeat,
        args.checkpoint_files, args.checkpoint_mib, args.restart_repeat,
    )  # fmt: skip
    if min(counts) < 1:
        parser.error("every count and repeat must be at least 1")
    if args.restart_tasks <= control.LIVE_TASKS:
        parser.error(f"--restart-tasks must be more than {control.LIVE_TASKS}")
    return args


@dataclass
class Report:
    """What was measured: table rows, verdict lines, notes on how."""

    rows: list[Series] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_quick(
    report: Report, help_: Sequence[Series], listing: Sequence[Series], run: Sequence[Series]
) -> None:
    if help_:
        h, ps, _ = help_
        report.rows += help_
        report.verdicts.append(
            f"klaudio --help     median {fmt_time(h.median)}  (docker ps {fmt_time(ps.median)})"
            f"  target < {fmt_time(HELP_TARGET_S)}  {verdict(h.median < HELP_TARGET_S)}"
        )
    if listing:
        lst, ps = listing
        report.rows += listing
        report.verdicts.append(
            f"klaudio task list  median {fmt_time(lst.median)}  (docker ps {fmt_time(ps.median)},"
            f" ratio {lst.median / ps.median:.1f})"
            f"  target < {fmt_time(LIST_TARGET_S)}  {verdict(lst.median < LIST_TARGET_S)}"
        )
    if run:
        r, base = run
        ratio = r.median / base.median
        report.rows += run
        report.verdicts.append(
            f"klaudio run        median {fmt_time(r.median)}  (2x docker run "
            f"{fmt_time(base.median)}, ratio {ratio:.2f})  target ratio < {RUN_TARGET_RATIO:.2f}"
            f"  {verdict(ratio < RUN_TARGET_RATIO)}"
        )


def report_stop(report: Report, stop: control.StopResult) -> None:
    s = stop.latency
    # The CLI's own return time differs only when a check after it found the stop unfinished.
    report.rows += [stop.latency, stop.cli] if stop.late else [stop.latency]
    logged = sorted(stop.checkpoint)
    ckpt = f"; its checkpoint median {fmt_time(logged[len(logged) // 2])}" if logged else ""
    late = f"; {stop.late} not yet done when the CLI returned" if stop.late else ""
    report.verdicts.append(
        f"task stop          median {fmt_time(s.median)} (min {fmt_time(s.low)}, max "
        f"{fmt_time(s.high)}{ckpt}{late})  target < {fmt_time(STOP_TARGET_S)}"
        f"  {verdict(s.median < STOP_TARGET_S)}"
    )


def report_checkpoint(
    report: Report,
    ws: checkpoint.Workspace,
    direct: Sequence[Series],
    e2e: checkpoint.EndToEnd | None,
) -> None:
    write, create, synced, extract, untar, removal = direct
    report.rows += direct
    w, x = write.median / create.median, extract.median / untar.median
    shape = f"{ws.size / 2**30:.2f} GiB in {ws.files} files"
    report.verdicts += [
        f"checkpoint write   median {fmt_time(write.median)}  (tar -cf {fmt_time(create.median)},"
        f" ratio {w:.2f}; tar -cf + fsync {fmt_time(synced.median)}, ratio "
        f"{write.median / synced.median:.2f})  target ratio <= {CHECKPOINT_TARGET_RATIO}"
        f"  {verdict(w <= CHECKPOINT_TARGET_RATIO)}",
        f"checkpoint restore median {fmt_time(extract.median)}  (tar -xf "
        f"{fmt_time(untar.median)}, ratio {x:.2f})  target ratio <= {CHECKPOINT_TARGET_RATIO}"
        f"  {verdict(x <= CHECKPOINT_TARGET_RATIO)}",
    ]
    report.notes.append(f"checkpoint: a workspace of {shape}")
    if e2e is not None:
        report.notes.append(
            f"checkpoint through a task (once): `task stop` {fmt_time(e2e.stop)}, its checkpoint "
            f"({e2e.size / 2**30:.2f} GiB) written in {fmt_time(e2e.write)} (ratio to tar -cf "
            f"{e2e.write / create.median:.2f}); `task restore` {fmt_time(e2e.restore)} (ratio to "
            f"tar -xf {e2e.restore / untar.median:.2f}; the trees it replaces are removed "
            f"afterwards in a thread: {fmt_time(removal.median)} alone above)"
        )


def report_restart(report: Report, restart: control.RestartResult, filled: float) -> None:
    r = restart.to_list
    report.rows += [restart.to_list, restart.to_answer, restart.autostart, restart.warm_list]
    report.verdicts.append(
        f"daemon restart     median {fmt_time(r.median)}  (answering after "
        f"{fmt_time(restart.to_answer.median)}; task list with the daemon up "
        f"{fmt_time(restart.warm_list.median)})  target < {fmt_time(RESTART_TARGET_S)}"
        f"  {verdict(r.median < RESTART_TARGET_S)}"
    )
    stored = restart.tasks - control.LIVE_TASKS - 1
    report.notes.append(
        f"restart: {stored} tasks written through the daemon's Store in {filled:.1f} s, like one "
        f"created through the client; {control.LIVE_TASKS} more created through the client with "
        f"{restart.adopted} agents working"
    )


def checkpoint_direct(
    args: argparse.Namespace, scratch: Path
) -> tuple[checkpoint.Workspace, list[Series]]:
    work = scratch / "checkpoint"
    work.mkdir()
    size = args.checkpoint_mib << 20
    progress(f"writing a workspace of {args.checkpoint_mib} MiB in {args.checkpoint_files} files")
    ws = checkpoint.make_workspace(work / "workspace", args.checkpoint_files, size)
    progress(f"checkpoint write and restore, tar -cf and -xf, {args.checkpoint_repeat} runs each")
    return ws, checkpoint.bench_direct(ws, work, args.checkpoint_repeat)


def with_daemon(
    args: argparse.Namespace,
    scratch: Path,
    inst: Instance,
    holds: Holds,
    ws: checkpoint.Workspace | None,
    report: Report,
    direct: list[Series],
) -> None:
    """The benchmarks that use the main instance's daemon."""
    only = args.only
    try:
        progress(f"starting the daemon; building {args.image} unless it is up to date")
        inst.start()
        inst.ensure_image()
        listing: tuple[Series, ...] = ()
        run: tuple[Series, ...] = ()
        if "list" in only:
            progress(f"creating {args.tasks} tasks")
            created = create_tasks(inst, args.tasks)
            report.notes.append(
                f"list: {args.tasks} tasks created through the client in {created:.1f} s"
            )
            progress(f"klaudio task list and docker ps, {args.repeat} runs each")
            listing = bench_list(inst, args.repeat, args.tasks)
        if "run" in only:
            progress(f"klaudio run and its docker baseline, {args.run_repeat} runs each")
            run = bench_run(inst, scratch, args.run_repeat)
        report_quick(report, (), listing, run)
        if "stop" in only:
            progress(
                f"klaudio task stop of {control.STOP_AGENTS} working agents, "
                f"{args.stop_repeat} runs"
            )
            report_stop(report, control.bench_stop(inst, holds, args.stop_repeat))
        if ws is not None:
            progress("a checkpoint through a task: stop, then restore")
            e2e = checkpoint.bench_end_to_end(inst, holds, ws)
            report_checkpoint(report, ws, direct, e2e)
    except BenchError as exc:
        raise BenchError(f"{exc}\n{inst.log_tail()}") from None
    finally:
        inst.stop()
        remove_containers(inst)


def restart(
    args: argparse.Namespace, scratch: Path, model: FakeModel, holds: Holds, report: Report
) -> None:
    """The daemon restart benchmark, on an instance of its own."""
    per_task = str(control.AGENTS_PER_LIVE_TASK)
    agents = control.LIVE_TASKS * control.AGENTS_PER_LIVE_TASK
    settings = {
        "KLAUDIO_AGENTS_PER_TASK": per_task,
        "KLAUDIO_AGENTS_MAX_CONCURRENT": str(agents + control.LIVE_TASKS),
        **team_settings(),
    }
    inst = Instance(
        scratch / "restart", args.image, model.url, klaudio_executable(), settings=settings
    )
    inst.home.mkdir()
    # The template task, then the stored ones, then the live ones: --restart-tasks in all.
    stored = args.restart_tasks - control.LIVE_TASKS - 1
    daemon = control.Daemon(inst)
    try:
        daemon.start()
        wait_answers(inst)
        inst.ensure_image()
        template = control.template_task(inst)
        daemon.terminate()
        progress(f"writing {stored} tasks through the daemon's Store")
        paths = inst.paths
        filled = control.fill_store(paths.db_file, paths.tasks_dir, stored, template)
        daemon.start()
        wait_answers(inst)
        progress(
            f"daemon restarts with {args.restart_tasks} tasks, {args.restart_repeat} runs each way"
        )
        result = control.bench_restart(inst, holds, daemon, args.restart_tasks, args.restart_repeat)
        report_restart(report, result, filled)
    except BenchError as exc:
        raise BenchError(f"{exc}\n{inst.log_tail()}") from None
    finally:
        daemon.terminate()
        if inst.answers():
            inst.stop()
        remove_containers(inst)


def team_settings() -> dict[str, str]:
    """A team that lets four agents of a task work at once, where tasks have teams.

    The default team (solo) runs one agent at a time; parallel-devs runs four developers.
    """
    has_teams = any(f.name == "teams" for f in dataclasses.fields(Config))
    return {"KLAUDIO_TEAMS_DEFAULT": "parallel-devs"} if has_teams else {}


def wait_answers(inst: Instance) -> None:
    wait_until(inst.answers, QUICK_TIMEOUT, "klaudiod to answer")


def benchmark(args: argparse.Namespace, scratch: Path) -> None:
    """Measure what was chosen, cleaning up daemons and containers whatever happens; print."""
    only = args.only
    report = Report()
    holds = Holds()
    with FakeModel() as model:
        script_model(model)
        control.script_stop(model, holds)
        checkpoint.script_model(model, holds)
        control.script_restart(model, holds)
        settings = {
            "KLAUDIO_AGENTS_PER_TASK": str(control.STOP_AGENTS),
            "KLAUDIO_AGENTS_MAX_CONCURRENT": str(control.STOP_AGENTS + 1),
            **team_settings(),
        }
        inst = Instance(
            scratch / "home", args.image, model.url, klaudio_executable(), settings=settings
        )
        inst.home.mkdir()
        if "help" in only:
            progress(f"klaudio --help, docker ps and python -c pass, {args.repeat} runs each")
            report_quick(report, bench_help(inst, args.repeat), (), ())
        ws: checkpoint.Workspace | None = None
        direct: list[Series] = []
        if "checkpoint" in only:
            ws, direct = checkpoint_direct(args, scratch)
        if only & WITH_DAEMON:
            with_daemon(args, scratch, inst, holds, ws, report, direct)
        if "restart" in only:
            restart(args, scratch, model, holds, report)
    print(f"klaudio benchmarks on {machine()}; agent image {args.image}")
    print("Python bytecode cached (as an installed wheel has it)")
    for note in report.notes:
        print(note)
    print()
    print("\n".join(table(report.rows)))
    print()
    print("\n".join(report.verdicts))


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
