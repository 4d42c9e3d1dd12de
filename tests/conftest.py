"""Fixtures: a real klaudiod process in an isolated KLAUDIO_HOME, the fake model, CLI runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from klaudio.paths import resolve
from klaudio.procs import alive
from tests.engine import PrivateEngine
from tests.fakemodel import FakeModel

# The private, restartable Docker engine's fixtures: private_engine, private_engine_session.
pytest_plugins = ["tests.engine"]

# The agent image the tests' daemons use; .ci/run builds it with `klaudio image build`.
IMAGE = os.environ.get("KLAUDIO_TEST_IMAGE", "klaudio-agent:test")
BASE_IMAGE = os.environ.get("KLAUDIO_TEST_BASE_IMAGE", "klaudio-base:bookworm")
EXTRA_CA = os.environ.get("KLAUDIO_TEST_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt")
START_TIMEOUT = 20.0


def wait_for(condition: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll condition() until it returns something truthy, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def created_task(result: subprocess.CompletedProcess[str]) -> str:
    """The id of the task `klaudio run` created, from its "task ID created" line on stderr."""
    found = re.search(r"task ([0-9a-f]{12}) created", result.stderr)
    assert found, f"no task was created:\n{result.stderr}"
    return found.group(1)


def remove_containers(label: str) -> None:
    """Remove every container carrying label (key or key=value)."""
    found = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, check=False)


@dataclass
class Instance:
    """An isolated klaudio instance: its home, environment, and (when started) its daemon."""

    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    # A command prefix that runs klaudio and klaudiod as another user (e.g. setpriv ...).
    runas: list[str] = field(default_factory=list)

    def cli(
        self, *args: str, timeout: float = 180, check: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m klaudio ARGS` against this instance (stdin: text to feed it)."""
        result = subprocess.run(
            [*self.runas, sys.executable, "-m", "klaudio", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"klaudio {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start `python -m klaudio ARGS` in the background."""
        return subprocess.Popen(
            [*self.runas, sys.executable, "-m", "klaudio", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def show(self, task_id: str) -> dict[str, Any]:
        """`klaudio task show ID -o json`, parsed."""
        return json.loads(self.cli("task", "show", task_id, "-o", "json", check=True).stdout)

    @property
    def socket(self) -> Path:
        return self.home / "run" / "klaudiod.sock"

    def start_daemon(self) -> None:
        """Start klaudiod in the foreground of a child process and wait until it answers."""
        log = open(self.home / "daemon.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [*self.runas, sys.executable, "-m", "klaudiod"],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        wait_for(
            lambda: self.socket.exists() and self.cli("daemon", "status").returncode == 0,
            START_TIMEOUT,
            "klaudiod to answer",
        )

    def stop_daemon(self) -> None:
        """SIGTERM the daemon and wait for it to exit; also any daemon the CLI auto-started."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        pid_file = self.home / "state" / "klaudiod.pid"
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        pid = int(text) if text else 0
        if pid and alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not alive(pid), 10, f"auto-started klaudiod {pid} to exit")

    def task_ids(self) -> list[str]:
        tasks = self.home / "data" / "tasks"
        return [p.name for p in tasks.iterdir()] if tasks.exists() else []

    def daemon_log(self) -> str:
        path = self.home / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def model() -> Iterator[FakeModel]:
    """The scripted fake of the Anthropic Messages API, on loopback."""
    fake = FakeModel().start()
    yield fake
    fake.stop()


def _environment(home: Path, model_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAUDIO_", "ANTHROPIC_"))}
    env.pop("CLAUDE_CODE_OAUTH_TOKEN", None)
    env.update(
        KLAUDIO_HOME=str(home),
        KLAUDIO_CLAUDE_BASE_URL=model_url,
        KLAUDIO_CLAUDE_MAX_RETRIES="0",
        KLAUDIO_DOCKER_NETWORK="host",
        KLAUDIO_DOCKER_IMAGE=IMAGE,
        KLAUDIO_DOCKER_BASE_IMAGE=BASE_IMAGE,
        KLAUDIO_DOCKER_EXTRA_CA_FILE=EXTRA_CA,
        # The tests' plans run several developers at once; the solo default is tested on its
        # own (tests/e2e/test_team_templates.py).
        KLAUDIO_TEAMS_DEFAULT="parallel-devs",
        ANTHROPIC_API_KEY="sk-test-not-a-secret",
        NO_COLOR="1",
    )
    return env


@pytest.fixture
def instance(model: FakeModel) -> Iterator[Instance]:
    """An isolated instance (short path: the socket path must stay under 108 bytes)."""
    home = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))
    inst = Instance(home, _environment(home, model.url))
    try:
        yield inst
    finally:
        try:
            inst.stop_daemon()
        finally:
            # Every container the instance's daemon made carries its instance label.
            remove_containers(f"klaudio.instance={resolve(inst.env).instance_id}")
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def daemon(instance: Instance) -> Instance:
    """A running daemon in an isolated instance."""
    instance.start_daemon()
    return instance


@pytest.fixture
def private_daemon(instance: Instance, private_engine: PrivateEngine) -> Instance:
    """A daemon whose Docker engine the test may stop, kill and restart."""
    instance.env["DOCKER_HOST"] = private_engine.host
    instance.start_daemon()
    return instance
