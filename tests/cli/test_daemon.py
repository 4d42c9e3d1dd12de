"""The daemon's lifecycle and its guards: auto-start, status, stop, signals, socket and token."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from klaudio.rpc.v1 import daemon_pb2, daemon_pb2_grpc
from tests.conftest import Instance, wait_for

STARTED = re.compile(r"started klaudiod \(pid (\d+), log (\S+)\)")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pid_file(instance: Instance) -> Path:
    return instance.home / "state" / "klaudiod.pid"


def recorded_pid(instance: Instance) -> str | None:
    """The pid in the pid file; a stopped daemon leaves the file empty (its lock lives on it)."""
    path = pid_file(instance)
    text = path.read_text().strip() if path.exists() else ""
    return text or None


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def bare(instance: Instance) -> Iterator[Instance]:
    """An instance without a daemon; a daemon the CLI starts in it is stopped afterwards."""
    yield instance
    try:
        pid = int(pid_file(instance).read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if alive(pid):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), 10, f"klaudiod {pid} to exit")


# Starting -----------------------------------------------------------------------------------------


def test_the_cli_starts_a_daemon_when_none_answers(bare: Instance) -> None:
    assert not bare.socket.exists()

    result = bare.cli("task", "list", "-o", "json")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    found = STARTED.search(result.stderr)
    assert found, result.stderr
    assert "no daemon answered" in result.stderr
    pid = int(found.group(1))
    assert found.group(2) == str(bare.home / "state" / "klaudiod.log")
    assert alive(pid)
    assert pid_file(bare).read_text().strip() == str(pid)
    assert bare.socket.exists()

    again = bare.cli("task", "list", check=True)
    assert "started klaudiod" not in again.stderr

    stopped = bare.cli("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "klaudiod stopped" in stopped.stderr
    assert not bare.socket.exists()
    wait_for(lambda: not alive(pid), 5, "the daemon process to go away")


def test_daemon_start_twice_is_fine(bare: Instance) -> None:
    first = bare.cli("daemon", "start")
    assert first.returncode == 0, first.stderr
    found = STARTED.search(first.stderr)
    assert found, first.stderr

    second = bare.cli("daemon", "start")

    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert "started klaudiod" not in second.stderr
    assert pid_file(bare).read_text().strip() == found.group(1)
    assert bare.cli("daemon", "stop").returncode == 0


def test_a_stale_socket_and_pid_file_do_not_stop_a_new_daemon(instance: Instance) -> None:
    instance.start_daemon()
    assert instance.process is not None
    instance.process.kill()
    instance.process.wait()
    assert instance.socket.exists() and pid_file(instance).exists()

    result = instance.cli("task", "list")
    try:
        assert result.returncode == 0, result.stderr
        assert "started klaudiod" in result.stderr
        assert instance.cli("daemon", "status").returncode == 0
    finally:
        instance.cli("daemon", "stop")


def test_a_second_daemon_on_the_same_instance_refuses_to_start(daemon: Instance) -> None:
    assert daemon.process is not None
    second = subprocess.run(
        [sys.executable, "-m", "klaudiod"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert second.returncode != 0
    assert f"another klaudiod (pid {daemon.process.pid})" in second.stderr
    assert daemon.process.poll() is None
    assert daemon.cli("daemon", "status").returncode == 0


# Status and stop ----------------------------------------------------------------------------------


def test_status_shows_the_pid_and_stop_makes_it_exit_5(daemon: Instance) -> None:
    assert daemon.process is not None
    status = daemon.cli("daemon", "status")

    assert status.returncode == 0, status.stderr
    assert f"(pid {daemon.process.pid}," in status.stdout
    assert f"socket:  {daemon.socket}" in status.stdout
    assert "0 active, 0 agents running" in status.stdout

    # The daemon is this test's child: reap it while `daemon stop` waits for it to go away.
    stopping = daemon.popen("daemon", "stop")
    assert daemon.process.wait(timeout=10) == 0
    _, stop_err = stopping.communicate(timeout=15)
    assert stopping.returncode == 0, stop_err
    assert "klaudiod stopped" in stop_err
    assert not daemon.socket.exists()
    assert recorded_pid(daemon) is None

    after = daemon.cli("daemon", "status")
    assert after.returncode == 5
    assert after.stdout == ""
    assert after.stderr.splitlines() == [
        f"klaudio: klaudiod is not running (socket {daemon.socket})"
    ]


def test_stop_without_a_daemon_is_fine(instance: Instance) -> None:
    result = instance.cli("daemon", "stop")

    assert result.returncode == 0
    assert "not running" in result.stderr
    assert not instance.socket.exists()


def test_sigterm_makes_the_daemon_exit_quickly_and_remove_its_socket(daemon: Instance) -> None:
    assert daemon.process is not None
    assert daemon.socket.exists()

    daemon.process.send_signal(signal.SIGTERM)
    # A hang detector, not a speed test (benchmarks/ measures times): the daemon must not
    # wait for its agents, so 10 s is plenty on any machine.
    code = daemon.process.wait(timeout=10)

    assert code == 0
    assert not daemon.socket.exists()
    assert recorded_pid(daemon) is None
    assert "stopping" in daemon.daemon_log()


# Files and their modes ----------------------------------------------------------------------------


def test_the_socket_and_token_are_private(daemon: Instance) -> None:
    assert stat.S_ISSOCK(daemon.socket.stat().st_mode)
    assert mode(daemon.socket) == 0o600
    assert mode(daemon.socket.parent) == 0o700
    token = daemon.home / "state" / "token"
    assert mode(token) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", token.read_text())
    assert mode(daemon.home / "state") == 0o700
    assert mode(daemon.home / "data") == 0o700


def test_loose_modes_of_existing_directories_are_tightened(instance: Instance) -> None:
    for name in ("run", "state", "data"):
        (instance.home / name).mkdir(mode=0o755)
        (instance.home / name).chmod(0o755)

    instance.start_daemon()

    for name in ("run", "state", "data"):
        assert mode(instance.home / name) == 0o700, name


def test_the_token_survives_a_restart(daemon: Instance) -> None:
    token = (daemon.home / "state" / "token").read_text()
    daemon.stop_daemon()

    daemon.start_daemon()

    assert (daemon.home / "state" / "token").read_text() == token


# The token ----------------------------------------------------------------------------------------


def test_a_wrong_token_is_refused(daemon: Instance) -> None:
    token_file = daemon.home / "state" / "token"
    real = token_file.read_text()
    token_file.write_text("0" * 64)
    try:
        result = daemon.cli("task", "list")
    finally:
        token_file.write_text(real)

    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("klaudio: ")
    assert "token" in lines[0]
    assert "started klaudiod" not in result.stderr
    assert daemon.cli("task", "list").returncode == 0


@pytest.mark.parametrize("metadata", [(), (("x-klaudio-token", "not-the-token"),)])
def test_a_raw_grpc_call_without_the_token_is_unauthenticated(
    daemon: Instance, metadata: tuple[tuple[str, str], ...]
) -> None:
    channel = grpc.insecure_channel(f"unix:{daemon.socket}")
    try:
        stub = daemon_pb2_grpc.DaemonServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetHealth(daemon_pb2.GetHealthRequest(), timeout=10, metadata=metadata)
        with pytest.raises(grpc.RpcError) as stopped:
            stub.StopDaemon(daemon_pb2.StopDaemonRequest(), timeout=10, metadata=metadata)
    finally:
        channel.close()

    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stopped.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert daemon.cli("daemon", "status").returncode == 0  # StopDaemon did nothing


# Help ---------------------------------------------------------------------------------------------


def test_klaudiod_help(instance: Instance) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "klaudiod", "--help"],
        env=instance.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: klaudiod")
    assert "--config" in result.stdout and "--log-level" in result.stdout
    assert not instance.socket.exists()


def test_the_klaudiod_console_script_help(instance: Instance) -> None:
    script = Path(sys.executable).parent / "klaudiod"
    assert script.exists(), "installing klaudio must give the klaudiod console script"

    result = subprocess.run(
        [str(script), "--help"], env=instance.env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "usage: klaudiod" in result.stdout


def test_klaudio_help_documents_the_exit_codes(instance: Instance) -> None:
    result = instance.cli("--help")

    assert result.returncode == 0, result.stderr
    assert "Exit codes" in result.stdout
    for command in ("task", "daemon", "config", "run"):
        assert command in result.stdout
    assert not instance.socket.exists()


def test_klaudio_version(instance: Instance) -> None:
    result = instance.cli("--version")

    assert result.returncode == 0
    assert re.fullmatch(r"klaudio \d+\.\d+\.\d+\S*\n", result.stdout)


def test_concurrent_auto_starts_leave_one_daemon(instance: Instance) -> None:
    runs = [instance.popen("task", "list") for _ in range(4)]
    spawned = 0
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        spawned += "started klaudiod" in err  # a late one may find a daemon already up

    log = instance.home / "state" / "klaudiod.log"
    # Every daemon that lost the race for the instance's lock says so and exits.
    assert spawned >= 1
    wait_for(
        lambda: log.read_text().count("already serves") == spawned - 1,
        30,
        f"{spawned - 1} losing daemons to exit",
    )
    assert instance.cli("daemon", "status").returncode == 0
