"""One Claude Code agent: its command line, its prompts, and the outcome read from its output."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from klaudiod import safefs
from klaudiod.plan import PLANNER_SCHEMA
from klaudiod.settings import Settings

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


def planner_prompt(
    task_prompt: str, context: str = "", team: str = "", memory: str = "", questions: str = ""
) -> str:
    """The planner's prompt: the task, its team, what the repository holds, more context."""
    prompt = (
        "Plan the following task for a team of coding agents working in /workspace.\n\n"
        f"Task:\n{task_prompt}\n"
    )
    if questions:
        prompt += f"\nQuestions:\n{questions}\n"
    if team:
        prompt += f"\nTeam:\n{team.strip()}\n"
    if memory:
        prompt += f"\nThe repository at a glance (a static summary):\n{memory.strip()}\n"
    return prompt + (f"\nContext:\n{context}\n" if context else "")


def questions_rule(rounds: int) -> str:
    """What the planner is told about asking: how many rounds of questions it may ask."""
    if rounds <= 0:
        return 'Do not ask questions: answer with kind "plan", stating your assumptions.'
    return (
        f"If the task is too ambiguous to plan, you may ask clarifying questions (kind "
        f'"questions") in up to {rounds} round(s); then you must plan.'
    )


def answers_message(questions: list[tuple[str, str, str]], last_round: bool) -> str:
    """The planner's next user turn once its questions are answered: (id, text, answer)s."""
    lines = ["Answers to your questions:"]
    lines += [f"- {qid} ({text.strip()}): {answer.strip()}" for qid, text, answer in questions]
    if last_round:
        lines.append(
            "That was the last round of questions: do not ask more. Plan now, with kind "
            '"plan", making sensible assumptions and stating them in the analysis.'
        )
    else:
        lines.append("Continue planning with these answers.")
    return "\n".join(lines)


def replan_message(version: int, context: str) -> str:
    """The planner's next user turn when a person asks for the task to be planned again."""
    text = f"Plan this task again: your answer replaces the current plan (version {version})."
    if context.strip():
        text += f"\nMore context from the user:\n{context.strip()}"
    return text


def worker_prompt(
    task_prompt: str,
    name: str,
    prompt: str,
    context: dict[str, str],
    role: str = "",
    hint: str = "",
) -> str:
    """A worker's prompt: the task, its role, its subtask, its dependencies' final messages."""
    parts = [f"Overall task:\n{task_prompt}\n"]
    if role:
        parts.append(f"Your role in the team: {role}." + (f"\n{hint.strip()}\n" if hint else "\n"))
    parts.append(f"Your subtask ({name}):\n{prompt}\n")
    if context:
        parts.append("Results of the subtasks yours depends on (also in .klaudio/context/):")
        for key, result in context.items():
            parts.append(f"--- {key} ---\n{result.strip()}\n")
    return "\n".join(parts)


def command(settings: Settings, session_id: str, planner: bool, resume: bool = False) -> list[str]:
    """The claude arguments for a planner (read-only, structured output) or a worker.

    With resume, the run continues the agent's own conversation (`--resume <session>`): the
    prompt file then holds only the next user message.
    """
    args = ["-p", "--output-format", "stream-json", "--verbose"]
    args += ["--resume", session_id] if resume else ["--session-id", session_id]
    args += ["--max-turns", str(settings.max_turns)]
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
    if settings.model:
        args += ["--model", settings.model]
    return args


# The longest output line judged (a longer one cannot be a result event worth reading).
LINE_LIMIT = 16 << 20
SKIP_CHUNK = 1 << 20

# Exit codes of a process ended by a signal it did not ask for (128 + the signal's number).
KILLED_BY = {137: "SIGKILL", 143: "SIGTERM"}

# Resume messages: the next user turn of an agent's own conversation.
PAUSED_MESSAGE = (
    "You were paused and have now been resumed in the same workspace. Continue your task where "
    "you left off; check what you already did before repeating it."
)


def retry_message(reason: str) -> str:
    """The next user turn of an agent whose earlier run failed and is tried again."""
    return (
        f"Your previous attempt ended with an error: {reason}\n"
        "Try again, continuing from where you were; check what you already did first."
    )


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
    # The model API's rate or usage limit ended the run; resets_at is when it lifts, if known.
    limited: bool = False
    resets_at: float | None = None
    # The Docker engine went away while the run was going (its container was killed).
    engine_lost: bool = False
    # A signal from outside (SIGTERM, SIGKILL) ended it before it finished its turn.
    killed: bool = False

    @property
    def interrupted(self) -> bool:
        """Whether something outside the agent ended the run: it can resume later."""
        return self.limited or self.engine_lost or self.killed


@dataclass
class _Scan:
    """What one pass over an output file found."""

    last: dict[str, Any] | None = None
    limited: bool = False
    resets_at: float | None = None


def outcome(
    out_file: Path, exit_code: int | None, oom_killed: bool = False, needs_structured: bool = False
) -> Outcome:
    """Judge a finished agent from its exit code and its last result event.

    Success needs exit 0, a result with is_error false and terminal_reason completed, and
    structured output when a schema was given. The run directory is agent-writable: its files
    are read link-safely, and a file replaced by a link or anything but a regular file fails
    the run with a reason that says so (never with what the link points at).
    """
    try:
        scan = _scan(out_file)
    except safefs.Refused as exc:
        return Outcome(False, exit_code, f"its output file was tampered with: {exc}", "", 0.0, "")
    last = scan.last
    cost = _number(last.get("total_cost_usd")) if last else 0.0
    session = str(last.get("session_id") or "") if last else ""
    text = str(last.get("result") or "") if last else ""
    structured = last.get("structured_output") if last else None

    def fail(reason: str) -> Outcome:
        return Outcome(
            False, exit_code, reason, text, cost, session, structured, scan.limited, scan.resets_at
        )

    if oom_killed:
        return fail(f"killed: out of memory (exit {exit_code})")
    if exit_code is None:
        return fail("the container disappeared before the agent finished")
    unfinished = (
        last is None
        or last.get("is_error")
        or last.get("terminal_reason") not in (None, "completed")
    )
    if exit_code in KILLED_BY and unfinished:
        signal = KILLED_BY[exit_code]
        reason = f"killed by {signal} (exit {exit_code}) before it finished its turn"
        return dataclasses.replace(fail(reason), killed=True)
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


def _scan(out_file: Path) -> _Scan:
    """The last result event, and whether a usage limit was hit (with its reset time)."""
    scan = _Scan()
    try:
        with safefs.open_read(out_file.parent, out_file.name) as handle:
            for raw in _lines(handle):
                if b'"result"' not in raw and b"rate_limit" not in raw:
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    _note(scan, event)
    except FileNotFoundError:
        pass
    return scan


def _lines(handle: BinaryIO) -> Iterator[bytes]:
    """The file's lines, memory bounded by LINE_LIMIT: the rest of a longer line is skipped.

    An agent writes this file; a result event is never that long.
    """
    while raw := handle.readline(LINE_LIMIT):
        if not raw.endswith(b"\n") and len(raw) == LINE_LIMIT:
            del raw
            while (rest := handle.readline(SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            continue
        yield raw


def _note(scan: _Scan, event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "result":
        scan.last = event
        if event.get("is_error") and event.get("api_error_status") == 429:
            scan.limited = True
    elif kind == "rate_limit_event":
        info = event.get("rate_limit_info")
        if isinstance(info, dict) and info.get("status") == "rejected":
            scan.limited = True
            resets = info.get("resetsAt")
            if isinstance(resets, int | float) and not isinstance(resets, bool):
                scan.resets_at = float(resets)
    elif kind == "assistant" and event.get("error") == "rate_limit":
        scan.limited = True


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def _last_stderr_line(err_file: Path) -> str:
    """The last thing the agent printed on stderr (why it died, when it says), shortened."""
    try:
        size = safefs.size(err_file.parent, err_file.name)
        tail = safefs.read_at(err_file.parent, err_file.name, max(0, size - 4096), 4096)
    except FileNotFoundError:
        return ""
    except safefs.Refused as exc:
        return f"(err.log refused: {exc})"
    lines = [line.strip() for line in tail.decode("utf-8", "replace").splitlines() if line.strip()]
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
