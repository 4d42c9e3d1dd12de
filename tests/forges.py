"""Fake forge REST APIs for tests: GitHub v3, GitLab v4 and Bitbucket Cloud 2.0 on 127.0.0.1.

Each fake is a threaded HTTP server that requires its token, records every call (method, path,
query, headers, JSON body), keeps pull requests in memory and answers as the real API does:
status codes, bodies, pagination (GitHub's Link header, GitLab's X-Next-Page and Link,
Bitbucket's `next`), the "already exists" refusals, 401 for a bad token and 404 for an unknown
repository, each in the forge's own error shape. Failures can be scripted (`fail_next`), and
answers delayed (`delay_next`) or dropped (`fail_next(0)`) to test timeouts and lost
connections.

    with FakeGitHub(token="t0k", repos=["acme/widgets"]) as api:
        forge = forges.for_forge("github", api.api_url, "t0k")
        ...
        assert api.calls[-1].method == "POST"

Where a fake's behaviour is not documented by the forge (Bitbucket's answer to a second pull
request between the same branches) it says so and follows what clients report.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

BranchExists = Callable[[str, str], bool]


@dataclass
class Call:
    """One request the fake received."""

    method: str
    path: str  # as sent, percent-encoding kept (GitLab's project ids hold %2F)
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, the raw text when it is not JSON, None when empty
    target: str  # the raw request target, path and query
    status: int = 0  # what the fake answered (0: dropped)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Answer:
    """What a route answers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Scripted:
    status: int | None  # None: answer normally (after the delay); 0: drop the connection
    body: Any
    method: str | None
    path: str | None
    delay: float
    times: int
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, call: Call) -> bool:
        if self.method and call.method != self.method.upper():
            return False
        return not self.path or re.search(self.path, call.path) is not None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeForge


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.fake.handle(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeForge:
    """The server, the recording, the scripting, the paging; a forge's routes in a subclass."""

    name: ClassVar[str]
    default_prefix: ClassVar[str]
    default_web: ClassVar[str]
    default_page_size: ClassVar[int]
    max_page_size: ClassVar[int]

    def __init__(
        self,
        token: str = "fake-token-3f2a9c1e",
        *,
        repos: Iterable[str] = ("acme/widgets",),
        prefix: str | None = None,
        web: str | None = None,
        branch_exists: BranchExists | None = None,
        page_size: int | None = None,
    ) -> None:
        """A fake serving repos (OWNER/NAME, or GitLab's GROUP/.../PROJECT).

        prefix: the API's path on the server ("/api/v3" makes a GitHub Enterprise Server);
        web: the web origin of pull request URLs; branch_exists(repo, branch): when given,
        creating a pull request from or to a branch it denies is refused as the forge does;
        page_size: the most items a page holds, whatever the client asks.
        """
        self.token = token
        self.repos = {r.lower(): r for r in repos}
        self.prefix = self.default_prefix if prefix is None else prefix.rstrip("/")
        self.web = (web or self.default_web).rstrip("/")
        self.branch_exists = branch_exists
        self.page_size = page_size
        # Answer lookups as if the server ignored their branch filters: the client's own
        # matching and its paging are what finds the pull request then.
        self.filters_ignored = False
        self.calls: list[Call] = []
        self.prs: list[dict[str, Any]] = []
        self._scripted: list[_Scripted] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-{self.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """http://127.0.0.1:PORT."""
        assert self._server is not None, "the fake is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        """The API's base URL, as `--api-url` takes it."""
        return self.origin + self.prefix

    def _api(self) -> str:
        """api_url once started (pull requests may be seeded before)."""
        return self.api_url if self._server is not None else self.prefix

    # -- scripting and inspection ------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        method: str | None = None,
        path: str | None = None,
        delay: float = 0.0,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next matching call(s) with status and body (the forge's usual error body
        for that status by default). Status 0 drops the connection without an answer.

        method and path (a regex searched in the raw path) narrow which calls match.
        """
        with self._lock:
            scripted = _Scripted(status, body, method, path, delay, times, dict(headers or {}))
            self._scripted.append(scripted)

    def delay_next(
        self, seconds: float, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Answer the next matching call normally, but only after seconds."""
        with self._lock:
            self._scripted.append(_Scripted(None, None, method, path, seconds, 1))

    def calls_to(self, method: str | None = None, path: str | None = None) -> list[Call]:
        """The calls made, narrowed by method and a regex searched in the path."""
        return [
            c
            for c in list(self.calls)
            if (method is None or c.method == method.upper())
            and (path is None or re.search(path, c.path))
        ]

    def open_prs(self) -> list[dict[str, Any]]:
        """The open pull requests, in the forge's JSON shape."""
        return [pr for pr in self.prs if self.is_open(pr)]

    # -- the request cycle -------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Record the call, then answer: scripted, unauthorized, or the forge's route."""
        call = self._read(handler)
        with self._lock:
            self.calls.append(call)
            scripted = next((s for s in self._scripted if s.matches(call)), None)
            if scripted is not None:
                scripted.times -= 1
                if scripted.times <= 0:
                    self._scripted.remove(scripted)
        if scripted is not None:
            time.sleep(scripted.delay)
            if scripted.status == 0:
                handler.close_connection = True
                return
            if scripted.status is not None:
                body = scripted.body
                if body is None:
                    body = self.error_body(scripted.status, _phrase(scripted.status))
                self._write(handler, call, Answer(scripted.status, body, scripted.headers))
                return
        with self._lock:
            answer = self._answer(call)
        self._write(handler, call, answer)

    def _answer(self, call: Call) -> Answer:
        if not self.authorized(call.headers):
            return self.unauthorized(call)
        if isinstance(call.body, str):
            return self.bad_json()
        if not call.path.startswith(self.prefix + "/"):
            return self.no_route()
        return self.route(call, call.path[len(self.prefix) :])

    def _read(self, handler: BaseHTTPRequestHandler) -> Call:
        target = handler.path
        parts = urlsplit(target)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        query = parse_qs(parts.query, keep_blank_values=True)
        return Call(handler.command, parts.path, query, headers, body, target)

    def _write(self, handler: BaseHTTPRequestHandler, call: Call, answer: Answer) -> None:
        call.status = answer.status
        data = b"" if answer.body is None else json.dumps(answer.body).encode()
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    # -- paging ------------------------------------------------------------------------------

    def page(
        self, call: Call, items: list[Any], size_param: str
    ) -> tuple[list[Any], int, int, int]:
        """(this page's items, page number, last page number, page size) for the call."""
        asked = _int(call.param(size_param), self.default_page_size)
        size = max(1, min(asked, self.max_page_size, self.page_size or self.max_page_size))
        number = max(1, _int(call.param("page"), 1))
        last = max(1, -(-len(items) // size))
        return items[(number - 1) * size : number * size], number, last, size

    def page_url(self, call: Call, number: int) -> str:
        """The URL of page number of the same listing."""
        query = {k: v for k, v in call.query.items() if k != "page"}
        query["page"] = [str(number)]
        return f"{self.origin}{call.path}?{urlencode(query, doseq=True)}"

    def link_header(self, call: Call, number: int, last: int) -> str:
        """An RFC 8288 Link header: prev, next, first, last."""
        rels = []
        if number > 1:
            rels += [(number - 1, "prev"), (1, "first")]
        if number < last:
            rels += [(number + 1, "next"), (last, "last")]
        return ", ".join(f'<{self.page_url(call, n)}>; rel="{rel}"' for n, rel in rels)

    # -- per forge ---------------------------------------------------------------------------

    def authorized(self, headers: dict[str, str]) -> bool:
        """Whether the call carries the token the way the forge takes it."""
        return headers.get("authorization") == f"Bearer {self.token}"

    def unauthorized(self, call: Call) -> Answer:
        """The forge's 401."""
        return Answer(401, self.error_body(401, "Unauthorized"))

    def error_body(self, status: int, message: str) -> Any:
        """The forge's error body for status."""
        raise NotImplementedError

    def bad_json(self) -> Answer:
        """The forge's answer to a body that is not JSON."""
        return Answer(400, self.error_body(400, "Bad Request"))

    def no_route(self) -> Answer:
        """The forge's answer for a path it does not serve."""
        return Answer(404, self.error_body(404, "Not Found"))

    def route(self, call: Call, path: str) -> Answer:
        """Answer a call to path (below the prefix)."""
        raise NotImplementedError

    def is_open(self, pr: dict[str, Any]) -> bool:
        """Whether a stored pull request is open."""
        raise NotImplementedError

    def repo(self, name: str) -> str | None:
        """The repository as configured, found case-insensitively."""
        return self.repos.get(name.lower())

    def exists(self, repo: str, branch: str) -> bool:
        """Whether branch exists in repo (always, unless branch_exists says otherwise)."""
        return self.branch_exists is None or self.branch_exists(repo, branch)


# -- GitHub ------------------------------------------------------------------------------------

GITHUB_DOCS = "https://docs.github.com/rest/pulls"


class FakeGitHub(FakeForge):
    """GitHub REST v3: pulls, pull updates, requested reviewers (prefix /api/v3: Enterprise)."""

    name = "github"
    default_prefix = ""
    default_web = "https://github.com"
    default_page_size = 30
    max_page_size = 100

    def __init__(
        self,
        token: str = "fake-token-3f2a9c1e",
        *,
        login: str = "klaudio-bot",
        collaborators: Iterable[str] | None = None,
        teams: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """login: the token's user (the author of what it opens); collaborators and teams
        (slugs): who may be asked for a review (anyone when None)."""
        super().__init__(token, **kwargs)
        self.login = login
        self.collaborators = None if collaborators is None else {c.lower() for c in collaborators}
        self.teams = None if teams is None else {t.lower() for t in teams}
        self._numbers: dict[str, int] = {}

    def authorized(self, headers: dict[str, str]) -> bool:
        """`Authorization: Bearer TOKEN` (or the older `token TOKEN`)."""
        return headers.get("authorization") in (f"Bearer {self.token}", f"token {self.token}")

    def unauthorized(self, call: Call) -> Answer:
        """401 "Requires authentication" without credentials, "Bad credentials" with wrong ones."""
        if "authorization" not in call.headers:
            return Answer(401, self.error_body(401, "Requires authentication"))
        return Answer(401, self.error_body(401, "Bad credentials"))

    def error_body(self, status: int, message: str) -> Any:
        """{"message", "documentation_url", "status"}."""
        return {
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": str(status),
        }

    def bad_json(self) -> Answer:
        """400 "Problems parsing JSON"."""
        return Answer(400, self.error_body(400, "Problems parsing JSON"))

    def is_open(self, pr: dict[str, Any]) -> bool:
        return bool(pr["state"] == "open")

    def add_pr(
        self,
        repo: str,
        head: str,
        base: str,
        *,
        title: str = "An existing pull request",
        body: str = "",
        state: str = "open",
        source: str | None = None,
        reviewers: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Store a pull request as if opened earlier (source: the head's repository, a fork)."""
        with self._lock:
            full = self.repo(repo) or repo
            number = self._numbers.get(full.lower(), 0) + 1
            self._numbers[full.lower()] = number
            head_repo = source or full
            pr = {
                "url": f"{self._api()}/repos/{full}/pulls/{number}",
                "id": 1000 + len(self.prs),
                "number": number,
                "state": state,
                "title": title,
                "body": body,
                "html_url": f"{self.web}/{full}/pull/{number}",
                "user": {"login": self.login},
                "head": {
                    "label": f"{head_repo.split('/')[0]}:{head}",
                    "ref": head,
                    "repo": {"full_name": head_repo},
                },
                "base": {
                    "label": f"{full.split('/')[0]}:{base}",
                    "ref": base,
                    "repo": {"full_name": full},
                },
                "requested_reviewers": [{"login": r} for r in reviewers],
                "requested_teams": [],
                "draft": False,
            }
            self.prs.append(pr)
            return pr

    def route(self, call: Call, path: str) -> Answer:
        found = re.fullmatch(
            r"/repos/([^/]+)/([^/]+)/pulls(?:/(\d+)(/requested_reviewers)?)?", path
        )
        if not found:
            return self.no_route()
        repo = self.repo(f"{unquote(found[1])}/{unquote(found[2])}")
        if repo is None:
            return Answer(404, self.error_body(404, "Not Found"))
        if found[3] is None:
            if call.method == "GET":
                return self._list(call, repo)
            if call.method == "POST":
                return self._create(call, repo)
            return Answer(404, self.error_body(404, "Not Found"))
        pr = next((p for p in self._of(repo) if p["number"] == int(found[3])), None)
        if pr is None:
            return Answer(404, self.error_body(404, "Not Found"))
        if found[4] and call.method == "POST":
            return self._request_reviewers(call, repo, pr)
        if not found[4] and call.method == "PATCH":
            return self._update(call, pr)
        if not found[4] and call.method == "GET":
            return Answer(200, pr)
        return Answer(404, self.error_body(404, "Not Found"))

    def _of(self, repo: str) -> list[dict[str, Any]]:
        return [p for p in self.prs if p["base"]["repo"]["full_name"].lower() == repo.lower()]

    def _list(self, call: Call, repo: str) -> Answer:
        state = call.param("state") or "open"
        items = [p for p in self._of(repo) if state == "all" or p["state"] == state]
        head, base = call.param("head"), call.param("base")
        if not self.filters_ignored:
            # An unqualified head (no OWNER:) is silently ignored, as GitHub does.
            if head and ":" in head:
                items = [p for p in items if p["head"]["label"].lower() == head.lower()]
            if base:
                items = [p for p in items if p["base"]["ref"] == base]
        items.sort(key=lambda p: -int(p["number"]))  # newest first
        shown, number, last, _ = self.page(call, items, "per_page")
        headers = {"Link": self.link_header(call, number, last)} if last > 1 else {}
        return Answer(200, shown, headers)

    def _invalid(self, *errors: dict[str, str]) -> Answer:
        body = {
            "message": "Validation Failed",
            "errors": list(errors),
            "documentation_url": f"{GITHUB_DOCS}/pulls#create-a-pull-request",
            "status": "422",
        }
        return Answer(422, body)

    def _create(self, call: Call, repo: str) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        missing = [f for f in ("title", "head", "base") if not body.get(f)]
        if missing:
            return self._invalid(
                *({"resource": "PullRequest", "field": f, "code": "missing_field"} for f in missing)
            )
        head, base = str(body["head"]), str(body["base"])
        owner, _, branch = head.rpartition(":")
        owner = owner or repo.split("/")[0]
        if not self.exists(repo, branch):
            return self._invalid({"resource": "PullRequest", "field": "head", "code": "invalid"})
        if not self.exists(repo, base):
            return self._invalid({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if branch == base and owner.lower() == repo.split("/")[0].lower():
            message = f"No commits between {base} and {branch}"
            return self._invalid({"resource": "PullRequest", "code": "custom", "message": message})
        label = f"{owner}:{branch}".lower()
        for pr in self._of(repo):
            if (
                pr["state"] == "open"
                and pr["head"]["label"].lower() == label
                and pr["base"]["ref"] == base
            ):
                message = f"A pull request already exists for {owner}:{branch}."
                return self._invalid(
                    {"resource": "PullRequest", "code": "custom", "message": message}
                )
        source = (
            repo if owner.lower() == repo.split("/")[0].lower() else f"{owner}/{repo.split('/')[1]}"
        )
        pr = self.add_pr(
            repo,
            branch,
            base,
            title=str(body["title"]),
            body=str(body.get("body") or ""),
            source=source,
        )
        return Answer(201, pr, {"Location": pr["url"]})

    def _update(self, call: Call, pr: dict[str, Any]) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        for key in ("title", "body", "state"):
            if key in body:
                pr[key] = body[key]
        if "base" in body:
            pr["base"]["ref"] = body["base"]
        return Answer(200, pr)

    def _request_reviewers(self, call: Call, repo: str, pr: dict[str, Any]) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        users = [str(u) for u in body.get("reviewers") or []]
        teams = [str(t) for t in body.get("team_reviewers") or []]
        if any(u.lower() == pr["user"]["login"].lower() for u in users):
            message = "Review cannot be requested from pull request author."
            return Answer(
                422,
                {
                    "message": message,
                    "documentation_url": f"{GITHUB_DOCS}/review-requests",
                    "status": "422",
                },
            )
        strangers = [
            u
            for u in users
            if self.collaborators is not None and u.lower() not in self.collaborators
        ]
        strangers += [t for t in teams if self.teams is not None and t.lower() not in self.teams]
        if strangers:
            message = (
                "Reviews may only be requested from collaborators. One or more of the users or "
                f"teams you specified is not a collaborator of the {repo} repository."
            )
            return Answer(
                422,
                {
                    "message": message,
                    "documentation_url": f"{GITHUB_DOCS}/review-requests",
                    "status": "422",
                },
            )
        have = {r["login"].lower() for r in pr["requested_reviewers"]}
        pr["requested_reviewers"] += [{"login": u} for u in users if u.lower() not in have]
        have_teams = {t["slug"].lower() for t in pr["requested_teams"]}
        pr["requested_teams"] += [{"slug": t} for t in teams if t.lower() not in have_teams]
        return Answer(201, pr)


# -- GitLab ------------------------------------------------------------------------------------


class FakeGitLab(FakeForge):
    """GitLab REST v4: project merge requests (projects by URL-encoded path or id), users."""

    name = "gitlab"
    default_prefix = "/api/v4"
    default_web = "https://gitlab.com"
    default_page_size = 20
    max_page_size = 100

    def __init__(
        self,
        token: str = "fake-token-3f2a9c1e",
        *,
        users: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        """users: username -> id of the instance's users (reviewers are looked up there)."""
        super().__init__(token, **kwargs)
        self.users = dict(users if users is not None else {"alice": 11, "bob": 12})
        self.author = {"id": 1, "username": "klaudio-bot", "name": "klaudio"}
        self.project_ids = {name: 100 + i for i, name in enumerate(self.repos.values())}
        self._iids: dict[str, int] = {}

    def authorized(self, headers: dict[str, str]) -> bool:
        """`PRIVATE-TOKEN: TOKEN` or `Authorization: Bearer TOKEN`."""
        return (
            headers.get("private-token") == self.token
            or headers.get("authorization") == f"Bearer {self.token}"
        )

    def error_body(self, status: int, message: str) -> Any:
        """{"message": "STATUS Phrase"}."""
        return {"message": f"{status} {message}"}

    def no_route(self) -> Answer:
        """{"error": "404 Not Found"}."""
        return Answer(404, {"error": "404 Not Found"})

    def is_open(self, pr: dict[str, Any]) -> bool:
        return bool(pr["state"] == "opened")

    def add_pr(
        self,
        repo: str,
        head: str,
        base: str,
        *,
        title: str = "An existing merge request",
        body: str = "",
        state: str = "opened",
        source_project_id: int | None = None,
        reviewer_ids: Iterable[int] = (),
    ) -> dict[str, Any]:
        """Store a merge request as if opened earlier (source_project_id: from a fork)."""
        with self._lock:
            full = self.repo(repo) or repo
            iid = self._iids.get(full.lower(), 0) + 1
            self._iids[full.lower()] = iid
            project = self.project_ids.get(full, 0)
            mr = {
                "id": 5000 + len(self.prs),
                "iid": iid,
                "project_id": project,
                "title": title,
                "description": body,
                "state": state,
                "source_branch": head,
                "target_branch": base,
                "source_project_id": project if source_project_id is None else source_project_id,
                "target_project_id": project,
                "author": dict(self.author),
                "reviewers": self._reviewers(reviewer_ids),
                "web_url": f"{self.web}/{full}/-/merge_requests/{iid}",
                "references": {"short": f"!{iid}", "full": f"{full}!{iid}"},
            }
            self.prs.append(mr)
            return mr

    def _reviewers(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        names = {v: k for k, v in self.users.items()}
        return [{"id": i, "username": names[i], "name": names[i]} for i in ids if i in names]

    def _project(self, raw: str) -> str | None:
        value = unquote(raw)
        if value.isdigit():
            return next((n for n, i in self.project_ids.items() if i == int(value)), None)
        return self.repo(value)

    def route(self, call: Call, path: str) -> Answer:
        parts = path.strip("/").split("/")
        if parts == ["users"] and call.method == "GET":
            return self._users(call)
        if (
            len(parts) < 3
            or parts[0] != "projects"
            or parts[2] != "merge_requests"
            or len(parts) > 4
        ):
            return self.no_route()
        repo = self._project(parts[1])
        if repo is None:
            return Answer(404, {"message": "404 Project Not Found"})
        if len(parts) == 3:
            if call.method == "GET":
                return self._list(call, repo)
            if call.method == "POST":
                return self._create(call, repo)
            return Answer(405, {"message": "405 Method Not Allowed"})
        mr = next((m for m in self._of(repo) if str(m["iid"]) == parts[3]), None)
        if mr is None:
            return Answer(404, {"message": "404 Not found"})
        if call.method == "PUT":
            return self._update(call, mr)
        if call.method == "GET":
            return Answer(200, mr)
        return Answer(405, {"message": "405 Method Not Allowed"})

    def _of(self, repo: str) -> list[dict[str, Any]]:
        project = self.project_ids.get(repo)
        return [m for m in self.prs if m["project_id"] == project]

    def _users(self, call: Call) -> Answer:
        wanted = (call.param("username") or "").lower()
        found = [
            {"id": i, "username": n, "name": n, "state": "active", "web_url": f"{self.web}/{n}"}
            for n, i in self.users.items()
            if not wanted or n.lower() == wanted
        ]
        return Answer(200, found)

    def _list(self, call: Call, repo: str) -> Answer:
        state = call.param("state") or "all"
        items = [m for m in self._of(repo) if state == "all" or m["state"] == state]
        if not self.filters_ignored:
            for key in ("source_branch", "target_branch"):
                value = call.param(key)
                if value:
                    items = [m for m in items if m[key] == value]
        items.sort(key=lambda m: -int(m["id"]))  # newest first
        shown, number, last, size = self.page(call, items, "per_page")
        headers = {
            "X-Page": str(number),
            "X-Per-Page": str(size),
            "X-Next-Page": str(number + 1) if number < last else "",
            "X-Prev-Page": str(number - 1) if number > 1 else "",
            "X-Total": str(len(items)),
            "X-Total-Pages": str(last),
        }
        link = self.link_header(call, number, last)
        if link:
            headers["Link"] = link
        return Answer(200, shown, headers)

    def _create(self, call: Call, repo: str) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        missing = [f for f in ("source_branch", "target_branch", "title") if not body.get(f)]
        if missing:
            return Answer(400, {"error": ", ".join(f"{f} is missing" for f in missing)})
        head, base = str(body["source_branch"]), str(body["target_branch"])
        if head == base:
            return Answer(
                409, {"message": ["You can't use same project/branch for source and target"]}
            )
        for branch, which in ((head, "Source"), (base, "Target")):
            if not self.exists(repo, branch):
                return Answer(409, {"message": [f'{which} branch "{branch}" does not exist']})
        for mr in self._of(repo):
            if (
                mr["state"] == "opened"
                and mr["source_branch"] == head
                and mr["target_branch"] == base
                and mr["source_project_id"] == mr["target_project_id"]
            ):
                message = "Another open merge request already exists for this source branch"
                message += f": !{mr['iid']}"
                return Answer(409, {"message": [message]})
        ids = [int(i) for i in body.get("reviewer_ids") or [] if str(i).isdigit()]
        mr = self.add_pr(
            repo,
            head,
            base,
            title=str(body["title"]),
            body=str(body.get("description") or ""),
            reviewer_ids=ids,
        )
        return Answer(201, mr)

    def _update(self, call: Call, mr: dict[str, Any]) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        for key in ("title", "description", "target_branch"):
            if key in body:
                mr[key] = body[key]
        if "reviewer_ids" in body:
            mr["reviewers"] = self._reviewers(int(i) for i in body["reviewer_ids"] or [])
        if body.get("state_event") == "close":
            mr["state"] = "closed"
        return Answer(200, mr)


# -- Bitbucket ---------------------------------------------------------------------------------

_BBQL = re.compile(r'^\s*([a-z_.]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')
BITBUCKET_NO_API = (
    "There is no API hosted at this URL.\n\nFor information about our API's, please refer to "
    "the documentation at: https://developer.atlassian.com/bitbucket/api/2/reference/"
)


class FakeBitbucket(FakeForge):
    """Bitbucket Cloud REST 2.0: repository pull requests, BBQL `q` filters on branch names.

    A second pull request between the same branches is not refused: the open one is updated
    and returned (what clients such as atlassian-python-api report; Atlassian's reference does
    not say). An update without `reviewers` is taken as clearing them (the strict reading), so
    a client that drops the reviewers it found is caught.
    """

    name = "bitbucket"
    default_prefix = "/2.0"
    default_web = "https://bitbucket.org"
    default_page_size = 10
    max_page_size = 50

    def __init__(
        self,
        token: str = "fake-token-3f2a9c1e",
        *,
        users: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """users: account_id -> display name of the workspace's users (the token's is "bot")."""
        super().__init__(token, **kwargs)
        self.users = dict(
            users if users is not None else {"557058:alice": "Alice", "557058:bob": "Bob"}
        )
        self.users.setdefault("bot", "klaudio bot")
        self.author_id = "bot"

    def error_body(self, status: int, message: str) -> Any:
        """{"type": "error", "error": {"message": ...}}."""
        return {"type": "error", "error": {"message": message}}

    def unauthorized(self, call: Call) -> Answer:
        """401 "Token is invalid, expired, or not supported for this endpoint."."""
        message = "Token is invalid, expired, or not supported for this endpoint."
        return Answer(401, self.error_body(401, message))

    def no_route(self) -> Answer:
        """404 "Resource not found" with its detail."""
        return Answer(
            404,
            {
                "type": "error",
                "error": {"message": "Resource not found", "detail": BITBUCKET_NO_API},
            },
        )

    def is_open(self, pr: dict[str, Any]) -> bool:
        return bool(pr["state"] == "OPEN")

    def uuid(self, account_id: str) -> str:
        """A stable {UUID} for a user."""
        return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, account_id)) + "}"

    def _user(self, account_id: str) -> dict[str, Any]:
        return {
            "type": "user",
            "account_id": account_id,
            "uuid": self.uuid(account_id),
            "display_name": self.users.get(account_id, account_id),
            "nickname": account_id.split(":")[-1],
        }

    def add_pr(
        self,
        repo: str,
        head: str,
        base: str,
        *,
        title: str = "An existing pull request",
        body: str = "",
        state: str = "OPEN",
        source: str | None = None,
        reviewers: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Store a pull request as if opened earlier (source: the head's repository, a fork)."""
        with self._lock:
            full = self.repo(repo) or repo
            number = 1 + sum(
                1
                for p in self.prs
                if p["destination"]["repository"]["full_name"].lower() == full.lower()
            )
            pr = {
                "type": "pullrequest",
                "id": number,
                "title": title,
                "description": body,
                "state": state,
                "author": self._user(self.author_id),
                "source": {
                    "branch": {"name": head},
                    "repository": {"full_name": source or full, "type": "repository"},
                },
                "destination": {
                    "branch": {"name": base},
                    "repository": {"full_name": full, "type": "repository"},
                },
                "reviewers": [self._user(r) for r in reviewers],
                "participants": [],
                "close_source_branch": False,
                "links": {
                    "self": {"href": f"{self._api()}/repositories/{full}/pullrequests/{number}"},
                    "html": {"href": f"{self.web}/{full}/pull-requests/{number}"},
                },
            }
            self.prs.append(pr)
            return pr

    def route(self, call: Call, path: str) -> Answer:
        parts = path.strip("/").split("/")
        if (
            len(parts) < 4
            or parts[0] != "repositories"
            or parts[3] != "pullrequests"
            or len(parts) > 5
        ):
            return self.no_route()
        name = f"{unquote(parts[1])}/{unquote(parts[2])}"
        repo = self.repo(name)
        if repo is None:
            return Answer(404, self.error_body(404, f"Repository {name} not found"))
        if len(parts) == 4:
            if call.method == "GET":
                return self._list(call, repo)
            if call.method == "POST":
                return self._create(call, repo)
            return Answer(405, self.error_body(405, "Method Not Allowed"))
        pr = next((p for p in self._of(repo) if str(p["id"]) == parts[4]), None)
        if pr is None:
            return Answer(404, self.error_body(404, "Not found"))
        if call.method == "PUT":
            return self._update(call, repo, pr)
        if call.method == "GET":
            return Answer(200, pr)
        return Answer(405, self.error_body(405, "Method Not Allowed"))

    def _of(self, repo: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.prs
            if p["destination"]["repository"]["full_name"].lower() == repo.lower()
        ]

    def _list(self, call: Call, repo: str) -> Answer:
        states = call.query.get("state") or ["OPEN"]
        items = [p for p in self._of(repo) if p["state"] in states]
        where = call.param("q")
        if where and not self.filters_ignored:
            clauses = []
            for clause in where.split(" AND "):
                found = _BBQL.match(clause)
                fields = ("source.branch.name", "destination.branch.name", "state")
                if not found or found[1] not in fields:
                    return Answer(400, self.error_body(400, f"Invalid query: {clause.strip()}"))
                clauses.append((found[1], re.sub(r"\\(.)", r"\1", found[2])))
            items = [p for p in items if all(_dig(p, key) == value for key, value in clauses)]
        items.sort(key=lambda p: -int(p["id"]))
        shown, number, last, size = self.page(call, items, "pagelen")
        body: dict[str, Any] = {
            "size": len(items),
            "page": number,
            "pagelen": size,
            "values": shown,
        }
        if number < last:
            body["next"] = self.page_url(call, number + 1)
        if number > 1:
            body["previous"] = self.page_url(call, number - 1)
        return Answer(200, body)

    def _field_error(self, field: str, problem: str) -> Answer:
        return Answer(
            400,
            {
                "type": "error",
                "error": {"message": f"{field}: {problem}", "fields": {field: [problem]}},
            },
        )

    def _reviewer_list(self, raw: Any) -> list[dict[str, Any]] | Answer:
        chosen: list[dict[str, Any]] = []
        for item in raw or []:
            ident = item.get("account_id") if isinstance(item, dict) else None
            if isinstance(item, dict) and item.get("uuid"):
                ident = next((a for a in self.users if self.uuid(a) == item["uuid"]), None)
            if ident is None or ident not in self.users:
                return Answer(
                    400,
                    {
                        "type": "error",
                        "error": {
                            "message": "Bad request",
                            "fields": {"reviewers": ["Malformed reviewers list."]},
                        },
                    },
                )
            if ident == self.author_id:
                problem = f"{self.users[ident]} is the author and cannot be included as a reviewer."
                return Answer(
                    400,
                    {
                        "type": "error",
                        "error": {"message": "Bad request", "fields": {"reviewers": [problem]}},
                    },
                )
            if all(r["account_id"] != ident for r in chosen):
                chosen.append(self._user(ident))
        return chosen

    def _create(self, call: Call, repo: str) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        if not body.get("title"):
            return self._field_error("title", "This field is required.")
        head = _dig(body, "source.branch.name")
        if not head:
            return self._field_error("source", "This field is required.")
        base = _dig(body, "destination.branch.name") or "main"
        for branch, which in ((head, "source"), (base, "destination")):
            if not self.exists(repo, branch):
                return self._field_error(which, f"Branch not found: {branch}")
        reviewers = self._reviewer_list(body.get("reviewers"))
        if isinstance(reviewers, Answer):
            return reviewers
        for pr in self._of(repo):
            if (
                pr["state"] == "OPEN"
                and _dig(pr, "source.branch.name") == head
                and _dig(pr, "destination.branch.name") == base
            ):
                pr.update(
                    title=body["title"],
                    description=str(body.get("description") or ""),
                    reviewers=reviewers,
                )
                return Answer(201, pr)
        pr = self.add_pr(
            repo, head, base, title=str(body["title"]), body=str(body.get("description") or "")
        )
        pr["reviewers"] = reviewers
        return Answer(201, pr)

    def _update(self, call: Call, repo: str, pr: dict[str, Any]) -> Answer:
        body = call.body if isinstance(call.body, dict) else {}
        reviewers = self._reviewer_list(body.get("reviewers"))
        if isinstance(reviewers, Answer):
            return reviewers
        for key in ("title", "description"):
            if key in body:
                pr[key] = body[key]
        if _dig(body, "destination.branch.name"):
            pr["destination"]["branch"]["name"] = _dig(body, "destination.branch.name")
        pr["reviewers"] = reviewers
        return Answer(200, pr)


def _dig(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _int(value: str | None, default: int) -> int:
    return int(value) if value and value.isdigit() else default


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


FAKES: dict[str, type[FakeForge]] = {
    "github": FakeGitHub,
    "gitlab": FakeGitLab,
    "bitbucket": FakeBitbucket,
}
