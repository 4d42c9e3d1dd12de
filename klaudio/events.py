"""The payloads of a task's lifecycle events, as the daemon stores them and the CLI renders them.

A task's stream holds two kinds of events: an agent's output lines (Claude Code's stream-json,
stored as written) and the task's own lifecycle events, each a JSON object whose "type" is one
of KINDS. Their shapes are defined here once: the daemon builds them as these types, and the
renderer handles exactly these kinds (a guard test ties the two). Standard library only: the
CLI imports it.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class TaskEvent(TypedDict):
    """The task entered state (with why); a usage-limit pause names when it resumes."""

    type: Literal["task"]
    state: str
    reason: str
    resume_at: NotRequired[float]  # seconds since the epoch


class ControlEvent(TypedDict):
    """A stop or cancel was asked for ("stop", "cancel"), or none is pending ("")."""

    type: Literal["control"]
    control: str


class PlanSubtask(TypedDict):
    id: str
    name: str
    depends_on: list[str]


class PlanEvent(TypedDict):
    """A plan version was stored."""

    type: Literal["plan"]
    version: int
    source: str  # "planner", "edited", ...
    strategy: str
    subtasks: list[PlanSubtask]


class Question(TypedDict):
    id: str
    text: str


class QuestionsEvent(TypedDict):
    """The planner asked a round of questions."""

    type: Literal["questions"]
    round: int
    questions: list[Question]


class AnswersEvent(TypedDict):
    """Questions were answered (their ids)."""

    type: Literal["answers"]
    answered: list[str]


class SubtaskEvent(TypedDict):
    """A subtask entered state; the reason of an end other than completion."""

    type: Literal["subtask"]
    id: str
    name: str
    state: str
    reason: NotRequired[str]


class AgentEvent(TypedDict):
    """A run of an agent entered state (epoch: which run)."""

    type: Literal["agent"]
    agent: str
    state: str
    epoch: int
    resume: NotRequired[bool]  # a run that resumes the agent's conversation
    exit_code: NotRequired[int]
    reason: NotRequired[str]
    cost_usd: NotRequired[float]  # of an ended run


class NoticeEvent(TypedDict):
    """Something worth a line in the stream that is no state change."""

    type: Literal["notice"]
    text: str


class DeliveryEvent(TypedDict):
    """The delivery entered state (delivering, delivered, failed)."""

    type: Literal["delivery"]
    state: str
    delivery_reason: NotRequired[str]
    delivered_commit: NotRequired[str]
    pr_url: NotRequired[str]


class CheckpointEvent(TypedDict):
    """A checkpoint was written (not rendered: `klaudio task checkpoints` lists them)."""

    type: Literal["checkpoint"]
    id: str
    reason: str
    size: int  # bytes
    files: int


Lifecycle = (
    TaskEvent
    | ControlEvent
    | PlanEvent
    | QuestionsEvent
    | AnswersEvent
    | SubtaskEvent
    | AgentEvent
    | NoticeEvent
    | DeliveryEvent
    | CheckpointEvent
)

KINDS = frozenset(
    {
        "task",
        "control",
        "plan",
        "questions",
        "answers",
        "subtask",
        "agent",
        "notice",
        "delivery",
        "checkpoint",
    }
)


def notice(text: str) -> NoticeEvent:
    """A notice event."""
    return {"type": "notice", "text": text}
