"""Make tests/data/klaudio-0.1.0.db by driving the 0.1.0 daemon and CLI against the fake model.

Run from the repository root, with the 0.1.0 tree checked out elsewhere:

    git worktree add /tmp/kl-010 b228f29
    .venv/bin/python scripts/make_db_fixture.py /tmp/kl-010
    git worktree remove /tmp/kl-010

The daemon and CLI run from that tree (PYTHONPATH, and it is their working directory, so this
checkout's packages cannot shadow it); the fake model runs in this process. The agent image
must already be current for that tree: the script stops if the daemon would build it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakemodel import FakeModel, error, structured, text, tool_use  # noqa: E402

OUT = ROOT / "tests/data/klaudio-0.1.0.db"
IMAGE = "klaudio-agent:test"
SECRET = "sk-test-not-a-secret"


def subtask(sid: str, prompt: str, depends_on: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": sid,
        "name": f"Subtask {sid}",
        "description": f"the {sid} step",
        "prompt": prompt,
        "depends_on": depends_on or [],
        "files_involved": ["greeting.txt"],
        "complexity": "low",
        "agent_role": "developer",
    }


def plan(*subtasks: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "plan",
        "analysis": "scripted analysis",
        "strategy": "dag",
        "notes": "scripted notes",
        "subtasks": list(subtasks),
    }


def script(model: FakeModel) -> None:
    """Every task's turns; workers first, since their prompts contain the task's prompt."""
    model.script(
        "FIX-DONE-WRITE",
        [
            [
                text("Writing."),
                tool_use(
                    "Write",
                    {"file_path": "/workspace/greeting.txt", "content": "hello from write\n"},
                ),
            ],
            [text("wrote greeting.txt with a hello")],
        ],
    )
    model.script(
        "FIX-DONE-COPY",
        [
            [tool_use("Bash", {"command": "cp greeting.txt copy.txt && cat copy.txt"})],
            lambda req: [text(f"copied: {(req.last_tool_result_text() or '').strip()}")],
        ],
    )
    model.script("FIX-FAIL-WRITE", [error(500, "model exploded")])
    model.script("FIX-FAIL-COPY", [[text("never runs")]])
    two_steps = {
        "FIX-DONE-TASK": ("FIX-DONE-WRITE", "FIX-DONE-COPY"),
        "FIX-FAIL-TASK": ("FIX-FAIL-WRITE", "FIX-FAIL-COPY"),
        "FIX-PLAN-TASK": ("FIX-PLAN-WRITE", "FIX-PLAN-COPY"),
    }
    for marker, (write, copy) in two_steps.items():
        model.script(
            marker,
            [
                [
                    structured(
                        plan(
                            subtask("write", f"{write}: write greeting.txt"),
                            subtask("copy", f"{copy}: copy greeting.txt", ["write"]),
                        )
                    )
                ]
            ],
        )
    model.script(
        "FIX-ASK-TASK",
        [
            [
                structured(
                    {
                        "kind": "questions",
                        "questions": [
                            {
                                "id": "db",
                                "text": "Which database?",
                                "context": "the store needs one",
                                "options": ["sqlite", "postgres"],
                            },
                            {
                                "id": "port",
                                "text": "Which port?",
                                "suggestions": ["8080"],
                            },
                        ],
                    }
                )
            ]
        ],
    )


class Old:
    """The 0.1.0 daemon and CLI in an isolated KLAUDIO_HOME."""

    def __init__(self, source: Path, home: Path, model_url: str) -> None:
        self.source = source
        self.home = home
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAUDIO_", "ANTHROPIC_"))}
        env.pop("CLAUDE_CODE_OAUTH_TOKEN", None)
        env.update(
            PYTHONPATH=f"{source}:{source / 'daemon'}",
            KLAUDIO_HOME=str(home),
            KLAUDIO_CLAUDE_BASE_URL=model_url,
            KLAUDIO_CLAUDE_MAX_RETRIES="0",
            KLAUDIO_DOCKER_NETWORK="host",
            KLAUDIO_DOCKER_IMAGE=IMAGE,
            KLAUDIO_DOCKER_BASE_IMAGE="klaudio-base:bookworm",
            KLAUDIO_DOCKER_EXTRA_CA_FILE="/etc/ssl/certs/ca-certificates.crt",
            ANTHROPIC_API_KEY=SECRET,
            NO_COLOR="1",
        )
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, *args],
            env=self.env,
            cwd=self.source,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise SystemExit(f"{args} exited {result.returncode}:\n{result.stderr}")
        return result

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.python("-m", "klaudio", *args, check=check)

    def check_code(self) -> None:
        """Both packages must come from the 0.1.0 tree."""
        for package in ("klaudio", "klaudiod"):
            found = self.python("-c", f"import {package}; print({package}.__file__)").stdout
            if not Path(found.strip()).is_relative_to(self.source):
                raise SystemExit(f"{package} comes from {found.strip()}, not {self.source}")

    def start(self) -> None:
        log = open(self.home / "daemon.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "klaudiod"],
            env=self.env,
            cwd=self.source,
            stdout=log,
            stderr=log,
        )
        socket = self.home / "run" / "klaudiod.sock"
        wait(lambda: socket.exists() and self.cli("daemon", "status", check=False).returncode == 0)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def show(self, task_id: str) -> dict[str, Any]:
        return dict(json.loads(self.cli("task", "show", task_id, "-o", "json").stdout))

    def log(self) -> str:
        return (self.home / "daemon.log").read_text(errors="replace")


def wait(condition: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise SystemExit("timed out")


def image_id() -> str:
    return subprocess.run(
        ["docker", "image", "inspect", IMAGE, "--format", "{{.Id}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def created(result: subprocess.CompletedProcess[str]) -> str:
    for word in result.stderr.split():
        if len(word) == 12 and all(c in "0123456789abcdef" for c in word):
            return word
    raise SystemExit(f"no task created:\n{result.stderr}")


def make(old: Old) -> dict[str, str]:
    """Create the five tasks; return name -> id."""
    ids: dict[str, str] = {}
    done = old.cli("run", "FIX-DONE-TASK greet", "--name", "done", "-y", check=False)
    ids["done"] = created(done)
    failed = old.cli("run", "FIX-FAIL-TASK greet", "--name", "failed", "-y", check=False)
    ids["failed"] = created(failed)
    asked = old.cli("run", "FIX-ASK-TASK build a thing", "--name", "asking", check=False)
    ids["asking"] = created(asked)
    ids["planned"] = old.cli(
        "task", "create", "FIX-PLAN-TASK greet", "--name", "planned", "--start"
    ).stdout.strip()
    wait(lambda: old.show(ids["planned"])["state"] == "planned")
    ids["created"] = old.cli(
        "task", "create", "FIX-NEW-TASK later", "--name", "created"
    ).stdout.strip()
    return ids


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_db_fixture.py PATH-TO-0.1.0-TREE")
    source = Path(sys.argv[1]).resolve()
    before = image_id()
    home = Path(tempfile.mkdtemp(prefix="kl-fix-", dir="/tmp"))
    model = FakeModel().start()
    old = Old(source, home, model.url)
    try:
        old.check_code()
        script(model)
        old.start()
        ids = make(old)
        for name, task_id in ids.items():
            print(f"{name}: {task_id} {old.show(task_id)['state']}")
    finally:
        old.stop()
        model.stop()
    if "building agent image" in old.log() or image_id() != before:
        raise SystemExit(f"the daemon built {IMAGE}; the fixture is not from the image as was")
    database = home / "data" / "klaudio.db"
    wal = database.with_name("klaudio.db-wal")
    if wal.exists() and wal.stat().st_size:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if SECRET.encode() in database.read_bytes():
        raise SystemExit("the API key is in the database")
    shutil.copyfile(database, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); home {home} kept for inspection")


if __name__ == "__main__":
    main()
