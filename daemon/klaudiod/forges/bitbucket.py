"""Bitbucket Cloud: pull requests through REST 2.0.

Calls: GET /repositories/{workspace}/{repo_slug}/pullrequests?state=OPEN&q=source.branch.name=
"HEAD" AND destination.branch.name="BASE" (the lookup, following the body's `next`), POST
.../pullrequests (reviewers included), PUT .../pullrequests/{id} (reviewers kept and added).
Auth: `Authorization: Bearer TOKEN` for repository, project and workspace access tokens; git
over HTTPS takes the username x-token-auth. Reviewers are account ids or {UUID}s: Bitbucket
Cloud's API no longer takes usernames.
"""

from __future__ import annotations

from typing import Any

from klaudiod.forges import BaseForge, PullRequest, RepoRef
from klaudiod.forges.http import Response, first_line, segment


class Bitbucket(BaseForge):
    """Bitbucket Cloud's REST API 2.0."""

    name = "bitbucket"
    hosts = ("bitbucket.org", "www.bitbucket.org")
    default_api = "https://api.bitbucket.org/2.0"
    clone_username = "x-token-auth"

    @classmethod
    def auth_headers(cls, token: str) -> dict[str, str]:
        """Bearer access token."""
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    @staticmethod
    def describe(data: object, text: str) -> str:
        """error.message, error.detail's first line, and each field's problems."""
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return first_line(text)
        parts = [str(error.get("message") or "").strip()]
        if error.get("detail"):
            parts.append(first_line(str(error["detail"])))
        fields = error.get("fields")
        if isinstance(fields, dict):
            for field, problems in fields.items():
                listed = problems if isinstance(problems, list) else [problems]
                detail = f"{field}: {', '.join(str(p) for p in listed)}"
                if detail not in parts[0]:
                    parts.append(detail)
        return ": ".join(p for p in parts if p)

    def resolve_reviewers(self, reviewers: list[str]) -> list[Any]:
        """{"uuid": ...} for a {UUID}, {"account_id": ...} for anything else."""
        return [_reviewer(name) for name in reviewers]

    def find(self, repo: RepoRef, head: str, base: str) -> dict[str, Any] | None:
        """The open pull request from head to base within the repository (every page)."""
        action = f"looking up open pull requests {repo} {head} -> {base}"
        where = (
            f"source.branch.name = {_quoted(head)} AND destination.branch.name = {_quoted(base)}"
        )
        query = {"state": "OPEN", "q": where, "pagelen": "50"}
        for page in self.api.pages(self._path(repo), action, query, _next):
            values = page.data.get("values") if isinstance(page.data, dict) else None
            if not isinstance(values, list):
                raise self.api.fail(action, f"{page.status}: expected a page of pull requests")
            for item in values:
                if _matches(item, head, base):
                    return dict(item)
        return None

    def create(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """POST .../pullrequests."""
        action = f"creating pull request {repo} {head} -> {base}"
        payload = {
            "title": title,
            "description": body,
            "source": {"branch": {"name": head}},
            "destination": {"branch": {"name": base}},
            "reviewers": reviewers,
        }
        response = self.api.request("POST", self._path(repo), action, body=payload)
        return self._pull(response, action, created=True)

    def update(
        self, repo: RepoRef, found: dict[str, Any], title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """PUT .../pullrequests/ID; the reviewers it has are sent back with the new ones."""
        number = found.get("id")
        action = f"updating pull request {repo}#{number}"
        present = [r for r in found.get("reviewers") or [] if isinstance(r, dict)]
        known = {str(r[k]) for r in present for k in ("uuid", "account_id") if r.get(k)}
        everyone = [ref for ref in map(_present, present) if ref]
        for reviewer in reviewers:
            if not known.intersection(reviewer.values()) and reviewer not in everyone:
                everyone.append(reviewer)
        payload = {"title": title, "description": body, "reviewers": everyone}
        path = f"{self._path(repo)}/{number}"
        return self._pull(self.api.request("PUT", path, action, body=payload), action)

    @staticmethod
    def _path(repo: RepoRef) -> str:
        return f"/repositories/{segment(repo.owner)}/{segment(repo.name)}/pullrequests"

    def _pull(self, response: Response, action: str, *, created: bool = False) -> PullRequest:
        data = response.data if isinstance(response.data, dict) else {}
        number = data.get("id")
        url = ((data.get("links") or {}).get("html") or {}).get("href")
        if not isinstance(number, int) or not isinstance(url, str):
            raise self.api.fail(action, f"{response.status}: no pull request in the answer")
        return PullRequest(number, url, created)


def _quoted(value: str) -> str:
    """value as a BBQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reviewer(name: str) -> dict[str, str]:
    return {"uuid": name} if name.startswith("{") else {"account_id": name}


def _present(reviewer: dict[str, Any]) -> dict[str, str]:
    """A reviewer already on a pull request, as an update takes it back."""
    if reviewer.get("uuid"):
        return {"uuid": str(reviewer["uuid"])}
    if reviewer.get("account_id"):
        return {"account_id": str(reviewer["account_id"])}
    return {}


def _next(response: Response) -> str | None:
    value = response.data.get("next") if isinstance(response.data, dict) else None
    return value if isinstance(value, str) and value else None


def _matches(item: Any, head: str, base: str) -> bool:
    """An open pull request from head to base within the repository (not from a fork)."""
    if not isinstance(item, dict) or item.get("state") != "OPEN":
        return False
    source, target = item.get("source") or {}, item.get("destination") or {}
    source_repo = ((source.get("repository") or {}).get("full_name") or "").lower()
    target_repo = ((target.get("repository") or {}).get("full_name") or "").lower()
    return (
        (source.get("branch") or {}).get("name") == head
        and (target.get("branch") or {}).get("name") == base
        and source_repo == target_repo
    )


FORGE = Bitbucket
