"""`klaudio team list|show|add|edit|rm` and team name completion against a real daemon.

(Not test_teams.py: tests/unit/test_teams.py has that name, and test files need unique names.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from klaudio.cli.complete import BUILT_IN_TEAMS
from klaudiod.teams import builtin_teams
from tests.cli.test_errors import one_error_line
from tests.conftest import Instance

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "daemon/klaudiod/teams"
REVIEWERS = """\
# Two developers and a reviewer.
name: reviewers
description: Developers, then a review.
mode: dag
max_agents: 2
review: true
roles:
  - name: developer
    max_instances: 2
  - name: reviewer
    run_last: true
"""
BROKEN = """\
name: broken
mode: dag
max_agents: two
review: true
roles:
  - name: developer
    max_instances: 2
  - name: developer
    run_last: maybe
    promt_hint: hi
"""


def teams(instance: Instance) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(instance.cli("team", "list", "-o", "json", check=True).stdout)
    return data


def sources(instance: Instance) -> dict[str, str]:
    return {t["name"]: t["source"] for t in teams(instance)["teams"]}


def team_file(tmp_path: Path, text: str, name: str = "team.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def editor(tmp_path: Path, *texts: str | None) -> dict[str, str]:
    """An editor writing texts[n] on its n-th run (None: no change), keeping what it found.

    What it found is in seen-<n>. It is $VISUAL, with an argument ($EDITOR would fail).
    """
    (tmp_path / "edits.json").write_text(json.dumps(list(texts)))
    script = tmp_path / "editor"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        f"base = pathlib.Path({str(tmp_path)!r})\n"
        "n = len(list(base.glob('seen-*')))\n"
        "path = pathlib.Path(sys.argv[-1])\n"
        "(base / f'seen-{n}').write_text(path.read_text())\n"
        "text = json.loads((base / 'edits.json').read_text())[n]\n"
        "if text is not None:\n"
        "    path.write_text(text)\n"
    )
    script.chmod(0o755)
    return {"VISUAL": f"{script} --wait", "EDITOR": "false"}


# List and show ------------------------------------------------------------------------------------


def test_the_completion_fallback_names_the_built_in_teams() -> None:
    assert sorted(BUILT_IN_TEAMS) == sorted(builtin_teams())


def test_list_shows_the_built_in_teams(daemon: Instance) -> None:
    result = daemon.cli("team", "list", check=True)

    assert result.stdout.splitlines() == [
        "NAME           SOURCE    MODE  AGENTS  ROLES",
        "dev-review     built-in  dag   3       developer (up to 3), reviewer (1, runs last)",
        "dev-test       built-in  dag   3       developer (up to 3), tester (1, runs last)",
        "full-team      built-in  dag   4       architect (1), developer (up to 4), "
        "tester (up to 2), reviewer (1, runs last)",
        "parallel-devs  built-in  dag   4       developer (up to 6)",
        "solo           built-in  dag   1       developer (up to 3)",
    ]
    data = teams(daemon)
    assert data["invalid"] == []
    solo = next(t for t in data["teams"] if t["name"] == "solo")
    assert solo["roles"][0]["name"] == "developer" and solo["max_agents"] == 1
    assert "yaml" not in solo


def test_show_prints_the_teams_yaml(daemon: Instance) -> None:
    result = daemon.cli("team", "show", "dev-review", check=True)

    assert result.stdout == (SHIPPED / "dev-review.yaml").read_text()
    data = json.loads(daemon.cli("team", "show", "solo", "-o", "json", check=True).stdout)
    assert (data["name"], data["source"], data["mode"]) == ("solo", "built-in", "dag")
    assert data["yaml"] == (SHIPPED / "solo.yaml").read_text()


def test_show_of_an_unknown_team_exits_3(daemon: Instance) -> None:
    result = daemon.cli("team", "show", "nope")

    assert result.returncode == 3
    assert one_error_line(result) == (
        "klaudio: no team named 'nope'; known teams: "
        "dev-review, dev-test, full-team, parallel-devs, solo"
    )


# Add and remove -----------------------------------------------------------------------------------


def test_add_stores_a_user_team_and_rm_removes_it(daemon: Instance, tmp_path: Path) -> None:
    path = team_file(tmp_path, REVIEWERS)

    added = daemon.cli("team", "add", path)

    assert added.returncode == 0, added.stderr
    assert added.stderr == "klaudio: added team reviewers (user): `klaudio team show reviewers`\n"
    assert sources(daemon)["reviewers"] == "user"
    assert daemon.cli("team", "show", "reviewers", check=True).stdout == REVIEWERS
    again = daemon.cli("team", "add", path)
    assert again.returncode == 4
    assert one_error_line(again) == (
        "klaudio: a user team named reviewers exists; `klaudio team edit reviewers` changes it"
    )
    replaced = daemon.cli("team", "add", "-", "--replace", stdin=REVIEWERS.replace("2", "1", 1))
    assert replaced.returncode == 0, replaced.stderr
    assert next(t for t in teams(daemon)["teams"] if t["name"] == "reviewers")["max_agents"] == 1

    removed = daemon.cli("team", "rm", "reviewers")
    assert removed.returncode == 0, removed.stderr
    assert removed.stderr == "klaudio: removed team reviewers\n"
    assert "reviewers" not in sources(daemon)
    gone = daemon.cli("team", "rm", "reviewers")
    assert gone.returncode == 3


def test_a_user_team_shadows_a_built_in_one_until_removed(daemon: Instance, tmp_path: Path) -> None:
    mine = (
        "name: solo\nmode: dag\nmax_agents: 1\nroles:\n  - name: developer\n    max_instances: 5\n"
    )
    path = team_file(tmp_path, mine)

    clash = daemon.cli("team", "add", path)
    assert clash.returncode == 4
    assert "solo is a built-in team; `klaudio team edit solo`" in one_error_line(clash)
    assert daemon.cli("team", "add", path, "--replace").returncode == 0

    assert sources(daemon)["solo"] == "user (shadows built-in)"
    assert daemon.cli("team", "show", "solo", check=True).stdout == mine
    listed = daemon.cli("team", "list", check=True).stdout
    assert re.search(
        r"^solo +user \(shadows built-in\) +dag +1 +developer \(up to 5\)$", listed, re.M
    )
    removed = daemon.cli("team", "rm", "solo")
    assert removed.stderr == "klaudio: removed team solo; the built-in team of that name is back\n"
    assert sources(daemon)["solo"] == "built-in"
    assert (
        daemon.cli("team", "show", "solo", check=True).stdout == (SHIPPED / "solo.yaml").read_text()
    )


def test_a_built_in_team_cannot_be_removed(daemon: Instance) -> None:
    result = daemon.cli("team", "rm", "solo")

    assert result.returncode == 4
    assert one_error_line(result) == (
        "klaudio: built-in team solo cannot be removed; a user team of the same name can shadow it"
    )


def test_a_bad_team_file_lists_every_problem_with_its_line(
    daemon: Instance, tmp_path: Path
) -> None:
    path = team_file(tmp_path, BROKEN, "broken.yaml")

    result = daemon.cli("team", "add", path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"klaudio: {path} has 5 problems:",
        f"{path}:3: max_agents: must be a whole number >= 1",
        f"{path}:4: review: true needs a role with run_last: true to do it",
        f"{path}:8: roles[1].name: 'developer' is already roles[0]",
        f"{path}:9: roles[1].run_last: must be true or false",
        f"{path}:10: roles[1].promt_hint: unknown key; did you mean prompt_hint?",
    ]
    assert "broken" not in sources(daemon)


def test_one_problem_is_one_line(daemon: Instance, tmp_path: Path) -> None:
    result = daemon.cli("team", "add", "-", stdin=REVIEWERS.replace("mode: dag", "mode: swarm"))

    assert result.returncode == 2
    assert one_error_line(result) == "klaudio: stdin:4: mode: must be dag or collaborative"


def test_add_checks_its_file_before_sending(daemon: Instance, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    empty = team_file(tmp_path, "  \n", "empty.yaml")

    result = daemon.cli("team", "add", str(missing))
    assert result.returncode == 2
    assert one_error_line(result) == f"klaudio: cannot read {missing}: No such file or directory"
    blank = daemon.cli("team", "add", empty)
    assert (blank.returncode, one_error_line(blank)) == (2, f"klaudio: {empty} is empty")


def test_a_broken_user_file_is_left_out_of_the_list_and_named(daemon: Instance) -> None:
    directory = daemon.home / "data" / "teams"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "broken.yaml").write_text(BROKEN)

    result = daemon.cli("team", "list", check=True)

    assert "broken" not in result.stdout
    assert result.stderr.startswith("klaudio: left out, not usable: ")
    assert str(directory / "broken.yaml") in result.stderr
    assert len(teams(daemon)["invalid"]) == 1
    shown = daemon.cli("team", "show", "broken")
    assert shown.returncode == 2
    assert shown.stderr.splitlines()[1] == (
        f"{directory / 'broken.yaml'}:3: max_agents: must be a whole number >= 1"
    )


# Edit ---------------------------------------------------------------------------------------------


def test_edit_stores_what_is_saved(daemon: Instance, tmp_path: Path) -> None:
    daemon.cli("team", "add", team_file(tmp_path, REVIEWERS), check=True)
    edited = REVIEWERS.replace("max_agents: 2", "max_agents: 1")
    daemon.env.update(editor(tmp_path, edited))

    result = daemon.cli("team", "edit", "reviewers")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "klaudio: saved team reviewers\n"
    assert (tmp_path / "seen-0").read_text() == REVIEWERS  # the user's own text, comments kept
    assert daemon.cli("team", "show", "reviewers", check=True).stdout == edited


def test_editing_a_built_in_team_makes_a_shadow(daemon: Instance, tmp_path: Path) -> None:
    shipped = (SHIPPED / "solo.yaml").read_text()
    daemon.env.update(editor(tmp_path, shipped.replace("max_agents: 1", "max_agents: 2")))

    result = daemon.cli("team", "edit", "solo")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "klaudio: saved team solo (it shadows the built-in team)\n"
    assert (tmp_path / "seen-0").read_text() == shipped
    assert sources(daemon)["solo"] == "user (shadows built-in)"


def test_an_unchanged_edit_sends_nothing(daemon: Instance, tmp_path: Path) -> None:
    daemon.env.update(editor(tmp_path, None))

    result = daemon.cli("team", "edit", "solo")

    assert result.returncode == 0, result.stderr
    assert result.stderr == "klaudio: the team is unchanged; nothing was sent\n"
    assert sources(daemon)["solo"] == "built-in"


def test_an_edit_cannot_rename_a_team(daemon: Instance, tmp_path: Path) -> None:
    renamed = (SHIPPED / "solo.yaml").read_text().replace("name: solo", "name: duo")
    daemon.env.update(editor(tmp_path, renamed))

    result = daemon.cli("team", "edit", "solo")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "klaudio: name: is 'duo', but this is team 'solo': `team edit` keeps a team's name "
        "(save the text to a file and `klaudio team add` it to make team 'duo')"
    )
    kept = re.fullmatch(r"klaudio: nothing was changed; your team is saved in (\S+)", lines[1])
    assert kept, result.stderr
    assert Path(kept.group(1)).read_text() == renamed
    assert sorted(sources(daemon)) == sorted(BUILT_IN_TEAMS)
    Path(kept.group(1)).unlink()


def test_a_refused_edit_names_the_saved_files_lines(daemon: Instance, tmp_path: Path) -> None:
    daemon.env.update(editor(tmp_path, BROKEN.replace("name: broken", "name: solo")))

    result = daemon.cli("team", "edit", "solo")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    kept = re.fullmatch(r"klaudio: nothing was changed; your team is saved in (\S+)", lines[-1])
    assert kept, result.stderr
    path = kept.group(1)
    assert lines[0] == f"klaudio: {path} has 5 problems:"
    assert lines[1] == f"{path}:3: max_agents: must be a whole number >= 1"
    assert sources(daemon)["solo"] == "built-in"
    Path(path).unlink()


def test_a_failing_editor_sends_nothing(daemon: Instance) -> None:
    daemon.env.update({"VISUAL": "", "EDITOR": "false"})

    result = daemon.cli("team", "edit", "solo")

    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(
        "klaudio: the editor 'false' exited 1; nothing was sent (your text is in "
    )
    Path(line.rsplit(" ", 1)[1].rstrip(")")).unlink()
    daemon.env["EDITOR"] = "/no/such/editor"
    missing = daemon.cli("team", "edit", "solo")
    assert missing.returncode == 2
    assert one_error_line(missing) == (
        "klaudio: cannot run the editor '/no/such/editor' (No such file or directory); "
        "set $VISUAL or $EDITOR"
    )


def test_edit_of_an_unknown_team_exits_3(daemon: Instance) -> None:
    daemon.env.update({"VISUAL": "false"})

    assert daemon.cli("team", "edit", "nope").returncode == 3


# Completion ---------------------------------------------------------------------------------------


def complete(instance: Instance, words: str) -> list[str]:
    """What bash completion offers for the last word of words (the scripts call back klaudio)."""
    klaudio = Path(sys.executable).parent / "klaudio"
    env = {
        **instance.env,
        "_KLAUDIO_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = subprocess.run(
        [str(klaudio)], env=env, capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.split()


def test_team_names_complete_from_the_built_ins_without_a_daemon(instance: Instance) -> None:
    assert complete(instance, "klaudio team show ") == sorted(BUILT_IN_TEAMS)
    assert complete(instance, "klaudio team rm d") == ["dev-review", "dev-test"]
    assert complete(instance, "klaudio run x --team p") == ["parallel-devs"]
    assert complete(instance, "klaudio task create x --team s") == ["solo"]
    assert not instance.socket.exists()  # no daemon was started for it
    assert not (instance.home / "state" / "klaudiod.pid").exists()


def test_team_names_complete_from_the_daemon(daemon: Instance, tmp_path: Path) -> None:
    daemon.cli("team", "add", team_file(tmp_path, REVIEWERS), check=True)

    assert complete(daemon, "klaudio team edit ") == sorted([*BUILT_IN_TEAMS, "reviewers"])
    assert complete(daemon, "klaudio run x --team r") == ["reviewers"]


# Help ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["list", "show", "add", "edit", "rm"])
def test_help_shows_an_example(instance: Instance, verb: str) -> None:
    result = instance.cli("team", verb, "--help")

    assert result.returncode == 0, result.stderr
    assert re.search(rf"^  Examples?:\n    klaudio team {verb}", result.stdout, re.M)
    assert not instance.socket.exists()


def test_the_team_command_lists_its_verbs(instance: Instance) -> None:
    commands = instance.cli("team", "--help", check=True).stdout.split("Commands:")[1]
    assert [line.split()[0] for line in commands.strip().splitlines()] == [
        "list",
        "show",
        "add",
        "edit",
        "rm",
    ]
