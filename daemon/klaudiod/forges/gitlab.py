"""GitLab (gitlab.com and self-managed): merge requests through REST v4.

Calls: GET /users?username=NAME (each reviewer's id, before anything is opened),
GET /projects/{path}/merge_requests?state=opened&source_branch=HEAD&target_branch=BASE (the
lookup, following X-Next-Page), POST /projects/{path}/merge_requests, PUT
/projects/{path}/merge_requests/{iid}; {path} is the project's full path URL-encoded (nested
groups included). Auth: `Authorization: Bearer TOKEN`, which GitLab takes for personal, project
and group access tokens as well as OAuth tokens; git over HTTPS takes the username oauth2.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from klaudio.errors import InvalidArgument
from klaudiod.forges import BaseForge, ForgeError, PullRequest, RepoRef, redact, split_url
from klaudiod.forges.http import Response, segment

API_PATH = "/api/v4"


class GitLab(BaseForge):
    """GitLab's REST API v4."""

    name = "gitlab"
    hosts = ("gitlab.com", "www.gitlab.com")
    default_api = "https://gitlab.com/api/v4"
    clone_username = "oauth2"

    @classmethod
    def auth_headers(cls, token: str) -> dict[str, str]:
        """OAuth-compliant Bearer header (every GitLab token kind takes it)."""
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    @classmethod
    def default_api_url(cls, host: str | None = None) -> str:
        """gitlab.com's API, or https://HOST/api/v4 for a self-managed instance."""
        if host is None or host in cls.hosts:
            return cls.default_api
        return f"https://{host}{API_PATH}"

    @staticmethod
    def describe(data: object, text: str) -> str:
        """message (a string, a list, or field -> problems), error, error_description."""
        if not isinstance(data, dict):
            return text.strip().splitlines()[0] if text.strip() else ""
        parts: list[str] = []
        message = data.get("message")
        if isinstance(message, dict):
            for field, problems in message.items():
                listed = problems if isinstance(problems, list) else [problems]
                parts.append(f"{field} {', '.join(str(p) for p in listed)}")
        elif isinstance(message, list):
            parts += [str(m) for m in message]
        elif message:
            parts.append(str(message))
        parts += [str(data[k]) for k in ("error", "error_description") if data.get(k)]
        return "; ".join(p.strip() for p in parts if str(p).strip())

    def repo_ref(self, url: str) -> RepoRef:
        """namespace/project from a clone URL; any depth of groups, a relative URL root dropped."""
        host, segments = split_url(url)
        root = urlsplit(self.api_url).path.removesuffix(API_PATH).strip("/")
        prefix = root.split("/") if root else []
        if prefix and segments[: len(prefix)] == prefix and len(segments) > len(prefix) + 1:
            segments = segments[len(prefix) :]
        if "-" in segments:  # a web page of the project: .../project/-/merge_requests
            segments = segments[: segments.index("-")]
        if len(segments) < 2:
            raise InvalidArgument(
                f"{redact(url)}: not a gitlab project URL (expected GROUP/.../PROJECT)"
            )
        return RepoRef(host, "/".join(segments[:-1]), segments[-1])

    def resolve_reviewers(self, reviewers: list[str]) -> list[Any]:
        """Each reviewer's user id (GET /users?username=NAME)."""
        return [self._user_id(name) for name in reviewers]

    def already_exists(self, exc: ForgeError) -> bool:
        """409 "Another open merge request already exists for this source branch: !N"."""
        return exc.status == 409 and "already exists" in exc.reason

    def find(self, repo: RepoRef, head: str, base: str) -> dict[str, Any] | None:
        """The open merge request from head to base within the project (every page)."""
        action = f"looking up open merge requests {repo} {head} -> {base}"
        query = {
            "state": "opened",
            "source_branch": head,
            "target_branch": base,
            "per_page": "100",
        }
        path = self._path(repo)
        url = self.api.base_url + path
        for page in self.api.pages(path, action, query, lambda r: _next(r, url, query)):
            if not isinstance(page.data, list):
                raise self.api.fail(action, f"{page.status}: expected a list of merge requests")
            for item in page.data:
                if _matches(item, head, base):
                    return dict(item)
        return None

    def create(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """POST .../merge_requests, reviewers included."""
        action = f"creating merge request {repo} {head} -> {base}"
        payload: dict[str, Any] = {
            "source_branch": head,
            "target_branch": base,
            "title": title,
            "description": body,
        }
        if reviewers:
            payload["reviewer_ids"] = reviewers
        response = self.api.request("POST", self._path(repo), action, body=payload)
        return self._merge_request(response, action, created=True)

    def update(
        self, repo: RepoRef, found: dict[str, Any], title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """PUT .../merge_requests/IID; reviewers already on it are kept."""
        iid = found.get("iid")
        action = f"updating merge request {repo}!{iid}"
        payload: dict[str, Any] = {"title": title, "description": body}
        if reviewers:
            present = [r.get("id") for r in found.get("reviewers") or [] if isinstance(r, dict)]
            payload["reviewer_ids"] = list(dict.fromkeys([*present, *reviewers]))
        path = f"{self._path(repo)}/{iid}"
        return self._merge_request(self.api.request("PUT", path, action, body=payload), action)

    def _user_id(self, username: str) -> int:
        action = f"looking up reviewer {username}"
        response = self.api.request("GET", "/users", action, query={"username": username})
        users = response.data if isinstance(response.data, list) else []
        for user in users:
            if not isinstance(user, dict) or not isinstance(user.get("id"), int):
                continue
            if str(user.get("username", "")).lower() == username.lower():
                return int(user["id"])
        raise self.api.fail(action, "no such user", reason="no such user")

    @staticmethod
    def _path(repo: RepoRef) -> str:
        return f"/projects/{segment(repo.path)}/merge_requests"

    def _merge_request(
        self, response: Response, action: str, *, created: bool = False
    ) -> PullRequest:
        data = response.data if isinstance(response.data, dict) else {}
        number, url = data.get("iid"), data.get("web_url")
        if not isinstance(number, int) or not isinstance(url, str):
            raise self.api.fail(action, f"{response.status}: no merge request in the answer")
        return PullRequest(number, url, created)


def _next(response: Response, url: str, query: dict[str, str]) -> str | None:
    """The next page from X-Next-Page (empty on the last page), on our own URL."""
    page = (response.headers.get("X-Next-Page") or "").strip()
    if not page.isdigit() or not isinstance(response.data, list) or not response.data:
        return None
    return f"{url}?{urlencode({**query, 'page': page})}"


def _matches(item: Any, head: str, base: str) -> bool:
    """An open merge request from head to base within the project (not from a fork)."""
    if not isinstance(item, dict) or item.get("state") != "opened":
        return False
    same_project = item.get("source_project_id") == item.get("target_project_id")
    return item.get("source_branch") == head and item.get("target_branch") == base and same_project


FORGE = GitLab
