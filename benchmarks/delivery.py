"""Delivery of a 1,000-file change: klaudio's commit, push and pull request against git's own.

    .venv/bin/python benchmarks/delivery.py [--files 3000] [--changed 1000] [--repeat 5]

A repository of --files files (source-like text, 100 directories) is served over git's smart
HTTP protocol (`git http-backend` behind Basic auth, tests/githttp.py) next to a fake GitHub
API (tests/forges.py), both in a child process so that neither's CPU time counts for a side.
The same change (--changed paths: 70 % modified, 20 % added, a few of them links and
executables, 10 % deleted) is then delivered, alternately, by:

- klaudio: `klaudiod.delivery.deliver`, the daemon's own code, called in this process as the
  daemon calls it in a thread: the workspace read link-safely into the task's bare repository,
  the commit, the push of the task branch (dulwich), the pull request opened on the API;
- git: `git add -A && git commit -q -m x && git push -q` of the same change from a clone.

Before each timed run (untimed): the served repository is reset to its first commit (so every
push finds the same server), and the side's clone is made afresh and changed. After each run
the pushed branch is checked on the server: both sides must push the same tree. Figures are
wall times, median of --repeat runs after one warm-up of each; CPU is the median user + sys
time of this process (klaudio) or of the processes waited for (git). The target: klaudio at
most 1.5 times git. Exits 0 when measured (target met or not), 1 when a side failed.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    BenchError,
    Sample,
    Series,
    children_cpu,
    fmt_time,
    interleaved,
    own_cpu,
    progress,
    table,
    verdict,
)
from tests.githttp import GIT_ENV  # noqa: E402

TARGET = 1.5
TOKEN = "bench-delivery-token-5e1f"
TOKEN_VAR = "KLAUDIO_BENCH_DELIVERY_TOKEN_VALUE"
USERNAME = "x-access-token"
REPO = "acme/widgets"
AUTHOR = "klaudio bench <bench@klaudio.invalid>"
TIMEOUT = 600.0
WORDS = (
    "def", "class", "return", "self", "value", "items", "index", "parse", "render", "config",
    "token", "branch", "commit", "widget", "handler", "request", "response", "stream", "buffer",
    "cursor", "offset", "length", "result", "error",
)  # fmt: skip


# The repository and its change ----------------------------------------------------------------


def source_text(rng: random.Random, size: int) -> str:
    """Source-like lines of about size bytes."""
    lines: list[str] = []
    total = 0
    while total < size:
        indent = "    " * rng.randrange(3)
        line = indent + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 10))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines)


def file_names(count: int) -> list[str]:
    per_dir = max(1, count // 100)
    return [f"pkg{i // per_dir:03d}/mod{i % per_dir:03d}.py" for i in range(count)]


def make_base(work: Path, files: int) -> None:
    """A working tree of files files, about 2 KiB each on average."""
    rng = random.Random(1)
    for name in file_names(files):
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source_text(rng, rng.randrange(512, 3584)))


@dataclass(frozen=True)
class Change:
    """What a change does to a tree: files (re)written, links made, paths deleted."""

    write: dict[str, tuple[str, bool]]  # path -> (text, executable)
    links: dict[str, str]  # path -> target
    delete: list[str]

    @property
    def size(self) -> int:
        return len(self.write) + len(self.links) + len(self.delete)

    def apply(self, tree: Path) -> None:
        for name in self.delete:
            (tree / name).unlink()
        for name, (content, executable) in self.write.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            path.chmod(0o755 if executable else 0o644)
        for name, target in self.links.items():
            (tree / name).symlink_to(target)


def make_change(files: int, changed: int) -> Change:
    """changed paths: 70 % of them modified, 20 % added (a few links and scripts), 10 % deleted."""
    rng = random.Random(2)
    names = file_names(files)
    picked = rng.sample(names, k=min(len(names), changed * 8 // 10))
    deleted = picked[: changed // 10]
    modified = picked[changed // 10 :]
    write: dict[str, tuple[str, bool]] = {}
    for name in modified:
        write[name] = (source_text(rng, rng.randrange(512, 3584)), False)
    links: dict[str, str] = {}
    for i in range(changed - len(picked)):
        name = f"added/part{i // 50:02d}/new{i:04d}"
        if i % 40 == 0:
            links[name + ".link"] = f"new{i + 1:04d}.py"
        else:
            executable = i % 40 == 1
            write[name + (".sh" if executable else ".py")] = (
                source_text(rng, rng.randrange(512, 3584)),
                executable,
            )
    return Change(write, links, deleted)


# The servers, in a child process --------------------------------------------------------------


def _serve(root: Path, conn: Connection) -> None:
    """The git server and the fake GitHub API until the parent says stop (or goes away)."""
    from tests.forges import FakeGitHub
    from tests.githttp import GitHttpServer

    with GitHttpServer(root, USERNAME, TOKEN) as git, FakeGitHub(TOKEN, repos=[REPO]) as api:
        conn.send((git.url(f"{REPO}.git"), api.api_url))
        with suppress(EOFError):
            conn.recv()


@contextmanager
def servers(root: Path) -> Iterator[tuple[str, str]]:
    """(the repository's clone URL, the fake API's URL), served from root by a child process."""
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(root, theirs), daemon=True)
    process.start()
    try:
        if not mine.poll(30):
            raise BenchError("the git server and the fake API did not start")
        urls: tuple[str, str] = mine.recv()
        yield urls
    finally:
        mine.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()


# Running git ----------------------------------------------------------------------------------


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """git isolated from the user's configuration, authenticating to the server."""
    basic = base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
    return {
        **os.environ,
        **GIT_ENV,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        **(extra or {}),
    }


def git(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(map(str, args))}: {done.stderr.strip()}")
    return done.stdout


# The two sides ----------------------------------------------------------------------------------


@dataclass
class Bench:
    """Where everything is, and what each side pushed."""

    tmp: Path
    served: Path  # the served repository
    pristine: Path  # a copy of it at its first commit
    url: str
    api_url: str
    base: str
    change: Change
    trees: dict[str, set[str]]
    steps: dict[str, list[float]]
    rounds: int = 0

    def reset_server(self) -> None:
        """The served repository as it was: main at its first commit, nothing else."""
        shutil.rmtree(self.served)
        shutil.copytree(self.pristine, self.served, symlinks=True)

    def pushed_tree(self, branch: str) -> str:
        return git("-C", self.served, "rev-parse", f"refs/heads/{branch}^{{tree}}").strip()

    def fresh(self, name: str) -> Path:
        self.rounds += 1
        path = self.tmp / f"{name}-{self.rounds}"
        return path


def klaudio_side(bench: Bench) -> Sample:
    """One delivery by the daemon's code: commit, push, pull request."""
    from klaudiod import delivery, repo
    from klaudiod.records import Detail, PlanRecord, SubtaskRecord, TaskRecord

    bench.reset_server()
    task_dir = bench.fresh("task")
    git_dir, workspace = task_dir / "repo.git", task_dir / "workspace"
    task_dir.mkdir()
    branch = f"klaudio/bench{bench.rounds:04d}"
    target = delivery.Target(
        url=bench.url,
        forge="github",
        api_url=bench.api_url,
        token_env=TOKEN_VAR,
        branch=True,
        commit=True,
        push=True,
        pr=True,
    )
    os.environ[TOKEN_VAR] = TOKEN
    cloned = repo.clone(bench.url, git_dir, delivery.credentials(target), bare=True)
    repo.checkout(git_dir, workspace, bench.url, cloned.commit, branch)
    bench.change.apply(workspace)
    now = time.time()
    task = TaskRecord(
        id=f"bench{bench.rounds:07d}",
        name="Change a thousand files",
        prompt="Change a thousand files.",
        state="running",
        reason="",
        repo=bench.url,
        workspace=str(workspace),
        auto_approve=True,
        created_at=now,
        updated_at=now,
        base_commit=cloned.commit,
        branch=branch,
        base_branch=cloned.branch,
    )
    plan = PlanRecord(1, task.id, 1, "Change them all.", "dag", "", now)
    sub = SubtaskRecord(
        1, task.id, "work", 0, "Change them", "", "", (), (), "low", "developer", "completed", "ok"
    )
    detail = Detail(task, plan, [sub])

    with _steps(bench.steps, repo, ("commit_workspace", "push")):
        cpu, start = own_cpu(), time.perf_counter()
        try:
            done = delivery.deliver(task, detail, target, git_dir, AUTHOR)
        except delivery.DeliveryFailed as exc:
            raise BenchError(f"klaudio: {exc}") from None
        sample = Sample(time.perf_counter() - start, own_cpu() - cpu)
    if not done.get("pr_url") or not done.get("delivered_commit"):
        raise BenchError(f"klaudio delivered nothing: {done}")
    bench.trees["klaudio"].add(bench.pushed_tree(branch))
    return sample


@contextmanager
def _steps(steps: dict[str, list[float]], module: Any, names: tuple[str, ...]) -> Iterator[None]:
    """Time each call of module.NAME (as the caller looks it up) into steps[NAME]."""
    originals = {name: getattr(module, name) for name in names}

    def timing(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                steps.setdefault(name, []).append(time.perf_counter() - start)

        return timed

    for name, function in originals.items():
        setattr(module, name, timing(name, function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def git_side(bench: Bench) -> Sample:
    """One `git add -A && git commit && git push` of the same change."""
    bench.reset_server()
    work = bench.fresh("clone")
    git("clone", "-q", bench.url, work)
    bench.change.apply(work)
    branch = f"git/bench{bench.rounds:04d}"
    script = f"git add -A && git commit -q -m x && git push -q origin HEAD:refs/heads/{branch}"
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(
        ["sh", "-c", script],
        cwd=work,
        env=git_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    sample = Sample(time.perf_counter() - start, children_cpu() - cpu)
    if done.returncode != 0:
        raise BenchError(f"git: exit {done.returncode}: {done.stderr.strip()}")
    bench.trees["git"].add(bench.pushed_tree(branch))
    return sample


# The run ----------------------------------------------------------------------------------------


def measure(tmp: Path, files: int, changed: int, repeat: int) -> int:
    progress(f"making a repository of {files:,} files")
    served_root = tmp / "served"
    served = served_root / f"{REPO}.git"
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        git("init", "-q", "-b", "main", work)
        make_base(Path(work), files)
        git("-C", work, "add", "-A")
        git("-C", work, "commit", "-q", "-m", "base")
        git("init", "-q", "--bare", "-b", "main", served)
        git("-C", work, "push", "-q", served, "HEAD:refs/heads/main")
    git("-C", served, "gc", "-q")  # one pack, as a hosted repository has it
    pristine = tmp / "pristine.git"
    shutil.copytree(served, pristine, symlinks=True)
    base = git("-C", served, "rev-parse", "main").strip()
    change = make_change(files, changed)

    with servers(served_root) as (url, api_url):
        bench = Bench(
            tmp, served, pristine, url, api_url, base, change, {"klaudio": set(), "git": set()}, {}
        )
        ours = Series("klaudio delivery (deliver: commit + push + pull request)")
        theirs = Series("git add -A && git commit && git push")
        progress(
            f"delivering a change of {change.size:,} paths, {repeat} runs of each after a warm-up"
        )
        interleaved(
            [(ours, lambda: klaudio_side(bench)), (theirs, lambda: git_side(bench))], repeat
        )

    if len(bench.trees["klaudio"] | bench.trees["git"]) != 1:
        raise BenchError(f"the two sides pushed different trees: {bench.trees}")
    versions = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    import dulwich

    print(
        f"delivery benchmark: {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {versions.strip()}, dulwich "
        f"{'.'.join(map(str, dulwich.__version__))}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"repository: {files:,} files; change: {len(change.write):,} files written, "
        f"{len(change.links)} links added, {len(change.delete)} files deleted "
        f"({change.size:,} paths); both sides pushed the same tree"
    )
    print()
    for line in table([ours, theirs]):
        print(line)
    print()
    skip = len(bench.steps.get("push", [])) - repeat  # the warm-up's
    parts = {k: statistics.median(v[skip:]) for k, v in bench.steps.items()}
    rest = ours.median - sum(parts.values())
    print(
        "klaudio's steps (medians): "
        f"commit_workspace {fmt_time(parts.get('commit_workspace', 0))}, "
        f"push {fmt_time(parts.get('push', 0))}, "
        f"the rest (token, message, pull request) {fmt_time(max(rest, 0))}"
    )
    ratio = ours.median / theirs.median
    print(
        f"delivery of {change.size:,} changed paths: klaudio {fmt_time(ours.median)} / git "
        f"{fmt_time(theirs.median)} = {ratio:.2f} (target <= {TARGET}): "
        f"{verdict(ratio <= TARGET)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="files in the repository")
    parser.add_argument("--changed", type=int, default=1000, help="paths the change touches")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each side")
    args = parser.parse_args(argv)
    if not 10 <= args.changed <= args.files:
        parser.error("--changed must be at least 10 and at most --files")
    tmp = Path(tempfile.mkdtemp(prefix="klaudio-bench-delivery-"))
    try:
        return measure(tmp, args.files, args.changed, args.repeat)
    except BenchError as exc:
        print(f"delivery benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
