"""Delivering a task's work: commit it on the task branch, push it, open its pull request.

What a task delivers is fixed when it is created (a Target: a snapshot of its repository
template, or of `--push`/`--pr`). Delivery runs in the daemon's own bare repository of the
task (repo.py), never in the agent-written workspace's `.git`. Tokens come from the daemon's
environment or a file, are read when needed, and are masked out of every message.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klaudio.errors import InvalidArgument, KlaudioError, Unavailable
from klaudiod import forges, inputs, repo
from klaudiod.records import Detail, RepoTemplateRecord, TaskRecord

TOKEN_FILE_LIMIT = 64 << 10


class DeliveryFailed(KlaudioError):
    """A delivery step failed: the message is the remote's or forge's reason, token masked."""


@dataclass(frozen=True)
class Target:
    """How a task's work is delivered (a snapshot, recorded when the task is created)."""

    url: str
    template: str = ""
    forge: str = ""
    api_url: str = ""
    token_env: str = ""
    token_file: str = ""
    branch: bool = False
    commit: bool = False
    push: bool = False
    pr: bool = False
    pr_target: str = ""
    reviewers: tuple[str, ...] = ()

    @property
    def delivers(self) -> bool:
        """Whether anything happens after the subtasks complete."""
        return self.commit or self.push or self.pr

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as stored on the task."""
        data = dataclasses.asdict(self)
        data["reviewers"] = list(self.reviewers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target | None:
        """The snapshot a task stored (None for a task that delivers nothing)."""
        if not data or not data.get("url"):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["reviewers"] = tuple(values.get("reviewers") or ())
        return cls(**values)


def target(
    url: str,
    template: RepoTemplateRecord | None,
    push: bool,
    pr: bool,
    pr_target: str,
) -> Target:
    """The delivery of a new task: its template's, with --push/--pr added on top.

    A pull request needs a push, a push a commit on the task branch.

    Raises:
        InvalidArgument: when delivery is asked for a task without a repository URL, or the
            forge cannot be told from the URL.
    """
    base = Target(url=url)
    if template is not None:
        base = Target(
            url=template.url,
            template=template.name,
            forge=template.forge,
            api_url=template.api_url,
            token_env=template.token_env,
            token_file=template.token_file,
            branch=template.auto_branch,
            commit=template.auto_commit,
            push=template.auto_push,
            pr=template.auto_pr,
            pr_target=template.pr_target,
            reviewers=template.reviewers,
        )
    if template is None:
        base = dataclasses.replace(base, token_env=default_token_env(url))
    pr = pr or base.pr
    push = push or pr or base.push
    commit = push or base.commit
    chosen = dataclasses.replace(
        base,
        pr=pr,
        push=push,
        commit=commit,
        branch=base.branch or commit,
        pr_target=pr_target or base.pr_target,
    )
    if chosen.delivers and not url:
        raise InvalidArgument("delivery (--push, --pr, auto-commit) needs a repository (--repo)")
    if chosen.pr and not (chosen.forge or forges.detect(chosen.url)):
        raise InvalidArgument(
            f"cannot tell the forge of {chosen.url}; give it with --forge (github, gitlab, "
            "bitbucket) in a repository template"
        )
    return chosen


# Without a template, a task's token comes from the daemon's usual variable for its forge.
TOKEN_VARIABLES = {
    "github": ("GITHUB_TOKEN", "GH_TOKEN"),
    "gitlab": ("GITLAB_TOKEN",),
    "bitbucket": ("BITBUCKET_TOKEN",),
}


def default_token_env(url: str) -> str:
    """The first of the forge's usual token variables set in the daemon's environment."""
    for name in TOKEN_VARIABLES.get(forges.detect(url) or "", ()):
        if os.environ.get(name):
            return name
    return ""


def token(chosen: Target) -> str:
    """The token the target names ("" when it names none).

    Raises:
        Unavailable: when the variable is unset or the file unreadable (never quoting it).
    """
    if chosen.token_env:
        value = os.environ.get(chosen.token_env, "")
        if not value:
            raise Unavailable(f"the token variable {chosen.token_env} is not set for klaudiod")
        return value.strip()
    if chosen.token_file:
        path = Path(chosen.token_file).expanduser()
        try:
            with path.open("rb") as handle:
                return handle.read(TOKEN_FILE_LIMIT).decode("utf-8", "replace").strip()
        except OSError as exc:
            raise Unavailable(f"cannot read the token file {path}: {exc.strerror}") from None
    return ""


def credentials(chosen: Target) -> repo.Credentials | None:
    """The HTTP credentials of a clone or push of the target (None: none needed or given)."""
    secret = token(chosen)
    if not secret or not chosen.url.startswith(("http://", "https://")):
        return None
    forge = chosen.forge or forges.detect(chosen.url) or ""
    username, password = forges.clone_auth(forge, secret) if forge else ("oauth2", secret)
    return repo.Credentials(username, password)


def mask(text: str, secret: str) -> str:
    """text with secret (and its URL-encoded form) replaced by ***."""
    if not secret:
        return text
    from urllib.parse import quote

    for form in {secret, quote(secret, safe="")}:
        text = text.replace(form, "***")
    return text


def inputs_given(task: TaskRecord) -> frozenset[str]:
    """The workspace paths of the task's inputs: given, not made; never delivered."""
    return frozenset(f"{inputs.WORKSPACE_DIR}/{name}" for name in task.inputs)


def commit_message(detail: Detail) -> str:
    """The commit message: the task's name, then a summary of its plan."""
    lines = [detail.task.name.strip().splitlines()[0] if detail.task.name.strip() else "klaudio"]
    if detail.plan is not None and detail.plan.analysis.strip():
        lines += ["", detail.plan.analysis.strip()]
    if detail.subtasks:
        lines += ["", "Subtasks:"] + [f"- {s.key}: {s.name}" for s in detail.subtasks]
    lines += ["", f"Made by klaudio task {detail.task.id}."]
    return "\n".join(lines) + "\n"


def pr_text(detail: Detail) -> tuple[str, str]:
    """The pull request's title and body: the plan and what each subtask reported."""
    title = detail.task.name.strip().splitlines()[0][:200] or f"klaudio task {detail.task.id}"
    body = ["## Task", "", detail.task.prompt.strip()[:4000], ""]
    if detail.plan is not None:
        body += ["## Plan", "", detail.plan.analysis.strip(), ""]
        for sub in detail.subtasks:
            body += [
                f"### {sub.key}: {sub.name}",
                "",
                (sub.result.strip() or "(no report)")[:4000],
                "",
            ]
    body.append(f"Delivered by klaudio (task `{detail.task.id}`).")
    return title, "\n".join(body)


def deliver(
    task: TaskRecord, detail: Detail, chosen: Target, git_dir: Path, author: str
) -> dict[str, str]:
    """Commit, push and open or update the pull request, as the target says (blocking).

    Returns the fields to record: delivered_commit, pr_url.

    Raises:
        DeliveryFailed: with the step and the reason, the token masked.
    """
    secret = ""
    try:
        secret = token(chosen) if (chosen.push or chosen.pr) else ""
        done: dict[str, str] = {}
        committed = repo.commit_workspace(
            git_dir,
            Path(task.workspace),
            task.base_commit,
            task.branch,
            commit_message(detail),
            author,
            inputs_given(task),
        )
        done["delivered_commit"] = committed.commit
        if committed.changed == 0:
            done["delivery_reason"] = "nothing to deliver: the work changed no file"
            return done  # no branch pushed, no pull request of nothing
        if chosen.push:
            repo.push(git_dir, chosen.url, task.branch, credentials(chosen))
        if chosen.pr:
            forge = _forge(chosen, secret)
            title, body = pr_text(detail)
            opened = forge.open_or_update_pr(
                forge.repo_ref(chosen.url),
                task.branch,
                chosen.pr_target or task.base_branch,
                title,
                body,
                list(chosen.reviewers),
            )
            done["pr_url"] = opened.url
        return done
    except KlaudioError as exc:
        raise DeliveryFailed(mask(str(exc), secret)) from None


def _forge(chosen: Target, secret: str) -> forges.Forge:
    """The target's forge API: its api_url, else its host's (Enterprise), else the cloud's."""
    name = chosen.forge or forges.detect(chosen.url) or ""
    api_url = chosen.api_url
    if not api_url:
        host, _ = forges.split_url(chosen.url)
        api_url = forges.default_api_url(name, host)
    return forges.for_forge(name, api_url, secret)
