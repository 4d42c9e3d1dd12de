"""End to end: delivery through `klaudio run`, with real git over smart HTTP and fake forge APIs.

The daemon, Docker, the agent image and Claude Code are real (the model is scripted); the
repository is served by `git http-backend` behind Basic auth (tests/githttp.py), which refuses
anyone without the token; only the forges' REST APIs are stand-ins (tests/forges.py). Agents
change the workspace with their Bash tool, as a model would.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from klaudio import errors
from klaudio.client import Client, TaskOptions
from klaudio.paths import resolve
from tests.conftest import Instance, _environment, created_task, remove_containers, wait_for
from tests.e2e.test_run import plan, subtask
from tests.fakemodel import FakeModel, Request, structured, text, tool_use
from tests.forges import FAKES, FakeForge
from tests.githttp import (
    GIT_ENV,
    GitHttpServer,
    GitRequest,
    _basic,
    _read_body,
    create_bare_repo,
    git,
    read_refs,
    read_tree,
)
from tests.needs import need

pytestmark = pytest.mark.docker

TOKEN = "kltok_e2eDeliverySecret_7f3a91c2d4"
# A token the git server takes for fetches only: a push with it is refused (403).
READ_ONLY_TOKEN = "kltok_e2eReadOnlyWrong_0b5e6d8a11"
TOKEN_VAR = "E2E_FORGE_TOKEN"
REPO = "acme/widgets"
AUTHOR_NAME = "Klaudio E2E Bot"
AUTHOR_EMAIL = "bot@e2e.invalid"
TASK_NAME = "Deliver the widgets change"
ANALYSIS = "E2E-ANALYSIS: the app prints v1; make it print v2 and add a module."
REPORT = "E2E-REPORT: app.py prints v2 now; src/new.py added"
# What most agents do: change one file.
EDIT = "printf 'print(\"v2\")\\n' > src/app.py && echo done"
ZERO = "0" * 40
BASE_FILES: dict[str, str | bytes] = {
    "README.md": "# widgets\n",
    "src/app.py": "print('v1')\n",
    "old.txt": "old\n",
    ".gitignore": "*.log\nbuild/\n",
    "docs/guide.md": "# Guide\n",
}
# The HTTP Basic username each forge takes with a token, and a reviewer it knows.
FORGES: dict[str, dict[str, str]] = {
    "github": {"username": "x-access-token", "reviewer": "alice"},
    "github-enterprise": {"username": "x-access-token", "reviewer": "alice"},
    "gitlab": {"username": "oauth2", "reviewer": "alice"},
    # A Bitbucket account id of the newer, 24-hex-digit form (the 557058:... and {UUID} forms
    # are tested below).
    "bitbucket": {"username": "x-token-auth", "reviewer": "5b10ac8d82e05b22cc7d4ef5"},
}


# Servers ----------------------------------------------------------------------------------------


class ScopedGitServer(GitHttpServer):
    """A git server that also takes a read-only token: fetches with it are served, and a push
    with it is answered 403, as GitHub answers a token without write access."""

    def __init__(self, root: Path, username: str | None, password: str, read_only: str) -> None:
        super().__init__(root, username, password)
        self.read_only = read_only

    def handle(self, handler: Any) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        username, password = _basic(headers.get("authorization"))
        if password != self.read_only:
            super().handle(handler)
            return
        request = GitRequest(handler.command, handler.path, headers, username, False)
        with self._lock:
            self.requests.append(request)
        body = _read_body(handler, headers)
        if request.service == "git-receive-pack":
            message = b"Permission to acme/widgets.git denied: the token cannot write\n"
            self._send(handler, request, 403, {"Content-Type": "text/plain"}, message)
            return
        request.authorized = True
        status, out_headers, out = self._backend(handler, headers, body, username or "")
        self._send(handler, request, status, out_headers, out)


@dataclass
class Remote:
    """A repository on the git server and its forge's API."""

    forge: str
    git: GitHttpServer
    api: FakeForge
    base: str  # the commit main holds
    name: str = f"{REPO}.git"

    @property
    def url(self) -> str:
        return self.git.url(self.name)

    @property
    def forge_name(self) -> str:
        return self.forge.removesuffix("-enterprise")

    def branch_tree(self, rev: str) -> dict[str, tuple[str, bytes]]:
        """path -> (mode, content) of every entry of rev's tree on the server."""
        path = self.git.path(self.name)
        listed = git("-C", path, "ls-tree", "-r", "-z", "--full-tree", rev).split("\0")
        contents = self.git.tree(self.name, rev)
        entries: dict[str, tuple[str, bytes]] = {}
        for line in filter(None, listed):
            meta, name = line.split("\t", 1)
            entries[name] = (meta.split()[0], contents[name])
        return entries

    def open_prs(self) -> list[dict[str, Any]]:
        return self.api.open_prs()


def pr_fields(forge: str, pr: dict[str, Any]) -> dict[str, Any]:
    """title, body, base, head, reviewers and url of a fake forge's pull request."""
    if forge == "gitlab":
        return {
            "title": pr["title"],
            "body": pr["description"],
            "base": pr["target_branch"],
            "head": pr["source_branch"],
            "reviewers": [r["username"] for r in pr["reviewers"]],
            "url": pr["web_url"],
        }
    if forge == "bitbucket":
        return {
            "title": pr["title"],
            "body": pr["description"],
            "base": pr["destination"]["branch"]["name"],
            "head": pr["source"]["branch"]["name"],
            "reviewers": [r["account_id"] for r in pr["reviewers"]],
            "url": pr["links"]["html"]["href"],
        }
    return {
        "title": pr["title"],
        "body": pr["body"],
        "base": pr["base"]["ref"],
        "head": pr["head"]["ref"],
        "reviewers": [r["login"] for r in pr["requested_reviewers"]],
        "url": pr["html_url"],
    }


@pytest.fixture
def remotes(tmp_path: Path) -> Iterator[Callable[..., Remote]]:
    """make(forge="github", read_only=None): a git server holding acme/widgets, and its forge."""
    with ExitStack() as stack:

        def make(forge: str = "github", read_only: str | None = None) -> Remote:
            username = FORGES[forge]["username"]
            root = tmp_path / f"git-{forge}"
            server: GitHttpServer = (
                ScopedGitServer(root, username, TOKEN, read_only)
                if read_only
                else GitHttpServer(root, username, TOKEN)
            )
            stack.enter_context(server)
            base = server.create_repo(f"{REPO}.git", BASE_FILES)
            server.create_repo("acme/other.git", {"x": "x\n"})  # the push touches no other repo
            name = forge.removesuffix("-enterprise")
            users: dict[str, Any] = (
                {"users": {FORGES[forge]["reviewer"]: "Alice"}} if name == "bitbucket" else {}
            )
            api = FAKES[name](
                TOKEN,
                **users,
                repos=[REPO],
                prefix="/api/v3" if forge == "github-enterprise" else None,
                # A pull request needs its branch on the server: the push comes first.
                branch_exists=lambda repo, branch: (
                    f"refs/heads/{branch}" in server.refs(f"{repo}.git")
                ),
            )
            stack.enter_context(api)
            return Remote(forge, server, api, base)

        yield make


def start(instance: Instance, token: str = TOKEN) -> None:
    """The daemon, with the token in its environment and the commit author configured."""
    instance.env[TOKEN_VAR] = token
    instance.env["KLAUDIO_GIT_AUTHOR_NAME"] = AUTHOR_NAME
    instance.env["KLAUDIO_GIT_AUTHOR_EMAIL"] = AUTHOR_EMAIL
    instance.start_daemon()


def restart(instance: Instance, token: str) -> None:
    instance.stop_daemon()
    start(instance, token)


def add_template(
    instance: Instance, remote: Remote, level: str = "--auto-pr", *extra: str, name: str = "widgets"
) -> str:
    instance.cli(
        "repo", "add", name, remote.url, "--forge", remote.forge_name,
        "--api-url", remote.api.api_url, "--token-env", TOKEN_VAR, level,
        "--reviewer", FORGES[remote.forge]["reviewer"], *extra,
        check=True,
    )  # fmt: skip
    return name


def script(
    model: FakeModel,
    marker: str,
    command: str,
    report: str | Callable[[Request], str] = REPORT,
    planner: Callable[[], None] | None = None,
) -> None:
    """A one-subtask plan whose worker runs command with Bash, then reports."""

    def final(req: Request) -> list[Any]:
        return [text(report(req) if callable(report) else report)]

    def planned(req: Request) -> list[Any]:
        if planner is not None:
            planner()
        chosen = plan(subtask("work", f"{marker}-WORK change the widgets"))
        chosen["analysis"] = ANALYSIS
        return [structured(chosen)]

    model.script(f"{marker}-WORK", [[tool_use("Bash", {"command": command})], final])
    model.script(f"{marker}-TASK", [planned])


def run(instance: Instance, marker: str, *args: str) -> subprocess.CompletedProcess[str]:
    return instance.cli(
        "run", f"{marker}-TASK change the widgets", "--name", TASK_NAME, "--auto-approve", *args
    )


def everything_stored(instance: Instance) -> dict[str, bytes]:
    """path -> content of every regular file under the instance's home (DB, log, tasks...)."""
    found: dict[str, bytes] = {}
    for root, _, names in os.walk(instance.home):
        for name in names:
            path = Path(root, name)
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(instance.home))] = path.read_bytes()
    return found


def secret_forms(secret: str) -> list[bytes]:
    return [secret.encode(), quote(secret, safe="").encode()]


def leaks(secret: str, places: dict[str, bytes]) -> list[str]:
    """The names of the places holding secret (plain or URL-encoded)."""
    return sorted(k for k, v in places.items() if any(f in v for f in secret_forms(secret)))


# 1. Clone of a private repository ---------------------------------------------------------------


AGENT_CHANGE = (
    "printf 'print(\"v2\")\\n' > src/app.py"
    " && printf 'new\\n' > src/new.py"
    " && rm old.txt"
    " && mkdir -p build && printf 'junk' > build/out.bin"
    " && printf 'noise\\n' > debug.log"
    " && ln -s src/app.py app-link"
    " && printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod +x run.sh"
    " && mkdir -p .klaudio/notes && printf 'mine\\n' > .klaudio/notes/n.txt"
    " && echo changed"
)


def test_a_private_repository_is_cloned_with_the_token_kept_out_of_the_workspace(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    remote = remotes()
    start(instance)
    refused = subprocess.run(
        ["git", "ls-remote", remote.url], env={**os.environ, **GIT_ENV},
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert [r.status for r in remote.git.requests] == [401]
    template = add_template(instance, remote, "--auto-branch")
    script(model, "E2E-CLONE", "cat README.md && printf 'x\\n' > x.txt")

    result = run(instance, "E2E-CLONE", "--repo-template", template)

    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    task = instance.show(task_id)
    assert task["state"] == "completed"
    assert task["branch"] == f"klaudio/{task_id[:8]}"
    assert (task["base_branch"], task["base_commit"]) == ("main", remote.base)
    workspace = Path(task["workspace"])
    for name, content in BASE_FILES.items():
        assert (workspace / name).read_bytes() == (
            content.encode() if isinstance(content, str) else content
        ), name
    assert (workspace / "x.txt").read_text() == "x\n"
    # The agent read the clone (its tool result reached the model).
    assert "# widgets" in (model.requests_for("E2E-CLONE-WORK")[1].last_tool_result_text() or "")
    # The workspace is an ordinary clone on the task branch; its remote is the plain URL.
    config = (workspace / ".git" / "config").read_text()
    assert f"url = {remote.url}\n" in config
    assert (workspace / ".git" / "HEAD").read_text().strip() == (
        f"ref: refs/heads/klaudio/{task_id[:8]}"
    )
    origin = git("-C", workspace, "config", "--get", "remote.origin.url").strip()
    assert origin == remote.url
    git_dir_files = everything_under(workspace / ".git")
    assert leaks(TOKEN, git_dir_files) == []
    # Every request but the first (ours, refused) authenticated as the forge expects, and no
    # request carried the token in its URL.
    daemons = remote.git.requests[1:]
    assert daemons and all(r.authorized for r in daemons)
    assert {r.username for r in daemons} == {FORGES["github"]["username"]}
    assert {r.service for r in daemons} == {"git-upload-pack"}
    for request in remote.git.requests:
        assert not any(f.decode() in request.target for f in secret_forms(TOKEN)), request.target
    # Only a branch was asked for: nothing is pushed.
    assert remote.git.pushed == []
    assert remote.api.calls == []


def everything_under(path: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for root, _, names in os.walk(path):
        for name in names:
            item = Path(root, name)
            if item.is_file() and not item.is_symlink():
                found[str(item.relative_to(path))] = item.read_bytes()
    return found


# 2. The task branch, pushed with the agents' change and nothing else ------------------------------


def test_the_task_branch_is_pushed_with_exactly_the_agents_change(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote], tmp_path: Path
) -> None:
    remote = remotes()
    start(instance)
    template = add_template(instance, remote, "--auto-push")
    script(model, "E2E-PUSH", AGENT_CHANGE)
    refs_before = remote.git.refs("acme/other.git")
    spec = tmp_path / "spec.txt"  # given to the task, not made by it: never delivered
    spec.write_text("the spec\n")

    result = run(instance, "E2E-PUSH", "--repo-template", template, "--input", str(spec))

    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    task = instance.show(task_id)
    branch = f"klaudio/{task_id[:8]}"
    assert task["state"] == "completed"
    assert task["delivery"]["state"] == "delivered", task["delivery"]
    commit = task["delivery"]["commit_id"]
    # One ref was pushed, the task branch, created; main and the other repository untouched.
    pushed = [(u.old, u.new, u.ref) for u in remote.git.pushed]
    assert pushed == [(ZERO, commit, f"refs/heads/{branch}")]
    assert remote.git.refs(remote.name) == {
        "refs/heads/main": remote.base,
        f"refs/heads/{branch}": commit,
    }
    assert remote.git.refs("acme/other.git") == refs_before
    # The branch's tree is the base tree plus the change: ignored files, .klaudio, .git and
    # the input left out, the link committed as a link, the script as executable.
    expected = {
        name: ("100644", content.encode() if isinstance(content, str) else content)
        for name, content in BASE_FILES.items()
        if name != "old.txt"
    }
    expected.update(
        {
            "src/app.py": ("100644", b'print("v2")\n'),
            "src/new.py": ("100644", b"new\n"),
            "app-link": ("120000", b"src/app.py"),
            "run.sh": ("100755", b"#!/bin/sh\necho hi\n"),
        }
    )
    assert remote.branch_tree(branch) == expected
    made = remote.git.commit(remote.name, branch)
    assert made["id"] == commit
    assert made["parents"] == remote.base
    assert made["author"] == made["committer"] == f"{AUTHOR_NAME} <{AUTHOR_EMAIL}>"
    message = made["message"].splitlines()
    assert message[0] == TASK_NAME
    assert ANALYSIS in message
    assert "- work: Subtask work" in message
    # The workspace keeps everything the agent wrote, ignored files included, and the input.
    workspace = Path(task["workspace"])
    assert (workspace / "input" / "spec.txt").read_text() == "the spec\n"
    assert (workspace / "debug.log").read_text() == "noise\n"
    assert (workspace / "build" / "out.bin").read_bytes() == b"junk"
    # No pull request was asked for: the forge was not called; run printed no URL.
    assert remote.api.calls == []
    assert "http" not in result.stdout.strip().splitlines()[-1]


# 3. A pull request, on each forge -----------------------------------------------------------------


@pytest.mark.parametrize("forge", list(FORGES))
def test_a_pull_request_is_opened_on_each_forge(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote], forge: str
) -> None:
    remote = remotes(forge)
    start(instance)
    # GitHub Enterprise targets the template's --pr-target; the others the branch cloned.
    target = "release" if forge == "github-enterprise" else "main"
    if target != "main":
        git("-C", remote.git.path(remote.name), "branch", target, "main")
    extra = ("--pr-target", target) if target != "main" else ()
    template = add_template(instance, remote, "--auto-pr", *extra)
    marker = "E2E-PR-" + forge.upper()
    script(model, marker, EDIT)

    result = run(instance, marker, "--repo-template", template)

    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    task = instance.show(task_id)
    branch = f"klaudio/{task_id[:8]}"
    (pr,) = remote.open_prs()
    shown = pr_fields(remote.forge_name, pr)
    assert shown["title"] == TASK_NAME
    assert shown["head"] == branch
    assert shown["base"] == target
    assert shown["reviewers"] == [FORGES[forge]["reviewer"]]
    assert ANALYSIS in shown["body"]
    assert REPORT in shown["body"]
    assert "work: Subtask work" in shown["body"]
    assert task["delivery"]["state"] == "delivered"
    assert task["delivery"]["pr_url"] == shown["url"]
    assert result.stdout.strip().splitlines()[-1] == shown["url"]
    assert task["state"] == "completed"
    # The API was called with the token in a header, never in a URL.
    assert remote.api.calls
    for call in remote.api.calls:
        assert TOKEN not in call.target
    assert remote.git.refs(remote.name)[f"refs/heads/{branch}"] == task["delivery"]["commit_id"]


@pytest.mark.parametrize(
    ("url", "reviewer"),
    [
        ("https://bitbucket.org/acme/widgets", "557058:8c2b1f4e-0a7d-4e59-9b1e-2f6c3d4a5b6c"),
        ("https://bitbucket.org/acme/widgets", "{1b9ac2f0-0d8c-4c43-9f6c-3e2a5d7c8b11}"),
        ("https://github.com/acme/widgets", "acme/reviewers"),
    ],
)
def test_documented_reviewer_forms_are_taken(daemon: Instance, url: str, reviewer: str) -> None:
    result = daemon.cli("repo", "add", "widgets", url, "--auto-pr", "--reviewer", reviewer)

    assert result.returncode == 0, result.stderr


# 4. An open pull request from the branch is updated, not duplicated -------------------------------

CLOSED = {"github": "closed", "gitlab": "closed", "bitbucket": "DECLINED"}
CREATES = r"/(pulls|merge_requests|pullrequests)$"


@pytest.mark.parametrize("forge", ["github", "gitlab", "bitbucket"])
def test_an_open_pull_request_from_the_branch_is_updated_not_duplicated(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote], forge: str
) -> None:
    remote = remotes(forge)
    start(instance)
    template = add_template(instance, remote)
    marker = "E2E-UPDATE-" + forge.upper()
    script(model, marker, EDIT)
    task_id = instance.cli(
        "task", "create", f"{marker}-TASK change the widgets", "--name", TASK_NAME,
        "--repo-template", template, "--auto-approve", check=True,
    ).stdout.strip()  # fmt: skip
    branch = f"klaudio/{task_id[:8]}"
    api: Any = remote.api  # each fake's add_pr takes its own keywords
    api.add_pr(REPO, branch, "main", title="Closed long ago", state=CLOSED[forge])
    existing = api.add_pr(REPO, branch, "main", title="Stale title", body="stale body")
    url = pr_fields(forge, existing)["url"]

    instance.cli("task", "start", task_id, check=True)
    waited = instance.cli("task", "wait", task_id)

    assert waited.returncode == 0, waited.stderr + waited.stdout
    assert waited.stdout.strip().splitlines()[-1] == url
    task = instance.show(task_id)
    assert task["state"] == "completed"
    assert task["delivery"]["pr_url"] == url
    assert remote.api.calls_to("POST", CREATES) == []
    assert len(remote.api.prs) == 2
    (pr,) = remote.open_prs()
    assert pr is existing
    shown = pr_fields(forge, pr)
    assert shown["title"] == TASK_NAME
    assert REPORT in shown["body"] and "stale" not in shown["body"]
    assert shown["reviewers"] == [FORGES[forge]["reviewer"]]


def test_publishing_again_updates_the_same_pull_request(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    remote = remotes("github-enterprise")
    start(instance)
    template = add_template(instance, remote)
    script(model, "E2E-AGAIN", EDIT)
    result = run(instance, "E2E-AGAIN", "--repo-template", template)
    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    (pr,) = remote.open_prs()
    url = result.stdout.strip().splitlines()[-1]

    again = instance.cli("task", "publish", task_id)

    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == url
    assert len(remote.api.calls_to("POST", CREATES)) == 1
    assert remote.api.prs == [pr] and pr_fields("github", pr)["title"] == TASK_NAME
    assert instance.show(task_id)["state"] == "completed"


# 5. A refused push fails the delivery; publish succeeds once the token is fixed -----------------


def refused_delivery(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote], marker: str
) -> tuple[Remote, str, subprocess.CompletedProcess[str]]:
    """A run whose push the server refuses: the daemon's token can read, not write."""
    remote = remotes(read_only=READ_ONLY_TOKEN)
    start(instance, READ_ONLY_TOKEN)  # it clones, but cannot push
    template = add_template(instance, remote)
    script(model, marker, EDIT)

    result = run(instance, marker, "--repo-template", template)

    assert result.returncode == 1, result.stderr + result.stdout
    task_id = created_task(result)
    task = instance.show(task_id)
    assert task["state"] == "failed"
    assert task["delivery"]["state"] == "failed"
    # Nothing reached the server or the forge; the work is kept.
    assert remote.git.pushed == []
    assert remote.git.refs(remote.name) == {"refs/heads/main": remote.base}
    assert remote.api.prs == []
    assert (Path(task["workspace"]) / "src" / "app.py").read_text() == 'print("v2")\n'
    return remote, task_id, result


def test_a_refused_push_fails_the_delivery_with_the_reason_and_the_token_masked(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    _, task_id, result = refused_delivery(instance, model, remotes, "E2E-REFUSED")

    task = instance.show(task_id)
    reason = task["delivery"]["reason"]
    assert task["reason"] == f"delivery failed: {reason}"
    assert f"klaudio/{task_id[:8]}" in reason and "403" in reason, reason
    assert f"delivery failed: {reason}" in result.stdout + result.stderr
    assert instance.cli("task", "wait", task_id).returncode == 1
    # The wrong token is nowhere: reason, stream, output, database, log, any stored file.
    logs = instance.cli("task", "logs", task_id, "--json", check=True).stdout
    assert "delivery" in logs and reason in logs
    places = {
        "reason": reason.encode(),
        "stream": logs.encode(),
        "run output": (result.stdout + result.stderr).encode(),
        "task show": json.dumps(task).encode(),
        **everything_stored(instance),
    }
    assert leaks(READ_ONLY_TOKEN, places) == []


def test_publish_delivers_a_refused_delivery_once_the_token_is_fixed(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    remote, task_id, _ = refused_delivery(instance, model, remotes, "E2E-FIXED")

    restart(instance, TOKEN)  # the variable is read when the token is needed
    published = instance.cli("task", "publish", task_id)

    assert published.returncode == 0, published.stderr + published.stdout
    task = instance.show(task_id)
    assert task["state"] == "completed"
    assert task["delivery"]["state"] == "delivered"
    (pr,) = remote.open_prs()
    assert published.stdout.strip().splitlines()[-1] == pr["html_url"] == task["delivery"]["pr_url"]
    branch = f"klaudio/{task_id[:8]}"
    assert remote.branch_tree(branch)["src/app.py"] == ("100644", b'print("v2")\n')
    pushed = [(u.old, u.new, u.ref) for u in remote.git.pushed]
    assert pushed == [(ZERO, task["delivery"]["commit_id"], f"refs/heads/{branch}")]
    assert leaks(READ_ONLY_TOKEN, everything_stored(instance)) == []
    assert instance.cli("task", "wait", task_id).returncode == 0


def test_nothing_to_commit_is_not_an_error_and_pushes_nothing(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    remote = remotes()
    start(instance)
    template = add_template(instance, remote)
    script(model, "E2E-NOTHING", "cat README.md")

    result = run(instance, "E2E-NOTHING", "--repo-template", template)

    task_id = created_task(result)
    task = instance.show(task_id)
    assert result.returncode == 0, (result.stderr, task["reason"])
    assert task["state"] == "completed"
    assert remote.git.pushed == []
    assert remote.api.prs == []


# 6. What an agent plants in the workspace's .git neither runs nor applies -------------------------


def planting(markers: Path, real: str, evil: str, evil_origin: str) -> str:
    """A shell script (run by the agent, in its container) planting hooks and config in .git.

    Each hook, helper, filter and alias would touch a file under markers, a host path: had
    anything on the host run one, the marker would be there.
    """
    hooks = [
        "pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-push",
        "post-checkout", "post-merge", "reference-transaction", "post-rewrite",
        "pre-auto-gc", "fsmonitor-watchman", "push-to-checkout", "sendemail-validate",
    ]  # fmt: skip

    def touch(name: str) -> str:
        return f"touch {shlex.quote(str(markers / name))}"

    def config(key: str, value: str) -> str:
        return f"git config -f .git/config {shlex.quote(key)} {shlex.quote(value)}"

    lines = ["set -e", "mkdir -p .git/hooks .git/evil-hooks"]
    for hook in hooks:
        for where, prefix in ((".git/hooks", "hook"), (".git/evil-hooks", "hookspath")):
            lines.append(
                f"printf '#!/bin/sh\\n%s\\n' {shlex.quote(touch(f'{prefix}-{hook}'))}"
                f" > {where}/{hook} && chmod +x {where}/{hook}"
            )
    lines += [
        config("core.hooksPath", "/workspace/.git/evil-hooks"),
        config(f"url.{evil}.insteadOf", real),
        config(f"url.{evil}.pushInsteadOf", real),
        config("remote.origin.url", evil),
        config("remote.origin.pushurl", evil),
        config("http.proxy", evil_origin),
        config("http.extraHeader", "X-Planted: 1"),
        config("credential.helper", f"!f() {{ {touch('credential-helper')}; echo x; }}; f"),
        config("core.askPass", str(markers.parent / "askpass.sh")),
        config("core.sshCommand", touch("ssh-command")),
        config("core.fsmonitor", touch("fsmonitor")),
        config("filter.x.clean", f"{touch('filter-clean')}; tr a-z A-Z"),
        config("filter.x.smudge", f"{touch('filter-smudge')}; cat"),
        config("filter.x.process", touch("filter-process")),
        config("filter.x.required", "true"),
        config("diff.x.textconv", touch("textconv")),
        config("alias.commit", f"!{touch('alias-commit')}"),
        config("alias.push", f"!{touch('alias-push')}"),
        config("alias.add", f"!{touch('alias-add')}"),
        config("include.path", "/workspace/evil.gitconfig"),
        "printf '[core]\\n\\thooksPath = /workspace/.git/evil-hooks\\n' > evil.gitconfig",
        "printf '* filter=x diff=x\\n' > .gitattributes",
        "printf 'hello planted\\n' > feature.txt",
        "echo planted",
    ]
    return "\n".join(lines)


def test_hooks_and_config_planted_in_git_neither_run_nor_apply(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote], tmp_path: Path
) -> None:
    remote = remotes()
    markers = tmp_path / "markers"
    markers.mkdir()
    askpass = tmp_path / "askpass.sh"  # a program on the host, named by the planted config
    askpass.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(markers / 'askpass'))}\necho x\n")
    askpass.chmod(0o755)
    with GitHttpServer(tmp_path / "evil", None, "anything") as evil:
        evil.create_repo(f"{REPO}.git", BASE_FILES)
        start(instance)
        template = add_template(instance, remote)
        script(
            model,
            "E2E-PLANT",
            planting(markers, remote.url, evil.url(f"{REPO}.git"), evil.origin),
        )

        result = run(instance, "E2E-PLANT", "--repo-template", template)
        evil_requests = list(evil.requests)

    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    planted = model.requests_for("E2E-PLANT-WORK")[1].last_tool_result_text() or ""
    assert "planted" in planted, planted
    task = instance.show(task_id)
    workspace = Path(task["workspace"])
    assert "evil-hooks" in (workspace / ".git" / "config").read_text()
    assert os.access(workspace / ".git" / "hooks" / "pre-push", os.X_OK)
    # Nothing ran, nothing went to the planted server, the branch went to the real one.
    assert sorted(p.name for p in markers.iterdir()) == []
    assert evil_requests == []
    branch = f"klaudio/{task_id[:8]}"
    pushed = [(u.old, u.new, u.ref) for u in remote.git.pushed]
    assert pushed == [(ZERO, task["delivery"]["commit_id"], f"refs/heads/{branch}")]
    assert all("x-planted" not in r.headers for r in remote.git.requests)
    tree = remote.branch_tree(branch)
    # Committed as written: no clean filter applied; .git is not part of the work.
    assert tree["feature.txt"] == ("100644", b"hello planted\n")
    assert tree["README.md"] == ("100644", b"# widgets\n")
    assert tree[".gitattributes"] == ("100644", b"* filter=x diff=x\n")
    assert not any(name.startswith(".git/") for name in tree)
    assert len(remote.open_prs()) == 1
    # The check would have seen a run: a planted hook, run by hand, leaves its marker.
    subprocess.run([workspace / ".git" / "hooks" / "pre-push"], check=True, timeout=30)
    assert [p.name for p in markers.iterdir()] == ["hook-pre-push"]


# 7. The token is nowhere an agent or a log could show it ----------------------------------------


def containers(instance: Instance) -> list[dict[str, Any]]:
    """`docker inspect` of the running containers of the instance."""
    label = f"klaudio.instance={resolve(instance.env).instance_id}"
    ids = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label={label}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not ids:
        return []
    shown = subprocess.run(
        ["docker", "inspect", *ids], capture_output=True, text=True, check=True
    ).stdout
    found: list[dict[str, Any]] = json.loads(shown)
    return found


DUMP = (
    "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < \"$f\"; echo; done 2>/dev/null;"
    " cat .git/config; git config -l --show-origin 2>&1;"
    " cat ~/.gitconfig ~/.git-credentials ~/.config/git/credentials 2>/dev/null;"
    " ls -la ~ /run/secrets 2>&1; echo DUMPED-ENV"
)


def test_the_token_is_absent_from_the_store_logs_stream_containers_and_workspace(
    instance: Instance, model: FakeModel, remotes: Callable[..., Remote]
) -> None:
    remote = remotes()
    start(instance)
    template = add_template(instance, remote)
    inspected: list[dict[str, Any]] = []
    dumped: list[str] = []

    def worker_report(req: Request) -> str:
        inspected.extend(containers(instance))
        dumped.append(req.last_tool_result_text() or "")
        return REPORT

    script(
        model,
        "E2E-SECRET",
        DUMP + " && printf 'print(\"v2\")\\n' > src/app.py",
        report=worker_report,
        planner=lambda: inspected.extend(containers(instance)),
    )

    result = run(instance, "E2E-SECRET", "--repo-template", template)

    assert result.returncode == 0, result.stderr + result.stdout
    task_id = created_task(result)
    task = instance.show(task_id)
    assert task["delivery"]["state"] == "delivered" and remote.open_prs()
    # The token was used: for the clone, the push and the API.
    assert any(r.authorized and r.service == "git-receive-pack" for r in remote.git.requests)
    assert remote.api.calls[0].headers.get("authorization") == f"Bearer {TOKEN}"
    # The planner's and the worker's containers were seen running, and the agent's dump ran.
    names = {c["Config"]["Labels"].get("klaudio.agent", c["Name"]) for c in inspected}
    assert len(inspected) >= 2, names
    assert dumped and "DUMPED-ENV" in dumped[0] and "PATH=" in dumped[0], dumped
    logs = instance.cli("task", "logs", task_id, "--json", check=True).stdout
    shown = instance.cli("repo", "show", template, "-o", "json", check=True).stdout
    workspace = Path(task["workspace"])
    places = {
        "database": b"".join(p.read_bytes() for p in (instance.home / "data").glob("klaudio.db*")),
        "daemon log": instance.daemon_log().encode(),
        "stream (task logs --json)": logs.encode(),
        "task show": json.dumps(task).encode(),
        "repo show": shown.encode(),
        "run output": (result.stdout + result.stderr).encode(),
        "the agent's environment and git config": dumped[0].encode(),
        **{f"container {c['Name']}": json.dumps(c).encode() for c in inspected},
        **{f"workspace {k}": v for k, v in everything_under(workspace).items()},
        **{f"home {k}": v for k, v in everything_stored(instance).items()},
    }
    assert places["database"] and places["daemon log"]
    assert leaks(TOKEN, places) == []


# 9. --repo with a local path, as before -----------------------------------------------------------


def test_a_local_repository_path_still_works_without_delivery(
    daemon: Instance, model: FakeModel, tmp_path: Path
) -> None:
    source = tmp_path / "local"
    base = create_local_repo(source)
    script(model, "E2E-LOCAL", "cat README.md && printf 'local\\n' > local.txt")

    result = run(daemon, "E2E-LOCAL", "--repo", str(source))

    assert result.returncode == 0, result.stderr + result.stdout
    task = daemon.show(created_task(result))
    assert task["state"] == "completed"
    assert task["delivery"] is None
    assert task["branch"] == ""
    assert (task["base_branch"], task["base_commit"]) == ("main", base)
    workspace = Path(task["workspace"])
    assert (workspace / "local.txt").read_text() == "local\n"
    assert (workspace / "src" / "app.py").read_text() == "print('v1')\n"
    assert git("-C", workspace, "config", "--get", "remote.origin.url").strip() == str(source)
    assert git("-C", workspace, "rev-parse", "HEAD").strip() == base
    # The user's repository is as it was.
    assert git("-C", source, "for-each-ref", "--format=%(refname) %(objectname)").split("\n")[
        :-1
    ] == [f"refs/heads/main {base}"]
    assert git("-C", source, "status", "--porcelain") == ""


@dataclass
class SshServer:
    """An sshd of the test's own on 127.0.0.1, and the ssh command that reaches it."""

    port: int
    host_key: str  # its public host key, for a known_hosts line
    authorized: Path  # every user's authorized keys (one file: the tests' own server)
    command: str  # for GIT_SSH_COMMAND: the test's key, and its host key as the only known one

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    def authorize(self, public_key: Path) -> None:
        with self.authorized.open("a") as keys:
            keys.write(public_key.read_text())


@pytest.fixture
def ssh_server() -> Iterator[SshServer]:
    """sshd (as root; key login only, for any user) with a fresh host key and client key.

    Its files are in a directory of /var/tmp that everyone may read: sshd reads a user's
    authorized keys as that user.
    """
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    need(os.geteuid() == 0, "root, for an sshd of the test's own")
    need(os.path.exists(sshd), "sshd (.ci/run installs openssh-server)")
    keys = Path(tempfile.mkdtemp(prefix="klaudio-e2e-sshd-", dir="/var/tmp"))
    server: subprocess.Popen[bytes] | None = None
    try:
        keys.chmod(0o755)
        for name in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)],
                check=True,
            )
        authorized = keys / "authorized_keys"
        shutil.copy(keys / "client.pub", authorized)
        authorized.chmod(0o644)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        ssh = SshServer(
            port,
            (keys / "host.pub").read_text().strip(),
            authorized,
            f"ssh -i {keys / 'client'} -o IdentitiesOnly=yes -o BatchMode=yes"
            f" -o StrictHostKeyChecking=yes -o UserKnownHostsFile={keys / 'known_hosts'}",
        )
        (keys / "known_hosts").write_text(ssh.known_hosts_line() + "\n")
        config = keys / "sshd_config"
        config.write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\n"
            f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile {keys / 'sshd.pid'}\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
        wait_for(lambda: _listening(port), timeout=10, what="sshd to listen")
        yield ssh
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(keys, ignore_errors=True)


SSH_USER = "klaudio-e2e-ssh"


@pytest.fixture
def ssh_user() -> Iterator[pwd.struct_passwd]:
    """An ordinary user who may use Docker and log in by key, with a home of its own in
    /var/tmp (created for the test, removed afterwards)."""
    need(os.geteuid() == 0, "root, to make a user")
    home = Path(tempfile.mkdtemp(prefix="klaudio-e2e-home-", dir="/var/tmp"))
    subprocess.run(["userdel", SSH_USER], check=False, capture_output=True)  # a crashed run's
    subprocess.run(
        ["useradd", "--system", "--user-group", "--shell", "/bin/sh", "--home-dir", str(home),
         "--groups", "docker", SSH_USER],
        check=True,
    )  # fmt: skip
    try:
        # Not locked ("!"): sshd without PAM refuses a locked account even a key login.
        subprocess.run(["usermod", "--password", "*", SSH_USER], check=True)
        user = pwd.getpwnam(SSH_USER)
        os.chown(home, user.pw_uid, user.pw_gid)
        yield user
    finally:
        subprocess.run(["userdel", SSH_USER], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_a_repository_over_ssh_is_cloned_and_pushed_with_the_daemons_ssh(
    instance: Instance, model: FakeModel, ssh_server: SshServer, tmp_path: Path
) -> None:
    bare = tmp_path / "widgets.git"
    base = create_bare_repo(bare, BASE_FILES)
    url = f"ssh://root@127.0.0.1:{ssh_server.port}{bare}"
    # The daemon user's ssh, as its environment names it (git's own variable).
    instance.env["GIT_SSH_COMMAND"] = ssh_server.command
    start(instance)
    script(model, "E2E-SSH", EDIT)

    result = run(instance, "E2E-SSH", "--repo", url, "--push")

    assert result.returncode == 0, result.stderr + result.stdout
    task = instance.show(created_task(result))
    branch = f"klaudio/{task['id'][:8]}"
    assert (task["base_branch"], task["base_commit"]) == ("main", base)
    assert task["delivery"]["state"] == "delivered", task["delivery"]
    commit = task["delivery"]["commit_id"]
    assert read_refs(bare) == {"refs/heads/main": base, f"refs/heads/{branch}": commit}
    assert read_tree(bare, branch)["src/app.py"] == b'print("v2")\n'
    workspace = Path(task["workspace"])
    assert git("-C", workspace, "config", "--get", "remote.origin.url").strip() == url


def test_over_ssh_the_daemon_users_own_keys_and_known_hosts_are_used(
    ssh_user: pwd.struct_passwd, instance: Instance, model: FakeModel, ssh_server: SshServer
) -> None:
    # ssh_user comes first: it is torn down last, once its daemon has stopped.
    home = Path(ssh_user.pw_dir)
    dot_ssh = home / ".ssh"
    dot_ssh.mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(dot_ssh / "id_ed25519")],
        check=True,
    )
    (dot_ssh / "known_hosts").write_text(ssh_server.known_hosts_line() + "\n")
    ssh_server.authorize(dot_ssh / "id_ed25519.pub")
    bare = home / "widgets.git"
    base = create_bare_repo(bare, BASE_FILES)
    for path in (home, *home.rglob("*")):
        os.lchown(path, ssh_user.pw_uid, ssh_user.pw_gid)
    url = f"ssh://{SSH_USER}@127.0.0.1:{ssh_server.port}{bare}"
    # The daemon runs as that user, with no GIT_SSH_COMMAND: plain `ssh`, the user's ~/.ssh.
    instance.runas = [
        "setpriv", f"--reuid={ssh_user.pw_uid}", f"--regid={ssh_user.pw_gid}",
        f"--groups={grp.getgrnam('docker').gr_gid}", "--",
    ]  # fmt: skip
    os.chown(instance.home, ssh_user.pw_uid, ssh_user.pw_gid)
    instance.env["HOME"] = str(home)
    instance.env.pop("GIT_SSH_COMMAND", None)
    instance.env.pop("GIT_SSH", None)
    start(instance)
    script(model, "E2E-SSHU", EDIT)

    result = run(instance, "E2E-SSHU", "--repo", url, "--push")

    assert result.returncode == 0, result.stderr + result.stdout + instance.daemon_log()
    task = instance.show(created_task(result))
    branch = f"klaudio/{task['id'][:8]}"
    assert task["base_commit"] == base
    assert task["delivery"]["state"] == "delivered", task["delivery"]
    for path in (bare, *bare.rglob("*")):  # root's git reads only a repository of root's
        os.lchown(path, 0, 0)
    assert read_refs(bare)[f"refs/heads/{branch}"] == task["delivery"]["commit_id"]
    assert read_tree(bare, branch)["src/app.py"] == b'print("v2")\n'


def test_an_ssh_repository_whose_head_names_no_branch_asks_for_one(
    instance: Instance, ssh_server: SshServer, tmp_path: Path
) -> None:
    bare = tmp_path / "widgets.git"
    base = create_bare_repo(bare, BASE_FILES)
    git("-C", bare, "symbolic-ref", "HEAD", "refs/heads/gone")
    url = f"ssh://root@127.0.0.1:{ssh_server.port}{bare}"
    instance.env["GIT_SSH_COMMAND"] = ssh_server.command
    start(instance)

    refused = instance.cli("task", "create", "x", "--repo", url)
    taken = instance.cli("task", "create", "x", "--repo", url, "--branch", "main", check=True)

    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"klaudio: --repo {url}: the repository's HEAD names no branch it has; "
        "name the branch to clone with --branch"
    ]
    assert instance.show(taken.stdout.strip())["base_commit"] == base


def create_local_repo(path: Path) -> str:
    git("init", "-q", "-b", "main", path)
    for name, content in BASE_FILES.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content if isinstance(content, str) else content.decode())
    git("-C", path, "add", "-A")
    git("-C", path, "commit", "-q", "-m", "init")
    return git("-C", path, "rev-parse", "HEAD").strip()


# 8. Traversal and link payloads against task cp, --input and task files -------------------------

SECRET_TEXT = "OUTSIDE-SECRET-5d1e"


@dataclass
class Planted:
    """A completed task whose agent planted links out, special files and odd names."""

    instance: Instance
    task_id: str
    workspace: Path
    outside: Path  # a host directory holding secret.txt, which links point at
    scratch: Path  # where destinations and inputs are made

    def fresh(self, name: str) -> Path:
        """A new empty directory under scratch."""
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.scratch))


LISTEN = "require('net').createServer().listen('%s', () => process.exit(0))"


def plant_shell(outside: Path) -> str:
    host = shlex.quote(str(outside))
    return " && ".join(
        [
            "mkdir -p sub/deep nested/a/b socks trap trap2 trap3 trap4 trap5 trap6",
            "printf 'ok\\n' > sub/ok.txt && printf 'deep\\n' > sub/deep/d.txt",
            "ln -s /etc/passwd leak",
            "ln -s /etc etc",
            "ln -s ../../.. up",
            "ln -s /proc/1/root hostroot",
            "ln -s /proc/self/root selfroot",
            "ln -s /nonexistent/x dangling",
            "ln -s missing-inside dangling-inside",
            "ln -s sub linkdir",
            f"ln -s {host} hostdir",
            f"ln -s {host}/secret.txt hostfile",
            "ln -s /etc trap/etc",
            "ln -s ../../../../../../etc trap2/up",
            "ln -s /workspace/sub/ok.txt trap3/abs",
            f"ln -s {host} trap4/host",
            "ln -s ../.. trap5/dots",
            "ln -s /nonexistent trap6/dangling",
            "mkfifo pipe pipes-p nested/a/b/p",
            "mkdir pipes && mv pipes-p pipes/p",
            # A socket stays when node exits without closing it.
            f"node -e {shlex.quote(LISTEN % 'sock')}",
            f"(cd socks && node -e {shlex.quote(LISTEN % 's')})",
            "printf 'x' > 'nl\nname'",
            "ls -la . && echo planted",
        ]
    )


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planted]:
    """One daemon and one completed task for every payload (module scope: built once)."""
    scratch = tmp_path_factory.mktemp("traversal")
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET_TEXT)
    fake = FakeModel().start()
    home = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))
    instance = Instance(home, _environment(home, fake.url))
    try:
        instance.start_daemon()
        source = scratch / "repo"
        create_local_repo(source)
        script(fake, "E2E-TRAVERSAL", plant_shell(outside))
        result = run(instance, "E2E-TRAVERSAL", "--repo", str(source))
        assert result.returncode == 0, result.stderr + result.stdout
        task_id = created_task(result)
        listing = fake.requests_for("E2E-TRAVERSAL-WORK")[1].last_tool_result_text() or ""
        assert "planted" in listing, listing
        yield Planted(
            instance, task_id, Path(instance.show(task_id)["workspace"]), outside, scratch
        )
    finally:
        try:
            instance.stop_daemon()
        finally:
            remove_containers(f"klaudio.instance={resolve(instance.env).instance_id}")
            shutil.rmtree(home, ignore_errors=True)
            fake.stop()


def shown(path: str) -> str:
    """path as a message shows it (newlines escaped)."""
    return path.replace("\n", "\\n")


LINK_OUT = ": a link pointing out of what is copied"
# (ID:PATH's path, a regular expression the one error line must match after "klaudio: ").
CP_REFUSED = [
    # Leaving the workspace by name.
    *((p, re.escape(p) + ": '..' is not allowed") for p in (
        "..", "../x", "../../etc/passwd", "a/../../x", "./../x", "sub/../..", "sub/..",
        ".././..", "sub/deep/../../../x",
    )),
    *((p, re.escape(p) + ": an absolute path is not allowed") for p in (
        "/etc/passwd", "//etc/passwd", "/", "/workspace/sub/ok.txt", "/proc/1/root/etc/passwd",
        "/proc/self/cwd",
    )),
    *((p, re.escape(shown(p)) + ": NUL or newline in a path") for p in (
        "nl\nname", "sub/ok.txt\n../../etc/passwd", "leak\n", "sub/\n",
    )),
    ("\n", r"\\n: NUL or newline in a path"),
    ("a" * 300, "a{300}: a name longer than 255 bytes"),
    ("sub/" + "a/" * 2100, r"sub/(a/)+\.\.\.: longer than \d+ bytes"),
    # Links the agent planted, named or passed through.
    *((p, re.escape(p) + ": a link, not a file or directory") for p in (
        "leak", "etc", "up", "hostroot", "dangling", "dangling-inside", "linkdir", "hostdir",
        "hostfile",
    )),
    *((p, re.escape(p) + f": '{p.split('/')[0]}' is a symbolic link") for p in (
        "etc/passwd", "up/etc/passwd", "hostroot/etc/passwd", "selfroot/etc/shadow",
        "linkdir/ok.txt", "hostdir/secret.txt", "dangling/x", "hostroot/proc/1/root",
    )),
    # Trees holding a link that points out of them.
    ("trap", "trap/etc" + LINK_OUT + r" \(/etc\)"),
    ("trap2", "trap2/up" + LINK_OUT + r" \(\.\./\.\./\.\./\.\./\.\./\.\./etc\)"),
    ("trap3", "trap3/abs" + LINK_OUT + r" \(/workspace/sub/ok\.txt\)"),
    ("trap4", "trap4/host" + LINK_OUT),
    ("trap5", "trap5/dots" + LINK_OUT + r" \(\.\./\.\.\)"),
    ("trap6", "trap6/dangling" + LINK_OUT + r" \(/nonexistent\)"),
    *((p, r"\./[^:]+" + LINK_OUT) for p in (".", "", "./")),
    (".//.", r"'\.//\.': an empty path is not allowed"),
    # Special files, named or inside a tree.
    ("pipe", "pipe: a fifo, not a file or directory"),
    ("pipes/p", "pipes/p: a fifo, not a file or directory"),
    ("pipes", "pipes/p: a fifo, not a file, directory or link"),
    ("nested", "nested/a/b/p: a fifo, not a file, directory or link"),
    ("nested/a", "nested/a/b/p: a fifo, not a file, directory or link"),
    ("sock", "sock: a socket, not a file or directory"),
    ("socks", "socks/s: a socket, not a file, directory or link"),
    # Nothing there.
    ("nope", "nope: no such file or directory in the workspace"),
    ("sub/nope", "sub/nope: no such file or directory in the workspace"),
    ("sub/ok.txt/x", "sub/ok.txt/x: 'sub/ok.txt' is a regular file"),
]  # fmt: skip


def assert_untouched(planted: Planted, result: subprocess.CompletedProcess[str]) -> None:
    """Nothing of the host leaked into the output; the outside directory is as it was."""
    said = result.stdout + result.stderr
    assert SECRET_TEXT not in said and "root:x:0:0" not in said
    assert [p.name for p in planted.outside.iterdir()] == ["secret.txt"]
    assert (planted.outside / "secret.txt").read_text() == SECRET_TEXT


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("klaudio: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0].removeprefix("klaudio: ")


@pytest.mark.parametrize(("path", "message"), CP_REFUSED, ids=lambda v: shown(v)[:40])
def test_cp_refuses_a_path_out_of_the_workspace(planted: Planted, path: str, message: str) -> None:
    dest = planted.fresh("cp")

    result = planted.instance.cli("task", "cp", f"{planted.task_id}:{path}", str(dest))

    assert result.returncode == 2, result.stderr
    # The line may end with where a link points, in brackets.
    assert re.fullmatch(message + r"( \(.*\))?", one_line(result)), result.stderr
    assert list(dest.iterdir()) == []
    assert_untouched(planted, result)


THROUGH = "a symbolic link; nothing is written through one"
# (name of the destination under a fresh directory, what it is, the source, the message)
CP_DEST_REFUSED = [
    ("destlink", "a link to a host directory", "sub/ok.txt", THROUGH),
    ("destlink/", "the same, with a slash", "sub", THROUGH),
    ("destlink/.", "the same, with /.", "sub/ok.txt", THROUGH),
    ("filelink", "a link to a host file", "sub/ok.txt", THROUGH),
    ("dangle", "a dangling link to a new host file", "sub/ok.txt", THROUGH),
    ("dir", "a directory holding a link of that name", "sub/ok.txt", "dir/ok.txt exists; --force"),
    ("dir", "a directory holding a link of that name", "sub", "dir/sub exists; --force"),
    ("fifo", "a FIFO", "sub/ok.txt", "fifo exists; --force replaces it"),
    ("missing/x", "in a missing directory", "sub/ok.txt", "missing/x: no such directory"),
]


def destinations(planted: Planted) -> Path:
    """A fresh directory of destinations: links to the outside, a FIFO, a directory of links."""
    where = planted.fresh("dest")
    (where / "destlink").symlink_to(planted.outside)
    (where / "filelink").symlink_to(planted.outside / "secret.txt")
    (where / "dangle").symlink_to(planted.outside / "new.txt")
    (where / "dir").mkdir()
    (where / "dir" / "ok.txt").symlink_to(planted.outside / "secret.txt")
    (where / "dir" / "sub").symlink_to(planted.outside)
    os.mkfifo(where / "fifo")
    return where


# With --force: a link is still refused, and a directory never replaces one.
CP_DEST_FORCED = [
    (*case[:3], "dir/sub is not a directory; a directory does not replace it" if case[0] == "dir"
     else case[3])
    for case in CP_DEST_REFUSED
    if case[0] in ("destlink", "filelink", "dangle") or case[:3:2] == ("dir", "sub")
]  # fmt: skip


@pytest.mark.parametrize(
    ("force", "case"),
    [*((False, c) for c in CP_DEST_REFUSED), *((True, c) for c in CP_DEST_FORCED)],
    ids=[
        *(f"{c[1]} ({c[2]})" for c in CP_DEST_REFUSED),
        *(f"--force, {c[1]} ({c[2]})" for c in CP_DEST_FORCED),
    ],
)
def test_cp_refuses_a_destination_that_is_or_holds_a_link(
    planted: Planted, force: bool, case: tuple[str, str, str, str]
) -> None:
    name, _, source, message = case
    where = destinations(planted)
    before = sorted(p.name for p in where.iterdir())
    flags = ["--force"] if force else []

    result = planted.instance.cli(
        "task", "cp", *flags, f"{planted.task_id}:{source}", str(where / name)
    )

    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert message in line and str(where) in line, line
    assert sorted(p.name for p in where.iterdir()) == before
    assert os.readlink(where / "dir" / "ok.txt") == str(planted.outside / "secret.txt")
    assert_untouched(planted, result)


def test_cp_force_replaces_a_link_at_the_name_never_writing_through_it(planted: Planted) -> None:
    where = destinations(planted)

    result = planted.instance.cli(
        "task", "cp", "--force", f"{planted.task_id}:sub/ok.txt", str(where / "dir")
    )

    assert result.returncode == 0, result.stderr
    copied = where / "dir" / "ok.txt"
    assert not copied.is_symlink() and copied.read_text() == "ok\n"
    assert_untouched(planted, result)


def inputs_dir(planted: Planted) -> Path:
    """Inputs a user could be tricked into giving: links, special files, odd names."""
    where = planted.fresh("inputs")
    (where / "real").write_text("real\n")
    (where / "link").symlink_to(where / "real")
    (where / "dirlink").symlink_to(planted.outside)
    (where / "dangling").symlink_to(where / "nothing")
    (where / "hostroot").symlink_to("/proc/1/root")
    (where / "passwd").symlink_to("/etc/passwd")
    os.mkfifo(where / "fifo")
    for holder in ("sock", "withsock/s"):
        (where / holder).parent.mkdir(exist_ok=True)
        with socket.socket(socket.AF_UNIX) as bound:
            bound.bind(str(where / holder))
    (where / "withfifo" / "a" / "b").mkdir(parents=True)
    (where / "withfifo" / "ok.txt").write_text("ok\n")
    os.mkfifo(where / "withfifo" / "a" / "b" / "p")
    (where / "nl\nname").write_text("newline\n")
    try:
        os.mknod(where / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        (where / "withdev").mkdir()
        os.mknod(where / "withdev" / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        pass  # no device nodes here: those cases skip
    return where


LINK_INPUT = ": a symbolic link; give what it points at"
SPECIAL_INPUT = ": not a regular file or directory"
# (--input as given, relative to the inputs directory IN, the message with IN for its path)
INPUT_REFUSED = [
    ("IN/link", "--input IN/link" + LINK_INPUT),
    ("IN/dirlink", "--input IN/dirlink" + LINK_INPUT),
    ("IN/dangling", "--input IN/dangling" + LINK_INPUT),
    ("IN/hostroot", "--input IN/hostroot" + LINK_INPUT),
    ("IN/passwd", "--input IN/passwd" + LINK_INPUT),
    ("IN/./link", "--input IN/link" + LINK_INPUT),
    ("link", "--input IN/link" + LINK_INPUT),
    ("./dirlink", "--input IN/dirlink" + LINK_INPUT),
    ("/proc/self/root", "--input /proc/self/root" + LINK_INPUT),
    ("IN/fifo", "--input IN/fifo" + SPECIAL_INPUT),
    ("IN/sock", "--input IN/sock" + SPECIAL_INPUT),
    ("/dev/null", "--input /dev/null" + SPECIAL_INPUT),
    ("IN/dev", "--input IN/dev" + SPECIAL_INPUT),
    ("IN/withfifo", "--input IN/withfifo: a/b/p is not a regular file, directory or link"),
    ("IN/withsock", "--input IN/withsock: s is not a regular file, directory or link"),
    ("IN/withdev", "--input IN/withdev: null is not a regular file, directory or link"),
    ("IN/missing", "--input IN/missing: no such file or directory"),
    ("nope", "--input IN/nope: no such file or directory"),
    ("../nope", "--input OUT/nope: no such file or directory"),
    ("IN/nl\nname", "IN/nl\\nname: NUL or newline in a path"),
    ("IN/nothing\n/etc/passwd", "IN/nothing\\n/etc/passwd: NUL or newline in a path"),
    ("/", "--input /: "),
]  # fmt: skip


@pytest.mark.parametrize(("given", "message"), INPUT_REFUSED, ids=lambda v: shown(v)[:40])
def test_input_refuses_links_special_files_and_odd_names(
    planted: Planted, given: str, message: str
) -> None:
    where = inputs_dir(planted)
    if given in ("IN/dev", "IN/withdev"):
        need((where / "withdev").exists(), "a device node made for the test")
    before = sorted(planted.instance.task_ids())
    # The same option of `run` and `task create`: each gets half of the payloads.
    verb = ["run", "-y"] if len(given) % 2 else ["task", "create"]

    path = given.replace("IN", str(where), 1)
    result = subprocess.run(
        [sys.executable, "-m", "klaudio", *verb, "E2E-INPUT x", "--input", path],
        env=planted.instance.env, cwd=where, capture_output=True, text=True, check=False,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 2, result.stderr
    line = one_line(result)
    expected = message.replace("IN", str(where)).replace("OUT", str(where.parent))
    # A newline's path is shown without its leading slash.
    assert expected in line or expected.replace(str(where), str(where)[1:]) in line, line
    assert sorted(planted.instance.task_ids()) == before
    assert_untouched(planted, result)


def test_input_refusals_from_any_client(planted: Planted) -> None:
    """What no shell can pass (NUL) or the CLI never sends (relative paths, ..) is refused by
    the daemon itself."""
    where = inputs_dir(planted)
    client = Client(resolve(planted.instance.env))
    before = sorted(planted.instance.task_ids())
    cases = [
        (str(where / "real") + "\0x", "contains a NUL character"),
        ("relative/path", "--input relative/path: not an absolute path"),
        (str(where / "real") + "/../link", "'..' is not allowed"),
        (str(where / "nl\nname"), "NUL or newline in a path"),
    ]
    try:
        for given, message in cases:
            with pytest.raises(errors.InvalidArgument, match=re.escape(message)):
                client.create_task("E2E-INPUT x", options=TaskOptions(inputs=(given,)))
        with pytest.raises(errors.InvalidArgument, match="contains a NUL character"):
            list(client.copy_files(planted.task_id, "sub\0/../../etc/passwd"))
        with pytest.raises(errors.InvalidArgument, match="contains a NUL character"):
            client.list_files(planted.task_id + "\0")
    finally:
        client.close()
    assert sorted(planted.instance.task_ids()) == before


def test_an_input_directory_keeps_its_links_as_links(planted: Planted) -> None:
    where = planted.fresh("linkinput")
    (where / "data").mkdir()
    (where / "data" / "rows.csv").write_text("a,b\n")
    (where / "data" / "passwd").symlink_to("/etc/passwd")
    (where / "data" / "secret").symlink_to(planted.outside / "secret.txt")

    created = planted.instance.cli("task", "create", "E2E-INPUT x", "--input", str(where / "data"))

    assert created.returncode == 0, created.stderr
    task_id = created.stdout.strip()
    try:
        copied = Path(planted.instance.show(task_id)["workspace"]) / "input" / "data"
        assert (copied / "rows.csv").read_text() == "a,b\n"
        assert os.readlink(copied / "passwd") == "/etc/passwd"
        assert os.readlink(copied / "secret") == str(planted.outside / "secret.txt")
        kept = planted.instance.home / "data" / "tasks" / task_id / "inputs" / "data"
        assert os.readlink(kept / "passwd") == "/etc/passwd"
    finally:
        planted.instance.cli("task", "delete", task_id, check=True)


def test_files_and_diff_list_planted_links_without_following_them(planted: Planted) -> None:
    instance, task_id, ws = planted.instance, planted.task_id, planted.workspace
    # A name with a newline: refused, one line naming it (the rule for such names).
    for verb in (["files"], ["diff"], ["diff", "--stat"]):
        refused = instance.cli("task", verb[0], task_id, *verb[1:])
        assert refused.returncode == 2, refused.stderr
        assert one_line(refused) == "nl\\nname: NUL or newline in a path"
        assert_untouched(planted, refused)
    os.rename(ws / "nl\nname", ws / "nlname")
    try:
        listed = instance.cli("task", "files", task_id, "-o", "json")
        diff = instance.cli("task", "diff", task_id)
    finally:
        os.rename(ws / "nlname", ws / "nl\nname")

    assert listed.returncode == 0, listed.stderr
    assert diff.returncode == 0, diff.stderr
    changed = {c["path"]: c["status"] for c in json.loads(listed.stdout)["changed"]}
    for name in (
        "leak", "etc", "up", "hostroot", "selfroot", "dangling", "hostdir", "hostfile",
        "trap/etc", "trap2/up", "trap4/host", "sub/ok.txt",
    ):  # fmt: skip
        assert changed.get(name) == "added", name
    assert not [p for p in changed if p.startswith(("etc/", "hostdir/", "hostroot/", "up/"))]
    # A link's diff is its target's text, never what it points at.
    assert "+++ b/leak\n@@ -0,0 +1 @@\n+/etc/passwd\n" in diff.stdout
    assert f"+{planted.outside}/secret.txt\n" in diff.stdout
    assert_untouched(planted, listed)
    assert_untouched(planted, diff)


@pytest.mark.parametrize("given", ["..", "../x", "/etc/passwd", "a\nb", "*", "%", "X/../x", "X/"])
@pytest.mark.parametrize("verb", ["files", "diff", "cp", "publish"])
def test_a_task_id_that_looks_like_a_path_is_an_unknown_task(
    planted: Planted, verb: str, given: str
) -> None:
    given = given.replace("X", planted.task_id)
    dest = planted.fresh("ids")
    args = [f"{given}:sub/ok.txt", str(dest)] if verb == "cp" else [given]

    result = planted.instance.cli("task", verb, *args)

    assert result.returncode == 3, result.stderr
    assert one_line(result) == f"no task matches '{shown(given)}'"
    assert list(dest.iterdir()) == []
    assert_untouched(planted, result)
