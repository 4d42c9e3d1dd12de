"""Task, subtask and agent states, and the task transitions allowed between them."""

from __future__ import annotations

CREATED = "created"
PLANNING = "planning"
AWAITING_ANSWERS = "awaiting_answers"
PLANNED = "planned"
APPROVED = "approved"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
PAUSED = "paused"
CANCELLED = "cancelled"

TASK_STATES = (
    CREATED,
    PLANNING,
    AWAITING_ANSWERS,
    PLANNED,
    APPROVED,
    RUNNING,
    COMPLETED,
    FAILED,
    PAUSED,
    CANCELLED,
)

TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({PLANNING, CANCELLED}),
    PLANNING: frozenset({AWAITING_ANSWERS, PLANNED, FAILED, PAUSED, CANCELLED}),
    AWAITING_ANSWERS: frozenset({PLANNING, FAILED, CANCELLED}),
    PLANNED: frozenset({APPROVED, PLANNING, CANCELLED}),
    APPROVED: frozenset({RUNNING, FAILED, CANCELLED}),
    RUNNING: frozenset({COMPLETED, FAILED, PAUSED, CANCELLED}),
    PAUSED: frozenset({RUNNING, CANCELLED}),
    FAILED: frozenset({PLANNING, RUNNING}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
}

# The daemon drives tasks in these states (and picks them up again after a restart).
ACTIVE = frozenset({PLANNING, APPROVED, RUNNING})
# A follower or waiter is done once the task is in one of these (each needs a person to act,
# or is final). A planned task is not: it waits for `klaudio task approve`.
SETTLED = frozenset({COMPLETED, FAILED, CANCELLED, PAUSED, AWAITING_ANSWERS})

# Subtask states.
SUBTASK_PENDING = "pending"
SUBTASK_RUNNING = "running"
SUBTASK_COMPLETED = "completed"
SUBTASK_FAILED = "failed"
SUBTASK_SKIPPED = "skipped"

# Agent states.
AGENT_STARTING = "starting"
AGENT_RUNNING = "running"
AGENT_COMPLETED = "completed"
AGENT_FAILED = "failed"
AGENT_LIVE = frozenset({AGENT_STARTING, AGENT_RUNNING})


def can_transition(current: str, target: str) -> bool:
    """Whether a task in state current may move to target."""
    return target in TRANSITIONS.get(current, frozenset())
