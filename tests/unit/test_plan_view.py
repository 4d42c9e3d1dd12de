"""The CLI's plan view (levels, text, YAML), its questions on a terminal and its refusal lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from klaudio import errors
from klaudio.cli import ask, planview
from klaudio.cli.common import error_lines, problems, refusal
from klaudio.rpc.v1.tasks_pb2 import Plan, Question, Subtask, Task, TaskSettings
from klaudiod.plan import SubtaskSpec, levels
from klaudiod.plan import plan_to_dict as daemon_plan_to_dict
from klaudiod.teams import builtin_teams, run_last_dependencies

Spec = tuple[str, list[str], str]


def grouped(subtasks: list[Spec], run_last: set[str] | frozenset[str] = frozenset()) -> list[Any]:
    found = planview.levels(subtasks, run_last)
    return [[subtasks[i][0] for i in level.positions] for level in found]


# Levels -----------------------------------------------------------------------------------------


def test_levels_follow_dependencies_in_plan_order() -> None:
    subtasks: list[Spec] = [
        ("docs", ["api"], "developer"),
        ("api", [], "developer"),
        ("ui", [], "developer"),
        ("tests", ["api", "ui"], "developer"),
        ("lint", [], "developer"),
    ]

    assert grouped(subtasks) == [["api", "ui", "lint"], ["docs", "tests"]]


def test_run_last_subtasks_wait_for_every_other_one() -> None:
    subtasks: list[Spec] = [
        ("review", [], "reviewer"),
        ("a", [], "developer"),
        ("b", ["a"], "developer"),
    ]

    found = planview.levels(subtasks, {"reviewer"})

    assert [[subtasks[i][0] for i in level.positions] for level in found] == [
        ["a"],
        ["b"],
        ["review"],
    ]
    assert [level.last for level in found] == [False, False, True]


def test_a_plan_of_run_last_subtasks_only_has_nothing_to_wait_for() -> None:
    found = planview.levels([("r1", [], "reviewer"), ("r2", [], "reviewer")], {"reviewer"})

    assert [(level.positions, level.last) for level in found] == [((0, 1), False)]


def test_a_cycle_is_one_last_level_not_a_hang() -> None:
    found = planview.levels([("a", ["b"], ""), ("b", ["a"], ""), ("c", [], "")])

    assert [(level.positions, level.stuck) for level in found] == [((2,), False), ((0, 1), True)]


@pytest.mark.parametrize("team", sorted(builtin_teams()))
def test_levels_are_the_daemons(team: str) -> None:
    """The CLI computes what klaudiod.plan.levels() does, run-last roles included."""
    roles = [r.name for r in builtin_teams()[team].roles]
    specs = [
        SubtaskSpec(
            id=f"s{i}", name="n", prompt="p", depends_on=deps, agent_role=roles[i % len(roles)]
        )
        for i, deps in enumerate([(), ("s0",), (), ("s1", "s2"), (), ("s0",)])
    ]
    extra = run_last_dependencies(tuple(specs), builtin_teams()[team])
    last = {r.name for r in builtin_teams()[team].roles if r.run_last}

    mine = grouped([(s.id, list(s.depends_on), s.agent_role) for s in specs], last)

    assert mine == levels(tuple(specs), extra)


@pytest.mark.parametrize(
    ("number", "level", "max_agents", "title"),
    [
        (1, planview.Level((0, 1)), 3, "Level 1 (runs first, 2 in parallel)"),
        (1, planview.Level((0,)), 3, "Level 1 (runs first)"),
        (2, planview.Level((0,)), 3, "Level 2"),
        (2, planview.Level((0, 1, 2)), 2, "Level 2 (3 subtasks, 2 at a time)"),
        (3, planview.Level((0,), last=True), 3, "Level 3 (runs last, after every other subtask)"),
        (
            2,
            planview.Level((0, 1), stuck=True),
            3,
            "Level 2 (cannot be ordered: a dependency cycle or a missing subtask)",
        ),
    ],
)
def test_level_titles(number: int, level: planview.Level, max_agents: int, title: str) -> None:
    assert planview.level_title(number, level, max_agents) == title


# Text and YAML -----------------------------------------------------------------------------------


def a_task(**fields: Any) -> Task:
    plan = Plan(
        version=2,
        source="edit",
        analysis="First line\nsecond \x1b[31mline",
        strategy="dag",
        notes="",
        subtasks=[
            Subtask(
                id="api",
                name="Build the API",
                agent_role="developer",
                complexity="high",
                files_involved=["api.py", "models.py"],
                state="completed",
            ),
            Subtask(id="ui", name="Build the UI", agent_role="developer", complexity="low"),
            Subtask(id="review", name="Review", agent_role="reviewer", depends_on=["api"]),
        ],
    )
    values: dict[str, Any] = {
        "id": "3f2a9c1e0b7d",
        "state": 4,
        "plan": plan,
        "approved_plan_version": 1,
        "settings": TaskSettings(team="dev-review", max_agents=3),
        **fields,
    }
    return Task(**values)


def test_plan_lines() -> None:
    assert planview.plan_lines(a_task(), {"reviewer"}) == [
        "task 3f2a9c1e: plan v2 (edited); v1 was approved",
        "team dev-review, strategy dag",
        "analysis:",
        "  First line",
        "  second \\x1b[31mline",
        "",
        "Level 1 (runs first, 2 in parallel)",
        "  api     Build the API  (role developer, complexity high)",
        "          files: api.py, models.py",
        "          state: completed",
        "  ui      Build the UI  (role developer, complexity low)",
        "",
        "Level 2 (runs last, after every other subtask)",
        "  review  Review  (role reviewer)",
        "          after: api",
    ]


@pytest.mark.parametrize(
    ("fields", "heading"),
    [
        ({"approved_plan_version": 2}, "task 3f2a9c1e: plan v2 (edited), approved"),
        ({"approved_plan_version": 0}, "task 3f2a9c1e: plan v2 (edited), not approved yet"),
        ({"approved_plan_version": 0, "state": 8}, "task 3f2a9c1e: plan v2 (edited)"),
    ],
)
def test_the_heading_says_which_version_was_approved(fields: dict[str, Any], heading: str) -> None:
    assert planview.heading(a_task(**fields)) == heading


def test_plan_dict_is_the_daemons_editable_shape() -> None:
    from klaudiod.plan import plan_from_dict

    data = planview.plan_dict(a_task().plan)
    for sub in data["subtasks"]:
        sub.update(prompt=f"do {sub['id']}", complexity="medium")

    assert data == daemon_plan_to_dict(plan_from_dict(data))


TRICKY = [
    "yes",
    "1.5",
    "",
    " leading and trailing ",
    "two\nlines\n",
    "trailing spaces   \nnext",
    "tab\there",
    "esc \x1b[31m and bell \x07",
    "# not a comment",
    "- not a list",
    "key: value",
    "ünïcödé ✓",
    "\n\nblank first\n\n",
    "null",
    "~",
]


@pytest.mark.parametrize("value", TRICKY)
def test_yaml_gives_the_text_back_exactly(value: str) -> None:
    data = {"analysis": value, "subtasks": [{"id": value, "depends_on": [value, "b"]}]}

    assert yaml.safe_load(planview.to_yaml(data)) == data


def test_yaml_is_readable() -> None:
    data = planview.plan_dict(a_task().plan)
    data["analysis"] = "First line\nsecond line"
    data["subtasks"][0]["prompt"] = "Do this.\nThen that.\n"

    text = planview.to_yaml(data)

    assert text.startswith("analysis: |-\n  First line\n")
    assert "  prompt: |\n    Do this.\n    Then that.\n" in text
    assert "  files_involved: [api.py, models.py]\n" in text
    assert text.index("analysis") < text.index("strategy") < text.index("subtasks")
    assert json.loads(json.dumps(yaml.safe_load(text))) == data


# Questions on a terminal -------------------------------------------------------------------------

DB = Question(
    id="db", text="Which database?", options=["sqlite", "postgres"], suggestions=["sqlite"]
)
FREE = Question(id="name", text="What name?")


@pytest.mark.parametrize(
    ("question", "reply", "answer"),
    [
        (DB, "2\n", "postgres"),
        (DB, "1", "sqlite"),
        (DB, "3\n", "3"),  # no third option: the text itself
        (DB, "\n", "sqlite"),  # Enter: the first suggestion
        (DB, "  mysql, please \n", "mysql, please"),
        (FREE, "\n", None),  # nothing to take
        (FREE, "2\n", "2"),
    ],
)
def test_choose(question: Question, reply: str, answer: str | None) -> None:
    assert ask.choose(question, reply) == answer


def test_open_questions_are_the_current_rounds_unanswered_ones() -> None:
    task = Task(
        id="3f2a9c1e0b7d",
        state=3,
        questions=[
            Question(id="db", round=1, answer="sqlite"),
            Question(id="port", round=2, answer="8080"),
            Question(id="cache", round=2),
        ],
    )

    assert [q.id for q in ask.open_questions(task)] == ["cache"]
    assert ask.open_questions(Task(state=4, questions=[Question(id="x", round=1)])) == []


def test_answer_commands_quote_the_models_ids() -> None:
    task = Task(
        id="3f2a9c1e0b7d",
        state=3,
        questions=[
            Question(id="db", round=1),
            Question(id="what's $(this)", round=1),
            Question(id="-x", round=1),
            Question(id="esc\x1b", round=1),
        ],
    )

    assert ask.answer_commands(task) == [
        "klaudio task answer 3f2a9c1e db 'ANSWER'",
        "klaudio task answer 3f2a9c1e 'what'\"'\"'s $(this)' 'ANSWER'",
        "klaudio task answer 3f2a9c1e -- -x 'ANSWER'",
        "klaudio task answer 3f2a9c1e 'esc\\x1b' 'ANSWER'",
    ]


def test_describe_a_question() -> None:
    question = Question(
        id="db",
        text="Which database?\nPick one.",
        context="We store users.",
        options=["sqlite", "post\x1bgres"],
        suggestions=["sqlite", "postgres"],
    )

    assert ask.describe(question, "Question 1 of 2") == [
        "Question 1 of 2 (db): Which database?",
        "  Pick one.",
        "  We store users.",
        "  1) sqlite",
        "  2) post\\x1bgres",
        "  suggested: sqlite; postgres",
    ]


# Refusals that list problems --------------------------------------------------------------------


def test_a_refusal_lists_each_problem_on_its_own_line() -> None:
    exc = errors.InvalidArgument("the plan has 2 problems:\n- subtask 'a': x\n- esc \x1b[2J")

    assert problems(exc) == ("the plan has 2 problems:", ["subtask 'a': x", "esc \x1b[2J"])
    assert error_lines(exc) == [
        "klaudio: the plan has 2 problems:",
        "subtask 'a': x",
        "esc \\x1b[2J",
    ]


@pytest.mark.parametrize(
    "exc",
    [
        errors.InvalidArgument("one line"),
        errors.InvalidArgument("a reason:\nwith a second line"),
        errors.NotFound("the plan has 2 problems:\n- a\n- b"),
    ],
)
def test_other_errors_stay_one_line(exc: errors.KlaudioError) -> None:
    assert problems(exc) is None
    assert len(error_lines(exc)) == 1
    assert "\n" not in error_lines(exc)[0]


def test_refusal_is_what_problems_reads() -> None:
    assert str(refusal("f has 1 problem", ["only"])) == "only"
    assert problems(refusal("f has 2 problems", ["a", "b"])) == ("f has 2 problems:", ["a", "b"])
