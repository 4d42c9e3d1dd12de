"""The one gRPC client of the daemon: typed calls, and gRPC errors mapped to klaudio errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc

from klaudio import errors
from klaudio.paths import Paths, check_socket, ensure_private_dir
from klaudio.rpc import TOKEN_METADATA
from klaudio.rpc.v1 import (
    checkpoints_pb2,
    checkpoints_pb2_grpc,
    daemon_pb2,
    daemon_pb2_grpc,
    files_pb2,
    files_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    repos_pb2,
    repos_pb2_grpc,
    stream_pb2,
    stream_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    teams_pb2,
    teams_pb2_grpc,
)

T = TypeVar("T")
START_TIMEOUT = 15.0
CALL_TIMEOUT = 60.0

_KINDS: dict[grpc.StatusCode, type[errors.KlaudioError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Timeout,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


def translate(exc: grpc.RpcError) -> errors.KlaudioError:
    """The klaudio error for a failed call: one exception type per status code."""
    code = exc.code()
    detail = exc.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in detail.lower():
        detail = "daemon not running: start it with `klaudio daemon start`"
    if code == grpc.StatusCode.CANCELLED:
        return errors.Unavailable("the daemon went away during the call")
    return _KINDS.get(code, errors.Internal)(detail)


@contextmanager
def mapped() -> Iterator[None]:
    """Raise klaudio errors instead of grpc.RpcError inside the block."""
    try:
        yield
    except grpc.RpcError as exc:
        raise translate(exc) from None


@dataclass(frozen=True)
class TaskOptions:
    """How a new task gets its repository and delivers its work, and the files it is given."""

    template: str = ""
    push: bool = False
    pr: bool = False
    pr_target: str = ""
    branch: str = ""
    # Absolute paths on the daemon's host.
    inputs: tuple[str, ...] = ()


class Client:
    """Calls to a running daemon over its Unix socket."""

    def __init__(self, paths: Paths) -> None:
        """A client of the daemon on paths.socket (InvalidArgument if that path is too long)."""
        self.paths = paths
        self._channel = grpc.insecure_channel(
            f"unix:{check_socket(paths)}", options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        self._tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._stream = stream_pb2_grpc.StreamServiceStub(self._channel)
        self._daemon = daemon_pb2_grpc.DaemonServiceStub(self._channel)
        self._images = images_pb2_grpc.ImageServiceStub(self._channel)
        self._checkpoints = checkpoints_pb2_grpc.CheckpointServiceStub(self._channel)
        self._plans = plans_pb2_grpc.PlanServiceStub(self._channel)
        self._teams = teams_pb2_grpc.TeamServiceStub(self._channel)
        self._repos = repos_pb2_grpc.RepoServiceStub(self._channel)
        self._files = files_pb2_grpc.FileServiceStub(self._channel)
        self._metadata: tuple[tuple[str, str | bytes], ...] = ()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _auth(self) -> tuple[tuple[str, str | bytes], ...]:
        if not self._metadata:
            try:
                token = self.paths.token_file.read_text().strip()
            except FileNotFoundError:
                raise errors.Unavailable(
                    "daemon not running: start it with `klaudio daemon start`"
                ) from None
            except PermissionError:
                raise errors.Unauthenticated(
                    f"cannot read the daemon token {self.paths.token_file}"
                ) from None
            self._metadata = ((TOKEN_METADATA, token),)
        return self._metadata

    def _call(
        self, method: Callable[..., T], request: Any, timeout: float | None = CALL_TIMEOUT
    ) -> T:
        with mapped():
            return method(request, timeout=timeout, metadata=self._auth())

    # Tasks --------------------------------------------------------------------------------

    def create_task(
        self,
        prompt: str,
        name: str = "",
        repo: str = "",
        start: bool = False,
        auto_approve: bool = False,
        team: str = "",
        options: TaskOptions | None = None,
    ) -> tasks_pb2.Task:
        """A new task; options carry its template, --branch, --push, --pr and --input."""
        given = options or TaskOptions()
        request = tasks_pb2.CreateTaskRequest(
            prompt=prompt,
            name=name,
            repo=repo,
            start=start,
            auto_approve=auto_approve,
            team=team,
            repo_template=given.template,
            push=given.push,
            pr=given.pr,
            pr_target=given.pr_target,
            branch=given.branch,
            inputs=list(given.inputs),
        )
        # Cloning a large repository and copying inputs take their time: no call deadline.
        return self._call(self._tasks.CreateTask, request, timeout=None).task

    def list_tasks(self, states: list[str] | None = None) -> list[tasks_pb2.Task]:
        values = [tasks_pb2.TaskState.Value("TASK_STATE_" + s.upper()) for s in states or []]
        return list(
            self._call(self._tasks.ListTasks, tasks_pb2.ListTasksRequest(states=values)).tasks
        )

    def get_task(self, task_id: str) -> tasks_pb2.Task:
        return self._call(self._tasks.GetTask, tasks_pb2.GetTaskRequest(task_id=task_id)).task

    def start_task(self, task_id: str) -> tasks_pb2.Task:
        return self._call(self._tasks.StartTask, tasks_pb2.StartTaskRequest(task_id=task_id)).task

    def approve_task(self, task_id: str) -> tasks_pb2.Task:
        request = tasks_pb2.ApproveTaskRequest(task_id=task_id)
        return self._call(self._tasks.ApproveTask, request).task

    def delete_task(self, task_id: str) -> None:
        self._call(self._tasks.DeleteTask, tasks_pb2.DeleteTaskRequest(task_id=task_id))

    def wait_task(self, task_id: str, timeout: float | None = None) -> tasks_pb2.Task:
        """The task once it has settled; the daemon keeps the time (Timeout when it runs out)."""
        request = tasks_pb2.WaitTaskRequest(task_id=task_id, timeout_seconds=timeout)
        return self._call(self._tasks.WaitTask, request, timeout=None).task

    def stop_task(self, task_id: str, timeout: float | None = None) -> tuple[tasks_pb2.Task, bool]:
        """Pause a planning or running task once its agents have stopped.

        Returns the task and whether anything was stopped (False: it was paused already).
        timeout is the grace each agent gets to end its turn (None: the daemon's default). The
        call waits as long as the stop takes.
        """
        request = tasks_pb2.StopTaskRequest(task_id=task_id, timeout_seconds=timeout)
        response = self._call(self._tasks.StopTask, request, timeout=None)
        return response.task, response.stopped

    def resume_task(self, task_id: str) -> tasks_pb2.Task:
        request = tasks_pb2.ResumeTaskRequest(task_id=task_id)
        return self._call(self._tasks.ResumeTask, request).task

    def cancel_task(self, task_id: str, timeout: float | None = None) -> tasks_pb2.Task:
        """Cancel an unfinished task, waiting as long as stopping its agents takes."""
        request = tasks_pb2.CancelTaskRequest(task_id=task_id, timeout_seconds=timeout)
        return self._call(self._tasks.CancelTask, request, timeout=None).task

    def retry_task(
        self, task_id: str, subtasks: list[str] | None = None, fresh: bool = False
    ) -> tasks_pb2.Task:
        request = tasks_pb2.RetryTaskRequest(task_id=task_id, subtasks=subtasks or [], fresh=fresh)
        return self._call(self._tasks.RetryTask, request).task

    def publish_task(self, task_id: str, push: bool = False, pr: bool = False) -> tasks_pb2.Task:
        """The task after a delivery (or a retried one): its delivery says how it went.

        A push and a forge's API can take their time: no call deadline.
        """
        request = tasks_pb2.PublishTaskRequest(task_id=task_id, push=push, pr=pr)
        return self._call(self._tasks.PublishTask, request, timeout=None).task

    def relaunch_task(
        self,
        task_id: str,
        prompt: str | None = None,
        no_context: bool = False,
        start: bool = False,
        auto_approve: bool = False,
    ) -> tasks_pb2.Task:
        """The new task made from a finished one (its workspace copied: no call deadline)."""
        request = tasks_pb2.RelaunchTaskRequest(
            task_id=task_id,
            prompt=prompt,
            no_context=no_context,
            start=start,
            auto_approve=auto_approve,
        )
        return self._call(self._tasks.RelaunchTask, request, timeout=None).task

    # Plans --------------------------------------------------------------------------------

    def answer_questions(self, task_id: str, answers: dict[str, str]) -> tasks_pb2.Task:
        """Record answers (question id -> answer), all or none; the last one resumes planning."""
        request = plans_pb2.AnswerQuestionsRequest(task_id=task_id, answers=answers)
        return self._call(self._plans.AnswerQuestions, request).task

    def set_plan(self, task_id: str, text: str, based_on_version: int = 0) -> tasks_pb2.Task:
        """Replace a planned task's plan with text (YAML or JSON), validated as a whole.

        based_on_version is the version the text was edited from (0: no check).
        """
        request = plans_pb2.SetPlanRequest(
            task_id=task_id, text=text, based_on_version=based_on_version
        )
        return self._call(self._plans.SetPlan, request).task

    def replan_task(self, task_id: str, context: str = "") -> tasks_pb2.Task:
        request = plans_pb2.ReplanTaskRequest(task_id=task_id, context=context)
        return self._call(self._plans.ReplanTask, request).task

    # Teams --------------------------------------------------------------------------------

    def list_teams(self) -> tuple[list[teams_pb2.Team], list[str]]:
        """Every usable team, and a line for each user team file that does not parse."""
        response = self._call(self._teams.ListTeams, teams_pb2.ListTeamsRequest())
        return list(response.teams), list(response.invalid)

    def get_team(self, name: str) -> teams_pb2.Team:
        return self._call(self._teams.GetTeam, teams_pb2.GetTeamRequest(name=name)).team

    def add_team(self, text: str, replace: bool = False) -> teams_pb2.Team:
        request = teams_pb2.AddTeamRequest(yaml=text, replace=replace)
        return self._call(self._teams.AddTeam, request).team

    def remove_team(self, name: str) -> None:
        self._call(self._teams.RemoveTeam, teams_pb2.RemoveTeamRequest(name=name))

    # Repository templates ---------------------------------------------------------------

    def list_repos(self) -> list[repos_pb2.RepoTemplate]:
        return list(self._call(self._repos.ListRepos, repos_pb2.ListReposRequest()).repos)

    def get_repo(self, name: str) -> repos_pb2.RepoTemplate:
        return self._call(self._repos.GetRepo, repos_pb2.GetRepoRequest(name=name)).repo

    def add_repo(
        self, template: repos_pb2.RepoTemplate, replace: bool = False
    ) -> repos_pb2.RepoTemplate:
        """Store a template (replace: overwrite the one of that name); the stored one back."""
        request = repos_pb2.AddRepoRequest(repo=template, replace=replace)
        return self._call(self._repos.AddRepo, request).repo

    def remove_repo(self, name: str) -> None:
        self._call(self._repos.RemoveRepo, repos_pb2.RemoveRepoRequest(name=name))

    # Task files ---------------------------------------------------------------------------

    def list_files(self, task_id: str) -> files_pb2.ListFilesResponse:
        """The task's inputs, its changed files and the files its plan declared."""
        return self._call(self._files.ListFiles, files_pb2.ListFilesRequest(task_id=task_id))

    def copy_files(self, task_id: str, path: str) -> Iterator[bytes]:
        """A workspace file or directory as the chunks of a POSIX tar archive.

        A refused path raises InvalidArgument before the first chunk.
        """
        request = files_pb2.CopyFilesRequest(task_id=task_id, path=path)
        call = self._files.CopyFiles(request, metadata=self._auth())
        try:
            with mapped():
                for response in call:
                    yield response.chunk
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    def diff_files(self, task_id: str, stat: bool = False) -> Iterator[str]:
        """The task's change against its base commit, in pieces of text (whole lines)."""
        request = files_pb2.DiffFilesRequest(task_id=task_id, stat=stat)
        call = self._files.DiffFiles(request, metadata=self._auth())
        try:
            with mapped():
                for response in call:
                    yield response.text
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    # Checkpoints --------------------------------------------------------------------------

    def list_checkpoints(self, task_id: str) -> list[checkpoints_pb2.Checkpoint]:
        request = checkpoints_pb2.ListCheckpointsRequest(task_id=task_id)
        return list(self._call(self._checkpoints.ListCheckpoints, request).checkpoints)

    def restore_checkpoint(
        self, task_id: str, checkpoint_id: str
    ) -> tuple[tasks_pb2.Task, checkpoints_pb2.Checkpoint]:
        """The task, paused, with its workspace and agent sessions as in the checkpoint."""
        request = checkpoints_pb2.RestoreCheckpointRequest(
            task_id=task_id, checkpoint_id=checkpoint_id
        )
        response = self._call(self._checkpoints.RestoreCheckpoint, request, timeout=None)
        return response.task, response.checkpoint

    def follow_task(
        self, task_id: str, agent: str = "", since_seq: int = 0, follow: bool = True
    ) -> Iterator[stream_pb2.Event]:
        """Yield the task's events after since_seq; with follow, live until it settles."""
        request = stream_pb2.FollowTaskRequest(
            task_id=task_id, agent=agent, since_seq=since_seq, follow=follow
        )
        call = self._stream.FollowTask(request, metadata=self._auth())
        try:
            with mapped():
                for response in call:
                    yield response.event
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    # Daemon and image ---------------------------------------------------------------------

    def health(self, timeout: float = CALL_TIMEOUT) -> daemon_pb2.GetHealthResponse:
        return self._call(self._daemon.GetHealth, daemon_pb2.GetHealthRequest(), timeout=timeout)

    def stop_daemon(self) -> None:
        self._call(self._daemon.StopDaemon, daemon_pb2.StopDaemonRequest())

    def build_image(
        self, base_image: str = "", extra_ca_file: str = "", tag: str = "", force: bool = False
    ) -> Iterator[images_pb2.BuildImageResponse]:
        request = images_pb2.BuildImageRequest(
            base_image=base_image, extra_ca_file=extra_ca_file, tag=tag, force=force
        )
        with mapped():
            yield from self._images.BuildImage(request, metadata=self._auth())


def answers(client: Client, timeout: float = 1.0) -> bool:
    """Whether a daemon answers on the client's socket."""
    if not client.paths.socket.exists():
        return False
    try:
        client.health(timeout=timeout)
    except errors.Unauthenticated:
        raise
    except errors.KlaudioError:
        return False
    return True


def start_daemon(paths: Paths, config_file: str | None = None) -> int:
    """Start klaudiod in the background and wait until it answers; return its pid.

    Raises:
        ConfigError: when the configuration is bad (checked here first, for a clear exit 2).
        Unavailable: when it does not answer within START_TIMEOUT, naming its log.
    """
    from klaudio import config

    config.load(paths)
    ensure_private_dir(paths.state_dir)
    command = [sys.executable, "-m", "klaudiod"]
    if config_file:
        command += ["--config", config_file]
    with open(paths.log_file, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=os.environ.copy(),
        )
    client = Client(paths)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if answers(client, timeout=0.5):
                    # Another daemon, started at the same moment, won the instance's lock.
                    return read_pid(paths) or process.pid
                raise errors.Unavailable(
                    f"klaudiod could not start: {_last_line(paths.log_file)} (see {paths.log_file})"
                )
            if answers(client, timeout=0.5):
                return read_pid(paths) or process.pid
            time.sleep(0.05)
    finally:
        client.close()
    raise errors.Unavailable(
        f"klaudiod did not answer within {START_TIMEOUT:g}s; see {paths.log_file}"
    )


def _last_line(path: Path) -> str:
    """The last non-empty line of a log file, for an error message."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no log output"


def read_pid(paths: Paths) -> int | None:
    """The pid in the daemon's pid file, if any."""
    try:
        return int(Path(paths.pid_file).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
