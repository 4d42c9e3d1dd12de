"""`klaudio task checkpoints` and `klaudio task restore`: a task's checkpoints, restoring one."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from klaudio import validate
from klaudio.cli import format as fmt
from klaudio.cli.common import connect, note, out
from klaudio.cli.task import Output, OutputOption, TaskId, example, print_task

if TYPE_CHECKING:
    from klaudio.rpc.v1.checkpoints_pb2 import Checkpoint

CheckpointId = Annotated[
    str,
    typer.Argument(
        help="Checkpoint id (see `klaudio task checkpoints`), or a unique prefix of it.",
        show_default=False,
        callback=lambda value: validate.utf8(value, "the checkpoint id"),
    ),
]


def checkpoints(task_id: TaskId, output: OutputOption = Output.text) -> None:
    """List a task's checkpoints, newest first: id, time, reason, size.

    A checkpoint is written on every stop (and pause) and every checkpoints.interval while
    the task runs. Exits 0, 3 unknown task.
    """
    found = connect().list_checkpoints(task_id)
    if output == Output.json:
        out(json.dumps([as_dict(c) for c in found], indent=2))
        return
    rows = [("ID", "CREATED", "REASON", "SIZE")]
    rows += [(c.id, _local(c), c.reason, fmt.size(c.size_bytes)) for c in found]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        out("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])


def restore(
    task_id: TaskId, checkpoint_id: CheckpointId, output: OutputOption = Output.text
) -> None:
    """Put a paused or failed task's workspace and agent sessions back as in a checkpoint.

    The task is paused afterwards: `klaudio task resume` continues from the checkpoint, each
    agent in its conversation as it was then. Exits 0, 2 a damaged or unsafe archive (the
    member is named; nothing changes), 3 unknown task or checkpoint, 4 when the task is
    neither paused nor failed.
    """
    task, checkpoint = connect().restore_checkpoint(task_id, checkpoint_id)
    if output == Output.json:
        print_task(task)
    else:
        note(f"task {task.id[:8]} restored from checkpoint {checkpoint.id} ({_local(checkpoint)})")


def as_dict(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as `task checkpoints -o json` prints it."""
    return {
        "id": checkpoint.id,
        "task": checkpoint.task_id,
        "created_at": checkpoint.created_at.ToJsonString(),
        "reason": checkpoint.reason,
        "size_bytes": checkpoint.size_bytes,
    }


def _local(checkpoint: Checkpoint) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(checkpoint.created_at.seconds))


EPILOGS = {
    "checkpoints": example(
        "klaudio task checkpoints 3f2a", "klaudio task checkpoints 3f2a -o json"
    ),
    "restore": example("klaudio task restore 3f2a 9b1c", "klaudio task resume 3f2a"),
}
