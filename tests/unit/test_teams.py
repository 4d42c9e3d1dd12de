"""Team templates: parse_team(), the built-in teams, user teams on disk, plans against a team."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from klaudio.errors import EXIT_USAGE, FailedPrecondition, InvalidArgument, NotFound
from klaudiod import teams
from klaudiod.plan import Plan, PlanProblems, SubtaskSpec, levels, parse
from klaudiod.teams import (
    BUILT_IN,
    SHADOW,
    USER,
    Role,
    Team,
    TeamProblems,
    Teams,
    builtin_teams,
    parse_team,
    planner_brief,
    prompt_hint,
    run_last_dependencies,
    run_last_roles,
    team_to_yaml,
)

BUILT_INS = ["dev-review", "dev-test", "full-team", "parallel-devs", "solo"]

GOOD = """\
# A team of my own.
name: pair
description: Two developers.
mode: dag
max_agents: 2
review: false
roles:
  - name: developer
    description: Writes code.
    prompt_hint: Write it well.
    max_instances: 2
    run_last: false
"""


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def team_problems(text: str, source: str = "teams/x.yaml") -> list[str]:
    with pytest.raises(TeamProblems) as caught:
        parse_team(doc(text), source)
    return caught.value.problems


# The built-in teams -----------------------------------------------------------------------------


def test_the_built_in_teams_are_the_five_expected() -> None:
    assert sorted(builtin_teams()) == BUILT_INS


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_built_in_team_round_trips_through_yaml(name: str) -> None:
    team = builtin_teams()[name]

    assert parse_team(team_to_yaml(team), "again") == team


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_built_in_team_is_complete(name: str) -> None:
    team = builtin_teams()[name]

    assert team.name == name
    assert team.mode == "dag"  # the collaborative executor does not exist yet
    assert team.description.strip()
    assert 1 <= team.max_agents <= 6
    for role in team.roles:
        assert role.description.strip(), role.name
        assert len(role.prompt_hint.splitlines()) >= 4, role.name
    assert team.review == any(r.run_last for r in team.roles)


def test_the_built_in_teams_have_their_roles() -> None:
    shapes = {
        name: [(r.name, r.max_instances, r.run_last) for r in team.roles]
        for name, team in builtin_teams().items()
    }

    assert shapes == {
        "solo": [("developer", 3, False)],
        "dev-review": [("developer", 3, False), ("reviewer", 1, True)],
        "full-team": [
            ("architect", 1, False),
            ("developer", 4, False),
            ("tester", 2, False),
            ("reviewer", 1, True),
        ],
        "parallel-devs": [("developer", 6, False)],
        "dev-test": [("developer", 3, False), ("tester", 1, True)],
    }
    assert builtin_teams()["solo"].max_agents == 1


def test_the_built_in_files_ship_in_the_package() -> None:
    folder = Path(teams.__file__).parent / "teams"

    assert sorted(p.stem for p in folder.glob("*.yaml")) == BUILT_INS


# A team file and its problems -------------------------------------------------------------------


def test_a_good_team_is_parsed_field_by_field() -> None:
    team = parse_team(GOOD, "pair.yaml")

    assert team == Team(
        name="pair",
        description="Two developers.",
        mode="dag",
        max_agents=2,
        review=False,
        roles=(Role("developer", "Writes code.", "Write it well.", 2, False),),
    )


def test_optional_fields_get_their_defaults() -> None:
    team = parse_team(
        doc("""
            name: min
            mode: dag
            max_agents: 1
            roles:
              - name: developer
            """),
        "min.yaml",
    )

    assert team.description == "" and team.review is False
    assert team.roles == (Role("developer", "", "", 1, False),)


def test_every_problem_of_a_team_file_is_listed_with_its_line() -> None:
    found = team_problems("""
        name: Bad_Name
        description: 42
        mode: parallel
        max_agents: 0
        review: yes please
        colour: blue
        roles:
          - name: developer
            max_instances: 0
            prompt_hint: [a, b]
          - name: developer
            run_last: maybe
            promt_hint: x
          - just a string
        """)

    assert found == [
        "teams/x.yaml:1: name: must be 1 to 40 lower-case letters, digits or '-', not starting"
        " with '-'",
        "teams/x.yaml:2: description: must be a string",
        "teams/x.yaml:3: mode: must be dag or collaborative",
        "teams/x.yaml:4: max_agents: must be a whole number >= 1",
        "teams/x.yaml:5: review: must be true or false",
        "teams/x.yaml:6: colour: unknown key; expected name, description, mode, max_agents,"
        " review and roles",
        "teams/x.yaml:9: roles[0].max_instances: must be a whole number >= 1",
        "teams/x.yaml:10: roles[0].prompt_hint: must be a string",
        "teams/x.yaml:11: roles[1].name: 'developer' is already roles[0]",
        "teams/x.yaml:12: roles[1].run_last: must be true or false",
        "teams/x.yaml:13: roles[1].promt_hint: unknown key; did you mean prompt_hint?",
        "teams/x.yaml:14: roles[2]: must be a mapping with name, description, prompt_hint,"
        " max_instances and run_last",
    ]


def test_the_message_of_a_bad_team_file_is_one_line() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_team("name: x\nmode: dag\nmax_agents: -1\nroles: []\n", "x.yaml")

    assert str(caught.value) == (
        "x.yaml has 2 problems: x.yaml:3: max_agents: must be a whole number >= 1;"
        " x.yaml:4: roles: must be a non-empty list of roles"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_missing_required_fields_are_listed_at_their_mapping() -> None:
    found = team_problems("""
        description: nothing else
        roles:
          - description: no name
        """)

    assert found == [
        "teams/x.yaml:1: name: is required",
        "teams/x.yaml:1: mode: is required",
        "teams/x.yaml:1: max_agents: is required",
        "teams/x.yaml:3: roles[0].name: is required",
    ]


def test_roles_missing_or_empty_are_a_problem() -> None:
    assert team_problems("name: a\nmode: dag\nmax_agents: 1\n") == [
        "teams/x.yaml:1: roles: is required: a list of roles"
    ]
    assert team_problems("name: a\nmode: dag\nmax_agents: 1\nroles:\n") == [
        "teams/x.yaml:4: roles: is required: a list of roles"
    ]
    assert team_problems("name: a\nmode: dag\nmax_agents: 1\nroles: developer\n") == [
        "teams/x.yaml:4: roles: must be a non-empty list of roles"
    ]


def test_a_repeated_key_is_a_problem_on_its_second_line() -> None:
    found = team_problems("""
        name: a
        mode: dag
        max_agents: 1
        name: b
        roles: [{name: developer}]
        """)

    assert found == ["teams/x.yaml:4: name: repeats the key of line 1"]


def test_a_review_team_needs_a_run_last_role() -> None:
    found = team_problems("""
        name: a
        mode: dag
        max_agents: 1
        review: true
        roles: [{name: developer}]
        """)

    assert found == ["teams/x.yaml:4: review: true needs a role with run_last: true to do it"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("name: a\nroles: [developer\nmode: dag\n", "teams/x.yaml:3: not valid YAML:"),
        ("name: a\n  mode: dag\n", "teams/x.yaml:2: not valid YAML:"),
        ("name: 'a\n", "teams/x.yaml:2: not valid YAML:"),
        ("name: a\n---\nname: b\n", "teams/x.yaml:2: not valid YAML:"),
        ("name: a\n\nmode: \x07\n", "teams/x.yaml:3: not valid YAML: unacceptable character"),
    ],
)
def test_a_yaml_syntax_error_is_one_problem_with_its_line(text: str, problem: str) -> None:
    found = team_problems(text)

    assert len(found) == 1
    assert found[0].startswith(problem), found


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "teams/x.yaml:1: the file is empty; a team needs name, mode, max_agents and roles"),
        ("# only a comment\n", "teams/x.yaml:1: the file is empty"),
        ("- name: a\n", "teams/x.yaml:1: must be a mapping with name, description, mode,"),
        ("just words\n", "teams/x.yaml:1: must be a mapping with name"),
    ],
)
def test_a_document_that_is_no_mapping_is_one_problem(text: str, problem: str) -> None:
    found = team_problems(text)

    assert len(found) == 1
    assert found[0].startswith(problem), found


def test_numbers_and_booleans_must_have_their_yaml_types() -> None:
    found = team_problems("""
        name: a
        mode: dag
        max_agents: "2"
        review: "false"
        roles: [{name: developer, max_instances: 1.5, run_last: 1}]
        """)

    assert found == [
        "teams/x.yaml:3: max_agents: must be a whole number >= 1",
        "teams/x.yaml:4: review: must be true or false",
        "teams/x.yaml:5: roles[0].max_instances: must be a whole number >= 1",
        "teams/x.yaml:5: roles[0].run_last: must be true or false",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "first line\nsecond line\n",
        "no newline at the end\nsecond",
        "  indented first line\nthen not\n",
        "trailing space \nhere\n",
        "ends with blank lines\n\n\n",
        "one line",
        "quotes: 'single' and \"double\", a # hash",
    ],
)
def test_team_to_yaml_keeps_any_text_exactly(text: str) -> None:
    team = Team("t", text, "dag", 1, False, (Role("developer", text, text, 1, False),))

    assert parse_team(team_to_yaml(team), "t.yaml") == team


# User teams on disk ------------------------------------------------------------------------------


def test_without_user_teams_the_built_ins_are_listed(tmp_path: Path) -> None:
    listed = Teams(tmp_path / "teams").list()

    assert [(t.name, source) for t, source in listed] == [(n, BUILT_IN) for n in BUILT_INS]


def test_a_user_team_is_added_as_written_and_listed(tmp_path: Path) -> None:
    store = Teams(tmp_path / "teams")

    team = store.add(GOOD)

    assert team.name == "pair"
    assert (tmp_path / "teams" / "pair.yaml").read_text() == GOOD
    assert store.get("pair") == team
    assert store.text("pair") == GOOD  # comments kept, for editing
    assert ("pair", USER) in [(t.name, s) for t, s in store.list()]
    assert [p.name for p in (tmp_path / "teams").iterdir()] == ["pair.yaml"]


def test_adding_a_team_whose_name_exists_needs_replace(tmp_path: Path) -> None:
    store = Teams(tmp_path)
    store.add(GOOD)
    changed = GOOD.replace("max_agents: 2", "max_agents: 1")

    with pytest.raises(FailedPrecondition, match="a user team named pair exists"):
        store.add(changed)
    assert store.get("pair").max_agents == 2

    store.add(changed, replace=True)

    assert store.get("pair").max_agents == 1


def test_a_user_team_shadows_a_built_in_and_removing_it_brings_the_built_in_back(
    tmp_path: Path,
) -> None:
    store = Teams(tmp_path)
    mine = GOOD.replace("name: pair", "name: solo")

    with pytest.raises(FailedPrecondition, match="solo is a built-in team"):
        store.add(mine)
    store.add(mine, replace=True)

    assert store.get("solo").description == "Two developers."
    assert ("solo", SHADOW) in [(t.name, s) for t, s in store.list()]
    assert len(store.list()) == len(BUILT_INS)

    back = store.remove("solo")

    assert back == builtin_teams()["solo"]
    assert store.get("solo") == builtin_teams()["solo"]
    assert ("solo", BUILT_IN) in [(t.name, s) for t, s in store.list()]


def test_a_built_in_team_cannot_be_removed(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        Teams(tmp_path).remove("solo")

    assert str(caught.value) == (
        "built-in team solo cannot be removed; a user team of the same name can shadow it"
    )


def test_removing_a_user_team_deletes_its_file(tmp_path: Path) -> None:
    store = Teams(tmp_path)
    store.add(GOOD)

    assert store.remove("pair") is None

    assert not (tmp_path / "pair.yaml").exists()
    with pytest.raises(NotFound):
        store.get("pair")


@pytest.mark.parametrize("name", ["nobody", "../etc/passwd", "/etc/passwd", "Solo", ""])
def test_an_unknown_team_is_not_found_naming_the_known_ones(tmp_path: Path, name: str) -> None:
    store = Teams(tmp_path)
    store.add(GOOD)

    for action in (store.get, store.remove, store.text):
        with pytest.raises(NotFound) as caught:
            action(name)
        assert str(caught.value) == (
            f"no team named {name!r}; known teams: dev-review, dev-test, full-team, pair,"
            " parallel-devs, solo"
        )


def test_a_bad_team_is_not_added(tmp_path: Path) -> None:
    store = Teams(tmp_path / "teams")

    with pytest.raises(TeamProblems) as caught:
        store.add("name: x\nmode: dag\nmax_agents: 0\nroles: [{name: d}]\n", source="my.yaml")

    assert caught.value.problems == ["my.yaml:3: max_agents: must be a whole number >= 1"]
    assert not (tmp_path / "teams").exists()


def test_a_user_file_broken_by_hand_is_left_out_of_the_list_and_named(tmp_path: Path) -> None:
    store = Teams(tmp_path)
    store.add(GOOD)
    (tmp_path / "pair.yaml").write_text(GOOD.replace("max_agents: 2", "max_agents: none"))
    (tmp_path / "other.yaml").write_text(GOOD)  # its team is called pair

    assert "pair" not in [t.name for t, _ in store.list()]
    assert store.invalid() == [
        f"{tmp_path}/other.yaml:1: name: is 'pair', but the file is other.yaml; rename one",
        f"{tmp_path}/pair.yaml:5: max_agents: must be a whole number >= 1",
    ]
    with pytest.raises(TeamProblems, match="max_agents"):
        store.get("pair")


def test_files_that_are_no_team_names_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".pair.1234.tmp").write_text(GOOD)
    (tmp_path / "Not_A_Name.yaml").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("hello")

    store = Teams(tmp_path)

    assert store.names() == BUILT_INS
    assert store.invalid() == []


def test_the_text_of_a_built_in_team_is_its_file(tmp_path: Path) -> None:
    text = Teams(tmp_path).text("dev-review")

    assert text.startswith("# ")
    assert parse_team(text, "x") == builtin_teams()["dev-review"]


# Plans against a team ---------------------------------------------------------------------------


def sub(sid: str, role: str, *deps: str) -> dict[str, Any]:
    return {
        "id": sid,
        "name": sid,
        "prompt": f"do {sid}",
        "depends_on": list(deps),
        "agent_role": role,
    }


def good_plan(team: Team) -> dict[str, Any]:
    """One subtask per role; the run-last ones after the others."""
    first = [sub(f"{r.name}-1", r.name) for r in team.roles if not r.run_last]
    last = [sub(f"{r.name}-1", r.name) for r in team.roles if r.run_last]
    return {"kind": "plan", "strategy": "dag", "subtasks": first + last}


def refused(output: dict[str, Any], team: Team) -> list[str]:
    with pytest.raises(PlanProblems) as caught:
        parse(output, teams.rules(team))
    plan = Plan("", output["strategy"], tuple(_spec(s) for s in output["subtasks"]))
    with pytest.raises(PlanProblems) as again:
        teams.validate(plan, team)
    assert again.value.problems == caught.value.problems
    return caught.value.problems


def _spec(item: dict[str, Any]) -> SubtaskSpec:
    return SubtaskSpec(
        id=item["id"],
        name=item["name"],
        prompt=item["prompt"],
        depends_on=tuple(item["depends_on"]),
        agent_role=item["agent_role"],
    )


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_plan_that_keeps_the_team_rules_is_accepted(name: str) -> None:
    team = builtin_teams()[name]

    parsed = parse(good_plan(team), teams.rules(team))

    assert isinstance(parsed, Plan)
    teams.validate(parsed, team)


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_plan_with_a_role_the_team_lacks_is_refused(name: str) -> None:
    team = builtin_teams()[name]
    output = good_plan(team)
    output["subtasks"].insert(0, sub("magic", "wizard"))

    problems = refused(output, team)

    roles = ", ".join(r.name for r in team.roles)
    assert problems == [
        f"subtask 'magic' has agent_role 'wizard'; the team {name} has no such role"
        f" (its roles: {roles})"
    ]


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_plan_with_more_instances_of_a_role_than_allowed_is_refused(name: str) -> None:
    team = builtin_teams()[name]
    output = good_plan(team)
    role = team.roles[0]
    extra = [sub(f"more-{i}", role.name) for i in range(role.max_instances)]
    output["subtasks"] = extra + output["subtasks"]

    problems = refused(output, team)

    count = role.max_instances + 1
    noun = "subtask" if role.max_instances == 1 else "subtasks"
    assert len(problems) == 1
    assert problems[0].startswith(
        f"the team {name} allows at most {role.max_instances} {role.name} {noun};"
        f" the plan has {count}: 'more-0'"
    )


@pytest.mark.parametrize("name", [n for n in BUILT_INS if builtin_teams()[n].review])
def test_a_review_team_refuses_a_plan_without_a_run_last_subtask(name: str) -> None:
    team = builtin_teams()[name]
    output = good_plan(team)
    output["subtasks"] = [
        s for s in output["subtasks"] if s["agent_role"] not in run_last_roles(team)
    ]

    problems = refused(output, team)

    last = ", ".join(sorted(run_last_roles(team)))
    assert problems == [
        f"the team {name} reviews its work: at least one subtask needs a role that runs last"
        f" ({last})"
    ]


@pytest.mark.parametrize("name", BUILT_INS)
def test_a_plan_whose_strategy_is_not_the_team_mode_is_refused(name: str) -> None:
    team = builtin_teams()[name]
    output = good_plan(team)
    output["strategy"] = "collaborative"

    assert refused(output, team) == [
        f"the team {name} works as dag; the plan's strategy is collaborative"
    ]


def test_a_plan_may_not_make_a_subtask_wait_for_a_run_last_one() -> None:
    team = builtin_teams()["dev-review"]
    output = {
        "kind": "plan",
        "strategy": "dag",
        "subtasks": [sub("review", "reviewer"), sub("code", "developer", "review")],
    }

    assert refused(output, team) == [
        "subtask 'code' depends on 'review', whose role reviewer runs last, after every other"
        " subtask"
    ]


def test_every_team_problem_is_listed_at_once() -> None:
    team = builtin_teams()["dev-review"]
    output = {
        "kind": "plan",
        "strategy": "collaborative",
        "subtasks": [
            sub("a", "developer"),
            sub("b", "designer"),
            sub("c", "developer", "ghost"),
            sub("d", "developer"),
            sub("e", "developer"),
        ],
    }

    assert refused(output, team) == [
        "the team dev-review works as dag; the plan's strategy is collaborative",
        "the team dev-review reviews its work: at least one subtask needs a role that runs last"
        " (reviewer)",
        "subtask 'b' has agent_role 'designer'; the team dev-review has no such role"
        " (its roles: developer, reviewer)",
        "subtask 'c' depends on unknown subtask 'ghost'",
        "the team dev-review allows at most 3 developer subtasks; the plan has 4: 'a', 'c',"
        " 'd', 'e'",
    ]


# Scheduling and prompts -------------------------------------------------------------------------


def specs(*items: tuple[str, str, tuple[str, ...]]) -> tuple[SubtaskSpec, ...]:
    return tuple(
        SubtaskSpec(id=i, name=i, prompt=i, agent_role=r, depends_on=d) for i, r, d in items
    )


def test_run_last_roles_of_each_built_in() -> None:
    found = {name: run_last_roles(team) for name, team in builtin_teams().items()}

    assert found == {
        "solo": frozenset(),
        "dev-review": frozenset({"reviewer"}),
        "full-team": frozenset({"reviewer"}),
        "parallel-devs": frozenset(),
        "dev-test": frozenset({"tester"}),
    }


def test_a_run_last_subtask_waits_for_every_other_subtask() -> None:
    team = builtin_teams()["full-team"]
    subtasks = specs(
        ("review", "reviewer", ("api",)),
        ("design", "architect", ()),
        ("api", "developer", ("design",)),
        ("ui", "developer", ("design",)),
        ("check", "tester", ("api", "ui")),
    )

    extra = run_last_dependencies(subtasks, team)

    assert extra == {"review": ("design", "ui", "check")}
    assert subtasks[0].depends_on == ("api",)  # the plan stays as written
    assert levels(subtasks) == [["design"], ["api", "ui"], ["review", "check"]]
    assert levels(subtasks, extra) == [["design"], ["api", "ui"], ["check"], ["review"]]


def test_run_last_subtasks_do_not_wait_for_each_other() -> None:
    team = Team(
        "t",
        "",
        "dag",
        2,
        True,
        (Role("developer"), Role("tester", run_last=True), Role("reviewer", run_last=True)),
    )
    subtasks = specs(("t", "tester", ()), ("r", "reviewer", ()), ("d", "developer", ()))

    assert run_last_dependencies(subtasks, team) == {"t": ("d",), "r": ("d",)}


def test_no_extra_dependencies_without_run_last_roles_or_when_already_listed() -> None:
    solo = builtin_teams()["solo"]
    assert run_last_dependencies(specs(("a", "developer", ()), ("b", "developer", ())), solo) == {}

    review = builtin_teams()["dev-review"]
    subtasks = specs(("a", "developer", ()), ("r", "reviewer", ("a",)))
    assert run_last_dependencies(subtasks, review) == {}


def test_each_agent_gets_its_roles_prompt_hint() -> None:
    team = builtin_teams()["dev-review"]

    assert prompt_hint(team, "reviewer") == team.roles[1].prompt_hint
    assert prompt_hint(team, "reviewer").startswith("You are the reviewer.")
    with pytest.raises(NotFound, match=r"no role 'wizard' \(its roles: developer, reviewer\)"):
        prompt_hint(team, "wizard")


@pytest.mark.parametrize("name", BUILT_INS)
def test_the_planner_brief_tells_roles_limits_mode_and_review(name: str) -> None:
    team = builtin_teams()[name]

    brief = planner_brief(team)

    assert f"'{name}'" in brief
    assert 'Set the plan\'s "strategy" to "dag"' in brief
    assert '"agent_role"' in brief
    agents = "1 agent runs" if team.max_agents == 1 else f"{team.max_agents} agents run"
    assert f"At most {agents} at the same time" in brief
    for role in team.roles:
        limit = "1 subtask" if role.max_instances == 1 else f"up to {role.max_instances} subtasks"
        line = next(ln for ln in brief.splitlines() if ln.startswith(f"- {role.name} ("))
        assert limit in line
        assert ("runs last" in line) == role.run_last
    assert ("Review: required" in brief) == team.review
    assert ("no other subtask may depend on it" in brief) == bool(run_last_roles(team))


def test_the_rules_of_a_team_carry_its_limits() -> None:
    found = teams.rules(builtin_teams()["dev-test"])

    assert found.team == "dev-test"
    assert found.mode == "dag"
    assert found.limits == (("developer", 3), ("tester", 1))
    assert found.run_last == frozenset({"tester"})
    assert found.review is True
