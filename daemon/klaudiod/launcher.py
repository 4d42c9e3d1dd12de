"""Turns an agent run into a container: image check, spec, environment and credentials.

Credentials never travel in container metadata (`docker inspect` shows the environment): each
run gets a directory of secret files under the daemon's state dir, readable by the agent's
user only and mounted read-only at /klaudio/secrets, which the entrypoint loads. The directory
is removed when the run ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

from klaudio import events
from klaudio.config import SECRET_ENV, Config
from klaudio.paths import Paths
from klaudiod import agent as agentlib
from klaudiod import image, safefs, settings
from klaudiod.db import Db
from klaudiod.records import AgentRecord, RunRecord, TaskRecord
from klaudiod.runtime import (
    LABEL_AGENT,
    LABEL_EPOCH,
    LABEL_ROLE,
    LABEL_TASK,
    ContainerSpec,
    Runtime,
    agent_user,
)
from klaudiod.stream import Bus
from klaudiod.workspace import TaskFiles, check_mount_source

log = logging.getLogger(__name__)

SECRETS_MOUNT = "/klaudio/secrets"
CREDENTIALS_NAME = "credentials.json"
# Claude Code writes below /tmp; the root filesystem is otherwise read-only.
TMPFS = {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"}


def container_name(task_id: str, agent: str, epoch: int) -> str:
    """A run's deterministic container name (a retry after a crash adopts, never doubles).

    The epoch comes before the agent name, which may itself contain digits and dashes.
    """
    return f"klaudio-{task_id}-{epoch}-{agent}"


class Launcher:
    """Makes the container spec of a run and the files it needs; checks the image once."""

    def __init__(self, config: Config, paths: Paths, db: Db, bus: Bus, runtime: Runtime) -> None:
        self._config = config
        self._paths = paths
        self._db = db
        self._bus = bus
        self._runtime = runtime
        self._image_lock = asyncio.Lock()
        self._image_checked = False

    @property
    def secrets_dir(self) -> Path:
        return self._paths.state_dir / "secrets"

    def spec(
        self, task: TaskRecord, agent: AgentRecord, run: RunRecord, planner: bool
    ) -> ContainerSpec:
        """The container of a run (its files must be prepared first)."""
        uid, gid = agent_user()
        files = TaskFiles(self._paths.tasks_dir, task.id)
        home = Path(agent.home) if agent.home else Path(run.run_dir) / "home"
        mounts = [
            (task.workspace, "/workspace", planner),
            (run.run_dir, "/klaudio/run", False),
            (str(home), "/klaudio/home", False),
        ]
        for source, _, _ in mounts:
            check_mount_source(files, Path(source))
        mounts.append((str(self.secrets_dir / run.container), SECRETS_MOUNT, True))
        docker = settings.of(task, self._config)
        return ContainerSpec(
            name=run.container,
            image=docker.image,
            command=agentlib.command(docker, agent.session_id, planner, run.resume),
            labels={
                LABEL_TASK: task.id,
                LABEL_AGENT: agent.name,
                LABEL_ROLE: agent.role,
                LABEL_EPOCH: str(run.epoch),
            },
            environment=self._environment(),
            mounts=mounts,
            tmpfs=dict(TMPFS),
            user=f"{uid}:{gid}",
            network=docker.network,
            memory=docker.memory,
            cpus=docker.cpus,
            pids_limit=docker.pids_limit,
        )

    def _environment(self) -> dict[str, str]:
        env = {
            "CLAUDE_CODE_MAX_RETRIES": str(self._config.claude.max_retries),
            "GIT_AUTHOR_NAME": "klaudio agent",
            "GIT_AUTHOR_EMAIL": "agent@klaudio.invalid",
            "GIT_COMMITTER_NAME": "klaudio agent",
            "GIT_COMMITTER_EMAIL": "agent@klaudio.invalid",
        }
        if self._config.claude.base_url:
            env["ANTHROPIC_BASE_URL"] = self._config.claude.base_url
        return env

    def write_secrets(self, container: str) -> None:
        """Write the run's credentials, one file per variable, readable by the agent only."""
        uid, gid = agent_user()
        folder = self.secrets_dir / container
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        safefs.remove_tree(folder)
        folder.mkdir(mode=0o700)
        secrets: dict[str, bytes] = {
            name: os.environ[name].encode() for name in SECRET_ENV if os.environ.get(name)
        }
        creds = self._credentials_file()
        if creds:
            secrets[CREDENTIALS_NAME] = Path(creds).read_bytes()
        for name, value in secrets.items():
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
            with os.fdopen(fd, "wb") as handle:
                handle.write(value)
        if os.getuid() == 0:
            for path in (folder, *(folder / name for name in secrets)):
                os.chown(path, uid, gid, follow_symlinks=False)
            os.chmod(folder, 0o500)

    def remove_secrets(self, container: str) -> None:
        """Remove a run's credentials once its container is gone."""
        safefs.remove_tree(self.secrets_dir / container)

    def sweep_secrets(self, keep: set[str]) -> None:
        """Remove the credentials of every run not in keep (after a restart)."""
        if not self.secrets_dir.is_dir():
            return
        for entry in os.scandir(self.secrets_dir):
            if entry.name not in keep:
                shutil.rmtree(entry.path, ignore_errors=True)

    def _credentials_file(self) -> str:
        configured = self._config.claude.credentials_file
        if configured:
            return str(Path(configured).expanduser())
        default = Path.home() / ".claude" / ".credentials.json"
        if not any(os.environ.get(n) for n in SECRET_ENV) and default.is_file():
            return str(default)
        return ""

    async def ensure_image(self, task_id: str) -> None:
        """Build the agent image before the first agent when it is missing or stale."""
        async with self._image_lock:
            if self._image_checked:
                return
            docker = self._config.docker
            tag = docker.image
            if not await asyncio.to_thread(
                image.is_current, self._runtime, tag, docker.base_image, docker.extra_ca_file
            ):
                log.info("building agent image %s", tag)
                notice = f"building the agent image {tag} (first use; this takes a minute)"
                event = await self._db.call(self._db.store.emit, task_id, events.notice(notice))
                self._bus.publish([event])
                await asyncio.to_thread(self._build, tag)
            self._image_checked = True

    def _build(self, tag: str) -> None:
        docker = self._config.docker
        for line in image.build(self._runtime, tag, docker.base_image, docker.extra_ca_file):
            log.debug("image build: %s", line)
