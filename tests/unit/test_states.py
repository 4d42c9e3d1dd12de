"""Task states and the transitions allowed between them."""

from __future__ import annotations

import pytest

from klaudiod import states
from klaudiod.states import ACTIVE, SETTLED, TASK_STATES, TRANSITIONS, can_transition

LEGAL = [
    ("created", "planning"),
    ("planning", "awaiting_answers"),
    ("planning", "planned"),
    ("planning", "failed"),
    ("planning", "paused"),
    ("planning", "cancelled"),
    ("awaiting_answers", "planning"),
    ("planned", "approved"),
    ("approved", "running"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "paused"),
    ("running", "cancelled"),
    ("paused", "running"),
    ("failed", "planning"),
    ("failed", "running"),
]

ILLEGAL = [
    ("created", "running"),
    ("created", "approved"),
    ("created", "completed"),
    ("created", "planned"),
    ("planning", "running"),
    ("planning", "approved"),
    ("awaiting_answers", "running"),
    ("awaiting_answers", "planned"),
    ("planned", "running"),
    ("planned", "completed"),
    ("approved", "completed"),
    ("approved", "planned"),
    ("running", "planning"),
    ("running", "approved"),
    ("paused", "completed"),
    ("failed", "completed"),
    ("failed", "approved"),
    ("completed", "running"),
    ("completed", "planning"),
    ("completed", "failed"),
    ("cancelled", "running"),
    ("cancelled", "planning"),
]


def test_every_state_has_an_entry_and_no_other_key_does() -> None:
    assert set(TRANSITIONS) == set(TASK_STATES)
    assert len(TASK_STATES) == len(set(TASK_STATES)) == 10


def test_every_target_is_a_known_state() -> None:
    for source, targets in TRANSITIONS.items():
        assert targets <= set(TASK_STATES), source


def test_no_state_transitions_to_itself() -> None:
    for source, targets in TRANSITIONS.items():
        assert source not in targets


@pytest.mark.parametrize("terminal", ["completed", "cancelled"])
def test_terminal_states_have_no_way_out(terminal: str) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    assert not any(can_transition(terminal, target) for target in TASK_STATES)


def test_only_completed_and_cancelled_are_terminal() -> None:
    assert {s for s, targets in TRANSITIONS.items() if not targets} == {"completed", "cancelled"}


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transition_is_allowed(current: str, target: str) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_is_refused(current: str, target: str) -> None:
    assert not can_transition(current, target)


@pytest.mark.parametrize(("current", "target"), [("bogus", "planning"), ("created", "bogus")])
def test_unknown_states_never_transition(current: str, target: str) -> None:
    assert not can_transition(current, target)


def test_every_non_terminal_state_can_be_left_towards_an_end() -> None:
    # From every state some chain of transitions reaches completed or cancelled.
    ends = {"completed", "cancelled"}
    reachable = set(ends)
    changed = True
    while changed:
        changed = False
        for source, targets in TRANSITIONS.items():
            if source not in reachable and targets & reachable:
                reachable.add(source)
                changed = True
    assert reachable == set(TASK_STATES)


def test_settled_and_active_are_disjoint_known_states() -> None:
    assert not SETTLED & ACTIVE
    assert set(TASK_STATES) >= SETTLED
    assert set(TASK_STATES) >= ACTIVE
    assert {"completed", "cancelled", "failed", "paused", "awaiting_answers"} <= SETTLED
    assert "planned" not in SETTLED  # it waits for `klaudio task approve`, so waiters go on
    assert "created" not in SETTLED
    assert {"planning", "approved", "running"} == ACTIVE


def test_constants_match_their_names() -> None:
    assert states.CREATED == "created"
    assert states.AWAITING_ANSWERS == "awaiting_answers"
    assert frozenset({"starting", "running"}) == states.AGENT_LIVE


# One definition each, tied together -----------------------------------------------------------


def test_the_proto_enum_names_exactly_the_task_states() -> None:
    from klaudio.rpc.v1 import tasks_pb2

    names = [
        tasks_pb2.TaskState.Name(v).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]
        for v in tasks_pb2.TaskState.values()
    ]
    assert names == ["unspecified", *TASK_STATES]


def test_the_cli_names_the_states_as_the_proto_numbers_them() -> None:
    from klaudio.cli.format import STATE_NAMES
    from klaudio.rpc.v1 import tasks_pb2

    proto = {
        v: tasks_pb2.TaskState.Name(v).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]
        for v in tasks_pb2.TaskState.values()
    }
    assert proto == STATE_NAMES


def test_event_kinds_are_the_same_numbers_on_every_side() -> None:
    from klaudio.cli import follow, render
    from klaudio.rpc.v1 import stream_pb2
    from klaudiod.store import KIND_AGENT, KIND_TASK

    assert (KIND_AGENT, KIND_TASK) == (stream_pb2.EVENT_KIND_AGENT, stream_pb2.EVENT_KIND_TASK)
    assert (render.AGENT_OUTPUT, render.TASK_EVENT) == (KIND_AGENT, KIND_TASK)
    assert follow.KINDS == {KIND_AGENT: "agent", KIND_TASK: "task"}


def test_every_transition_table_names_known_states_only() -> None:
    for table, known in [
        (states.TRANSITIONS, set(TASK_STATES)),
        (states.SUBTASK_TRANSITIONS, set(states.SUBTASK_TRANSITIONS)),
        (states.RUN_TRANSITIONS, set(states.RUN_TRANSITIONS)),
        (states.AGENT_TRANSITIONS, set(states.AGENT_TRANSITIONS)),
    ]:
        for source, targets in table.items():
            assert source in known and targets <= known, (source, targets - known)
