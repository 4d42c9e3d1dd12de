"""Plans: parse(), validate(), plan_from_dict(), order(), levels() and the planner's schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from klaudio.errors import EXIT_USAGE, InvalidArgument
from klaudiod.plan import (
    MAX_SUBTASKS,
    PLANNER_SCHEMA,
    SUMMARY_PROBLEMS,
    Plan,
    PlanProblems,
    Questions,
    Rules,
    SubtaskSpec,
    agent_name,
    levels,
    order,
    parse,
    plan_from_dict,
    plan_to_dict,
    validate,
)


def sub(sid: str, *deps: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": sid,
        "name": f"Subtask {sid}",
        "description": f"about {sid}",
        "prompt": f"do {sid}",
        "depends_on": list(deps),
        "files_involved": [f"{sid}.py"],
        "complexity": "low",
        "agent_role": "developer",
    }
    item.update(extra)
    return item


def plan(*subtasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    output: dict[str, Any] = {
        "kind": "plan",
        "analysis": "two steps",
        "strategy": "dag",
        "subtasks": list(subtasks),
        "notes": "none",
    }
    output.update(extra)
    return output


TEAM = Rules(
    team="crew",
    mode="dag",
    limits=(("developer", 2), ("tester", 1), ("reviewer", 1)),
    run_last=frozenset({"reviewer"}),
)


def problems(output: Any, rules: Rules | None = None) -> list[str]:
    """Every problem parse() finds in output."""
    with pytest.raises(PlanProblems) as caught:
        parse(output, rules)
    return caught.value.problems


def rejected(output: Any, rules: Rules | None = None) -> str:
    """The one problem parse() finds in output (and it is the whole message)."""
    found = problems(output, rules)
    assert len(found) == 1, found
    with pytest.raises(InvalidArgument) as caught:
        parse(output, rules)
    assert str(caught.value) == found[0]
    return found[0]


# Accepted output ----------------------------------------------------------------------------------


def test_a_good_plan_is_parsed_field_by_field() -> None:
    parsed = parse(plan(sub("write"), sub("copy", "write", complexity="high")))

    assert isinstance(parsed, Plan)
    assert parsed.analysis == "two steps"
    assert parsed.strategy == "dag"
    assert parsed.notes == "none"
    assert [s.id for s in parsed.subtasks] == ["write", "copy"]
    copy_step = parsed.subtasks[1]
    assert copy_step == SubtaskSpec(
        id="copy",
        name="Subtask copy",
        prompt="do copy",
        description="about copy",
        depends_on=("write",),
        files_involved=("copy.py",),
        complexity="high",
        agent_role="developer",
    )


def test_questions_are_parsed_with_their_options() -> None:
    parsed = parse(
        {
            "kind": "questions",
            "questions": [
                {"id": "db", "text": "Which database?", "options": ["sqlite", "postgres"]},
                {"id": "auth", "text": "Auth?", "context": "login", "suggestions": ["oauth"]},
            ],
        }
    )

    assert isinstance(parsed, Questions)
    assert [q.id for q in parsed.questions] == ["db", "auth"]
    assert parsed.questions[0].options == ("sqlite", "postgres")
    assert parsed.questions[0].context == ""
    assert parsed.questions[1].context == "login"
    assert parsed.questions[1].suggestions == ("oauth",)


def test_omitted_fields_get_their_defaults() -> None:
    parsed = parse({"kind": "plan", "subtasks": [{"id": "only", "prompt": "do it"}]})

    assert isinstance(parsed, Plan)
    assert parsed.strategy == "dag"
    assert parsed.analysis == "" and parsed.notes == ""
    only = parsed.subtasks[0]
    assert only.name == "only"
    assert only.complexity == "medium"
    assert only.agent_role == "developer"
    assert only.depends_on == () and only.files_involved == () and only.description == ""


def test_a_known_role_is_accepted_when_rules_are_given() -> None:
    parsed = parse(plan(sub("a", agent_role="tester")), TEAM)

    assert isinstance(parsed, Plan)
    assert parsed.subtasks[0].agent_role == "tester"


def test_exactly_max_subtasks_is_accepted() -> None:
    parsed = parse(plan(*(sub(f"s{i}") for i in range(MAX_SUBTASKS))))

    assert isinstance(parsed, Plan)
    assert len(parsed.subtasks) == MAX_SUBTASKS


def test_parse_does_not_modify_its_input() -> None:
    output = plan(sub("a"), sub("b", "a"))
    before = copy.deepcopy(output)

    parse(output)

    assert output == before


# Rejected output ----------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [None, "a plan", ["kind", "plan"], 42])
def test_output_that_is_not_an_object_is_rejected(output: Any) -> None:
    assert rejected(output) == "planner output is not a JSON object"


@pytest.mark.parametrize("kind", ["answer", "", None, "PLAN"])
def test_an_unknown_kind_is_rejected_naming_it(kind: Any) -> None:
    output = plan(sub("a"))
    output["kind"] = kind

    message = rejected(output)

    assert f"kind {kind!r}" in message
    assert "expected 'plan' or 'questions'" in message


def test_duplicate_subtask_ids_are_rejected() -> None:
    assert rejected(plan(sub("a"), sub("b"), sub("a"))) == "duplicate subtask id 'a'"


def test_duplicate_question_ids_are_rejected() -> None:
    output = {
        "kind": "questions",
        "questions": [{"id": "q", "text": "one?"}, {"id": "q", "text": "two?"}],
    }

    assert rejected(output) == "duplicate question id 'q'"


def test_questions_without_any_question_are_rejected() -> None:
    assert rejected({"kind": "questions", "questions": []}) == "planner asked no questions"


def test_an_unknown_dependency_is_rejected_naming_both_ids() -> None:
    message = rejected(plan(sub("a"), sub("b", "ghost")))

    assert message == "subtask 'b' depends on unknown subtask 'ghost'"


def test_a_self_dependency_is_rejected() -> None:
    assert rejected(plan(sub("a", "a"))) == "subtask 'a' depends on itself"


def test_a_cycle_is_rejected_naming_the_ids_in_it() -> None:
    message = rejected(plan(sub("a", "c"), sub("b", "a"), sub("c", "b"), sub("free")))

    assert message == "plan has a dependency cycle among: a, b, c"


def test_a_cycle_message_names_only_the_subtasks_in_the_cycle() -> None:
    # a <-> b is the cycle; c merely waits for a.
    message = rejected(plan(sub("a", "b"), sub("b", "a"), sub("c", "a")))

    assert message == "plan has a dependency cycle among: a, b"


def test_a_plan_without_subtasks_is_rejected() -> None:
    assert rejected(plan()) == "plan has no subtasks"
    assert rejected({"kind": "plan"}) == "plan has no subtasks"


@pytest.mark.parametrize("prompt", ["   ", "\n\t"])
def test_a_blank_prompt_is_rejected(prompt: str) -> None:
    assert rejected(plan(sub("a", prompt=prompt))) == "subtask 'a' has an empty prompt"


def test_a_missing_prompt_is_rejected() -> None:
    item = sub("a")
    del item["prompt"]

    assert rejected(plan(item)) == "subtask 'a' has an empty prompt"


def test_a_missing_id_is_rejected() -> None:
    item = sub("a")
    del item["id"]

    assert rejected(plan(item)) == "subtasks[0] has an empty id"


@pytest.mark.parametrize("complexity", ["huge", "LOW", "trivial"])
def test_an_unknown_complexity_is_rejected(complexity: str) -> None:
    message = rejected(plan(sub("a", complexity=complexity)))

    assert message == f"subtask 'a' has unknown complexity {complexity!r}; use low, medium or high"


def test_an_unknown_strategy_is_rejected() -> None:
    message = rejected(plan(sub("a"), strategy="waterfall"))

    assert "'waterfall'" in message and "dag" in message


def test_an_unknown_role_is_rejected_when_rules_are_given() -> None:
    message = rejected(plan(sub("a", agent_role="wizard")), TEAM)

    assert message == (
        "subtask 'a' has agent_role 'wizard'; the team crew has no such role"
        " (its roles: developer, tester, reviewer)"
    )


def test_any_role_is_accepted_when_rules_are_not_given() -> None:
    parsed = parse(plan(sub("a", agent_role="wizard")))

    assert isinstance(parsed, Plan)
    assert parsed.subtasks[0].agent_role == "wizard"


def test_more_than_max_subtasks_is_rejected() -> None:
    message = rejected(plan(*(sub(f"s{i}") for i in range(MAX_SUBTASKS + 1))))

    assert message == f"plan has {MAX_SUBTASKS + 1} subtasks; the limit is {MAX_SUBTASKS}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 7),
        ("name", ["a"]),
        ("prompt", {"text": "do"}),
        ("description", 1.5),
        ("complexity", 2),
        ("agent_role", True),
    ],
)
def test_a_string_field_of_another_type_is_rejected(field: str, value: Any) -> None:
    message = rejected(plan(sub("z"), sub("a", **{field: value})))

    assert message == f"subtasks[1].{field}: must be a string"


@pytest.mark.parametrize(
    ("field", "value"),
    [("depends_on", "b"), ("depends_on", [1]), ("files_involved", [["x.py"]])],
)
def test_a_list_field_of_another_type_is_rejected(field: str, value: Any) -> None:
    message = rejected(plan(sub("a"), sub("b", **{field: value})))

    assert message == f"subtasks[1].{field}: must be a list of strings"


def test_subtasks_that_are_not_a_list_are_rejected() -> None:
    assert rejected({"kind": "plan", "subtasks": "a,b"}) == "subtasks: must be a list of subtasks"


def test_each_subtask_that_is_not_an_object_is_a_problem() -> None:
    found = problems({"kind": "plan", "subtasks": [["a"], sub("b"), "c"]})

    assert found == [
        "subtasks[0]: must be a mapping (a subtask)",
        "subtasks[2]: must be a mapping (a subtask)",
    ]


def test_a_non_string_analysis_is_rejected() -> None:
    assert rejected(plan(sub("a"), analysis=3)) == "analysis: must be a string"


def test_a_question_without_text_is_rejected() -> None:
    output = {"kind": "questions", "questions": [{"id": "q"}]}

    assert rejected(output) == "questions[0].text: is missing"


def test_every_problem_of_the_questions_is_listed() -> None:
    output = {
        "kind": "questions",
        "questions": [
            {"id": "q", "text": ""},
            "why?",
            {"id": "q", "text": "again?", "options": "yes"},
        ],
    }

    found = problems(output)

    assert found == [
        "questions[0].text: is empty",
        "questions[1]: must be a mapping (a question)",
        "questions[2].options: must be a list of strings",
        "duplicate question id 'q'",
    ]


def test_keys_the_schema_does_not_name_are_ignored_in_planner_output() -> None:
    parsed = parse(plan(sub("a", effort="small"), questions=[], mood="good"))

    assert isinstance(parsed, Plan)


# order() ------------------------------------------------------------------------------------------


def specs(*items: tuple[str, tuple[str, ...]]) -> tuple[SubtaskSpec, ...]:
    return tuple(SubtaskSpec(id=i, name=i, prompt=i, depends_on=deps) for i, deps in items)


def test_order_puts_every_subtask_after_its_dependencies() -> None:
    subtasks = specs(("deploy", ("test", "build")), ("test", ("build",)), ("build", ()))

    result = order(subtasks)

    assert result == ["build", "test", "deploy"]


def test_order_keeps_plan_order_among_subtasks_that_are_ready_together() -> None:
    subtasks = specs(("z", ()), ("b", ("z",)), ("a", ()), ("m", ()), ("c", ("a",)))

    assert order(subtasks) == ["z", "a", "m", "b", "c"]


def test_order_of_independent_subtasks_is_plan_order() -> None:
    subtasks = specs(("3", ()), ("1", ()), ("2", ()))

    assert order(subtasks) == ["3", "1", "2"]


def test_order_of_a_diamond() -> None:
    subtasks = specs(
        ("top", ()), ("left", ("top",)), ("right", ("top",)), ("end", ("right", "left"))
    )

    result = order(subtasks)

    assert result == ["top", "left", "right", "end"]
    for item in subtasks:
        assert all(result.index(dep) < result.index(item.id) for dep in item.depends_on)


# The schema offered to the model ------------------------------------------------------------------


def test_the_schema_requires_only_kind_at_the_top() -> None:
    assert PLANNER_SCHEMA["type"] == "object"
    assert PLANNER_SCHEMA["required"] == ["kind"]
    assert PLANNER_SCHEMA["properties"]["kind"]["enum"] == ["plan", "questions"]


def test_the_schema_has_no_top_level_combinators() -> None:
    # The Messages API refuses oneOf/anyOf/allOf at the top of a tool's input schema.
    assert not {"oneOf", "anyOf", "allOf"} & set(PLANNER_SCHEMA)


def test_a_plan_shaped_like_the_schema_passes_parse() -> None:
    subtask_schema = PLANNER_SCHEMA["properties"]["subtasks"]["items"]
    minimal = {key: f"v-{key}" for key in subtask_schema["required"]}

    parsed = parse({"kind": "plan", "subtasks": [minimal]})

    assert isinstance(parsed, Plan)
    assert parsed.subtasks[0].id == "v-id"


# Agent names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtask_id", "agent"),
    [
        ("write", "write"),
        ("write tests", "write-tests"),
        ("../etc/passwd", "etc-passwd"),
        ("planner", "planner-worker"),
        ("!!!", "subtask"),
        ("x" * 60, "x" * 40),
    ],
)
def test_agent_names_are_safe_for_docker(subtask_id: str, agent: str) -> None:
    assert agent_name(subtask_id) == agent


def test_subtask_ids_that_make_the_same_agent_name_are_rejected() -> None:
    message = rejected(plan(sub("write tests"), sub("write-tests")))

    assert message == "subtask ids 'write tests' and 'write-tests' are too alike; rename one"


def test_a_subtask_called_planner_does_not_clash_with_the_planner() -> None:
    parsed = parse(plan(sub("planner"), sub("other", "planner")))

    assert isinstance(parsed, Plan)
    assert [agent_name(s.id) for s in parsed.subtasks] == ["planner-worker", "other"]


# Every problem at once ----------------------------------------------------------------------------


def test_every_problem_is_listed_by_subtask_position_then_kind() -> None:
    output = plan(
        sub("a", "ghost", complexity="huge", prompt=" "),
        sub("b", "c"),
        sub("c", "b"),
        sub("a"),
        sub("d", "d"),
        strategy="waterfall",
    )

    found = problems(output)

    assert found == [
        "plan strategy 'waterfall' is not one of dag, collaborative",
        "subtask 'a' has an empty prompt",
        "subtask 'a' depends on unknown subtask 'ghost'",
        "subtask 'a' has unknown complexity 'huge'; use low, medium or high",
        "plan has a dependency cycle among: b, c",
        "duplicate subtask id 'a'",
        "subtask 'd' depends on itself",
    ]


def test_the_message_of_several_problems_is_one_line_naming_them_all() -> None:
    with pytest.raises(PlanProblems) as caught:
        parse(plan(sub("a", "x"), sub("b", "y")))

    assert str(caught.value) == (
        "the plan has 2 problems: subtask 'a' depends on unknown subtask 'x';"
        " subtask 'b' depends on unknown subtask 'y'"
    )
    assert caught.value.exit_code == EXIT_USAGE
    assert isinstance(caught.value, InvalidArgument)


def test_the_message_names_the_first_problems_and_counts_the_rest() -> None:
    count = SUMMARY_PROBLEMS + 3
    output = plan(*(sub(f"s{i}", "ghost") for i in range(count)))

    with pytest.raises(PlanProblems) as caught:
        parse(output)

    assert len(caught.value.problems) == count
    message = str(caught.value)
    assert message.startswith(f"the plan has {count} problems: subtask 's0' depends on")
    assert message.endswith("; and 3 more")
    assert "'s9'" in message and "'s10'" not in message
    assert "\n" not in message


def test_a_wrong_type_is_not_reported_again_as_empty() -> None:
    found = problems(plan(sub("b"), sub("a", id=["a"], prompt=3)))

    assert found == ["subtasks[1].id: must be a string", "subtasks[1].prompt: must be a string"]


def test_validate_collects_every_problem_of_a_plan_built_in_code() -> None:
    built = Plan(
        analysis="",
        strategy="dag",
        subtasks=(
            SubtaskSpec(id="a", name="a", prompt="", complexity="big"),
            SubtaskSpec(id="a", name="a", prompt="do"),
        ),
    )

    with pytest.raises(PlanProblems) as caught:
        validate(built)

    assert caught.value.problems == [
        "subtask 'a' has an empty prompt",
        "subtask 'a' has unknown complexity 'big'; use low, medium or high",
        "duplicate subtask id 'a'",
    ]


def test_a_cycle_message_leaves_out_what_the_cycle_depends_on() -> None:
    # a <-> b, and a also waits for base, which is on no cycle.
    message = rejected(plan(sub("base"), sub("a", "b", "base"), sub("b", "a")))

    assert message == "plan has a dependency cycle among: a, b"


def test_a_cycle_message_names_the_subtasks_between_two_cycles() -> None:
    # a <-> b and c <-> d; m waits for a and d waits for m: m lies between the cycles.
    output = plan(sub("a", "b"), sub("b", "a"), sub("m", "a"), sub("c", "d"), sub("d", "c", "m"))

    assert rejected(output) == "plan has a dependency cycle among: a, b, c, d, m"


# Against a team's rules ---------------------------------------------------------------------------


def test_rules_refuse_roles_over_their_limit_once_per_role() -> None:
    output = plan(
        sub("t1", agent_role="tester"),
        sub("d1"),
        sub("t2", agent_role="tester"),
        sub("d2"),
        sub("d3"),
        sub("d4"),
    )

    found = problems(output, TEAM)

    assert found == [
        "the team crew allows at most 1 tester subtask; the plan has 2: 't1', 't2'",
        "the team crew allows at most 2 developer subtasks; the plan has 4: 'd1', 'd2', 'd3', 'd4'",
    ]


def test_rules_refuse_a_strategy_other_than_the_team_mode() -> None:
    message = rejected(plan(sub("a"), strategy="collaborative"), TEAM)

    assert message == "the team crew works as dag; the plan's strategy is collaborative"


def test_rules_of_a_reviewing_team_need_a_run_last_subtask() -> None:
    reviewing = Rules(
        team="crew", mode="dag", limits=TEAM.limits, run_last=TEAM.run_last, review=True
    )

    message = rejected(plan(sub("a")), reviewing)

    assert message == (
        "the team crew reviews its work: at least one subtask needs a role that runs last"
        " (reviewer)"
    )
    assert isinstance(parse(plan(sub("a"), sub("r", agent_role="reviewer")), reviewing), Plan)


def test_rules_refuse_a_dependency_on_a_run_last_subtask() -> None:
    output = plan(sub("r", agent_role="reviewer"), sub("a", "r"))

    message = rejected(output, TEAM)

    assert message == (
        "subtask 'a' depends on 'r', whose role reviewer runs last, after every other subtask"
    )


def test_problems_with_rules_are_merged_in_position_order() -> None:
    output = plan(sub("a", agent_role="wizard"), sub("b", "ghost"), strategy="collaborative")

    assert problems(output, TEAM) == [
        "the team crew works as dag; the plan's strategy is collaborative",
        "subtask 'a' has agent_role 'wizard'; the team crew has no such role"
        " (its roles: developer, tester, reviewer)",
        "subtask 'b' depends on unknown subtask 'ghost'",
    ]


# A plan as a person edits it ----------------------------------------------------------------------


def test_a_plan_round_trips_through_its_dict() -> None:
    parsed = parse(plan(sub("a"), sub("b", "a", agent_role="tester")))
    assert isinstance(parsed, Plan)

    data = plan_to_dict(parsed)

    assert list(data) == ["analysis", "strategy", "notes", "subtasks"]
    assert data["subtasks"][1] == {
        "id": "b",
        "name": "Subtask b",
        "description": "about b",
        "prompt": "do b",
        "depends_on": ["a"],
        "files_involved": ["b.py"],
        "complexity": "low",
        "agent_role": "tester",
    }
    assert plan_from_dict(data) == parsed


def test_a_persons_plan_gets_the_defaults_for_missing_and_empty_fields() -> None:
    data = {"analysis": None, "subtasks": [{"id": "a", "prompt": "do a", "depends_on": None}]}

    built = plan_from_dict(data)

    assert built.strategy == "dag" and built.analysis == ""
    assert built.subtasks[0] == SubtaskSpec(id="a", name="a", prompt="do a")


def test_a_persons_plan_lists_every_wrong_type_and_unknown_key_with_its_path() -> None:
    data = {
        "analysis": ["why"],
        "strategy": "dag",
        "notse": "typo",
        "subtasks": [
            {"id": "a", "prompt": "do a", "depends_on": "b", "file_involved": ["x"]},
            {"id": 2, "prompt": "do 2", "complexity": 3},
            {"id": "c", "prompt": "", "depends_on": ["a", 4], "colour": "red"},
        ],
    }

    with pytest.raises(PlanProblems) as caught:
        plan_from_dict(data)

    assert caught.value.problems == [
        "notse: unknown key; did you mean notes?",
        "analysis: must be a string",
        "subtasks[0].file_involved: unknown key; did you mean files_involved?",
        "subtasks[0].depends_on: must be a list of strings",
        "subtasks[1].id: must be a string",
        "subtasks[1].complexity: must be a string",
        "subtasks[2].colour: unknown key; expected id, name, description, prompt, depends_on,"
        " files_involved, complexity, agent_role",
        "subtasks[2].depends_on: must be a list of strings",
        "subtask 'c' has an empty prompt",
    ]


def test_a_persons_plan_is_also_held_to_the_team() -> None:
    data = {"subtasks": [{"id": "a", "prompt": "do", "agent_role": "wizard", "extra": 1}]}

    with pytest.raises(PlanProblems) as caught:
        plan_from_dict(data, TEAM)

    assert caught.value.problems == [
        "subtasks[0].extra: unknown key; expected id, name, description, prompt, depends_on,"
        " files_involved, complexity, agent_role",
        "subtask 'a' has agent_role 'wizard'; the team crew has no such role"
        " (its roles: developer, tester, reviewer)",
    ]


@pytest.mark.parametrize("data", [None, [], "subtasks: []"])
def test_a_persons_plan_that_is_not_a_mapping_is_one_problem(data: Any) -> None:
    with pytest.raises(PlanProblems) as caught:
        plan_from_dict(data)

    assert caught.value.problems == [
        "the plan must be a mapping with the keys analysis, strategy, notes, subtasks"
    ]


def test_a_persons_plan_without_subtasks_is_refused() -> None:
    with pytest.raises(PlanProblems) as caught:
        plan_from_dict({"analysis": "nothing to do"})

    assert caught.value.problems == ["plan has no subtasks"]


def test_a_persons_plan_may_not_have_a_kind() -> None:
    # The editable form is plan_to_dict's; a planner output pasted in is refused by name.
    with pytest.raises(PlanProblems) as caught:
        plan_from_dict(plan(sub("a")))

    assert caught.value.problems == [
        "kind: unknown key; expected analysis, strategy, notes, subtasks"
    ]


# levels() -----------------------------------------------------------------------------------------


def test_levels_group_subtasks_that_may_run_together_in_plan_order() -> None:
    subtasks = specs(
        ("z", ()), ("b", ("z",)), ("a", ()), ("m", ()), ("c", ("a", "b")), ("d", ("a",))
    )

    assert levels(subtasks) == [["z", "a", "m"], ["b", "d"], ["c"]]


def test_levels_of_a_diamond() -> None:
    subtasks = specs(
        ("top", ()), ("left", ("top",)), ("right", ("top",)), ("end", ("right", "left"))
    )

    assert levels(subtasks) == [["top"], ["left", "right"], ["end"]]


def test_levels_take_extra_dependencies_without_changing_the_plan() -> None:
    subtasks = specs(("review", ()), ("a", ()), ("b", ("a",)))

    assert levels(subtasks) == [["review", "a"], ["b"]]
    assert levels(subtasks, {"review": ("a", "b")}) == [["a"], ["b"], ["review"]]
    assert order(subtasks, {"review": ["a", "b"]}) == ["a", "b", "review"]
    assert subtasks[0].depends_on == ()


def test_levels_of_no_subtasks_are_empty() -> None:
    assert levels(()) == []


def test_levels_refuse_a_cycle_naming_its_members() -> None:
    with pytest.raises(PlanProblems) as caught:
        levels(specs(("a", ("b",)), ("b", ("a",)), ("c", ("a",))))

    assert caught.value.problems == ["plan has a dependency cycle among: a, b"]


def test_levels_refuse_an_unknown_dependency() -> None:
    with pytest.raises(PlanProblems) as caught:
        levels(specs(("a", ("ghost",))), {"a": ("phantom",)})

    assert caught.value.problems == [
        "subtask 'a' depends on unknown subtask 'ghost'",
        "subtask 'a' depends on unknown subtask 'phantom'",
    ]


def test_order_of_a_self_dependency_is_a_cycle() -> None:
    with pytest.raises(PlanProblems, match=r"cycle among: a$"):
        order(specs(("a", ("a",))))
