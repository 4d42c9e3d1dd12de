"""`klaudio repo add|list|show|edit|rm`, --repo-template, and template name completion."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_errors import one_error_line
from tests.cli.test_team_cli import complete
from tests.conftest import Instance

SECRET = "ghp_klaudioTestSecretThatMustNeverShow0123"
FILE_SECRET = "glpat-klaudio-file-secret-never-shown-4567"
WIDGETS = "https://github.com/acme/widgets"


def add(instance: Instance, *args: str) -> subprocess.CompletedProcess[str]:
    return instance.cli("repo", "add", *args)


def shown(instance: Instance, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        instance.cli("repo", "show", name, "-o", "json", check=True).stdout
    )
    return data


def git_repo(path: Path) -> Path:
    """A local repository with one commit on main."""
    path.mkdir()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (path / "README.md").write_text("hello\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    return path


@pytest.fixture
def tokened(instance: Instance) -> Instance:
    """A daemon whose environment holds a token a template names."""
    instance.env["GITHUB_TOKEN"] = SECRET
    instance.start_daemon()
    return instance


# Add, list, show ----------------------------------------------------------------------------------


def test_add_then_list_and_show(daemon: Instance) -> None:
    result = add(
        daemon, "widgets", WIDGETS, "--token-env", "GITHUB_TOKEN", "--auto-pr",
        "--reviewer", "alice", "--reviewer", "bob", "--pr-target", "main",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"klaudio: added repository template widgets: {WIDGETS} (github), tasks deliver "
        "task branch, commit, push, pull request\n"
    )
    add(daemon, "infra", "git@gitlab.example.com:ops/infra.git", "--forge", "gitlab",
        "--branch", "develop", "--auto-push", "--no-memory")  # fmt: skip
    assert daemon.cli("repo", "list", check=True).stdout.splitlines() == [
        "NAME     FORGE   DELIVERS  BRANCH   URL",
        "infra    gitlab  push      develop  git@gitlab.example.com:ops/infra.git",
        f"widgets  github  pr        -        {WIDGETS}",
    ]
    assert daemon.cli("repo", "show", "widgets", check=True).stdout.splitlines() == [
        "name:       widgets",
        f"url:        {WIDGETS}",
        "branch:     (the repository default)",
        "forge:      github",
        "api:        (the forge default)",
        "token:      $GITHUB_TOKEN in the daemon's environment",
        "delivery:   task branch, commit, push, pull request (to main)",
        "reviewers:  alice, bob",
        "memory:     on",
    ]
    assert shown(daemon, "infra") == {
        "name": "infra",
        "url": "git@gitlab.example.com:ops/infra.git",
        "branch": "develop",
        "forge": "gitlab",
        "api_url": "",
        "token_env": "",
        "token_file": "",
        "auto_branch": True,
        "auto_commit": True,
        "auto_push": True,
        "auto_pr": False,
        "pr_target": "",
        "reviewers": [],
        "memory": False,
    }
    listed = json.loads(daemon.cli("repo", "list", "-o", "json", check=True).stdout)
    assert [t["name"] for t in listed] == ["infra", "widgets"]


def test_an_empty_list_says_how_to_add_one(daemon: Instance) -> None:
    result = daemon.cli("repo", "list", check=True)

    assert result.stdout == ""
    assert "klaudio repo add NAME URL" in result.stderr
    assert daemon.cli("repo", "list", "-o", "json", check=True).stdout.strip() == "[]"


def test_each_level_implies_the_ones_before_it(daemon: Instance) -> None:
    add(daemon, "c", WIDGETS, "--auto-commit")
    add(daemon, "n", WIDGETS)

    c, n = shown(daemon, "c"), shown(daemon, "n")
    assert (c["auto_branch"], c["auto_commit"], c["auto_push"], c["auto_pr"]) == (
        True, True, False, False,
    )  # fmt: skip
    assert not any(n[k] for k in ("auto_branch", "auto_commit", "auto_push", "auto_pr"))
    assert (
        "delivery:   none: the work stays in the task's workspace"
        in daemon.cli("repo", "show", "n", check=True).stdout.splitlines()
    )


def test_a_relative_token_file_is_made_absolute(daemon: Instance, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(FILE_SECRET)
    run = subprocess.run(
        [sys.executable, "-m", "klaudio", "repo", "add", "t", WIDGETS, "--token-file", "token"],
        env=daemon.env, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert shown(daemon, "t")["token_file"] == str(tmp_path / "token")
    lines = daemon.cli("repo", "show", "t", check=True).stdout.splitlines()
    assert f"token:      the file {tmp_path / 'token'}, read when needed" in lines


def test_a_token_file_not_there_yet_is_taken_with_a_warning(daemon: Instance) -> None:
    result = add(daemon, "t", WIDGETS, "--token-file", "/nonexistent/klaudio/token")

    assert result.returncode == 0, result.stderr
    assert "--token-file /nonexistent/klaudio/token: no readable file there yet" in result.stderr


# Edit and remove ----------------------------------------------------------------------------------


def test_edit_changes_only_what_is_given(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS, "--token-env", "GITHUB_TOKEN", "--auto-pr", "--reviewer", "alice",
        "--branch", "main")  # fmt: skip

    result = daemon.cli("repo", "edit", "w", "--pr-target", "develop")

    assert result.returncode == 0, result.stderr
    assert "klaudio: saved repository template w:" in result.stderr
    after = shown(daemon, "w")
    assert after["pr_target"] == "develop"
    assert (after["branch"], after["token_env"], after["reviewers"]) == (
        "main", "GITHUB_TOKEN", ["alice"],
    )  # fmt: skip
    assert after["auto_pr"] and after["memory"]


def test_edit_turning_a_level_off_turns_off_what_needs_it(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS, "--auto-pr")

    daemon.cli("repo", "edit", "w", "--no-auto-push", check=True)
    after = shown(daemon, "w")
    assert [after[k] for k in ("auto_branch", "auto_commit", "auto_push", "auto_pr")] == [
        True, True, False, False,
    ]  # fmt: skip
    daemon.cli("repo", "edit", "w", "--auto-pr", check=True)
    assert shown(daemon, "w")["auto_push"] is True


def test_edit_switches_the_token_source_and_clears_reviewers(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS, "--token-env", "GITHUB_TOKEN", "--reviewer", "alice")

    daemon.cli("repo", "edit", "w", "--token-file", "/run/secrets/gh", "--no-reviewers",
               check=True)  # fmt: skip
    after = shown(daemon, "w")
    assert (after["token_env"], after["token_file"]) == ("", "/run/secrets/gh")
    assert after["reviewers"] == []
    daemon.cli("repo", "edit", "w", "--token-env", "GH", "--reviewer", "carol", check=True)
    after = shown(daemon, "w")
    assert (after["token_env"], after["token_file"], after["reviewers"]) == ("GH", "", ["carol"])


def test_edit_of_the_url_on_another_host_detects_the_forge_again(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS)
    add(daemon, "ghe", "https://ghe.example.com/acme/w", "--forge", "github")

    daemon.cli("repo", "edit", "w", "--url", "https://gitlab.com/acme/w", check=True)
    daemon.cli("repo", "edit", "ghe", "--url", "https://ghe.example.com/acme/other", check=True)
    assert shown(daemon, "w")["forge"] == "gitlab"
    assert shown(daemon, "ghe")["forge"] == "github"  # same host: the forge given stays


def test_rm_removes_and_then_exits_3(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS)

    result = daemon.cli("repo", "rm", "w")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "klaudio: removed repository template w\n"
    again = daemon.cli("repo", "rm", "w")
    assert again.returncode == 3
    assert one_error_line(again) == "klaudio: no repository template 'w' (templates: none yet)"


# Refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad", WIDGETS], "repository template name 'Bad': lower-case letters"),
        (["w", "ext::sh -c id"], "scheme 'ext' is not allowed"),
        (["w", "--", "-x"], "the URL must not start with '-'"),
        (["w", WIDGETS, "--forge", "sourcehut"], "--forge 'sourcehut': expected one of github"),
        (["w", WIDGETS, "--token-env", "A", "--token-file", "/t"], "not both"),
        (["w", WIDGETS, "--token-env", "1X"], "--token-env '1X': not a variable name"),
        (["w", WIDGETS, "--branch", "-x"], "--branch '-x': not a usable branch name"),
        (["w", WIDGETS, "--pr-target", "a..b"], "--pr-target 'a..b': not a usable branch"),
        (["w", WIDGETS, "--reviewer", "a b"], "--reviewer 'a b': not a user, team or account id"),
        (["w", WIDGETS, "--api-url", "ftp://x"], "--api-url ftp://x: expected an http(s) URL"),
        (["w", "https://example.com/x", "--auto-pr"], "cannot tell the forge of"),
        (["w", WIDGETS, "--auto-pr", "--no-auto-commit"], "--auto-pr needs --auto-commit"),
        (["w", WIDGETS, "--reviewer", "a", "--no-reviewers"], "not both"),
    ],
)
def test_bad_input_exits_2_naming_it(daemon: Instance, args: list[str], message: str) -> None:
    result = add(daemon, *args)

    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result)
    assert json.loads(daemon.cli("repo", "list", "-o", "json", check=True).stdout) == []


def test_a_name_taken_exits_4(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS)

    result = add(daemon, "w", "https://gitlab.com/a/b")

    assert result.returncode == 4
    assert one_error_line(result) == (
        "klaudio: repository template w exists; change it with `klaudio repo edit w`"
    )
    assert shown(daemon, "w")["url"] == WIDGETS


@pytest.mark.parametrize("verb", [["show"], ["edit", "--auto-pr"], ["rm"]])
def test_an_unknown_template_exits_3_naming_the_known_ones(
    daemon: Instance, verb: list[str]
) -> None:
    add(daemon, "widgets", WIDGETS)

    result = daemon.cli("repo", verb[0], "nope", *verb[1:])

    assert result.returncode == 3
    assert one_error_line(result) == "klaudio: no repository template 'nope' (templates: widgets)"


def test_a_bad_edit_exits_2_and_changes_nothing(daemon: Instance) -> None:
    add(daemon, "w", WIDGETS, "--auto-push")

    result = daemon.cli("repo", "edit", "w", "--url", "https://example.com/x", "--auto-pr")

    assert result.returncode == 2
    assert "cannot tell the forge" in one_error_line(result)
    assert shown(daemon, "w")["url"] == WIDGETS


# Tasks from a template ----------------------------------------------------------------------------


def test_a_task_from_a_template_clones_its_repository_and_records_its_delivery(
    daemon: Instance, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    add(daemon, "local", str(repo), "--auto-commit")

    task_id = daemon.cli(
        "task", "create", "x", "--repo-template", "local", check=True
    ).stdout.strip()

    task = daemon.show(task_id)
    assert task["repo"] == str(repo)
    assert (Path(task["workspace"]) / "README.md").read_text() == "hello\n"
    assert task["branch"] == f"klaudio/{task_id[:8]}"
    assert task["base_branch"] == "main" and len(task["base_commit"]) == 40
    assert task["delivery"]["template"] == "local"
    assert (task["delivery"]["commit"], task["delivery"]["push"]) == (True, False)
    assert task["delivery"]["state"] == ""
    lines = daemon.cli("task", "show", task_id, check=True).stdout.splitlines()
    start = lines.index("git:")
    assert lines[start : start + 4] == [
        "git:",
        f"  branch:    klaudio/{task_id[:8]}",
        f"  base:      main@{task['base_commit'][:12]}",
        "  delivery:  not yet (commit; template local)",
    ]


def test_task_create_refuses_an_unknown_template_or_another_repo(
    daemon: Instance, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    add(daemon, "local", str(repo))

    unknown = daemon.cli("task", "create", "x", "--repo-template", "nope")
    other = daemon.cli("task", "create", "x", "--repo-template", "local", "--repo", str(tmp_path))

    assert unknown.returncode == 3
    assert one_error_line(unknown) == "klaudio: no repository template 'nope' (templates: local)"
    assert other.returncode == 2
    assert "is not the template's repository" in one_error_line(other)
    assert daemon.task_ids() == []


def test_no_token_shows_anywhere(tokened: Instance, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(FILE_SECRET + "\n")
    repo = git_repo(tmp_path / "repo")
    outputs = [
        add(tokened, "env", str(repo), "--token-env", "GITHUB_TOKEN", "--auto-commit"),
        add(tokened, "file", WIDGETS, "--token-file", str(token_file), "--auto-pr"),
        tokened.cli("repo", "edit", "file", "--reviewer", "alice"),
        tokened.cli("repo", "list"),
        tokened.cli("repo", "list", "-o", "json"),
    ]
    for name in ("env", "file"):
        outputs += [
            tokened.cli("repo", "show", name),
            tokened.cli("repo", "show", name, "-o", "json"),
        ]
    task_id = tokened.cli("task", "create", "x", "--repo-template", "env", check=True).stdout
    outputs += [
        tokened.cli("task", "show", task_id.strip()),
        tokened.cli("task", "show", task_id.strip(), "-o", "json"),
        tokened.cli("task", "logs", task_id.strip(), "--json"),
        tokened.cli("config", "show"),
    ]

    assert all(r.returncode == 0 for r in outputs), [r.stderr for r in outputs]
    for result in outputs:
        for secret in (SECRET, FILE_SECRET):
            assert secret not in result.stdout + result.stderr, result.args
    stored = b"".join(p.read_bytes() for p in (tokened.home / "data").glob("klaudio.db*"))
    assert SECRET.encode() not in stored and FILE_SECRET.encode() not in stored
    assert SECRET not in tokened.daemon_log() and FILE_SECRET not in tokened.daemon_log()


# Completion and help ------------------------------------------------------------------------------


def test_template_names_complete_from_the_daemon(daemon: Instance) -> None:
    add(daemon, "widgets", WIDGETS)
    add(daemon, "web", WIDGETS)
    add(daemon, "infra", WIDGETS)

    assert complete(daemon, "klaudio repo show w") == ["web", "widgets"]
    assert complete(daemon, "klaudio repo edit i") == ["infra"]
    assert complete(daemon, "klaudio repo rm ") == ["infra", "web", "widgets"]
    assert complete(daemon, "klaudio run x --repo-template wi") == ["widgets"]
    assert complete(daemon, "klaudio task create x --repo-template ") == [
        "infra", "web", "widgets",
    ]  # fmt: skip


def test_without_a_daemon_no_template_name_completes_and_none_is_started(
    instance: Instance,
) -> None:
    assert complete(instance, "klaudio repo show ") == []
    assert complete(instance, "klaudio run x --repo-template w") == []
    assert not instance.socket.exists()
    assert not (instance.home / "state" / "klaudiod.pid").exists()


@pytest.mark.parametrize("verb", ["list", "show", "add", "edit", "rm"])
def test_help_shows_an_example_and_the_exit_codes(instance: Instance, verb: str) -> None:
    result = instance.cli("repo", verb, "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^  Examples?:\n    klaudio repo {verb}", result.stdout, re.M)
    assert "Exits 0" in result.stdout
    assert not instance.socket.exists()


def test_the_repo_command_lists_its_verbs(instance: Instance) -> None:
    commands = instance.cli("repo", "--help", check=True).stdout.split("Commands:")[1]
    assert [line.split()[0] for line in commands.strip().splitlines()] == [
        "list", "show", "add", "edit", "rm",
    ]  # fmt: skip
