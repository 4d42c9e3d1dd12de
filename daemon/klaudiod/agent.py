"""One Claude Code agent: its command line, its prompts, and the outcome read from its output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klaudio.config import Config
from klaudiod.plan import PLANNER_SCHEMA

PLANNER_SYSTEM = (
    "You are the planner of a team of coding agents working in /workspace. Read the repository "
    "with your read-only tools, then answer ONLY by calling the StructuredOutput tool, either with "
    'kind="plan" (analysis, strategy "dag", subtasks with unique ids, depends_on naming other '
    "subtask ids, a complete self-contained prompt for each, notes) or, if the request is too "
    'ambiguous to plan, with kind="questions". Keep subtasks few and coarse.'
)

WORKER_SYSTEM = (
    "You are one agent in a team carrying out a planned task in /workspace, a workspace shared "
    "with the other agents. Do exactly your subtask, leave the files in a finished state and end "
    "with a short summary of what you did: it is passed on to the agents that depend on you."
)


def planner_prompt(task_prompt: str) -> str:
    """The planner's prompt for a task."""
    return (
        "Plan the following task for a team of coding agents working in /workspace.\n\n"
        f"Task:\n{task_prompt}\n"
    )


def worker_prompt(task_prompt: str, name: str, prompt: str, context: dict[str, str]) -> str:
    """A worker's prompt: the overall task, its subtask, and its dependencies' final messages."""
    parts = [f"Overall task:\n{task_prompt}\n", f"Your subtask ({name}):\n{prompt}\n"]
    if context:
        parts.append("Results of the subtasks yours depends on (also in .klaudio/context/):")
        for key, result in context.items():
            parts.append(f"--- {key} ---\n{result.strip()}\n")
    return "\n".join(parts)


def command(config: Config, session_id: str, planner: bool) -> list[str]:
    """The claude arguments for a planner (read-only, structured output) or a worker."""
    args = [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--session-id",
        session_id,
        "--max-turns",
        str(config.claude.max_turns),
    ]
    if planner:
        args += [
            "--tools",
            "Read,Grep,Glob",
            "--permission-mode",
            "dontAsk",
            "--json-schema",
            json.dumps(PLANNER_SCHEMA),
            "--append-system-prompt",
            PLANNER_SYSTEM,
        ]
    else:
        args += ["--dangerously-skip-permissions", "--append-system-prompt", WORKER_SYSTEM]
    if config.claude.model:
        args += ["--model", config.claude.model]
    return args


@dataclass(frozen=True)
class Outcome:
    """How an agent's run ended, judged from its exit code and its last result event."""

    ok: bool
    exit_code: int | None
    reason: str
    result: str
    cost_usd: float
    session_id: str
    structured: Any = None


def outcome(
    out_file: Path, exit_code: int | None, oom_killed: bool = False, needs_structured: bool = False
) -> Outcome:
    """Judge a finished agent from its exit code and its last result event.

    Success needs exit 0, a result with is_error false and terminal_reason completed, and
    structured output when a schema was given.
    """
    last = _last_result(out_file)
    cost = float(last.get("total_cost_usd") or 0.0) if last else 0.0
    session = str(last.get("session_id") or "") if last else ""
    text = str(last.get("result") or "") if last else ""
    structured = last.get("structured_output") if last else None

    def fail(reason: str) -> Outcome:
        return Outcome(False, exit_code, reason, text, cost, session, structured)

    if oom_killed:
        return fail(f"killed: out of memory (exit {exit_code})")
    if exit_code is None:
        return fail("the container disappeared before the agent finished")
    if last is None:
        said = _last_stderr_line(out_file.with_name("err.log"))
        return fail(f"exit {exit_code} without a result event" + (f": {said}" if said else ""))
    if last.get("is_error") or exit_code != 0:
        return fail(_error_text(last, exit_code))
    if last.get("terminal_reason") not in (None, "completed"):
        return fail(f"ended early: {last.get('terminal_reason')}")
    if needs_structured and not isinstance(structured, dict):
        return fail("the planner gave no structured output")
    return Outcome(True, exit_code, "", text, cost, session, structured)


def _last_result(out_file: Path) -> dict[str, Any] | None:
    last = None
    try:
        with out_file.open("rb") as handle:
            for raw in handle:
                if b'"result"' not in raw:
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("type") == "result":
                    last = event
    except FileNotFoundError:
        return None
    return last


def _last_stderr_line(err_file: Path) -> str:
    """The last thing the agent printed on stderr (why it died, when it says), shortened."""
    try:
        with err_file.open("rb") as handle:
            handle.seek(max(0, err_file.stat().st_size - 4096))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _error_text(result: dict[str, Any], exit_code: int) -> str:
    errors = result.get("errors")
    detail = ""
    if isinstance(errors, list) and errors:
        detail = str(errors[0])
    detail = detail or str(result.get("result") or "") or str(result.get("subtype") or "error")
    detail = detail.strip().splitlines()[0] if detail.strip() else "error"
    reason = result.get("terminal_reason")
    subtype = result.get("subtype")
    if reason == "api_error":
        prefix = "API error"
    elif reason:
        prefix = str(reason)
    elif subtype and subtype != "success":
        prefix = str(subtype)
    else:
        prefix = "error"
    return f"{prefix}: {detail[:300]} (exit {exit_code})"
