"""Forges behind one interface: open or update a pull request, and clone credentials for a token.

Each forge is one module of this package (github, gitlab, bitbucket) defining a `BaseForge`
subclass named `FORGE`; listing its name in `FORGES` is all it takes to add one. Every failure
is a `ForgeError`: one line naming the forge, the call, the HTTP status and the forge's own
message, with the token masked.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import urlsplit

from klaudio.errors import InvalidArgument, Unavailable

if TYPE_CHECKING:
    from klaudiod.forges.http import Api

# The forge modules, by the name templates and `--forge` use.
FORGES = ("github", "gitlab", "bitbucket")

# scp-like ssh addresses: [user@]host:path (no scheme, a colon before any slash).
_SCP = re.compile(r"^(?:[^@/:]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)$")
_SCHEMES = ("http", "https", "ssh", "git+ssh", "git")
# One path segment of an owner, group, workspace or repository name.
_SEGMENT = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9_.-]+$", re.ASCII)


class ForgeError(Unavailable):
    """A forge call failed; the message is one line and never holds the token.

    Unavailable (exit 5, gRPC UNAVAILABLE) like Docker's failures: an outside service refused
    or did not answer. `status` is the HTTP status (None for timeouts and connection errors),
    `reason` the forge's own message, and `pull_request` the pull request opened or updated
    before the failure, if any (reviewers could not be requested, say).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        reason: str = "",
        pull_request: PullRequest | None = None,
    ) -> None:
        """A forge failure; message is the whole line, already masked."""
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.pull_request = pull_request


@dataclass(frozen=True)
class RepoRef:
    """A repository on a forge, parsed from its clone URL.

    owner: GitHub's owner, GitLab's namespace (nested groups keep their slashes), Bitbucket's
    workspace; name: the repository, project or repo slug.
    """

    host: str
    owner: str
    name: str

    @property
    def path(self) -> str:
        """owner/name, as the forge shows it (and GitLab's project path, before encoding)."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        """The path: `acme/widgets`."""
        return self.path


@dataclass(frozen=True)
class PullRequest:
    """A pull (merge) request as delivered.

    number: the forge's number (GitLab's iid); url: the web page people open; created: this
    call opened it (False: an open one was found and updated).
    """

    number: int
    url: str
    created: bool


class Forge(Protocol):
    """What delivery needs of a forge."""

    @property
    def name(self) -> str:
        """github, gitlab or bitbucket."""
        ...

    @property
    def api_url(self) -> str:
        """The API this client calls."""
        ...

    def repo_ref(self, url: str) -> RepoRef:
        """The repository a clone URL names (InvalidArgument when it names none)."""
        ...

    def open_or_update_pr(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[str]
    ) -> PullRequest:
        """Update the open pull request from head to base, or open one; then request reviewers."""
        ...

    def clone_auth(self, token: str) -> tuple[str, str]:
        """The HTTP Basic (username, password) this forge takes for git over HTTPS."""
        ...


class BaseForge(ABC):
    """What the forges share: the API client, URL parsing, clone credentials, a safe repr."""

    name: ClassVar[str]
    hosts: ClassVar[tuple[str, ...]]
    default_api: ClassVar[str]
    clone_username: ClassVar[str]

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        """A client of the API at api_url, authenticating with token."""
        from klaudiod.forges.http import Api  # it raises ForgeError, defined here

        self.api_url = api_url
        headers = self.auth_headers(token)
        self.api: Api = Api(self.name, api_url, headers, token, self.describe, timeout)

    def __repr__(self) -> str:
        """Names the forge and its API, never the token."""
        return f"{type(self).__name__}({self.api_url!r})"

    @classmethod
    @abstractmethod
    def auth_headers(cls, token: str) -> dict[str, str]:
        """The headers that authenticate an API call."""

    @staticmethod
    @abstractmethod
    def describe(data: object, text: str) -> str:
        """The forge's own message from an error body (parsed JSON, or None, and raw text)."""

    @classmethod
    def default_api_url(cls, host: str | None = None) -> str:
        """The API of the forge's cloud, or of a self-hosted instance at host."""
        return cls.default_api

    def clone_auth(self, token: str) -> tuple[str, str]:
        """The HTTP Basic (username, password) for git over HTTPS with token."""
        return self.clone_username, token

    def repo_ref(self, url: str) -> RepoRef:
        """owner/name from a clone URL; exactly two path segments."""
        host, segments = split_url(url)
        if len(segments) != 2:
            raise InvalidArgument(
                f"{redact(url)}: not a {self.name} repository URL (expected OWNER/NAME)"
            )
        return RepoRef(host, segments[0], segments[1])

    def open_or_update_pr(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[str]
    ) -> PullRequest:
        """Update the open pull request from head to base, or open one; then request reviewers.

        One opened meanwhile (the forge answers that it already exists) is found and updated.

        Raises:
            ForgeError: naming the call that failed; when only the reviewers could not be
                requested, its pull_request is the one opened or updated.
        """
        wanted = self.resolve_reviewers(reviewers)
        found = self.find(repo, head, base)
        if found is None:
            try:
                pr = self.create(repo, head, base, title, body, wanted)
            except ForgeError as exc:
                if not self.already_exists(exc):
                    raise
                found = self.find(repo, head, base)
                if found is None:
                    raise
                pr = self.update(repo, found, title, body, wanted)
        else:
            pr = self.update(repo, found, title, body, wanted)
        if wanted:
            try:
                self.request_reviewers(repo, pr, wanted)
            except ForgeError as exc:
                exc.pull_request = pr
                raise
        return pr

    # The steps, per forge. `found` is the forge's own JSON object of the pull request.

    def resolve_reviewers(self, reviewers: list[str]) -> list[Any]:
        """Reviewers as the forge's calls take them (user ids, say), before anything is opened."""
        return list(reviewers)

    @abstractmethod
    def find(self, repo: RepoRef, head: str, base: str) -> dict[str, Any] | None:
        """The open pull request from head to base in repo itself (not from a fork), if any."""

    @abstractmethod
    def create(
        self, repo: RepoRef, head: str, base: str, title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """Open a pull request (with its reviewers, where the forge takes them at once)."""

    @abstractmethod
    def update(
        self, repo: RepoRef, found: dict[str, Any], title: str, body: str, reviewers: list[Any]
    ) -> PullRequest:
        """Replace the title and body of found (adding reviewers, where the forge takes them)."""

    def already_exists(self, exc: ForgeError) -> bool:
        """Whether a failed create means an open pull request from head to base exists."""
        return False

    def request_reviewers(self, repo: RepoRef, pr: PullRequest, reviewers: list[Any]) -> None:
        """Ask reviewers for a review, where that is a call of its own."""
        return  # by default the forge took them with create or update


def redact(url: str) -> str:
    """url with anything before an `@` of its authority hidden (for messages).

    Taken up to the last `@`, so a token holding `/` or `@` that breaks URL parsing is hidden too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


def split_url(url: str) -> tuple[str, list[str]]:
    """(host, path segments) of a clone URL: http(s), ssh://, git://, or scp-like user@host:path.

    The host is lowercased without port or user; a trailing `.git` and slashes are dropped.

    Raises:
        InvalidArgument: for anything else, or a path segment that is empty, `.`, `..` or holds
            characters no forge allows in a name.
    """
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
            raise InvalidArgument(f"{redact(url)}: not a repository URL (http, https or ssh)")
        host, path = parts.hostname.lower(), parts.path
    else:
        found = _SCP.match(url)
        if not found:
            raise InvalidArgument(f"{redact(url)}: not a repository URL (http, https or ssh)")
        host, path = found["host"].lower(), found["path"]
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    segments = path.split("/")
    if not path or not all(_SEGMENT.match(s) for s in segments):
        raise InvalidArgument(f"{redact(url)}: no repository path in the URL")
    return host, segments


def forge_class(name: str) -> type[BaseForge]:
    """The forge named name (InvalidArgument naming the known ones otherwise)."""
    if name not in FORGES:
        raise InvalidArgument(f"unknown forge {name!r}: expected one of {', '.join(FORGES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    forge: type[BaseForge] = module.FORGE
    return forge


def detect(url: str) -> str | None:
    """The forge a repository URL's host belongs to (github.com, gitlab.com, bitbucket.org).

    None for any other host (an Enterprise or self-hosted one: give the forge explicitly) and
    for what is not a repository URL at all.
    """
    try:
        host, _ = split_url(url)
    except InvalidArgument:
        return None
    for name in FORGES:
        if host in forge_class(name).hosts:
            return name
    return None


def check_api_url(api_url: str) -> str:
    """api_url without a trailing slash, once it is a plain http(s) URL with no credentials."""
    parts = urlsplit(api_url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
    ):
        raise InvalidArgument(f"--api-url {redact(api_url)}: expected an http(s) URL")
    return api_url.rstrip("/")


def for_forge(name: str, api_url: str | None, token: str, *, timeout: float = 30.0) -> Forge:
    """A client of the forge's API: api_url, or the forge's cloud API when it is None or "".

    For example GitHub Enterprise `https://ghe.example.com/api/v3`, a self-hosted GitLab
    `https://gitlab.example.com/api/v4`; the defaults are https://api.github.com,
    https://gitlab.com/api/v4 and https://api.bitbucket.org/2.0.
    """
    forge = forge_class(name)
    url = check_api_url(api_url) if api_url else forge.default_api
    return forge(url, token, timeout)


def default_api_url(name: str, host: str | None = None) -> str:
    """The API URL for a repository on host: the cloud's for its own hosts, else self-hosted.

    GitHub Enterprise answers at https://HOST/api/v3 and GitLab at https://HOST/api/v4;
    Bitbucket is Cloud only.
    """
    return forge_class(name).default_api_url(host)


def clone_auth(name: str, token: str) -> tuple[str, str]:
    """The HTTP Basic (username, password) the forge takes for git over HTTPS with a token."""
    return clone_username(name), token


def clone_username(name: str) -> str:
    """The HTTP Basic username for git over HTTPS with a token.

    x-access-token (GitHub), oauth2 (GitLab), x-token-auth (Bitbucket access tokens).
    """
    return forge_class(name).clone_username


def parse_repo(name: str, url: str, api_url: str | None = None) -> RepoRef:
    """The repository a clone URL names on the forge.

    api_url matters for a self-hosted GitLab under a relative URL root
    (https://example.com/gitlab/api/v4): that prefix is not part of the project path.

    Raises:
        InvalidArgument: the URL names no repository of that forge.
    """
    forge = forge_class(name)
    return forge(check_api_url(api_url) if api_url else forge.default_api, "").repo_ref(url)
