"""A git smart-HTTP server for tests: `git http-backend` behind a threaded server on 127.0.0.1.

It serves the bare repositories of one directory, requires HTTP Basic auth with one username and
token (401 with WWW-Authenticate otherwise), allows pushes, and records every request: its raw
target (so a test can assert no token ever rode in a URL), the username it authenticated with,
and the ref updates a push asked for.

    with GitHttpServer(tmp_path / "srv", "x-access-token", "t0k") as git:
        git.create_repo("acme/widgets.git", {"README.md": "hello\\n"})
        url = git.url("acme/widgets.git")
        porcelain.clone(url, dest, username="x-access-token", password="t0k")
"""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

REALM = "klaudio-test"
# git itself, isolated from the user's and the system's configuration.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}


@dataclass(frozen=True)
class RefUpdate:
    """One ref a push asked to change (the zero id: created or deleted)."""

    old: str
    new: str
    ref: str


@dataclass
class GitRequest:
    """One request the server received."""

    method: str
    target: str  # the raw request target: path and query, exactly as sent
    headers: dict[str, str]  # names lower-cased; Authorization kept, for assertions
    username: str | None  # the Basic auth username offered (None: no credentials)
    authorized: bool
    status: int = 0
    pushed: list[RefUpdate] = field(default_factory=list)

    @property
    def service(self) -> str | None:
        """git-upload-pack (fetch) or git-receive-pack (push), if the request names one."""
        parts = urlsplit(self.target)
        if parts.path.endswith(("/git-upload-pack", "/git-receive-pack")):
            return parts.path.rsplit("/", 1)[1]
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return query.get("service")


def git(*args: str | Path, cwd: Path | None = None, input: bytes | None = None) -> str:
    """Run git with the test identity and no user or system configuration; its stdout."""
    done = subprocess.run(
        ["git", *map(str, args)],
        cwd=cwd,
        input=input,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))}: {done.stderr.decode().strip()}")
    return done.stdout.decode()


def create_bare_repo(
    path: Path, files: Mapping[str, str | bytes] | None = None, branch: str = "main"
) -> str:
    """A bare repository at path whose branch holds one commit of files; that commit's id."""
    files = {"README.md": "hello\n"} if files is None else files
    git("init", "-q", "--bare", "-b", branch, path)
    with tempfile.TemporaryDirectory() as work:
        git("init", "-q", "-b", branch, work)
        for name, content in files.items():
            target = Path(work, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        git("-C", work, "add", "-A")
        git("-C", work, "commit", "-q", "-m", "Initial commit")
        git("-C", work, "push", "-q", path, f"HEAD:refs/heads/{branch}")
    return read_refs(path)[f"refs/heads/{branch}"]


def read_refs(path: Path) -> dict[str, str]:
    """ref -> commit id of every branch and tag of a repository."""
    out = git("-C", path, "for-each-ref", "--format=%(objectname) %(refname)")
    pairs = (line.split(" ", 1) for line in out.splitlines() if line)
    return {ref: commit for commit, ref in pairs}


def read_tree(path: Path, rev: str) -> dict[str, bytes]:
    """path -> content of every file in rev's tree."""
    names = git("-C", path, "ls-tree", "-r", "-z", "--name-only", rev).split("\0")
    return {n: _blob(path, f"{rev}:{n}") for n in names if n}


def read_commit(path: Path, rev: str) -> dict[str, str]:
    """The commit's id, parents, author, committer and message."""
    fmt = "%H%x00%P%x00%an <%ae>%x00%cn <%ce>%x00%B"
    commit, parents, author, committer, message = git(
        "-C", path, "log", "-1", f"--format={fmt}", rev
    ).split("\0", 4)
    return {
        "id": commit,
        "parents": parents,
        "author": author,
        "committer": committer,
        "message": message.rstrip("\n"),
    }


def _blob(path: Path, spec: str) -> bytes:
    done = subprocess.run(
        ["git", "-C", str(path), "cat-file", "blob", spec],
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=True,
    )
    return done.stdout


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: GitHttpServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class GitHttpServer:
    """Bare repositories under root over git's smart HTTP protocol, behind Basic auth."""

    def __init__(self, root: Path, username: str | None, password: str) -> None:
        """Serve root; accept username (None: any username) with password as the token."""
        self.root = root
        self.username = username
        self.password = password
        self.requests: list[GitRequest] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> Self:
        """Listen on a free port of 127.0.0.1."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="git-http"
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
        assert self._server is not None, "the server is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, name: str) -> str:
        """The clone URL of the repository root/name (no credentials in it)."""
        return f"{self.origin}/{name}"

    def path(self, name: str) -> Path:
        """Where the bare repository name lives."""
        return self.root / name

    # -- repositories --------------------------------------------------------------------------

    def create_repo(
        self, name: str, files: Mapping[str, str | bytes] | None = None, branch: str = "main"
    ) -> str:
        """A bare repository root/name with one commit of files on branch; its id."""
        return create_bare_repo(self.path(name), files, branch)

    def refs(self, name: str) -> dict[str, str]:
        """ref -> commit id of the repository's branches and tags."""
        return read_refs(self.path(name))

    def tree(self, name: str, rev: str) -> dict[str, bytes]:
        """path -> content of every file of rev in the repository."""
        return read_tree(self.path(name), rev)

    def commit(self, name: str, rev: str) -> dict[str, str]:
        """rev's id, parents, author, committer and message."""
        return read_commit(self.path(name), rev)

    def reject_pushes(self, name: str, message: str) -> None:
        """Refuse every push to the repository with message (a pre-receive hook)."""
        hook = self.path(name) / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho {shlex_quote(message)} >&2\nexit 1\n")
        hook.chmod(0o755)

    def accept_pushes(self, name: str) -> None:
        """Undo reject_pushes."""
        (self.path(name) / "hooks" / "pre-receive").unlink(missing_ok=True)

    @property
    def pushed(self) -> list[RefUpdate]:
        """Every ref update pushes asked for, in order (accepted or not)."""
        return [u for r in list(self.requests) for u in r.pushed]

    # -- the request cycle ---------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Check Basic auth, then run `git http-backend` for the request."""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        username, password = _basic(headers.get("authorization"))
        authorized = password == self.password and (
            self.username is None or username == self.username
        )
        request = GitRequest(handler.command, handler.path, headers, username, authorized)
        with self._lock:
            self.requests.append(request)
        body = _read_body(handler, headers)
        if not authorized:
            self._send(handler, request, 401, {"WWW-Authenticate": f'Basic realm="{REALM}"'}, b"")
            return
        if request.service == "git-receive-pack" and handler.command == "POST":
            request.pushed = _ref_updates(body, headers.get("content-encoding"))
        status, out_headers, out = self._backend(handler, headers, body, username or "")
        self._send(handler, request, status, out_headers, out)

    def _backend(
        self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes, user: str
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(handler.path)
        env = {
            **os.environ,
            **GIT_ENV,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": handler.command,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user,
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
        }
        for name in ("git-protocol", "content-encoding"):
            if name in headers:
                env["HTTP_" + name.upper().replace("-", "_")] = headers[name]
        done = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        )
        head, sep, out = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, out = done.stdout.partition(b"\n\n")
        status, out_headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                out_headers[name.strip()] = value.strip()
        return status, out_headers, out

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        request: GitRequest,
        status: int,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        request.status = status
        try:
            handler.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:
            pass
        handler.close_connection = True


def shlex_quote(text: str) -> str:
    """text quoted for /bin/sh."""
    return "'" + text.replace("'", "'\\''") + "'"


def _basic(header: str | None) -> tuple[str | None, str | None]:
    """(username, password) of a Basic Authorization header."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header.split(" ", 1)[1].strip()).decode("utf-8")
    except ValueError:
        return None, None
    username, _, password = decoded.partition(":")
    return username, password


def _read_body(handler: BaseHTTPRequestHandler, headers: dict[str, str]) -> bytes:
    """The request body, Content-Length or chunked (as git and dulwich send large pushes)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


def _ref_updates(body: bytes, encoding: str | None) -> list[RefUpdate]:
    """The "old new ref" commands at the start of a receive-pack request."""
    if encoding and encoding.lower() in ("gzip", "x-gzip"):
        body = gzip.decompress(body)
    updates: list[RefUpdate] = []
    at = 0
    while at + 4 <= len(body):
        length = int(body[at : at + 4], 16)
        if length == 0:
            break
        line = body[at + 4 : at + length].split(b"\0", 1)[0].rstrip(b"\n").decode()
        at += length
        if line.startswith("shallow "):
            continue
        old, new, ref = line.split(" ", 2)
        updates.append(RefUpdate(old, new, ref))
    return updates
