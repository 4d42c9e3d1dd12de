"""Agent containers through docker-py: create or adopt, inspect and remove them, by label.

The daemon only ever touches containers carrying its instance's label. Docker errors become
klaudio errors here, in one place. All functions block: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from klaudio.errors import KlaudioError, Unavailable

LABEL_INSTANCE = "klaudio.instance"
LABEL_TASK = "klaudio.task"
LABEL_AGENT = "klaudio.agent"
LABEL_ROLE = "klaudio.role"
LABEL_EPOCH = "klaudio.epoch"
# The uid agents run as when the daemon itself runs as root (Claude Code refuses root).
FALLBACK_AGENT_UID = 1000


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one agent container."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    environment: dict[str, str] = field(repr=False)
    mounts: list[tuple[str, str, bool]]  # (host path, container path, read-only)
    # Writable tmpfs mounts on the otherwise read-only root filesystem: {path: options}.
    tmpfs: dict[str, str]
    user: str
    network: str
    memory: str
    cpus: float
    pids_limit: int


@dataclass(frozen=True)
class ContainerState:
    """What Docker says about a container."""

    running: bool
    exit_code: int | None
    oom_killed: bool
    error: str


def agent_user() -> tuple[int, int]:
    """The uid:gid agents run as: the daemon's own, or a non-root one when it is root."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        return FALLBACK_AGENT_UID, FALLBACK_AGENT_UID
    return uid, gid


class EngineUnavailable(Unavailable):
    """The Docker engine does not answer (stopped, restarting, or never reachable)."""


@contextlib.contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Translate docker-py errors into one-line klaudio errors naming the action.

    This is the one place docker-py's failures are mapped: the engine not answering (a
    connection error from requests underneath docker-py) becomes EngineUnavailable, any
    other Docker failure Unavailable with Docker's own message. No traceback leaves here.
    """
    try:
        yield
    except KlaudioError:
        raise
    except docker.errors.APIError as exc:
        detail = exc.explanation if isinstance(exc.explanation, str) else str(exc)
        raise Unavailable(f"docker: {action}: {_first_line(detail)}") from None
    except requests.exceptions.RequestException as exc:
        raise EngineUnavailable(f"Docker engine unavailable ({action}): {_cause(exc)}") from None
    except docker.errors.DockerException as exc:
        if "fetching server API version" in str(exc):
            raise EngineUnavailable(
                f"Docker engine unavailable ({action}): {_cause(exc)}"
            ) from None
        raise Unavailable(f"docker: {action}: {_first_line(str(exc))}") from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "error"


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error, e.g. 'Connection refused'."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _first_line(str(exc))


class Runtime:
    """The Docker engine, as klaudio uses it."""

    def __init__(self, instance: str) -> None:
        self._instance = instance
        self._client: docker.DockerClient | None = None

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            with docker_errors("connecting to the engine"):
                self._client = docker.from_env(timeout=120)
        return self._client

    def ensure_started(self, spec: ContainerSpec) -> str:
        """Create and start the container, or adopt the one already named so; return its id."""
        with docker_errors(f"starting container {spec.name}"):
            try:
                container = self.client.containers.get(spec.name)
            except docker.errors.NotFound:
                container = self._create(spec)
            if container.status == "created":
                container.start()
            return str(container.id)

    def _create(self, spec: ContainerSpec) -> Any:
        return self.client.containers.create(
            spec.image,
            command=spec.command,
            name=spec.name,
            labels={**spec.labels, LABEL_INSTANCE: self._instance},
            environment=spec.environment,
            mounts=[
                Mount(target=target, source=source, type="bind", read_only=ro)
                for source, target, ro in spec.mounts
            ],
            user=spec.user,
            network_mode=spec.network,
            read_only=True,
            tmpfs=spec.tmpfs,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            init=True,
            mem_limit=spec.memory,
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids_limit,
            working_dir="/workspace",
            detach=True,
        )

    def ping(self) -> None:
        """Return if the engine answers.

        Raises:
            EngineUnavailable: when it does not.
        """
        with docker_errors("pinging the engine"):
            self.client.ping()

    def state(self, name: str) -> ContainerState | None:
        """The container's state, or None when no such container exists."""
        with docker_errors(f"inspecting container {name}"):
            try:
                attrs = self.client.api.inspect_container(name)
            except docker.errors.NotFound:
                return None
        st = attrs.get("State", {})
        running = bool(st.get("Running")) or st.get("Status") in ("created", "restarting")
        return ContainerState(
            running=running,
            exit_code=None if running else int(st.get("ExitCode", -1)),
            oom_killed=bool(st.get("OOMKilled")),
            error=str(st.get("Error") or ""),
        )

    def stop(self, name: str, grace: float) -> None:
        """Stop a container gracefully: SIGINT, then SIGTERM and SIGKILL after grace seconds.

        The entrypoint passes SIGINT on to Claude Code, which ends its turn, writes a result
        and exits; its conversation can be resumed. A missing or stopped container is fine.
        """
        with (
            docker_errors(f"stopping container {name}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            try:
                self.client.api.kill(name, signal="SIGINT")
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # not running
                    return
                raise
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not self.client.api.inspect_container(name)["State"]["Running"]:
                    return
                time.sleep(0.05)
            self.client.api.stop(name, timeout=2)

    def remove(self, name: str) -> None:
        """Remove a container, killing it if it still runs; a missing one is fine."""
        with (
            docker_errors(f"removing container {name}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.client.api.remove_container(name, force=True)

    def labelled(self, task_id: str | None = None) -> list[dict[str, str]]:
        """The name and labels of this instance's containers (of one task, when given)."""
        labels = [f"{LABEL_INSTANCE}={self._instance}"]
        if task_id:
            labels.append(f"{LABEL_TASK}={task_id}")
        with docker_errors("listing containers"):
            found = self.client.api.containers(all=True, filters={"label": labels})
        return [{"name": c["Names"][0].lstrip("/"), **c.get("Labels", {})} for c in found]

    def has_image(self, tag: str) -> dict[str, str] | None:
        """The labels of the image with this tag, or None when it is missing."""
        with docker_errors(f"inspecting image {tag}"):
            try:
                attrs = self.client.api.inspect_image(tag)  # type: ignore[no-untyped-call]
            except docker.errors.ImageNotFound:
                return None
        return dict((attrs.get("Config") or {}).get("Labels") or {})

    def build(
        self, context: str, tag: str, buildargs: dict[str, str], labels: dict[str, str]
    ) -> Iterator[str]:
        """Build an image from a context directory, yielding output lines."""
        with docker_errors(f"building image {tag}"):
            stream = self.client.api.build(
                path=context,
                tag=tag,
                buildargs=buildargs,
                labels=labels,
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise Unavailable(f"docker: building image {tag}: {chunk['error'].strip()}")
                text = chunk.get("stream") or chunk.get("status") or ""
                for line in str(text).splitlines():
                    if line.strip():
                        yield line
