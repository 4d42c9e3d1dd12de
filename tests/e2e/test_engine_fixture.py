"""The private engine: tests may stop, kill and start it while containers run.

What it shows about Docker 20.10 without live-restore (klaudiod has to cope with exactly this):
- stopped (SIGTERM), the engine stops its containers before it exits; started again, they are
  still listed (all=True) as exited: 143 under an init that passed SIGTERM on (klaudio's agents
  run with init), 137 when PID 1 ignored it and was killed after the stop timeout;
- killed (SIGKILL), the engine leaves its containers running until it starts again, which first
  stops them the same way;
- while it is down, docker-py raises requests.exceptions.ConnectionError, which is NOT a
  docker.errors.DockerException, from containers.get, api.inspect_container and api.containers;
  only a new DockerClient (auto API version) wraps it, in a DockerException.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from tests.engine import AGENT_IMAGE, PrivateEngine, image_id, pid_alive
from tests.needs import need

# Until tests/conftest.py provides them, this module brings in the private engine fixtures.
pytestmark = pytest.mark.docker


def run_sleeper(engine: PrivateEngine, name: str, *options: str) -> int:
    """Start a container of the agent image that sleeps; return its PID 1's host pid."""
    engine.docker(
        "run", "-d", "--name", name, "--network", "host", *options,
        "--entrypoint", "sh", AGENT_IMAGE, "-c", "sleep 600",
    )  # fmt: skip
    state = container_state(engine, name)
    assert state["Running"], state
    return int(state["Pid"])


def container_state(engine: PrivateEngine, name: str) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(
        engine.docker("inspect", "--format", "{{json .State}}", name).stdout
    )
    return state


def test_the_private_engine_has_the_main_engines_agent_image(
    private_engine: PrivateEngine,
) -> None:
    # The main engine's image as it was at the start of the session (it may be rebuilt since).
    assert image_id(AGENT_IMAGE, private_engine.host) == private_engine.images[AGENT_IMAGE]
    assert private_engine.docker("ps", "-aq").stdout.split() == []
    # Its default bridge network is on a bridge of its own, not the main engine's docker0.
    name = '{{index .Options "com.docker.network.bridge.name"}}'
    bridge = private_engine.docker("network", "inspect", "bridge", "--format", name).stdout
    assert bridge.strip() == private_engine.bridge


def test_the_main_engines_networking_is_left_alone(private_engine: PrivateEngine) -> None:
    # A dockerd started with --bridge=none deletes the host's docker0: the main engine's bridge.
    name = '{{index .Options "com.docker.network.bridge.name"}}'
    main_bridge = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", name],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    need(bool(main_bridge), "a bridge network on the main Docker engine")
    assert private_engine.bridge != main_bridge
    assert Path("/sys/class/net", main_bridge).exists()

    private_engine.kill()
    private_engine.start()
    private_engine.restart()

    assert Path("/sys/class/net", main_bridge).exists()
    if shutil.which("iptables-save"):
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        assert private_engine.bridge not in rules


def test_stop_kills_the_containers_and_start_reports_their_exit(
    private_engine: PrivateEngine,
) -> None:
    # sh as PID 1 ignores SIGTERM: killed after its stop timeout. With --init (as klaudio's
    # agents run) SIGTERM reaches sh, which dies of it.
    plain = run_sleeper(private_engine, "kl-plain", "--stop-timeout", "2")
    with_init = run_sleeper(private_engine, "kl-init", "--init")
    client = docker.DockerClient(base_url=private_engine.host)
    assert client.containers.get("kl-plain").status == "running"

    private_engine.stop()

    # Down: the CLI fails, the socket is gone, the containers' processes are dead.
    assert private_engine.docker("info", check=False).returncode != 0
    assert not private_engine.socket.exists()
    assert not pid_alive(plain) and not pid_alive(with_init)
    calls: list[Callable[[], object]] = [
        lambda: client.containers.get("kl-plain"),
        lambda: client.api.inspect_container("kl-plain"),
        lambda: client.api.containers(all=True),
    ]
    for call in calls:
        with pytest.raises(requests.exceptions.ConnectionError) as caught:
            call()
        assert not isinstance(caught.value, docker.errors.DockerException)
    with pytest.raises(docker.errors.DockerException, match="Error while fetching server API"):
        docker.DockerClient(base_url=private_engine.host)

    private_engine.start()

    plain_state = container_state(private_engine, "kl-plain")
    init_state = container_state(private_engine, "kl-init")
    assert (plain_state["Status"], plain_state["Running"], plain_state["ExitCode"]) == (
        "exited",
        False,
        137,
    )
    assert (init_state["Status"], init_state["Running"], init_state["ExitCode"]) == (
        "exited",
        False,
        143,
    )
    assert not plain_state["OOMKilled"] and plain_state["Error"] == ""
    # docker-py, through the client made before the stop, sees the same and lists both.
    listed = {c["Names"][0].lstrip("/"): c for c in client.api.containers(all=True)}
    assert sorted(listed) == ["kl-init", "kl-plain"]
    assert listed["kl-plain"]["State"] == "exited"
    assert listed["kl-plain"]["Status"].startswith("Exited (137)")
    assert listed["kl-init"]["Status"].startswith("Exited (143)")
    assert client.containers.get("kl-init").attrs["State"]["ExitCode"] == 143
    for name in listed:
        client.api.remove_container(name)
    assert client.api.containers(all=True) == []
    client.close()


def test_kill_leaves_the_containers_running_until_the_engine_starts_again(
    private_engine: PrivateEngine,
) -> None:
    survivor = run_sleeper(private_engine, "kl-survivor", "--init")

    private_engine.kill()

    assert private_engine.docker("info", check=False).returncode != 0
    assert pid_alive(survivor), "a killed engine's containers keep running"

    private_engine.start()  # it stops the survivor before it answers

    assert not pid_alive(survivor)
    state = container_state(private_engine, "kl-survivor")
    assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 143)


def test_start_gets_past_a_stale_pid_file_and_socket(private_engine: PrivateEngine) -> None:
    private_engine.stop()
    # As a crash could leave them: a pid file naming a live process that is no dockerd (pid 1),
    # and a socket nobody listens on.
    private_engine.pid_file.write_text("1\n")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(private_engine.socket))
    stale.close()
    assert private_engine.docker("info", check=False).returncode != 0

    private_engine.start()

    assert private_engine.answers()
    assert private_engine.pid_file.read_text().strip() == str(private_engine.pid)
