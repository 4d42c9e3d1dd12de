"""Turn streamed agent output and task events into human-readable terminal lines."""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from typing import Any

from klaudio.cli.format import SUBTASK_STATES_WITH_REASON, resumes
from klaudio.cli.textsafe import safe

AGENT_OUTPUT = 1
TASK_EVENT = 2

_TEXT_MAX = 300
_SUMMARY_MAX = 80
_ERROR_MAX = 120
_NAME_MAX = 20
_TOOL_MEMORY = 512

_DIM = "2"
_BOLD = "1"
_RED = "31"
_GREEN = "32"
_YELLOW = "33"
_AGENT_COLORS = ("36", "35", "34", "96", "95", "94", "93", "33")

_TOOL_ERROR_TAG = re.compile(r"</?tool_use_error>")
_PATH_TOOLS = frozenset({"Read", "Write", "Edit", "MultiEdit", "NotebookEdit"})
_SEARCH_TOOLS = frozenset({"Grep", "Glob"})
_STARTED_STATES = frozenset({"starting", "running"})
_LATEST_TIME = 1e11  # seconds since 1970, about the year 5100: later is nonsense

Event = dict[str, Any]


def _obj(value: object) -> Event:
    """Return value if it is a JSON object, else an empty dict."""
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str:
    """Return value if it is a string, else an empty string."""
    return value if isinstance(value, str) else ""


def _int(value: object) -> int | None:
    """Return value as an int if it is an integral JSON number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _cost(value: object) -> float | None:
    """Return value as a finite, non-negative cost, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    cost = float(value)
    return cost if math.isfinite(cost) and cost >= 0 else None


def _seconds(value: object) -> float | None:
    """Return value as a UNIX time that can be shown, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 < seconds < _LATEST_TIME else None


def _parse(payload: str) -> Event | None:
    """Parse a JSON object; None if payload is not one."""
    try:
        value = json.loads(payload)
    except (ValueError, TypeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _clean(text: str) -> str:
    """One line made safe for the terminal: control characters (ESC too) shown escaped."""
    return safe(text.expandtabs(4), one_line=True).rstrip()


def _trunc(text: str, limit: int) -> str:
    """Shorten text to at most limit characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _lines(text: str) -> list[str]:
    """Split text into cleaned lines, without leading/trailing or repeated blank lines."""
    out: list[str] = []
    # Split at newlines only: a lone CR or U+0085 shows escaped instead of breaking the line.
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = _clean(raw)
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def _first_line(text: str, limit: int) -> str:
    """Return the first non-blank line of text, truncated; '…' marks dropped lines."""
    lines = [line.strip() for line in _lines(text)]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    if len(lines) > 1:
        return _trunc(lines[0] + " …", limit)
    return _trunc(lines[0], limit)


def _content_text(content: object) -> str:
    """Return the text of a message or tool_result content (string or block list)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [_str(_obj(block).get("text")) for block in content]
    return "\n".join(text for text in texts if text)


def _subtask_line(ident: str, item: Event) -> str:
    """Return '   <id>  <name>  (after <deps>)' for one planned subtask."""
    name = _first_line(_str(item.get("name")), _TEXT_MAX)
    deps = item.get("depends_on")
    after = [_clean(d) for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
    line = f"   {ident}  {name}".rstrip()
    return line + (f"  (after {', '.join(after)})" if after else "")


def _plural(count: int, word: str) -> str:
    """Return e.g. '1 turn' or '2 turns'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


# The renderer's method for each kind of lifecycle event (klaudio.events.KINDS: a guard test
# holds the two together).
LIFECYCLE_HANDLERS = {
    "task": "_task_state",
    "plan": "_plan",
    "questions": "_questions",
    "answers": "_answers",
    "subtask": "_subtask",
    "agent": "_agent_state",
    "notice": "_notice",
    "control": "_control",
    "delivery": "_delivery",
    "checkpoint": "_checkpoint",
}


class Renderer:
    """Stateful renderer: one instance per stream, fed events in order."""

    def __init__(self, color: bool = False, show_agent: bool = True) -> None:
        self._color = color
        self._show_agent = show_agent
        self._width = 0
        self._tools: dict[str, str] = {}
        self._costs: dict[str, float] = {}
        self._cwds: dict[str, str] = {}
        self._sessions: dict[str, str] = {}
        # The run (epoch) each live agent was last announced for.
        self._started: dict[str, int | None] = {}

    def render(self, seq: int, agent: str, kind: int, payload: str) -> list[str]:
        """Return the lines (no trailing newlines) to print for one event; [] to print nothing."""
        try:
            name = agent if isinstance(agent, str) else ""
            if kind == AGENT_OUTPUT:
                return self._agent_event(name, payload)
            if kind == TASK_EVENT:
                return self._task_event(name, payload)
        except Exception:  # odd input must never break the stream
            return []
        return []

    def summary(self) -> list[str]:
        """Lines to print at the end: total USD cost, e.g. 'cost: $0.0123 (3 agents)'."""
        if not self._costs:
            return []
        total = sum(self._costs.values())
        return [f"cost: ${total:.4f} ({_plural(len(self._costs), 'agent')})"]

    # -- formatting -------------------------------------------------------------------------

    def _paint(self, text: str, *codes: str) -> str:
        """Wrap text in ANSI codes when color is on."""
        if not self._color or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def _prefix(self, agent: str) -> str:
        """Return the '[agent] ' prefix, padded to the widest name seen so far."""
        if not self._show_agent or not agent:
            return ""
        name = _trunc(_clean(agent), _NAME_MAX)
        self._width = max(self._width, len(name))
        color = _AGENT_COLORS[zlib.crc32(name.encode()) % len(_AGENT_COLORS)]
        return self._paint(f"[{name}]", color) + " " * (self._width - len(name) + 1)

    def _line(self, agent: str, text: str, *codes: str) -> str:
        """Return one output line for an agent (its text made safe before it is painted)."""
        return (self._prefix(agent) + self._paint(safe(text, one_line=True), *codes)).rstrip()

    def _task_line(self, text: str, *codes: str) -> str:
        """Return one task-level line ('── …')."""
        return self._paint(_trunc(_clean(text), _TEXT_MAX), *codes)

    # -- agent events (Claude Code stream-json) ---------------------------------------------

    def _agent_event(self, agent: str, payload: str) -> list[str]:
        """Render one line of Claude Code stream-json output."""
        text = _str(payload).rstrip("\r\n")
        event = _parse(text)
        if event is None:
            line = _trunc(_clean(text), _TEXT_MAX)
            return [self._line(agent, line)] if line.strip() else []
        handlers: dict[str, Callable[[str, Event], list[str]]] = {
            "system": self._system,
            "assistant": self._assistant,
            "user": self._user,
            "result": self._result,
        }
        handler = handlers.get(_str(event.get("type")))
        return handler(agent, event) if handler else []

    def _system(self, agent: str, event: Event) -> list[str]:
        """Render system/init and system/api_retry; ignore other subtypes."""
        subtype = _str(event.get("subtype"))
        if subtype == "init":
            return self._init(agent, event)
        if subtype != "api_retry":
            return []
        text = "! API retry"
        attempt, limit = _int(event.get("attempt")), _int(event.get("max_retries"))
        if attempt is not None:
            text += f" {attempt}" if limit is None else f" {attempt}/{limit}"
        error = _clean(_str(event.get("error")))
        if error:
            text += f" ({_trunc(error, _SUMMARY_MAX)})"
        return [self._line(agent, text, _YELLOW)]

    def _init(self, agent: str, event: Event) -> list[str]:
        """Render system/init once per session (it repeats every turn with stdin input)."""
        cwd = _str(event.get("cwd"))
        if cwd:
            self._cwds[agent] = cwd
        session = _str(event.get("session_id"))
        if session:
            if self._sessions.get(agent) == session:
                return []
            self._sessions[agent] = session
        model = _clean(_str(event.get("model")))
        text = "session started"
        if model:
            text += f" (model {_trunc(model, _SUMMARY_MAX)})"
        return [self._line(agent, text, _DIM)]

    def _assistant(self, agent: str, event: Event) -> list[str]:
        """Render an assistant event: text, tool_use or a synthetic API error."""
        content = _obj(event.get("message")).get("content")
        indent = "  " if _str(event.get("parent_tool_use_id")) else ""
        if event.get("is_api_error_message") is True:
            text = _first_line(_content_text(content), _ERROR_MAX)
            text = text or _clean(_str(event.get("error"))) or "API error"
            return [self._line(agent, f"{indent}! {text}", _RED)]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        out: list[str] = []
        for block in content if isinstance(content, list) else []:
            block = _obj(block)
            kind = _str(block.get("type"))
            if kind == "text":
                lines = _lines(_str(block.get("text")))
                out.extend(self._line(agent, indent + _trunc(line, _TEXT_MAX)) for line in lines)
            elif kind == "tool_use":
                out.append(self._tool_use(agent, block, indent))
        return out

    def _tool_use(self, agent: str, block: Event, indent: str) -> str:
        """Render a tool_use block as '→ Tool summary' and remember the tool's name."""
        name = _trunc(_clean(_str(block.get("name"))), _SUMMARY_MAX) or "tool"
        tool_id = _str(block.get("id"))
        if tool_id:
            self._tools[tool_id] = name
            if len(self._tools) > _TOOL_MEMORY:
                del self._tools[next(iter(self._tools))]
        summary = self._tool_summary(agent, name, _obj(block.get("input")))
        text = f"→ {name} {summary}" if summary else f"→ {name}"
        return self._line(agent, indent + text)

    def _tool_summary(self, agent: str, name: str, tool_input: Event) -> str:
        """Return a short description of a tool call's input."""
        if name == "StructuredOutput":
            return ""
        if name in _PATH_TOOLS:
            keys = ("file_path", "notebook_path", "path")
            path = next((_str(tool_input.get(k)) for k in keys if _str(tool_input.get(k))), "")
            return self._short_path(agent, _clean(path))
        if name == "Bash":
            return _first_line(_str(tool_input.get("command")), _SUMMARY_MAX)
        if name in _SEARCH_TOOLS:
            return _first_line(_str(tool_input.get("pattern")), _SUMMARY_MAX)
        for value in tool_input.values():
            text = _first_line(_str(value), _SUMMARY_MAX)
            if text:
                return text
        return ""

    def _short_path(self, agent: str, path: str) -> str:
        """Return path relative to the agent's cwd when inside it, shortened to fit."""
        cwd = self._cwds.get(agent, "").rstrip("/")
        if cwd and path.startswith(cwd + "/"):
            path = path[len(cwd) + 1 :]
        if len(path) <= _SUMMARY_MAX:
            return path
        return "…" + path[-(_SUMMARY_MAX - 1) :]

    def _user(self, agent: str, event: Event) -> list[str]:
        """Render a user event: one folded line per tool result, a dim line for nudges."""
        if event.get("isReplay") is True:
            return []
        content = _obj(event.get("message")).get("content")
        indent = "  " if _str(event.get("parent_tool_use_id")) else ""
        if event.get("isSynthetic") is True:
            text = _first_line(_content_text(content), _ERROR_MAX)
            return [self._line(agent, f"{indent}  · {text}", _DIM)] if text else []
        for block in content if isinstance(content, list) else []:
            block = _obj(block)
            if block.get("type") == "tool_result":
                return self._tool_result(agent, block, indent)
        return []

    def _tool_result(self, agent: str, block: Event, indent: str) -> list[str]:
        """Fold a tool_result into at most one line: '✓ 12 lines' or '✗ <error>'."""
        name = self._tools.pop(_str(block.get("tool_use_id")), "")
        text = _content_text(block.get("content"))
        if block.get("is_error") is True:
            error = _first_line(_TOOL_ERROR_TAG.sub("", text), _ERROR_MAX) or "error"
            return [self._line(agent, f"{indent}  ✗ {error}", _RED)]
        if name == "StructuredOutput":
            return []
        lines = [line for line in _lines(text) if line.strip()]
        if not lines:
            summary = "(no output)"
        elif len(lines) == 1:
            summary = _trunc(lines[0].strip(), _SUMMARY_MAX)
        else:
            summary = _plural(len(text.strip("\r\n").splitlines()), "line")
        return [self._line(agent, f"{indent}  ✓ {summary}", _DIM)]

    def _result(self, agent: str, event: Event) -> list[str]:
        """Render a result line and record its (cumulative) cost for the agent."""
        cost = _cost(event.get("total_cost_usd"))
        if cost is not None:
            self._costs[agent] = cost
        subtype = _str(event.get("subtype"))
        is_error = event.get("is_error")
        failed = is_error is True or (
            not isinstance(is_error, bool) and subtype.startswith("error")
        )
        if failed:
            return [self._line(agent, self._failure(event, subtype), _RED)]
        text = "✓ done"
        turns = _int(event.get("num_turns"))
        if turns is not None:
            text += f" in {_plural(turns, 'turn')}"
        if cost is not None:
            text += f", ${cost:.4f}"
        return [self._line(agent, text, _GREEN)]

    @staticmethod
    def _failure(event: Event, subtype: str) -> str:
        """Return '✗ failed: <reason>: <first error or result text>'."""
        reason = _clean(_str(event.get("terminal_reason")))
        if not reason and subtype != "success":
            reason = _clean(subtype)
        errors = event.get("errors")
        first = errors[0] if isinstance(errors, list) and errors else None
        detail = _first_line(_str(first) or _str(event.get("result")), _ERROR_MAX)
        parts = [part for part in (_trunc(reason, _SUMMARY_MAX), detail) if part]
        return "✗ failed: " + ": ".join(parts) if parts else "✗ failed"

    # -- task events (written by the daemon) ------------------------------------------------

    def _task_event(self, agent: str, payload: str) -> list[str]:
        """Render one daemon task lifecycle event."""
        event = _parse(_str(payload))
        if event is None:
            return []
        name = LIFECYCLE_HANDLERS.get(_str(event.get("type")))
        handler: Callable[[str, Event], list[str]] | None = getattr(self, name) if name else None
        return handler(agent, event) if handler else []

    def _task_state(self, agent: str, event: Event) -> list[str]:
        """Render '── task <state>[: reason]', and when a paused task resumes by itself."""
        state = _str(event.get("state")) or "updated"
        reason = _first_line(_str(event.get("reason")), _TEXT_MAX)
        later = resumes(reason, _seconds(event.get("resume_at")))
        said = "; ".join(part for part in (reason, later) if part)
        text = f"── task {state}: {said}" if said else f"── task {state}"
        return [self._task_line(text, *self._state_codes(state))]

    def _control(self, agent: str, event: Event) -> list[str]:
        """Render a recorded stop or cancel: '── stop requested'."""
        control = _trunc(_clean(_str(event.get("control"))), _SUMMARY_MAX)
        return [self._task_line(f"── {control} requested", _YELLOW)] if control else []

    def _delivery(self, agent: str, event: Event) -> list[str]:
        """Render a delivery step: '── delivering…', '── delivered: commit …, pull request …'."""
        state = _str(event.get("state"))
        if state == "delivering":
            return [self._task_line("── delivering…")]
        if state == "delivered":
            said = []
            commit = _clean(_str(event.get("delivered_commit")))[:12]
            if commit:
                said.append(f"commit {commit}")
            url = _clean(_str(event.get("pr_url")))
            if url:
                said.append(f"pull request {url}")
            text = "── delivered" + (f": {', '.join(said)}" if said else "")
            return [self._task_line(text, _GREEN)]
        if state == "failed":
            reason = _first_line(_str(event.get("delivery_reason")), _TEXT_MAX)
            return [self._task_line(f"── delivery failed: {reason or 'no reason given'}", _RED)]
        return [self._task_line(f"── delivery {_clean(state)}")] if state else []

    def _checkpoint(self, agent: str, event: Event) -> list[str]:
        """Nothing: checkpoints are listed by `klaudio task checkpoints`, not in the stream."""
        return []

    def _notice(self, agent: str, event: Event) -> list[str]:
        """Render a daemon notice as '── <text>'."""
        text = _first_line(_str(event.get("text")), _TEXT_MAX)
        return [self._task_line(f"── {text}")] if text else []

    def _plan(self, agent: str, event: Event) -> list[str]:
        """Render a plan header and one line per subtask."""
        version = _int(event.get("version"))
        said = [_clean(_str(event.get("strategy")))]
        said.append("edited" if event.get("source") == "edit" else "")
        raw = event.get("subtasks")
        subtasks = [_obj(item) for item in raw] if isinstance(raw, list) else []
        header = "── plan" + (f" v{version}" if version is not None else "")
        header += f" ({', '.join(part for part in said if part)})" if any(said) else ""
        out = [self._task_line(f"{header}, {_plural(len(subtasks), 'subtask')}", _BOLD)]
        ids = [_trunc(_clean(str(item.get("id", "?"))), _NAME_MAX) for item in subtasks]
        width = max((len(i) for i in ids), default=0)
        for ident, item in zip(ids, subtasks, strict=True):
            out.append(self._task_line(_subtask_line(ident.ljust(width), item)))
        return out

    def _questions(self, agent: str, event: Event) -> list[str]:
        """Render the planner's questions, one line each, under '── planner asks (round 2):'."""
        raw = event.get("questions")
        number = _int(event.get("round"))
        out: list[str] = []
        for item in raw if isinstance(raw, list) else []:
            question = _obj(item)
            text = " ".join(line.strip() for line in _lines(_str(question.get("text"))))
            if not text:
                continue
            ident = _clean(str(question.get("id", "")))
            out.append(self._task_line(f"   {ident}: {text}" if ident else f"   {text}"))
        head = f"── planner asks (round {number}):" if number else "── planner asks:"
        return [self._task_line(head, _BOLD), *out] if out else []

    def _answers(self, agent: str, event: Event) -> list[str]:
        """Render answers recorded for the planner's questions: '── answered: db, port'."""
        raw = event.get("answered")
        ids = (
            [_clean(str(item)) for item in raw if item is not None] if isinstance(raw, list) else []
        )
        return [self._task_line(f"── answered: {', '.join(ids)}")] if ids else []

    def _subtask(self, agent: str, event: Event) -> list[str]:
        """Render '── subtask <id> <state>[: reason]', a reason where it explains the state."""
        ident = _clean(str(event.get("id", ""))) or _clean(_str(event.get("name"))) or "?"
        state = _str(event.get("state")) or "updated"
        reason = ""
        if state in SUBTASK_STATES_WITH_REASON:
            reason = _first_line(_str(event.get("reason")), _ERROR_MAX)
        text = f"── subtask {ident} {state}" + (f": {reason}" if reason else "")
        return [self._task_line(text, *self._state_codes(state))]

    def _agent_state(self, agent: str, event: Event) -> list[str]:
        """Render agent lifecycle: one 'started' line, then its outcome."""
        name = _str(event.get("agent")) or agent or "?"
        state = _str(event.get("state"))
        cost = _cost(event.get("cost_usd"))
        if cost is not None and (cost > 0 or name not in self._costs):
            self._costs[name] = cost
        if state in _STARTED_STATES:
            epoch = _int(event.get("epoch"))
            if name in self._started and self._started[name] == epoch:
                return []
            self._started[name] = epoch
            # Only a run's starting event says whether it continues the agent's conversation.
            verb = "resumed" if event.get("resume") is True else "started"
            run = f" (run {epoch + 1})" if epoch is not None and epoch > 0 else ""
            return [self._task_line(f"── agent {name} {verb}{run}")]
        self._started.pop(name, None)
        text = f"── agent {name} {state or 'updated'}"
        exit_code = _int(event.get("exit_code"))
        if exit_code is not None:
            text += f" (exit {exit_code})"
        reason = _first_line(_str(event.get("reason")), _ERROR_MAX)
        if reason:
            text += f": {reason}"
        return [self._task_line(text, *self._state_codes(state))]

    @staticmethod
    def _state_codes(state: str) -> tuple[str, ...]:
        """Return the ANSI codes for a lifecycle state: green for success, red for failure."""
        if state in ("completed", "done", "succeeded", "approved"):
            return (_GREEN,)
        if state in ("failed", "error", "cancelled", "rejected"):
            return (_RED,)
        if state in ("paused", "stopped"):
            return (_YELLOW,)
        return ()
