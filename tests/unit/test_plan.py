"""The planner's output: parse(), validate(), order() and the schema offered to the model."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from klaudio.errors import InvalidArgument
from klaudiod.plan import (
    MAX_SUBTASKS,
    PLANNER_SCHEMA,
    Plan,
    Questions,
    SubtaskSpec,
    agent_name,
    order,
    parse,
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


def rejected(output: Any, roles: frozenset[str] | None = None) -> str:
    with pytest.raises(InvalidArgument) as caught:
        parse(output, roles)
    return str(caught.value)


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


def test_a_known_role_is_accepted_when_roles_are_given() -> None:
    parsed = parse(plan(sub("a", agent_role="tester")), frozenset({"developer", "tester"}))

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
    message = rejected(plan(sub("a", prompt=prompt)))

    assert "'prompt'" in message and "empty" in message


def test_a_missing_prompt_is_rejected() -> None:
    item = sub("a")
    del item["prompt"]

    assert rejected(plan(item)) == "planner output is missing 'prompt'"


def test_a_missing_id_is_rejected() -> None:
    item = sub("a")
    del item["id"]

    assert rejected(plan(item)) == "planner output is missing 'id'"


@pytest.mark.parametrize("complexity", ["huge", "LOW", "trivial"])
def test_an_unknown_complexity_is_rejected(complexity: str) -> None:
    message = rejected(plan(sub("a", complexity=complexity)))

    assert message == f"subtask 'a' has unknown complexity {complexity!r}"


def test_an_unknown_strategy_is_rejected() -> None:
    message = rejected(plan(sub("a"), strategy="waterfall"))

    assert "'waterfall'" in message and "dag" in message


def test_an_unknown_role_is_rejected_when_roles_are_given() -> None:
    message = rejected(plan(sub("a", agent_role="wizard")), frozenset({"developer", "tester"}))

    assert message == "subtask 'a' has unknown agent_role 'wizard'"


def test_any_role_is_accepted_when_roles_are_not_given() -> None:
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
    message = rejected(plan(sub("a", **{field: value})))

    assert message == f"planner output field '{field}' must be a string"


@pytest.mark.parametrize(
    ("field", "value"),
    [("depends_on", "b"), ("depends_on", [1]), ("files_involved", [["x.py"]])],
)
def test_a_list_field_of_another_type_is_rejected(field: str, value: Any) -> None:
    message = rejected(plan(sub("a"), sub("b", **{field: value})))

    assert message == f"planner output field '{field}' must be a list of str"


@pytest.mark.parametrize("subtasks", ["a,b", [["a"]], ["a", "b"]])
def test_subtasks_that_are_not_a_list_of_objects_are_rejected(subtasks: Any) -> None:
    message = rejected({"kind": "plan", "subtasks": subtasks})

    assert message == "planner output field 'subtasks' must be a list of dict"


def test_a_non_string_analysis_is_rejected() -> None:
    assert (
        rejected(plan(sub("a"), analysis=3)) == "planner output field 'analysis' must be a string"
    )


def test_a_question_without_text_is_rejected() -> None:
    output = {"kind": "questions", "questions": [{"id": "q"}]}

    assert rejected(output) == "planner output is missing 'text'"


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
