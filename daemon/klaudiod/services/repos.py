"""RepoService: repository templates (where a task's repository comes from, how it delivers)."""

from __future__ import annotations

from typing import Any

import grpc

from klaudio import validate
from klaudio.errors import InvalidArgument
from klaudio.rpc.v1 import repos_pb2, repos_pb2_grpc
from klaudiod import forges
from klaudiod.db import Db
from klaudiod.records import RepoTemplateRecord
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]
NAME = r"[a-z0-9][a-z0-9._-]{0,39}"


class RepoService(repos_pb2_grpc.RepoServiceServicer):
    """Lists, shows, adds (or replaces) and removes repository templates."""

    def __init__(self, db: Db) -> None:
        self._db = db

    @mapped
    async def ListRepos(
        self, request: repos_pb2.ListReposRequest, context: Context
    ) -> repos_pb2.ListReposResponse:
        found = await self._db.call(self._db.store.repos)
        return repos_pb2.ListReposResponse(repos=[_message(t) for t in found])

    @mapped
    async def GetRepo(
        self, request: repos_pb2.GetRepoRequest, context: Context
    ) -> repos_pb2.GetRepoResponse:
        name = validate.utf8(request.name, "name")
        return repos_pb2.GetRepoResponse(
            repo=_message(await self._db.call(self._db.store.repo, name))
        )

    @mapped
    async def AddRepo(
        self, request: repos_pb2.AddRepoRequest, context: Context
    ) -> repos_pb2.AddRepoResponse:
        template = checked(request.repo)
        stored = await self._db.call(self._db.store.add_repo, template, request.replace)
        return repos_pb2.AddRepoResponse(repo=_message(stored))

    @mapped
    async def RemoveRepo(
        self, request: repos_pb2.RemoveRepoRequest, context: Context
    ) -> repos_pb2.RemoveRepoResponse:
        await self._db.call(self._db.store.remove_repo, validate.utf8(request.name, "name"))
        return repos_pb2.RemoveRepoResponse()


def checked(message: repos_pb2.RepoTemplate) -> RepoTemplateRecord:
    """A template as given, every field checked.

    Raises:
        InvalidArgument: naming the first field that is wrong.
    """
    import re

    if not re.fullmatch(NAME, message.name):
        raise InvalidArgument(
            f"repository template name {message.name!r}: lower-case letters, digits, '.', '_' "
            "and '-', at most 40"
        )
    url = validate.repo_source(message.url, "url")
    if not url:
        raise InvalidArgument("a repository template needs a URL")
    forge = message.forge or forges.detect(url) or ""
    if message.forge:
        forges.forge_class(message.forge)  # InvalidArgument naming the known ones
    if message.api_url:
        forges.check_api_url(message.api_url)
    if message.token_env and message.token_file:
        raise InvalidArgument("give the token as --token-env or as --token-file, not both")
    if message.token_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", message.token_env):
        raise InvalidArgument(f"--token-env {message.token_env!r}: not a variable name")
    if message.token_file and not message.token_file.startswith("/"):
        raise InvalidArgument(f"--token-file {message.token_file}: not an absolute path")
    if message.auto_pr and not forge:
        raise InvalidArgument(f"cannot tell the forge of {url}: give --forge")
    for reviewer in message.reviewers:
        # A login, ORG/TEAM (GitHub), an account id like 557058:... or a {UUID} (Bitbucket).
        if not re.fullmatch(r"[A-Za-z0-9{][A-Za-z0-9._@:/{}-]{0,199}", reviewer):
            raise InvalidArgument(f"--reviewer {reviewer!r}: not a user, team or account id")
    return RepoTemplateRecord(
        name=message.name,
        url=url,
        branch=validate.branch(message.branch, "--branch"),
        forge=forge,
        api_url=message.api_url.rstrip("/"),
        token_env=message.token_env,
        token_file=validate.utf8(message.token_file, "--token-file"),
        auto_branch=message.auto_branch
        or message.auto_commit
        or message.auto_push
        or message.auto_pr,
        auto_commit=message.auto_commit or message.auto_push or message.auto_pr,
        auto_push=message.auto_push or message.auto_pr,
        auto_pr=message.auto_pr,
        pr_target=validate.branch(message.pr_target, "--pr-target"),
        reviewers=tuple(message.reviewers),
        memory=message.memory,
    )


def _message(template: RepoTemplateRecord) -> repos_pb2.RepoTemplate:
    return repos_pb2.RepoTemplate(
        name=template.name,
        url=template.url,
        branch=template.branch,
        forge=template.forge,
        api_url=template.api_url,
        token_env=template.token_env,
        token_file=template.token_file,
        auto_branch=template.auto_branch,
        auto_commit=template.auto_commit,
        auto_push=template.auto_push,
        auto_pr=template.auto_pr,
        pr_target=template.pr_target,
        reviewers=list(template.reviewers),
        memory=template.memory,
    )
