"""The forge clients against the fake GitHub, GitLab and Bitbucket APIs of tests/forges.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from klaudio.errors import InvalidArgument
from klaudiod import forges
from klaudiod.forges import ForgeError, RepoRef
from klaudiod.forges.http import Api, next_link
from tests.forges import FAKES, FakeBitbucket, FakeForge, FakeGitHub, FakeGitLab

TOKEN = "ghp_S3cr3tT0ken/with+odd=chars"
HEAD = "klaudio/3f2a9c1e"
URLS = {
    "github": "https://github.com/acme/widgets.git",
    "gitlab": "https://gitlab.com/acme/widgets.git",
    "bitbucket": "https://bitbucket.org/acme/widgets.git",
}
REVIEWERS = {"github": ["alice"], "gitlab": ["alice"], "bitbucket": ["557058:alice"]}
KIND = {"github": "pull request", "gitlab": "merge request", "bitbucket": "pull request"}


@pytest.fixture(params=sorted(FAKES))
def fake(request: pytest.FixtureRequest) -> Iterator[FakeForge]:
    with FAKES[request.param](TOKEN) as api:
        yield api


def client(fake: FakeForge, token: str = TOKEN, **kwargs: Any) -> forges.Forge:
    return forges.for_forge(fake.name, fake.api_url, token, **kwargs)


def repo_of(fake: FakeForge) -> RepoRef:
    return forges.parse_repo(fake.name, URLS[fake.name], fake.api_url)


def deliver(fake: FakeForge, token: str = TOKEN, **kwargs: Any) -> forges.PullRequest:
    return client(fake, token, **kwargs).open_or_update_pr(
        repo_of(fake), HEAD, "main", "Fix the flaky test", "The plan.\n\nDone.", []
    )


def fail(fake: FakeForge, token: str = TOKEN, **kwargs: Any) -> ForgeError:
    with pytest.raises(ForgeError) as caught:
        deliver(fake, token, **kwargs)
    return caught.value


def heads(fake: FakeForge) -> list[tuple[str, str]]:
    """(head, base) of every open pull request, whatever the forge's shape."""
    out = []
    for pr in fake.open_prs():
        if isinstance(fake, FakeGitHub):
            out.append((pr["head"]["ref"], pr["base"]["ref"]))
        elif isinstance(fake, FakeGitLab):
            out.append((pr["source_branch"], pr["target_branch"]))
        else:
            out.append((pr["source"]["branch"]["name"], pr["destination"]["branch"]["name"]))
    return out


def text_of(fake: FakeForge, pr: dict[str, Any]) -> tuple[str, str]:
    return pr["title"], pr["body" if isinstance(fake, FakeGitHub) else "description"]


def creates(fake: FakeForge) -> list[Any]:
    pattern = {"github": r"/pulls$", "gitlab": r"/merge_requests$", "bitbucket": r"/pullrequests$"}
    return fake.calls_to("POST", pattern[fake.name])


def seed(fake: FakeForge, head: str = HEAD, base: str = "main", **kwargs: Any) -> dict[str, Any]:
    if isinstance(fake, FakeGitLab) and kwargs.get("state") == "closed":
        kwargs["state"] = "closed"
    elif isinstance(fake, FakeBitbucket) and "state" in kwargs:
        kwargs["state"] = kwargs["state"].upper()
    return fake.add_pr("acme/widgets", head, base, **kwargs)  # type: ignore[attr-defined,no-any-return]


# -- opening and updating ------------------------------------------------------------------------


def test_opens_a_pull_request_with_title_body_base_and_the_forges_auth(fake: FakeForge) -> None:
    pr = client(fake).open_or_update_pr(
        repo_of(fake), HEAD, "main", "Fix the flaky test", "The plan.", REVIEWERS[fake.name]
    )

    assert pr.created and pr.number == 1
    web = {
        "github": "https://github.com/acme/widgets/pull/1",
        "gitlab": "https://gitlab.com/acme/widgets/-/merge_requests/1",
        "bitbucket": "https://bitbucket.org/acme/widgets/pull-requests/1",
    }
    assert pr.url == web[fake.name]
    (stored,) = fake.open_prs()
    assert heads(fake) == [(HEAD, "main")]
    assert text_of(fake, stored) == ("Fix the flaky test", "The plan.")
    for call in fake.calls:
        assert call.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in call.target
    if fake.name == "github":
        assert all(c.headers["accept"] == "application/vnd.github+json" for c in fake.calls)
        assert all(c.headers["x-github-api-version"] == "2022-11-28" for c in fake.calls)
        assert stored["requested_reviewers"] == [{"login": "alice"}]
    elif fake.name == "gitlab":
        assert [r["username"] for r in stored["reviewers"]] == ["alice"]
        assert fake.calls_to("GET", "/users$")[0].param("username") == "alice"
    else:
        assert [r["account_id"] for r in stored["reviewers"]] == ["557058:alice"]


def test_the_lookup_asks_for_open_ones_from_this_head_to_this_base(fake: FakeForge) -> None:
    deliver(fake)

    lookup = fake.calls_to("GET")[0]
    if fake.name == "github":
        assert lookup.path == "/repos/acme/widgets/pulls"
        assert lookup.param("state") == "open"
        assert lookup.param("head") == f"acme:{HEAD}"  # GitHub ignores a head without OWNER:
        assert lookup.param("base") == "main"
    elif fake.name == "gitlab":
        assert lookup.path == "/api/v4/projects/acme%2Fwidgets/merge_requests"
        assert lookup.param("state") == "opened"
        assert (lookup.param("source_branch"), lookup.param("target_branch")) == (HEAD, "main")
    else:
        assert lookup.path == "/2.0/repositories/acme/widgets/pullrequests"
        assert lookup.param("state") == "OPEN"
        where = f'source.branch.name = "{HEAD}" AND destination.branch.name = "main"'
        assert lookup.param("q") == where


def test_an_open_pull_request_is_updated_not_duplicated(fake: FakeForge) -> None:
    existing = seed(fake, title="Old title", body="Old body")

    pr = deliver(fake)

    assert not pr.created
    assert pr.number == existing.get("iid", existing.get("number", existing.get("id")))
    assert text_of(fake, existing) == ("Fix the flaky test", "The plan.\n\nDone.")
    assert heads(fake) == [(HEAD, "main")]
    assert creates(fake) == []


def test_closed_ones_forks_and_other_bases_are_not_adopted(fake: FakeForge) -> None:
    seed(fake, state="closed")
    seed(fake, base="release")
    if isinstance(fake, FakeGitLab):
        fake.add_pr("acme/widgets", HEAD, "main", source_project_id=999)
    else:
        seed(fake, source="someone/widgets")
    fake.filters_ignored = True  # even when the forge returns them all

    pr = deliver(fake)

    assert pr.created
    assert len(creates(fake)) == 1


def test_the_open_one_on_page_two_is_found(fake: FakeForge) -> None:
    fake.filters_ignored = True
    fake.page_size = 2
    target = seed(fake, title="Old")  # oldest: listed last, newest first
    for n in range(3):
        seed(fake, head=f"feature/{n}")

    pr = deliver(fake)

    assert not pr.created and pr.url
    assert text_of(fake, target)[0] == "Fix the flaky test"
    pages = [c.param("page") for c in fake.calls_to("GET") if "users" not in c.path]
    assert pages == [None, "2"]
    assert creates(fake) == []


@pytest.mark.parametrize("name", ["github", "gitlab"])
def test_one_opened_between_lookup_and_create_is_adopted(name: str) -> None:
    with FAKES[name](TOKEN) as fake:
        seed(fake, title="Opened meanwhile")
        # The first lookup misses it (opened a moment later), the create is refused.
        fake.fail_next(200, [], method="GET")

        pr = deliver(fake)

        assert not pr.created and pr.number == 1
        assert heads(fake) == [(HEAD, "main")]
        assert [c.status for c in creates(fake)] == [422 if name == "github" else 409]
        assert text_of(fake, fake.open_prs()[0])[0] == "Fix the flaky test"


def test_bitbucket_opened_meanwhile_is_updated_by_the_create() -> None:
    with FakeBitbucket(TOKEN) as fake:
        seed(fake, title="Opened meanwhile")
        fake.fail_next(200, {"values": [], "page": 1, "pagelen": 50, "size": 0}, method="GET")

        pr = deliver(fake)

        assert pr.number == 1
        assert heads(fake) == [(HEAD, "main")]


# -- reviewers -----------------------------------------------------------------------------------


def test_github_users_and_teams_are_requested() -> None:
    with FakeGitHub(TOKEN, teams=["core"]) as fake:
        pr = client(fake).open_or_update_pr(
            repo_of(fake), HEAD, "main", "t", "b", ["alice", "acme/core"]
        )

        (request,) = fake.calls_to("POST", "requested_reviewers$")
        assert request.path == f"/repos/acme/widgets/pulls/{pr.number}/requested_reviewers"
        assert request.body == {"reviewers": ["alice"], "team_reviewers": ["core"]}


def test_github_reviewers_refused_keep_the_pull_request_on_the_error() -> None:
    with FakeGitHub(TOKEN, collaborators=["alice"]) as fake:
        with pytest.raises(ForgeError) as caught:
            client(fake).open_or_update_pr(repo_of(fake), HEAD, "main", "t", "b", ["mallory"])

        assert str(caught.value) == (
            "github: requesting reviewers mallory on acme/widgets#1: 422 Reviews may only be "
            "requested from collaborators. One or more of the users or teams you specified is "
            "not a collaborator of the acme/widgets repository."
        )
        assert caught.value.status == 422
        assert caught.value.pull_request is not None
        assert caught.value.pull_request.url == "https://github.com/acme/widgets/pull/1"


def test_gitlab_unknown_reviewer_fails_before_anything_is_opened() -> None:
    with FakeGitLab(TOKEN) as fake:
        with pytest.raises(ForgeError) as caught:
            client(fake).open_or_update_pr(repo_of(fake), HEAD, "main", "t", "b", ["nobody"])

        assert str(caught.value) == "gitlab: looking up reviewer nobody: no such user"
        assert fake.prs == []


def test_gitlab_update_keeps_the_reviewers_already_there() -> None:
    with FakeGitLab(TOKEN) as fake:
        existing = fake.add_pr("acme/widgets", HEAD, "main", reviewer_ids=[12])

        client(fake).open_or_update_pr(repo_of(fake), HEAD, "main", "t", "b", ["alice"])

        assert fake.calls_to("PUT")[0].body["reviewer_ids"] == [12, 11]
        assert [r["username"] for r in existing["reviewers"]] == ["bob", "alice"]


def test_bitbucket_update_keeps_the_reviewers_already_there_and_takes_uuids() -> None:
    with FakeBitbucket(TOKEN) as fake:
        existing = fake.add_pr("acme/widgets", HEAD, "main", reviewers=["557058:bob"])
        bob = fake.uuid("557058:bob")

        client(fake).open_or_update_pr(
            repo_of(fake), HEAD, "main", "t", "b", ["557058:alice", "557058:bob", bob]
        )

        sent = fake.calls_to("PUT")[0].body["reviewers"]
        assert sent == [{"uuid": bob}, {"account_id": "557058:alice"}]
        assert [r["account_id"] for r in existing["reviewers"]] == ["557058:bob", "557058:alice"]


def test_bitbucket_update_without_reviewers_sends_back_those_there() -> None:
    with FakeBitbucket(TOKEN) as fake:
        existing = fake.add_pr("acme/widgets", HEAD, "main", reviewers=["557058:bob"])

        deliver(fake)

        assert [r["account_id"] for r in existing["reviewers"]] == ["557058:bob"]


# -- errors: one line, the forge's message, the token masked ---------------------------------------


def test_a_bad_token_is_one_line_with_the_forges_message(fake: FakeForge) -> None:
    error = fail(fake, token="wrong-token")

    lookup = f"looking up open {KIND[fake.name]}s acme/widgets {HEAD} -> main"
    message = {
        "github": "401 Bad credentials",
        "gitlab": "401 Unauthorized",
        "bitbucket": "401 Token is invalid, expired, or not supported for this endpoint.",
    }
    assert str(error) == f"{fake.name}: {lookup}: {message[fake.name]}"
    assert error.status == 401
    assert fake.prs == []


def test_an_unknown_repository_is_404(fake: FakeForge) -> None:
    url = URLS[fake.name].replace("widgets", "nothing")
    with pytest.raises(ForgeError) as caught:
        client(fake).open_or_update_pr(
            forges.parse_repo(fake.name, url), HEAD, "main", "t", "b", []
        )

    message = {
        "github": "404 Not Found",
        "gitlab": "404 Project Not Found",
        "bitbucket": "404 Repository acme/nothing not found",
    }
    assert str(caught.value).endswith(f"acme/nothing {HEAD} -> main: {message[fake.name]}")
    assert caught.value.status == 404


def test_validation_errors_name_the_problem(fake: FakeForge) -> None:
    fake.branch_exists = lambda repo, branch: branch != "nope"
    with pytest.raises(ForgeError) as caught:
        client(fake).open_or_update_pr(repo_of(fake), HEAD, "nope", "t", "b", [])

    create = f"creating {KIND[fake.name]} acme/widgets {HEAD} -> nope"
    message = {
        "github": "422 Validation Failed: PullRequest base invalid",
        "gitlab": '409 Target branch "nope" does not exist',
        "bitbucket": "400 destination: Branch not found: nope",
    }
    assert str(caught.value) == f"{fake.name}: {create}: {message[fake.name]}"


def test_gitlab_missing_field_and_field_problems() -> None:
    with FakeGitLab(TOKEN) as fake:
        with pytest.raises(ForgeError) as caught:
            client(fake).open_or_update_pr(repo_of(fake), HEAD, "main", "", "b", [])
        assert str(caught.value).endswith("-> main: 400 title is missing")

        problems = {"message": {"title": ["can't be blank"], "source_branch": ["is invalid"]}}
        fake.fail_next(400, problems, method="POST")
        with pytest.raises(ForgeError) as caught:
            deliver(fake)
        assert str(caught.value).endswith(
            "-> main: 400 title can't be blank; source_branch is invalid"
        )


def test_github_already_exists_shows_its_message_when_not_adoptable() -> None:
    body = {
        "message": "Validation Failed",
        "errors": [
            {
                "resource": "PullRequest",
                "code": "custom",
                "message": f"A pull request already exists for acme:{HEAD}.",
            }
        ],
        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        "status": "422",
    }
    with FakeGitHub(TOKEN) as fake:
        fake.fail_next(422, body, method="POST")
        error = fail(fake)

    assert str(error) == (
        f"github: creating pull request acme/widgets {HEAD} -> main: 422 Validation Failed: "
        f"A pull request already exists for acme:{HEAD}."
    )


def echoing(fake: FakeForge, text: str) -> Any:
    if isinstance(fake, FakeGitHub):
        return {"message": "Validation Failed", "errors": [{"message": text}]}
    if isinstance(fake, FakeGitLab):
        return {"message": [text]}
    return {"type": "error", "error": {"message": "Bad request", "detail": text}}


def test_the_token_is_masked_where_the_forge_echoes_it(fake: FakeForge) -> None:
    quoted = "ghp_S3cr3tT0ken%2Fwith%2Bodd%3Dchars"
    fake.fail_next(422, echoing(fake, f"bad remote https://x:{TOKEN}@h/r and ?t={quoted}"))

    error = fail(fake)

    for text in (str(error), repr(error), error.reason, *map(str, error.args)):
        assert TOKEN not in text and quoted not in text and "S3cr3t" not in text
    assert "bad remote https://x:***@h/r and ?t=***" in str(error)
    assert "\n" not in str(error)


def test_multi_line_and_long_messages_become_one_line(fake: FakeForge) -> None:
    text = "first\n\n  second\tline " + "x" * 1000
    body = echoing(fake, text) if fake.name != "bitbucket" else fake.error_body(500, text)
    fake.fail_next(500, body)

    error = fail(fake)

    assert "\n" not in str(error) and "first second line" in str(error)
    assert len(str(error)) <= 600


def test_bitbucket_detail_adds_its_first_line() -> None:
    with FakeBitbucket(TOKEN) as fake:
        fake.fail_next(404, fake.no_route().body)
        error = fail(fake)

    assert str(error).endswith(
        "-> main: 404 Resource not found: There is no API hosted at this URL."
    )


def test_an_html_error_page_gives_the_status_phrase(fake: FakeForge) -> None:
    fake.fail_next(503, "<html><body>upstream down</body></html>")

    error = fail(fake)

    assert str(error).endswith("main: 503 Service Unavailable")
    assert error.status == 503


def test_a_timeout_is_one_line(fake: FakeForge) -> None:
    fake.delay_next(2.0)

    error = fail(fake, timeout=0.3)

    host = fake.origin.removeprefix("http://")
    assert str(error).endswith(f"-> main: no answer from {host} within 0.3s")
    assert error.status is None


def test_a_dropped_connection_is_one_line(fake: FakeForge) -> None:
    fake.fail_next(0)

    error = fail(fake)

    assert "cannot reach 127.0.0.1:" in str(error) and "\n" not in str(error)


def test_a_refused_connection_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    forge = forges.for_forge("github", f"http://127.0.0.1:{port}", TOKEN)

    with pytest.raises(ForgeError) as caught:
        forge.open_or_update_pr(
            RepoRef("github.com", "acme", "widgets"), HEAD, "main", "t", "b", []
        )

    assert str(caught.value) == (
        f"github: looking up open pull requests acme/widgets {HEAD} -> main: "
        f"cannot reach 127.0.0.1:{port}: [Errno 111] Connection refused"
    )


def test_redirects_are_followed_only_within_the_apis_origin() -> None:
    with FakeGitHub(TOKEN) as fake:
        moved = f"{fake.api_url}/repos/acme/widgets/pulls?state=open&head=acme%3A{HEAD}&base=main"
        fake.fail_next(
            301, {"message": "Moved Permanently"}, method="GET", headers={"Location": moved}
        )

        assert deliver(fake).created
        assert fake.calls[1].headers["authorization"] == f"Bearer {TOKEN}"

        fake.fail_next(307, None, method="GET", headers={"Location": "http://127.0.0.2:9/steal"})
        with pytest.raises(ForgeError) as caught:
            deliver(fake)
        assert str(caught.value).endswith("redirected to another host (127.0.0.2:9); not followed")


def test_a_next_page_on_another_host_is_refused() -> None:
    api = Api("github", "http://127.0.0.1:1/api/v3", {}, TOKEN, lambda data, text: "")

    with pytest.raises(ForgeError) as caught:
        api.get_url("http://evil.example/api/v3/repos?page=2", "listing")

    assert str(caught.value) == "github: listing: the next page is on another host (evil.example)"


def test_no_repr_shows_the_token(fake: FakeForge) -> None:
    forge = client(fake)

    assert TOKEN not in repr(forge) and TOKEN not in repr(forge.api)  # type: ignore[attr-defined]
    assert repr(forge) == f"{type(forge).__name__}({fake.api_url!r})"


def test_link_header_parsing() -> None:
    header = (
        '<https://api.github.com/repositories/1/pulls?page=1>; rel="prev", '
        '<https://api.github.com/repositories/1/pulls?page=3>; rel="next", '
        '<https://api.github.com/repositories/1/pulls?page=9>; rel="last"'
    )
    assert next_link(header) == "https://api.github.com/repositories/1/pulls?page=3"
    assert next_link('<https://x/a?page=2>; rel="last"') is None
    assert next_link(None) is None


# -- Enterprise and self-hosted --------------------------------------------------------------------


def test_github_enterprise_server() -> None:
    with FakeGitHub(TOKEN, prefix="/api/v3", web="https://ghe.example.com") as fake:
        assert (
            forges.default_api_url("github", "ghe.example.com") == "https://ghe.example.com/api/v3"
        )
        forge = forges.for_forge("github", fake.api_url, TOKEN)
        repo = forges.parse_repo("github", "git@ghe.example.com:acme/widgets.git")

        pr = forge.open_or_update_pr(repo, HEAD, "main", "t", "b", [])

        assert pr.url == "https://ghe.example.com/acme/widgets/pull/1"
        assert all(c.path.startswith("/api/v3/repos/acme/widgets/pulls") for c in fake.calls)


def test_self_hosted_gitlab_under_a_relative_root_with_nested_groups() -> None:
    with FakeGitLab(
        TOKEN,
        prefix="/gitlab/api/v4",
        repos=["platform/backend/api"],
        web="https://example.com/gitlab",
    ) as fake:
        api_url = fake.api_url
        repo = forges.parse_repo(
            "gitlab", "https://example.com/gitlab/platform/backend/api.git", api_url
        )
        assert repo == RepoRef("example.com", "platform/backend", "api")

        pr = forges.for_forge("gitlab", api_url, TOKEN).open_or_update_pr(
            repo, HEAD, "main", "t", "b", []
        )

        assert pr.url == "https://example.com/gitlab/platform/backend/api/-/merge_requests/1"
        assert (
            fake.calls[0].path == "/gitlab/api/v4/projects/platform%2Fbackend%2Fapi/merge_requests"
        )


def test_default_api_urls() -> None:
    assert forges.for_forge("github", None, TOKEN).api_url == "https://api.github.com"
    assert forges.for_forge("gitlab", "", TOKEN).api_url == "https://gitlab.com/api/v4"
    assert forges.for_forge("bitbucket", None, TOKEN).api_url == "https://api.bitbucket.org/2.0"
    assert forges.for_forge("gitlab", "https://gl.example.com/api/v4/", TOKEN).api_url == (
        "https://gl.example.com/api/v4"
    )
    assert forges.default_api_url("github", "github.com") == "https://api.github.com"
    assert forges.default_api_url("gitlab", "gl.example.com") == "https://gl.example.com/api/v4"
    assert forges.default_api_url("bitbucket", "bitbucket.org") == "https://api.bitbucket.org/2.0"


@pytest.mark.parametrize(
    "api_url",
    [
        "ftp://ghe.example.com/api",
        "https://u:pw@ghe.example.com/api/v3",
        "https://x/api?y=1",
        "ghe",
    ],
)
def test_bad_api_urls_are_refused(api_url: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        forges.for_forge("github", api_url, TOKEN)
    assert "pw" not in str(caught.value)


def test_unknown_forge() -> None:
    with pytest.raises(
        InvalidArgument, match="unknown forge 'gitea': expected one of github, gitlab, bitbucket"
    ):
        forges.for_forge("gitea", None, TOKEN)


# -- URLs, detection, clone credentials -----------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "url", "expected"),
    [
        ("github", "https://github.com/acme/widgets", ("github.com", "acme", "widgets")),
        ("github", "https://github.com/acme/widgets.git/", ("github.com", "acme", "widgets")),
        ("github", "git@github.com:acme/widgets.git", ("github.com", "acme", "widgets")),
        ("github", "ssh://git@github.com:22/acme/.github.git", ("github.com", "acme", ".github")),
        (
            "github",
            "https://x-access-token:tok@GitHub.com/Acme/Widgets",
            ("github.com", "Acme", "Widgets"),
        ),
        ("gitlab", "https://gitlab.com/acme/widgets.git", ("gitlab.com", "acme", "widgets")),
        ("gitlab", "https://gitlab.com/a/b/c/d.git", ("gitlab.com", "a/b/c", "d")),
        ("gitlab", "git@gitlab.com:a/b/c.git", ("gitlab.com", "a/b", "c")),
        ("gitlab", "https://gitlab.com/a/b/-/merge_requests/3", ("gitlab.com", "a", "b")),
        (
            "bitbucket",
            "https://me@bitbucket.org/ws/repo-slug.git",
            ("bitbucket.org", "ws", "repo-slug"),
        ),
        ("bitbucket", "git@bitbucket.org:ws/repo_slug.git", ("bitbucket.org", "ws", "repo_slug")),
    ],
)
def test_repository_urls(forge: str, url: str, expected: tuple[str, str, str]) -> None:
    assert forges.parse_repo(forge, url) == RepoRef(*expected)


def test_gitlab_project_path_is_url_encoded_in_calls() -> None:
    repo = forges.parse_repo("gitlab", "https://gitlab.com/a/b/c.git")
    assert repo.path == "a/b/c" and str(repo) == "a/b/c"


@pytest.mark.parametrize(
    ("forge", "url"),
    [
        ("github", "https://github.com/acme"),
        ("github", "https://github.com/acme/widgets/tree/main"),
        ("github", "https://github.com/acme/../widgets"),
        ("github", "https://github.com/acme/wid%20gets"),
        ("gitlab", "https://gitlab.com/solo.git"),
        ("bitbucket", "https://bitbucket.org/ws"),
        ("github", "file:///srv/acme/widgets"),
        ("github", "/srv/acme/widgets"),
        ("github", "github.com/acme/widgets"),
        ("github", ""),
    ],
)
def test_urls_naming_no_repository_are_refused(forge: str, url: str) -> None:
    with pytest.raises(InvalidArgument):
        forges.parse_repo(forge, url)


def test_a_token_in_a_refused_url_is_not_echoed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        forges.parse_repo("github", f"https://x-access-token:{TOKEN}@github.com/acme")
    assert TOKEN not in str(caught.value)
    assert "https://***@github.com/acme" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "forge"),
    [
        ("https://github.com/acme/widgets.git", "github"),
        ("git@github.com:acme/widgets.git", "github"),
        ("ssh://git@github.com/acme/widgets", "github"),
        ("https://gitlab.com/a/b/c.git", "gitlab"),
        ("git@gitlab.com:a/b.git", "gitlab"),
        ("https://me@bitbucket.org/ws/r.git", "bitbucket"),
        ("git@bitbucket.org:ws/r.git", "bitbucket"),
        ("https://ghe.example.com/acme/widgets.git", None),
        ("https://gitlab.example.com/a/b.git", None),
        ("https://github.com.evil.example/acme/widgets", None),
        ("/srv/repos/widgets", None),
        ("not a url", None),
    ],
)
def test_detect(url: str, forge: str | None) -> None:
    assert forges.detect(url) == forge


def test_clone_credentials() -> None:
    assert forges.clone_auth("github", "t") == ("x-access-token", "t")
    assert forges.clone_auth("gitlab", "t") == ("oauth2", "t")
    assert forges.clone_auth("bitbucket", "t") == ("x-token-auth", "t")
    assert forges.clone_username("gitlab") == "oauth2"
    assert forges.for_forge("bitbucket", None, "t").clone_auth("t") == ("x-token-auth", "t")


def test_bitbucket_branch_names_are_quoted_in_the_query() -> None:
    with FakeBitbucket(TOKEN) as fake:
        odd = 'fix/"quoted"\\name'
        existing = fake.add_pr("acme/widgets", odd, "main")

        pr = client(fake).open_or_update_pr(repo_of(fake), odd, "main", "t", "b", [])

        assert not pr.created and existing["title"] == "t"
