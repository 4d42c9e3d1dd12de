"""Task, subtask, agent and agent-run states, and the transitions allowed between them."""

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
    APPROVED: frozenset({RUNNING, FAILED, PAUSED, CANCELLED}),
    RUNNING: frozenset({COMPLETED, FAILED, PAUSED, CANCELLED}),
    PAUSED: frozenset({PLANNING, RUNNING, CANCELLED}),
    FAILED: frozenset({PLANNING, RUNNING}),
    COMPLETED: frozenset(),
    CANCELLED: frozenset(),
}

# The daemon drives tasks in these states (and picks them up again after a restart).
ACTIVE = frozenset({PLANNING, APPROVED, RUNNING})
# A follower or waiter is done once the task is in one of these (each needs a person to act,
# or is final). A planned task is not: it waits for `klaudio task approve`.
SETTLED = frozenset({COMPLETED, FAILED, CANCELLED, PAUSED, AWAITING_ANSWERS})
# States from which nothing more can happen to a task.
FINAL = frozenset({COMPLETED, CANCELLED})
# A stop applies to these: they have (or are about to have) agents working.
STOPPABLE = ACTIVE
# A relaunch starts a new task from one of these.
RELAUNCHABLE = frozenset({COMPLETED, FAILED, CANCELLED})

# Subtask states. A stopped subtask's agent was interrupted by a stop and resumes with the task.
SUBTASK_PENDING = "pending"
SUBTASK_RUNNING = "running"
SUBTASK_STOPPED = "stopped"
SUBTASK_COMPLETED = "completed"
SUBTASK_FAILED = "failed"
SUBTASK_SKIPPED = "skipped"
SUBTASK_CANCELLED = "cancelled"

SUBTASK_TRANSITIONS: dict[str, frozenset[str]] = {
    SUBTASK_PENDING: frozenset({SUBTASK_RUNNING, SUBTASK_SKIPPED, SUBTASK_CANCELLED}),
    SUBTASK_RUNNING: frozenset(
        {SUBTASK_COMPLETED, SUBTASK_FAILED, SUBTASK_STOPPED, SUBTASK_CANCELLED}
    ),
    SUBTASK_STOPPED: frozenset({SUBTASK_RUNNING, SUBTASK_CANCELLED}),
    # A retry puts failed subtasks, and those skipped because of them, back in line.
    SUBTASK_FAILED: frozenset({SUBTASK_PENDING}),
    SUBTASK_SKIPPED: frozenset({SUBTASK_PENDING}),
    SUBTASK_COMPLETED: frozenset(),
    SUBTASK_CANCELLED: frozenset(),
}
# A subtask in one of these will not change unless a person retries the task.
SUBTASK_DONE = frozenset({SUBTASK_COMPLETED, SUBTASK_FAILED, SUBTASK_SKIPPED, SUBTASK_CANCELLED})

# Agent-run states: one run is one container. A run ends once, in one of the last three.
RUN_STARTING = "starting"
RUN_RUNNING = "running"
RUN_COMPLETED = "completed"
RUN_FAILED = "failed"
RUN_STOPPED = "stopped"

RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RUN_STARTING: frozenset({RUN_RUNNING, RUN_FAILED, RUN_STOPPED}),
    RUN_RUNNING: frozenset({RUN_COMPLETED, RUN_FAILED, RUN_STOPPED}),
    RUN_COMPLETED: frozenset(),
    RUN_FAILED: frozenset(),
    RUN_STOPPED: frozenset(),
}
RUN_LIVE = frozenset({RUN_STARTING, RUN_RUNNING})
RUN_ENDED = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_STOPPED})

# Agent states: an agent's state is that of its latest run. A stopped agent was interrupted
# (by a stop, a cancel or a usage limit) and can run again; so can a failed one (a retry) and
# a completed planner (answers, replans).
AGENT_STARTING = RUN_STARTING
AGENT_RUNNING = RUN_RUNNING
AGENT_COMPLETED = RUN_COMPLETED
AGENT_FAILED = RUN_FAILED
AGENT_STOPPED = RUN_STOPPED
AGENT_LIVE = RUN_LIVE

AGENT_TRANSITIONS: dict[str, frozenset[str]] = {
    AGENT_STARTING: frozenset({AGENT_RUNNING, AGENT_FAILED, AGENT_STOPPED}),
    AGENT_RUNNING: frozenset({AGENT_COMPLETED, AGENT_FAILED, AGENT_STOPPED}),
    AGENT_STOPPED: frozenset({AGENT_STARTING}),
    AGENT_FAILED: frozenset({AGENT_STARTING}),
    AGENT_COMPLETED: frozenset({AGENT_STARTING}),
}


def can_transition(current: str, target: str) -> bool:
    """Whether a task in state current may move to target."""
    return target in TRANSITIONS.get(current, frozenset())


def can_transition_subtask(current: str, target: str) -> bool:
    """Whether a subtask in state current may move to target."""
    return target in SUBTASK_TRANSITIONS.get(current, frozenset())


def can_transition_agent(current: str, target: str) -> bool:
    """Whether an agent in state current may move to target."""
    return target in AGENT_TRANSITIONS.get(current, frozenset())


def can_transition_run(current: str, target: str) -> bool:
    """Whether an agent run in state current may move to target."""
    return target in RUN_TRANSITIONS.get(current, frozenset())
