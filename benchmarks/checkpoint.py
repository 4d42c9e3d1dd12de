"""Checkpoint write and restore of a big workspace, next to `tar -cf` / `tar -xf` of it.

The daemon's own code is measured directly: klaudiod.archive.write (what every checkpoint
costs: safefs.scan, a POSIX tar written with O_DIRECT by a helper thread, fsync, rename) and
klaudiod.archive.extract (what a restore costs before its swap: the link-safe extraction into a
staging directory).
They run in this process, as they do in a thread of the daemon. Then, once, the same through a
task: a stop that writes the checkpoint, and `klaudio task restore`.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import (
    AGENT_TIMEOUT,
    RUN_TIMEOUT,
    BenchError,
    Holds,
    Instance,
    Sample,
    Series,
    interleaved,
    measured,
    own_cpu,
)
from klaudiod import archive, safefs
from tests.fakemodel import FakeModel

FILES_PER_DIR = 100
TEXT = b"".join(
    f"def handler_{i}(request, limit={i}):\n    return request.get('item', {i}) * 2\n".encode()
    for i in range(200_000)
)
# The planner of the end-to-end task works until its task is stopped.
PLAN_MARKER = "KBCKPT-PLAN"
TASK_PROMPT = f"{PLAN_MARKER}: look at the workspace"
CHECKPOINT_LOG = re.compile(r"checkpoint (\w+) \((\w+), (\d+) bytes, ([\d.]+)s\)")


@dataclass
class Workspace:
    """The generated tree: where, how many files, how many bytes."""

    root: Path
    files: int
    size: int


def make_workspace(root: Path, files: int, size: int, seed: int = 1) -> Workspace:
    """files files of size bytes in all, FILES_PER_DIR per directory; half random, half text.

    File sizes vary (half to one and a half times the mean, in pairs that keep the total).
    Contents are slices at random offsets of an 8 MiB random pool or of source-like text, so
    no two files are alike; tar does not compress, so only the sizes matter to it.
    """
    rng = random.Random(seed)
    pool = os.urandom(8 << 20)
    mean = size // files
    sizes: list[int] = []
    for _ in range(files // 2):
        jitter = rng.randint(0, mean // 2)
        sizes += [mean + jitter, mean - jitter]
    sizes += [mean] * (files - len(sizes))
    sizes[-1] += size - sum(sizes)
    root.mkdir()
    written = 0
    for index, length in enumerate(sizes):
        folder = root / f"dir{index // FILES_PER_DIR:04d}"
        if index % FILES_PER_DIR == 0:
            folder.mkdir()
        source = pool if index % 2 else TEXT
        start = rng.randrange(0, len(source) - length)
        name = f"file{index % FILES_PER_DIR:03d}.{'bin' if index % 2 else 'py'}"
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(source)[start : start + length]
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        written += length
    return Workspace(root, files, written)


def _clean(*paths: Path) -> None:
    """Remove earlier outputs, then flush dirty pages, so no run pays for another's writeback."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    os.sync()


def _in_process(work: Callable[[], object]) -> Sample:
    cpu, start = own_cpu(), time.perf_counter()
    work()
    return Sample(time.perf_counter() - start, own_cpu() - cpu)


def _process(cmd: list[str]) -> Sample:
    return measured(cmd, dict(os.environ), RUN_TIMEOUT)[1]


def bench_direct(ws: Workspace, out: Path, repeat: int) -> list[Series]:
    """archive.write against tar -cf (and tar -cf + fsync), archive.extract against tar -xf.

    Every output goes to out, on the same filesystem as the tree. Before each timed run the
    previous outputs are removed and dirty pages flushed (untimed): page cache cannot be
    dropped here, but the tree is in it for every run alike (it fits in memory), and no run
    pays for the writeback of an earlier one.
    """
    mine, theirs, synced = out / "archive.tar", out / "tar.tar", out / "tar-synced.tar"
    meta = {"format": 1, "task": "bench", "reason": "bench"}

    def write_archive() -> Sample:
        _clean(mine)
        return _in_process(lambda: archive.write(mine, [("workspace", ws.root)], meta))

    def tar_create() -> Sample:
        _clean(theirs)
        return _process(["tar", "-cf", str(theirs), "-C", str(ws.root.parent), ws.root.name])

    def tar_create_synced() -> Sample:
        # tar has no fsync of its own: `sync FILE` fsyncs the archive, as archive.write does.
        _clean(synced)
        cmd = f"tar -cf {synced} -C {ws.root.parent} {ws.root.name} && sync {synced}"
        return _process(["sh", "-c", cmd])

    write = Series("checkpoint write (archive.write)")
    create = Series("tar -cf")
    create_synced = Series("tar -cf, then sync FILE (fsync)")
    interleaved(
        [(write, write_archive), (create, tar_create), (create_synced, tar_create_synced)], repeat
    )
    _clean(theirs, synced)

    # Both extract the daemon's own archive (GNU tar reads its pax format). Each run makes a
    # tree of ws.files files; deleting one is slow on some filesystems (ext4 mounted with
    # discard: tens of seconds for 50,000 files), so the trees are only renamed into trash
    # between runs, and all deleted at once, in parallel, after the last one. For the same
    # reason there is no warm-up round: the archive is read once instead (untimed), so that
    # every run finds it in page cache (archive.write leaves it on disk only: O_DIRECT).
    size = mine.stat().st_size
    _read_through(mine)
    staged, untarred, trash = out / "staged", out / "untarred", out / "trash"
    trash.mkdir()

    def discard(path: Path) -> None:
        if path.exists():
            path.rename(trash / f"{path.name}-{len(list(trash.iterdir()))}")
        os.sync()

    def extract_archive() -> Sample:
        discard(staged)
        return _in_process(lambda: archive.extract(mine, size, staged))

    def tar_extract() -> Sample:
        discard(untarred)
        untarred.mkdir()
        return _process(["tar", "-xf", str(mine), "-C", str(untarred)])

    extract = Series("checkpoint restore (archive.extract)")
    untar = Series("tar -xf")
    interleaved([(extract, extract_archive), (untar, tar_extract)], repeat, warm_up=False)
    _check_extracted(staged / "workspace", ws)
    discard(staged)
    discard(untarred)
    mine.unlink()
    # What a restore also does: remove the workspace it replaces (safefs.remove_tree).
    first, *rest = sorted(trash.iterdir())
    removal = Series("removing a replaced workspace (safefs.remove_tree)")
    removal.samples.append(_in_process(lambda: safefs.remove_tree(first)))
    remove_trees(rest)
    trash.rmdir()
    return [write, create, create_synced, extract, untar, removal]


def _read_through(path: Path) -> None:
    """Read the file once, which puts it in page cache."""
    with open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass


def remove_trees(trees: list[Path]) -> None:
    """Delete the trees all at once: one `rm -rf` each, run in parallel."""
    procs = [subprocess.Popen(["rm", "-rf", "--", str(tree)]) for tree in trees]
    for proc in procs:
        proc.wait()


def _check_extracted(root: Path, ws: Workspace) -> None:
    files = size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(folder, name)).st_size
    if (files, size) != (ws.files, ws.size):
        raise BenchError(
            f"archive.extract gave {files} files of {size} bytes, not {ws.files} of {ws.size}"
        )


@dataclass
class EndToEnd:
    """One checkpoint written by a stop and restored by `klaudio task restore`."""

    stop: float  # `klaudio task stop`, wall
    write: float  # the checkpoint's write, as the daemon logged it
    size: int
    restore: float  # `klaudio task restore`, wall


def script_model(model: FakeModel, holds: Holds) -> None:
    model.script(PLAN_MARKER, [holds.turn(PLAN_MARKER)])


def bench_end_to_end(inst: Instance, holds: Holds, ws: Workspace) -> EndToEnd:
    """Move the tree into a new task's workspace, stop the task while it plans, restore it.

    The tree is moved (renamed) into the workspace, not copied: it is gone from ws.root after.
    """
    client = inst.client()
    try:
        task = client.create_task(TASK_PROMPT)
        inst.task_ids.add(task.id)
        workspace = Path(task.workspace)
        for entry in sorted(ws.root.iterdir()):
            entry.rename(workspace / entry.name)
        before = holds.counts()
        client.start_task(task.id)
    finally:
        client.close()
    holds.wait_entered([PLAN_MARKER], before, AGENT_TIMEOUT, lambda: inst.settled(task.id))
    os.sync()
    log_start = len(inst.log_text())
    _, stop = measured(inst.cli("task", "stop", task.id), inst.env, RUN_TIMEOUT)
    state = inst.state(task.id)
    if state != "paused":
        raise BenchError(f"klaudio task stop: the task is {state}, not paused")
    found = CHECKPOINT_LOG.findall(inst.log_text()[log_start:])
    if not found:
        raise BenchError("klaudio task stop: the daemon logged no checkpoint")
    checkpoint, _, size, seconds = found[-1]
    os.sync()
    _, restore = measured(inst.cli("task", "restore", task.id, checkpoint), inst.env, RUN_TIMEOUT)
    restored = sum(len(names) for _, _, names in os.walk(workspace))
    if restored != ws.files:
        raise BenchError(f"klaudio task restore: {restored} files restored, not {ws.files}")
    subprocess.run(
        inst.cli("task", "delete", task.id),
        env=inst.env,
        capture_output=True,
        timeout=RUN_TIMEOUT,
    )
    return EndToEnd(stop.wall, float(seconds), int(size), restore.wall)
