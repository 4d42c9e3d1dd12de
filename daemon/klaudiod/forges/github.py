"""GitHub (github.com and Enterprise Server): pull requests through REST v3.

Calls: GET /repos/{owner}/{repo}/pulls?state=open&head=OWNER:BRANCH&base=BASE (the lookup,
following Link rel="next"), POST /repos/{owner}/{repo}/pulls, PATCH .../pulls/{number},
POST .../pulls/{number}/requested_reviewers. Auth: `Authorization: Bearer TOKEN` (classic and
fine-grained personal access tokens, GitHub App installation tokens); git over HTTPS takes the
username x-access-token with the token as password.
"""

from __future__ import annotations

from typing import Any

from klaudiod.forges import BaseForge, ForgeError, PullRequest, RepoRef
from klaudiod.forges.http import Response, next_link, segment

API_VERSION = "2022-11-28"


class GitHub(BaseForge):
    """GitHub's REST API v3."""

    name = "github"
    hosts = ("github.com", "www.github.com")
    default_api = "https://api.github.com"
    clone_username = "x-access-token"

    @classmethod
    def auth_headers(cls, token: str) -> dict[str, str]:
        """Bearer token, the JSON media type and the pinned API version."""
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }

    @classmethod
    def default_api_url(cls, host: str | None = None) -> str:
        """api.github.com, or https://HOST/api/v3 for an Enterprise Server."""
        if host is None or host in cls.hosts:
            return cls.default_api
        return f"https://{host}/api/v3"

    @staticmethod
    def describe(data: object, text: str) -> str:
        """message, then each errors[] entry (its message, or field and code)."""
        if not isinstance(data, dict):
            return text.strip().splitlines()[0] if text.strip() else ""
        parts = [str(data.get("message") or "").strip()]
        for error in data.get("errors") or []:
            if isinstance(error, dict):
                detail = error.get("message") or " ".join(
                    str(error[k]) for k in ("resource", "field", "code") if error.get(k)
                )
            else:
                detail = str(error)
            parts.append(str(detail).strip())
        return ": ".join(p for p in parts if p)

    def already_exists(self, exc: ForgeError) -> bool:
        """422 "A pull request already exists for OWNER:BRANCH"."""
        return exc.status == 422 and "already exists" in exc.reason

    def find(self, repo: RepoRef, head: str, base: str) -> dict[str, Any] | None:
        """GET .../pulls filtered by OWNER:head and base, every page, checked on our side too."""
        action = f"looking up open pull requests {repo} {head} -> {base}"
        # An unqualified head is silently ignored by GitHub: always OWNER:BRANCH.
        query = {"state": "open", "head": f"{repo.owner}:{head}", "base": base, "per_page": "100"}
        for page in self.api.pages(self._path(repo), action, query, _next):
            if not isinstance(page.data, list):
                raise self.api.fail(action, f"{page.status}: expected a list of pull requests")
            for item in page.data:
                if _matches(item, repo, head, base):
                    return dict(item)
        return None

    def create(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """POST .../pulls."""
        action = f"creating pull request {repo} {head} -> {base}"
        payload = {"title": title, "head": head, "base": base, "body": body}
        response = self.api.request("POST", self._path(repo), action, body=payload)
        return self._pull(response, action, created=True)

    def update(
        self, repo: RepoRef, found: dict[str, Any], title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """PATCH .../pulls/NUMBER with the new title and body."""
        number = found.get("number")
        action = f"updating pull request {repo}#{number}"
        payload = {"title": title, "body": body}
        path = f"{self._path(repo)}/{number}"
        return self._pull(self.api.request("PATCH", path, action, body=payload), action)

    def request_reviewers(self, repo: RepoRef, pr: PullRequest, reviewers: list[Any]) -> None:
        """POST .../pulls/NUMBER/requested_reviewers; ORG/TEAM names a team by its slug."""
        teams = [r.split("/", 1)[1] for r in reviewers if "/" in r]
        users = [r for r in reviewers if "/" not in r]
        action = f"requesting reviewers {', '.join(reviewers)} on {repo}#{pr.number}"
        path = f"{self._path(repo)}/{pr.number}/requested_reviewers"
        payload = {"reviewers": users, "team_reviewers": teams}
        self.api.request("POST", path, action, body=payload)

    @staticmethod
    def _path(repo: RepoRef) -> str:
        return f"/repos/{segment(repo.owner)}/{segment(repo.name)}/pulls"

    def _pull(self, response: Response, action: str, *, created: bool = False) -> PullRequest:
        data = response.data if isinstance(response.data, dict) else {}
        number, url = data.get("number"), data.get("html_url")
        if not isinstance(number, int) or not isinstance(url, str):
            raise self.api.fail(action, f"{response.status}: no pull request in the answer")
        return PullRequest(number, url, created)


def _next(response: Response) -> str | None:
    return next_link(response.headers.get("Link"))


def _matches(item: Any, repo: RepoRef, head: str, base: str) -> bool:
    """An open pull request from this repository's head branch to base (not from a fork)."""
    if not isinstance(item, dict) or item.get("state") != "open":
        return False
    head_ref, base_ref = item.get("head") or {}, item.get("base") or {}
    source = (head_ref.get("repo") or {}).get("full_name") or ""
    return (
        head_ref.get("ref") == head
        and base_ref.get("ref") == base
        and source.lower() == repo.path.lower()
    )


FORGE = GitHub
