"""Agents attack the daemon through the files it touches: nothing reaches outside their task.

A canary outside every task (a host directory and a root-only host file, each holding a unique
marker) is what agents aim their planted links at. Agents plant links of every kind, FIFOs,
directories and files where the daemon reads or writes: the workspace's context files, their
own run directory (out.jsonl, err.log, exit_code) and their home. Whatever the daemon does with
them, the canary's marker never shows up in what it stores, logs or shows, and the canary is
exactly as it was: the same entries, content, mode, owner and mtime.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from klaudio.paths import resolve
from tests.conftest import Instance, wait_for
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import Block, FakeModel, Request, structured, text, tool_use

pytestmark = pytest.mark.docker

PLANTED = "PLANTED-OK"
# Somebody else's uid: a chown that followed a link onto the canary would change it.
OTHER_UID = 4242
HOLD_SECONDS = 90.0
# Ends the agent's own Claude Code process from inside its Bash tool with SIGALRM (exit 142, no
# result event): the ancestor of this shell whose parent is the entrypoint. (SIGTERM or SIGKILL
# would count as killed from outside, a pause, and err.log would not be read. The pattern does
# not match the command's own text.)
KILL_CLAUDE = (
    "p=$$; while [ \"$p\" -gt 1 ]; do pp=$(cut -d' ' -f4 /proc/$p/stat); "
    "if tr '\\0' ' ' </proc/$pp/cmdline | grep -q 'klaudio[-]agent'; then kill -ALRM \"$p\"; "
    "break; fi; p=$pp; done"
)


@dataclass
class Canary:
    """Host files no agent may reach: their marker must never leak, nor they change."""

    marker: str
    file: Path  # root-only (0600), holding the marker
    dir: Path  # owned by someone else, holding their file with the marker

    def snapshot(self) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        for path in [self.file, self.dir, *sorted(self.dir.rglob("*"))]:
            st = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
            found[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, data)
        return found


@pytest.fixture
def canary(tmp_path: Path) -> Canary:
    marker = f"KLAUDIO-CANARY-{uuid.uuid4().hex}"
    host_file = tmp_path / "host-secret"
    host_file.write_text(f"root only: {marker}\n")
    host_file.chmod(0o600)
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    theirs = host_dir / "theirs"
    theirs.write_text(f"someone else's: {marker}\n")
    theirs.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(theirs, OTHER_UID, OTHER_UID)
        os.chown(host_dir, OTHER_UID, OTHER_UID)
    host_dir.chmod(0o700)
    return Canary(marker, host_file, host_dir)


@pytest.fixture
def attacked(instance: Instance) -> Instance:
    """A daemon with a credential of its own (a /proc/self/environ leak would show it)."""
    instance.env["ANTHROPIC_API_KEY"] = f"sk-test-{uuid.uuid4().hex}"
    instance.env["KLAUDIO_AGENTS_PER_TASK"] = "6"
    instance.env["KLAUDIO_AGENTS_MAX_CONCURRENT"] = "6"
    instance.start_daemon()
    return instance


def create(instance: Instance, prompt: str, *args: str) -> str:
    return instance.cli(
        "task", "create", prompt, "--start", "--auto-approve", *args, check=True
    ).stdout.strip()


def settle(instance: Instance, task_id: str, timeout: float = 120) -> dict[str, Any]:
    instance.cli("task", "wait", task_id, "--timeout", str(timeout), timeout=timeout + 60)
    task = instance.show(task_id)
    assert task["state"] in ("completed", "failed", "paused", "cancelled"), task
    return task


def tool_results(instance: Instance, task_id: str, agent: str) -> list[str]:
    """The tool results an agent got, from the stored stream."""
    logs = instance.cli("task", "logs", task_id, "--json", "--agent", agent, check=True).stdout
    found = []
    for line in logs.splitlines():
        event = json.loads(line)["event"]
        if event.get("type") != "user":
            continue
        for block in event.get("message", {}).get("content", []):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):
                    content = "".join(str(c.get("text", "")) for c in content)
                found.append(str(content))
    return found


def containers(task_id: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=klaudio.task={task_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def assert_nothing_escaped(
    instance: Instance, canary: Canary, before: dict[str, tuple[Any, ...]], task_ids: list[str]
) -> None:
    """The canary is untouched, its marker (and the daemon's key) shown nowhere; daemon healthy."""
    assert canary.snapshot() == before, "a host file or directory outside the task changed"
    secrets = {"canary marker": canary.marker, "API key": instance.env["ANTHROPIC_API_KEY"]}
    paths = resolve(instance.env)
    places: dict[str, bytes] = {
        "database": b"".join(p.read_bytes() for p in paths.db_file.parent.glob("klaudio.db*")),
        "daemon log": instance.daemon_log().encode(),
    }
    if paths.log_file.exists():
        places["daemon log file"] = paths.log_file.read_bytes()
    for task_id in task_ids:
        for args in (
            ["logs", task_id, "--json"],
            ["logs", task_id],
            ["show", task_id, "-o", "json"],
            ["show", task_id],
        ):
            places[" ".join(args)] = instance.cli("task", *args, check=True).stdout.encode()
    places["task list"] = instance.cli("task", "list", check=True).stdout.encode()
    for what, secret in secrets.items():
        for where, content in places.items():
            assert secret.encode() not in content, f"the {what} leaked into the {where}"
    status = instance.cli("daemon", "status")
    assert status.returncode == 0, status.stderr
    log = instance.daemon_log()
    assert "Traceback" not in log, log[-4000:]


def bash(command: str) -> Block:
    return tool_use("Bash", {"command": command, "description": "plant"})


def run_then(command: str, final: str) -> list[Any]:
    """A worker that runs one command and then ends with final."""
    return [[bash(command)], [text(final)]]


# --------------------------------------------------------------------------------------------
# The workspace: the context files the daemon writes for a dependent agent.

# (plant command, the refusal the dependent fails with); {dir}/{file} name the canary.
REFUSED_PLANTS = {
    "klaudio-link-to-host-dir": (
        "ln -s {dir} .klaudio && test -L .klaudio",
        ".klaudio/context/plant.md: '.klaudio' is a symbolic link",
    ),
    "context-link-to-host-dir": (
        "mkdir -p .klaudio && ln -s {dir} .klaudio/context && test -L .klaudio/context",
        ".klaudio/context/plant.md: '.klaudio/context' is a symbolic link",
    ),
    "klaudio-a-regular-file": (
        "printf 'not a directory' > .klaudio && test -f .klaudio",
        ".klaudio/context/plant.md: '.klaudio' is a regular file",
    ),
    "klaudio-link-through-proc-1-root": (
        "ln -s /proc/1/root{dir} .klaudio && test -L .klaudio",
        ".klaudio/context/plant.md: '.klaudio' is a symbolic link",
    ),
    "context-dangling-link": (
        "mkdir -p .klaudio && ln -s {dir}/made-by-the-daemon .klaudio/context"
        " && test -L .klaudio/context && test ! -e .klaudio/context",
        ".klaudio/context/plant.md: '.klaudio/context' is a symbolic link",
    ),
    "context-file-a-directory": (
        "mkdir -p .klaudio/context/plant.md/inside && test -d .klaudio/context/plant.md",
        ".klaudio/context/plant.md is a directory, not a regular file",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED_PLANTS))
def test_a_planted_path_to_the_context_files_fails_the_dependent(
    attacked: Instance, model: FakeModel, canary: Canary, case: str
) -> None:
    command, refusal = REFUSED_PLANTS[case]
    command = command.format(dir=canary.dir, file=canary.file) + f" && echo {PLANTED}"
    model.script("E2E-PLANT", run_then(command, f"planted {case}"))
    model.script("E2E-AFTER", [[text("the dependent ran")]])
    model.script(
        "E2E-CONTEXT",
        [
            [
                structured(
                    plan(
                        subtask("plant", "E2E-PLANT plant it"),
                        subtask("after", "E2E-AFTER read the context", ["plant"]),
                    )
                )
            ]
        ],
    )
    before = canary.snapshot()

    task_id = create(attacked, "E2E-CONTEXT go")
    task = settle(attacked, task_id)

    assert any(PLANTED in r for r in tool_results(attacked, task_id, "plant")), "not planted"
    subs = {s["id"]: s for s in task["plan"]["subtasks"]}
    assert subs["plant"]["state"] == "completed"
    assert subs["after"]["state"] == "failed"
    assert subs["after"]["reason"] == f"cannot start agent after: {refusal}"
    assert task["state"] == "failed"
    assert f"subtask after failed: cannot start agent after: {refusal}" in task["reason"]
    assert model.requests_for("E2E-AFTER") == [], "the dependent must not have started"
    assert containers(task_id) == []
    assert_nothing_escaped(attacked, canary, before, [task_id])


# Each dependency plants something at its own context file; the daemon replaces it.
REPLACED_PLANTS = {
    "tofile": "ln -s {file} .klaudio/context/tofile.md && test -L .klaudio/context/tofile.md",
    "todir": "ln -s {dir} .klaudio/context/todir.md && test -L .klaudio/context/todir.md",
    "fifo": "mkfifo .klaudio/context/fifo.md && test -p .klaudio/context/fifo.md",
    "dangling": (
        "ln -s {dir}/made-by-the-daemon .klaudio/context/dangling.md"
        " && test -L .klaudio/context/dangling.md && test ! -e .klaudio/context/dangling.md"
    ),
    "environ": (
        "ln -s /proc/self/environ .klaudio/context/environ.md"
        " && test -L .klaudio/context/environ.md"
    ),
    "procroot": (
        "ln -s /proc/1/root{file} .klaudio/context/procroot.md"
        " && test -L .klaudio/context/procroot.md"
    ),
    # Links that stay: the daemon hands the tree over and takes it back (chown) around them.
    "keeper": (
        "ln -s {dir}/theirs .klaudio/keep-file && ln -s {dir} .klaudio/keep-dir"
        " && ln -s {file} keep-root-file && test -L .klaudio/keep-dir"
    ),
}


def test_planted_context_files_are_replaced_not_written_through(
    attacked: Instance, model: FakeModel, canary: Canary
) -> None:
    for key, command in REPLACED_PLANTS.items():
        planted = "mkdir -p .klaudio/context && " + command.format(dir=canary.dir, file=canary.file)
        model.script(f"E2E-PLANT-{key.upper()} ", run_then(f"{planted} && echo {PLANTED}", key))
    model.script(
        "E2E-AFTER",
        [
            [
                bash(
                    "for f in .klaudio/context/*.md; do "
                    "test -f $f && ! test -L $f && cat $f; echo; done"
                )
            ],
            lambda req: [text(f"read: {(req.last_tool_result_text() or '').split()}")],
        ],
    )
    deps = [subtask(key, f"E2E-PLANT-{key.upper()} plant it") for key in REPLACED_PLANTS]
    after = subtask("after", "E2E-AFTER read the context", list(REPLACED_PLANTS))
    model.script("E2E-REPLACE", [[structured(plan(*deps, after))]])
    before = canary.snapshot()
    # Eight developers: more than a built-in team allows.
    team = attacked.home / "wide.yaml"
    team.write_text(
        "name: wide\nmode: dag\nmax_agents: 4\nroles:\n  - name: developer\n    max_instances: 10\n"
    )
    attacked.cli("team", "add", str(team), check=True)

    task_id = create(attacked, "E2E-REPLACE go", "--team", "wide")
    task = settle(attacked, task_id)

    for key in REPLACED_PLANTS:
        assert any(PLANTED in r for r in tool_results(attacked, task_id, key)), key
    assert task["state"] == "completed", task["reason"]
    context = Path(task["workspace"]) / ".klaudio" / "context"
    for key in REPLACED_PLANTS:
        path = context / f"{key}.md"
        assert stat.S_ISREG(path.lstat().st_mode), f"{path} is not a regular file"
        assert path.read_text() == key
    # The dependent read each file as its dependency's final message.
    result = task["plan"]["subtasks"][-1]["result"]
    assert result == f"read: {sorted(REPLACED_PLANTS)}"
    # The links that stayed are links still, and were never followed.
    workspace = Path(task["workspace"])
    for name in (".klaudio/keep-file", ".klaudio/keep-dir", "keep-root-file"):
        assert (workspace / name).is_symlink()
    assert_nothing_escaped(attacked, canary, before, [task_id])


# --------------------------------------------------------------------------------------------
# The run directory: out.jsonl, err.log and exit_code, which the daemon reads.

# kind -> (how to plant it at {path}, how safefs names it)
RUN_DIR_KINDS = {
    "linkfile": ("ln -s {file} {path}", "a symbolic link"),
    "linkdir": ("ln -s {dir} {path}", "a symbolic link"),
    "environ": ("ln -s /proc/self/environ {path}", "a symbolic link"),
    "fifo": ("mkfifo {path}", "a FIFO"),
    "directory": ("mkdir {path}", "a directory"),
}


def held(release: threading.Event, final: str) -> Callable[[Request], list[Block]]:
    """A turn that waits (for the daemon to judge the run) before the agent ends normally."""

    def turn(req: Request) -> list[Block]:
        release.wait(HOLD_SECONDS)
        return [text(final)]

    return turn


@pytest.mark.parametrize("name", ["out.jsonl", "exit_code", "err.log"])
def test_a_tampered_run_directory_fails_the_run_without_reading_it(
    attacked: Instance, model: FakeModel, canary: Canary, name: str
) -> None:
    release = threading.Event()
    path = f"/klaudio/run/{name}"
    for kind, (plant, _) in RUN_DIR_KINDS.items():
        command = f"rm -f {path} && " + plant.format(file=canary.file, dir=canary.dir, path=path)
        if name == "err.log":
            # err.log is read only when the agent ends without a result: it dies of a signal.
            turns: list[Any] = [[bash(f"{command} && {KILL_CLAUDE}")], [text("not reached")]]
        else:
            turns = [[bash(f"{command} && echo {PLANTED}")], held(release, f"{kind} ended")]
        model.script(f"E2E-TAMPER-{kind.upper()} ", turns)
    subs = [subtask(kind, f"E2E-TAMPER-{kind.upper()} tamper") for kind in RUN_DIR_KINDS]
    model.script("E2E-RUNDIR", [[structured(plan(*subs))]])
    before = canary.snapshot()

    task_id = create(attacked, "E2E-RUNDIR go")
    try:
        # Every run is judged while the agent still waits for its model: the daemon noticed.
        waited = attacked.cli("task", "wait", task_id, "--timeout", "60", timeout=120)
    finally:
        release.set()
    assert waited.returncode in (0, 1), waited.stderr
    task = settle(attacked, task_id)

    assert task["state"] == "failed"
    agents = {a["name"]: a for a in task["agents"]}
    for kind, (_, what) in RUN_DIR_KINDS.items():
        agent = agents[kind]
        assert agent["state"] == "failed", (kind, agent)
        if name == "err.log":
            assert agent["reason"].endswith(
                f"without a result event: (err.log refused: err.log is {what}, not a regular file)"
            ), (kind, agent["reason"])
            assert agent["exit_code"] == 142, (kind, agent)
        else:
            assert agent["reason"] == (
                f"its run directory was tampered with: {name} is {what}, not a regular file"
            ), (kind, agent["reason"])
    assert containers(task_id) == []
    assert_nothing_escaped(attacked, canary, before, [task_id])


# --------------------------------------------------------------------------------------------
# The agent's home: the daemon looks for the agent's transcript before it resumes a run.

TRANSCRIPTS = "/klaudio/home/.claude/projects/-workspace"
HOME_PLANTS = {
    # The transcript itself becomes a link to the root-only host file (once Claude Code has
    # written it: it writes as the run goes).
    "transcript": (
        f"f={TRANSCRIPTS}/{{session}}.jsonl; for i in $(seq 300); do test -s $f && break; "
        "sleep 0.1; done; rm $f && ln -s {file} $f && test -L $f"
    ),
    # A directory on the way to it becomes a link to the host directory.
    "projects": (
        "mv /klaudio/home/.claude/projects /klaudio/home/.claude/projects.old"
        " && ln -s {dir} /klaudio/home/.claude/projects && test -L /klaudio/home/.claude/projects"
    ),
}


@pytest.mark.parametrize("key", list(HOME_PLANTS))
def test_a_planted_link_in_the_home_is_not_followed_on_resume(
    attacked: Instance, model: FakeModel, canary: Canary, key: str
) -> None:
    entered, release = threading.Event(), threading.Event()
    calls: list[Request] = []
    marker = f"E2E-HOME-{key.upper()}"

    def first(req: Request) -> list[Block]:
        calls.append(req)
        if len(calls) == 1:
            planted = HOME_PLANTS[key].format(
                file=canary.file, dir=canary.dir, session=req.session_id
            )
            return [bash(f"{planted} && echo {PLANTED}")]
        return [text(f"{key} carried on")]

    def hold(req: Request) -> list[Block]:
        entered.set()
        release.wait(HOLD_SECONDS)
        return [text(f"{key} held")]

    model.script(marker, [first, hold])
    model.script("E2E-HOME", [[structured(plan(subtask(key, f"{marker} plant")))]])
    before = canary.snapshot()

    task_id = create(attacked, "E2E-HOME go")
    try:
        wait_for(entered.is_set, 120, f"agent {key} to plant and wait")
        stopped = attacked.cli("task", "stop", task_id, "--timeout", "20")
    finally:
        release.set()
    assert stopped.returncode == 0, stopped.stderr
    assert any(PLANTED in r for r in tool_results(attacked, task_id, key)), "not planted"
    assert attacked.show(task_id)["state"] == "paused"
    resumed = attacked.cli("task", "resume", task_id)
    assert resumed.returncode == 0, resumed.stderr
    task = settle(attacked, task_id)

    # The conversation behind the link is not resumed: the agent starts afresh, or fails
    # cleanly naming the link; never an internal error.
    assert "internal error" not in task["reason"], task["reason"]
    agent = next(a for a in task["agents"] if a["name"] == key)
    if task["state"] == "completed":
        again = calls[1]
        assert not any(m.get("role") == "assistant" for m in again.messages)
        assert "Your subtask" in again.first_user_text()
    else:
        assert task["state"] == "failed"
        assert agent["reason"].startswith(f"cannot start agent {key}: "), agent["reason"]
        assert "symbolic link" in agent["reason"]
    assert containers(task_id) == []
    assert_nothing_escaped(attacked, canary, before, [task_id])


# --------------------------------------------------------------------------------------------
# Credentials and the container: nothing secret in its metadata, a read-only root filesystem.

PROBE = (
    "for p in /etc/x /usr/x /x /klaudio/secrets/x /tmp/x /workspace/x; do "
    'if touch $p 2>/dev/null; then echo "$p writable"; else echo "$p refused"; fi; done; '
    "for f in /klaudio/secrets/*; do "
    'if rm -f $f 2>/dev/null && ! test -e $f; then echo "$f removable"; fi; '
    'if test -r $f; then echo "$f readable"; fi; done'
)


def test_no_credential_reaches_container_metadata_and_the_root_is_read_only(
    instance: Instance, model: FakeModel, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex
    key, token, file_token = f"sk-test-{tag}", f"oauth-test-{tag}", f"file-test-{tag}"
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": file_token,
                    "refreshToken": f"refresh-{file_token}",
                    "expiresAt": 4102444800000,
                    "scopes": ["user:inference"],
                    "subscriptionType": "max",
                }
            }
        )
    )
    credentials.chmod(0o600)  # the daemon's own: it hands the agents a copy
    instance.env.update(
        ANTHROPIC_API_KEY=key,
        CLAUDE_CODE_OAUTH_TOKEN=token,
        KLAUDIO_CLAUDE_CREDENTIALS_FILE=str(credentials),
    )
    instance.start_daemon()
    entered, release = threading.Event(), threading.Event()
    probed: list[str] = []

    def hold(req: Request) -> list[Block]:
        probed.append(req.last_tool_result_text() or "")
        entered.set()
        release.wait(HOLD_SECONDS)
        return [text("probed")]

    model.script("E2E-PROBE", [[bash(PROBE)], hold])
    model.script("E2E-SECRETS", [[structured(plan(subtask("worker", "E2E-PROBE look around")))]])

    task_id = create(instance, "E2E-SECRETS go")
    try:
        wait_for(entered.is_set, 120, "the worker's probe")
        found = subprocess.run(
            [
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=klaudio.task={task_id}",
                "--filter",
                "label=klaudio.agent=worker",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert len(found) == 1, "the worker's container runs while its model holds the turn"
        inspected = subprocess.run(
            ["docker", "inspect", found[0]], capture_output=True, text=True, check=True
        ).stdout
        listed = subprocess.run(
            ["docker", "ps", "-a", "--no-trunc", "--filter", f"label=klaudio.task={task_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        name = json.loads(inspected)[0]["Name"].lstrip("/")
        secrets_dir = resolve(instance.env).state_dir / "secrets" / name
        secrets_files = sorted(p.name for p in secrets_dir.iterdir())
        secrets_modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in secrets_dir.iterdir()}
        secrets_dir_stat = secrets_dir.stat()
    finally:
        release.set()
    task = settle(instance, task_id)

    for what, value in (("API key", key), ("OAuth token", token), ("file token", file_token)):
        assert value not in inspected, f"the {what} is in `docker inspect`"
        assert value not in listed, f"the {what} is in `docker ps --no-trunc`"
    container = json.loads(inspected)[0]
    env_names = {item.split("=", 1)[0] for item in container["Config"]["Env"] or []}
    assert not env_names & {"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"}
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert mounts["/klaudio/secrets"]["RW"] is False
    # The secrets: one file each, readable by the agent's user only, gone with the run.
    assert secrets_files == ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "credentials.json"]
    assert set(secrets_modes.values()) == {0o400}
    assert stat.S_IMODE(secrets_dir_stat.st_mode) == 0o500
    if os.geteuid() == 0:
        assert (secrets_dir_stat.st_uid, secrets_dir_stat.st_gid) == (1000, 1000)
    wait_for(lambda: not secrets_dir.exists(), 30, "the run's secrets to be removed")

    # Inside: a read-only root, writable /tmp and /workspace, read-only (but readable) secrets.
    assert len(probed) == 1
    lines = set(probed[0].splitlines())
    for path in ("/etc/x", "/usr/x", "/x", "/klaudio/secrets/x"):
        assert f"{path} refused" in lines, probed[0]
    for path in ("/tmp/x", "/workspace/x"):
        assert f"{path} writable" in lines, probed[0]
    assert not any(line.endswith("removable") for line in lines), probed[0]
    assert "/klaudio/secrets/ANTHROPIC_API_KEY readable" in lines, probed[0]

    # The agents authenticated with the credential (the API key wins over the tokens).
    requests = model.requests_for("E2E-SECRETS") + model.requests_for("E2E-PROBE")
    assert len(requests) >= 3
    assert {r.headers.get("x-api-key") for r in requests} == {key}
    assert task["state"] == "completed", task["reason"]
    paths = resolve(instance.env)
    stored = b"".join(p.read_bytes() for p in paths.db_file.parent.glob("klaudio.db*"))
    logs = instance.cli("task", "logs", task_id, "--json", check=True).stdout
    for value in (key, token, file_token):
        assert value.encode() not in stored
        assert value not in instance.daemon_log()
        assert value not in logs
