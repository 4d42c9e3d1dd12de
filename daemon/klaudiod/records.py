"""Typed, immutable records the store hands upward: tasks, plans, subtasks, agents, runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskRecord:
    """A task row. prompt is empty in summaries (lists leave it out)."""

    id: str
    name: str
    prompt: str
    state: str
    reason: str
    repo: str
    workspace: str
    auto_approve: bool
    created_at: float
    updated_at: float
    # A stop or cancel recorded but not yet carried out ("" when none): intent before effect.
    control: str = ""
    # When the daemon resumes a task paused by a usage limit by itself (None: it does not).
    resume_at: float | None = None
    # How many usage-limit pauses in a row (for the exponential backoff).
    limit_pauses: int = 0
    # More for the planner than the prompt says (a relaunched task's story).
    context: str = ""
    # The commit the workspace was cloned at ("" for an empty workspace).
    base_commit: str = ""
    # The team's name and the effective settings recorded at creation (see settings.py).
    team: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    # The plan version that was approved (0: none yet).
    approved_version: int = 0
    # The planner's next message (answers, a replan's context), until a planner run takes it.
    planner_message: str = ""
    # How the work is delivered (delivery.py): a snapshot of its template or flags.
    delivery: dict[str, Any] = field(default_factory=dict)
    # The task's branch ("" without auto-branch), and the branch the workspace was cloned from.
    branch: str = ""
    base_branch: str = ""
    # The inputs it was given: their names under input/ in the workspace.
    inputs: tuple[str, ...] = ()
    # "" (nothing to deliver, or not yet), delivering, delivered or failed; why; what.
    delivery_state: str = ""
    delivery_reason: str = ""
    delivered_commit: str = ""
    pr_url: str = ""


@dataclass(frozen=True)
class SubtaskRecord:
    """One subtask of a plan, with its JSON lists decoded."""

    id: int
    task_id: str
    key: str
    position: int
    name: str
    description: str
    prompt: str
    depends_on: tuple[str, ...]
    files_involved: tuple[str, ...]
    complexity: str
    agent_role: str
    state: str
    result: str
    # Why it failed or stopped (its agent run's reason, or why no agent could run).
    reason: str = ""


@dataclass(frozen=True)
class PlanRecord:
    """A stored plan version."""

    id: int
    task_id: str
    version: int
    analysis: str
    strategy: str
    notes: str
    created_at: float
    source: str = "planner"


@dataclass(frozen=True)
class QuestionRecord:
    """A question the planner asked, and its answer once given."""

    id: int
    task_id: str
    key: str
    text: str
    context: str
    suggestions: tuple[str, ...]
    options: tuple[str, ...]
    answer: str
    round: int = 1


@dataclass(frozen=True)
class AgentRecord:
    """An agent: one conversation (session) that may run several times.

    Its state is its latest run's, its cost the sum of its runs'.
    """

    id: int
    task_id: str
    name: str
    role: str
    subtask_id: int | None
    state: str
    session_id: str
    home: str
    exit_code: int | None
    cost_usd: float
    reason: str
    result: str
    started_at: float | None
    ended_at: float | None
    runs: int = 0
    # The container of its latest run ("" before its first).
    container: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One run of an agent: one container, its output file and how it ended."""

    id: int
    agent_id: int
    task_id: str
    agent: str
    epoch: int
    state: str
    container: str
    run_dir: str
    prompt: str
    resume: bool
    output_offset: int
    exit_code: int | None
    cost_usd: float
    reason: str
    result: str
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint: an archive of a task's workspace and agent sessions."""

    id: str
    task_id: str
    created_at: float
    reason: str
    size: int
    path: str


@dataclass(frozen=True)
class RepoTemplateRecord:
    """A repository template (the token itself is never stored: only where it comes from)."""

    name: str
    url: str
    branch: str
    forge: str
    api_url: str
    token_env: str
    token_file: str
    auto_branch: bool
    auto_commit: bool
    auto_push: bool
    auto_pr: bool
    pr_target: str
    reviewers: tuple[str, ...]
    memory: bool


@dataclass(frozen=True)
class Detail:
    """A task with everything recorded about it, read in one store call."""

    task: TaskRecord
    plan: PlanRecord | None
    subtasks: list[SubtaskRecord] = field(default_factory=list)
    agents: list[AgentRecord] = field(default_factory=list)
    questions: list[QuestionRecord] = field(default_factory=list)
    cost: float = 0.0
