"""An agent output line of 5 MiB streams, is stored, and does not stop what follows it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Instance
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import Block, FakeModel, Request, structured, text, tool_use

pytestmark = pytest.mark.docker

SIZE = 5 << 20
FINAL = "wrote big.txt, all of it"


def big_content() -> str:
    """Exactly SIZE bytes of numbered ASCII lines (a realistic file, not one repeated byte)."""
    row = 0
    parts: list[str] = []
    total = 0
    while total < SIZE:
        piece = f"{row:08d} the quick brown fox jumps over the lazy dog\n"
        parts.append(piece)
        total += len(piece)
        row += 1
    return "".join(parts)[:SIZE]


# Claude Code compacts a conversation that outgrows its context window, as a 5 MiB tool call
# does: it asks for a summary (the last user message holds this), then goes on from it.
COMPACTION_REQUEST = "Respond with TEXT ONLY"
COMPACTED = "Continue the conversation from where it left off"


def _user_texts(req: Request) -> list[str]:
    return [
        str(block.get("text", ""))
        for m in req.messages
        if m.get("role") == "user"
        for block in (
            m["content"] if isinstance(m.get("content"), list) else [{"text": m.get("content")}]
        )
        if isinstance(block, dict)
    ]


def big_writer(content: str) -> Callable[[Request], list[Block]]:
    """The worker: Write the big file, answer a compaction with a summary, then finish."""

    def turn(req: Request) -> list[Block]:
        texts = _user_texts(req)
        if COMPACTION_REQUEST in (texts[-1] if texts else ""):
            return [text("Summary: E2E-BIGWRITE wrote /workspace/big.txt; nothing is left.")]
        started = any(m.get("role") == "assistant" for m in req.messages)
        if not started and not any(COMPACTED in t for t in texts):
            return [
                text("Writing the big file."),
                tool_use("Write", {"file_path": "/workspace/big.txt", "content": content}),
            ]
        return [text(FINAL)]

    return turn


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_a_5_mib_line_and_everything_after_it_streams_and_is_stored(
    daemon: Instance, model: FakeModel
) -> None:
    content = big_content()
    assert len(content.encode()) == SIZE
    model.script("E2E-BIGWRITE", [big_writer(content)] * 2)
    model.script("E2E-LONGLINE", [[structured(plan(subtask("big", "E2E-BIGWRITE write it")))]])
    task_id = daemon.cli(
        "task", "create", "E2E-LONGLINE go", "--start", "--auto-approve", check=True
    ).stdout.strip()
    follower = daemon.popen("task", "logs", task_id, "-f", "--json")

    waited = daemon.cli("task", "wait", task_id, "--timeout", "240", timeout=300)
    followed, errors = follower.communicate(timeout=120)

    assert waited.returncode == 0, waited.stderr + daemon.daemon_log()[-3000:]
    assert follower.returncode == 0, errors
    task = daemon.show(task_id)
    assert task["state"] == "completed", task["reason"]
    assert task["plan"]["subtasks"][0]["result"] == FINAL
    assert digest((Path(task["workspace"]) / "big.txt").read_text()) == digest(content)

    replay = daemon.cli("task", "logs", task_id, "--json", check=True, timeout=120).stdout
    lines = replay.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    worker = [e for e in events if e["agent"] == "big" and e["kind"] == "agent"]

    # The Write call, over 5 MiB as one stream-json line, arrived byte-exact.
    writes = [
        (e["seq"], block["input"]["content"])
        for e in worker
        if e["event"].get("type") == "assistant"
        for block in e["event"]["message"]["content"]
        if block.get("type") == "tool_use" and block.get("name") == "Write"
    ]
    assert len(writes) == 1, "the Write tool call is missing from the stored stream"
    write_seq, written = writes[0]
    assert len(written.encode()) == SIZE
    assert digest(written) == digest(content)
    assert len(lines[write_seq - 1].encode()) > SIZE

    # Everything after it was streamed too: the tool result, the last reply and the result.
    after = [e["event"] for e in worker if e["seq"] > write_seq]
    results = [e for e in after if e.get("type") == "result"]
    assert len(results) == 1, [e.get("type") for e in after]
    assert results[0]["result"] == FINAL
    assert results[0]["is_error"] is False
    replies = [
        block.get("text")
        for e in after
        if e.get("type") == "assistant"
        for block in e["message"]["content"]
        if block.get("type") == "text"
    ]
    assert replies[-1:] == [FINAL]

    # Stored exactly as the agent wrote it: every non-blank line of out.jsonl, in order.
    out = daemon.home / "data" / "tasks" / task_id / "agents" / "big" / "runs" / "0" / "out.jsonl"
    on_disk = [json.loads(raw) for raw in out.read_bytes().splitlines() if raw.strip()]
    assert [e["event"] for e in worker] == on_disk

    # The follower saw the same stream, the long line included.
    assert followed.splitlines() == lines
    assert json.loads(lines[-1])["event"] == {"type": "task", "state": "completed", "reason": ""}
