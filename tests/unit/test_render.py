import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from klaudio.cli import format as fmt
from klaudio.cli.render import Renderer
from klaudio.rpc.v1.tasks_pb2 import (
    Agent,
    Delivery,
    Plan,
    Question,
    Subtask,
    Task,
    TaskSettings,
)

# Payloads below follow the measured samples in claude-code-headless.md sections 2.1-2.5.
INIT = json.dumps(
    {
        "type": "system",
        "subtype": "init",
        "cwd": "/w/w1",
        "session_id": "6dc66eaa-f248-46b6-a850-529d8c21cd45",
        "tools": ["Task", "Bash", "CronCreate", "CronDelete"],
        "mcp_servers": [],
        "model": "claude-opus-5-5",
        "permissionMode": "bypassPermissions",
        "apiKeySource": "ANTHROPIC_API_KEY",
        "claude_code_version": "2.1.328",
        "output_style": "default",
        "analytics_disabled": True,
        "original_cwd": "/w/w1",
        "fast_mode_state": "off",
    }
)


def assistant(block: dict[str, Any], **extra: Any) -> str:
    event = {
        "type": "assistant",
        "message": {
            "id": "msg_26a9",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-5-5",
            "content": [block],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
            "context_management": None,
        },
        "parent_tool_use_id": None,
        "session_id": "6dc6",
        "uuid": "c7c9",
        "timestamp": "2026-11-23T19:36:46.760Z",
        "request_id": "req_fake_1",
    }
    event.update(extra)
    return json.dumps(event)


TEXT = assistant({"type": "text", "text": "I'll write the file."})
WRITE = assistant(
    {
        "type": "tool_use",
        "id": "toolu_2a1f",
        "name": "Write",
        "input": {"file_path": "/w/w1/hello.txt", "content": "hello from fake model\n"},
    }
)
WRITE_RESULT = json.dumps(
    {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {
                    "tool_use_id": "toolu_2a1f",
                    "type": "tool_result",
                    "content": "File created successfully at: /w/w1/hello.txt (file state is "
                    "current in your context — no need to Read it back)",
                }
            ],
        },
        "parent_tool_use_id": None,
        "session_id": "6dc6",
        "uuid": "dcb3",
        "timestamp": "2026-11-23T19:36:46.800Z",
        "tool_use_result": {
            "type": "create",
            "filePath": "/w/w1/hello.txt",
            "content": "hello from fake model\n",
            "structuredPatch": [],
            "originalFile": None,
            "userModified": False,
        },
        "tool_result_meta": [
            {
                "id": "toolu_2a1f",
                "permission_decision": {
                    "decision": "accept",
                    "source": "config",
                    "reason_type": "mode",
                },
            }
        ],
    }
)


def tool_result(content: Any, is_error: bool | None = None, **extra: Any) -> str:
    block: dict[str, Any] = {"tool_use_id": "toolu_x", "type": "tool_result", "content": content}
    if is_error is not None:
        block["is_error"] = is_error
    event = {"type": "user", "message": {"role": "user", "content": [block]}, "session_id": "s"}
    event.update(extra)
    return json.dumps(event)


ERROR_RESULT = tool_result(
    "Claude requested permissions to write to /w/w1/x.txt, but you haven't granted it yet.",
    is_error=True,
)
API_RETRY = json.dumps(
    {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 1,
        "max_retries": 10,
        "retry_delay_ms": 546,
        "error_status": 500,
        "error": "server_error",
    }
)
API_ERROR_MESSAGE = json.dumps(
    {
        "type": "assistant",
        "message": {
            "model": "<synthetic>",
            "content": [{"type": "text", "text": "Invalid API key · Fix external API key"}],
        },
        "error": "authentication_failed",
        "is_api_error_message": True,
        "api_error_status": 401,
        "api_error_type": "authentication_error",
    }
)


def result(cost: float = 0.00028, **extra: Any) -> str:
    event: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done: wrote hello.txt",
        "num_turns": 2,
        "session_id": "6dc66eaa",
        "stop_reason": "end_turn",
        "terminal_reason": "completed",
        "api_error_status": None,
        "duration_ms": 209,
        "total_cost_usd": cost,
        "usage": {"input_tokens": 20, "output_tokens": 10},
        "permission_denials": [],
        "result_index": 0,
    }
    event.update(extra)
    return json.dumps(event)


RESULT_API_ERROR = result(
    cost=0.0,
    is_error=True,
    result="API Error: 500 Internal server error",
    terminal_reason="api_error",
    api_error_status=500,
    num_turns=1,
)


def agent_lines(r: Renderer, payload: str, agent: str = "a") -> list[str]:
    return r.render(1, agent, 1, payload)


def task_lines(r: Renderer, event: dict[str, Any]) -> list[str]:
    return r.render(1, "", 2, json.dumps(event))


def has_ansi(lines: list[str]) -> bool:
    return any("\x1b" in line for line in lines)


# -- agent events -------------------------------------------------------------------------------


def test_init() -> None:
    assert agent_lines(Renderer(), INIT) == ["[a] session started (model claude-opus-5-5)"]


def test_init_repeated_for_same_session_prints_once() -> None:
    r = Renderer()
    assert agent_lines(r, INIT)
    assert agent_lines(r, INIT) == []


def test_assistant_text() -> None:
    assert agent_lines(Renderer(), TEXT) == ["[a] I'll write the file."]


def test_assistant_multiline_text_prefixes_every_line() -> None:
    payload = assistant({"type": "text", "text": "line one\nline two\n"})
    assert agent_lines(Renderer(), payload) == ["[a] line one", "[a] line two"]


def test_tool_use_write_relative_to_cwd() -> None:
    r = Renderer()
    agent_lines(r, INIT)
    assert agent_lines(r, WRITE) == ["[a] → Write hello.txt"]


def test_tool_use_write_without_init_keeps_path() -> None:
    assert agent_lines(Renderer(), WRITE) == ["[a] → Write /w/w1/hello.txt"]


@pytest.mark.parametrize(
    ("name", "tool_input", "expected"),
    [
        ("Bash", {"command": "ls -la\necho done", "description": "List"}, "→ Bash ls -la …"),
        ("Grep", {"pattern": "def main", "path": "src"}, "→ Grep def main"),
        ("Glob", {"pattern": "**/*.py"}, "→ Glob **/*.py"),
        ("StructuredOutput", {"subtasks": [{"id": "a"}]}, "→ StructuredOutput"),
        (
            "WebFetch",
            {"url": "https://example.com", "prompt": "x"},
            "→ WebFetch https://example.com",
        ),
        ("TodoWrite", {"todos": [{"content": "x"}]}, "→ TodoWrite"),
    ],
)
def test_tool_use_summaries(name: str, tool_input: dict[str, Any], expected: str) -> None:
    payload = assistant({"type": "tool_use", "id": "toolu_1", "name": name, "input": tool_input})
    assert agent_lines(Renderer(), payload) == [f"[a] {expected}"]


def test_tool_use_long_bash_command_truncated() -> None:
    command = "echo " + "x" * 200
    payload = assistant(
        {"type": "tool_use", "id": "t", "name": "Bash", "input": {"command": command}}
    )
    (line,) = agent_lines(Renderer(), payload)
    assert line.startswith("[a] → Bash echo xxx")
    assert line.endswith("…")
    assert len(line) < 100


def test_thinking_prints_nothing() -> None:
    payload = assistant({"type": "thinking", "thinking": "hmm", "signature": "sig"})
    assert agent_lines(Renderer(), payload) == []


def test_api_error_message() -> None:
    assert agent_lines(Renderer(), API_ERROR_MESSAGE) == [
        "[a] ! Invalid API key · Fix external API key"
    ]


def test_tool_result_success_single_line() -> None:
    (line,) = agent_lines(Renderer(), WRITE_RESULT)
    assert line.startswith("[a]   ✓ File created successfully")
    assert len(line) < 100


def test_tool_result_counts_lines() -> None:
    content = "\n".join(f"{i}\tline {i}" for i in range(1, 13)) + "\n"
    assert agent_lines(Renderer(), tool_result(content)) == ["[a]   ✓ 12 lines"]


def test_tool_result_block_list_content() -> None:
    content = [{"type": "text", "text": "one\ntwo"}, {"type": "text", "text": "three"}]
    assert agent_lines(Renderer(), tool_result(content)) == ["[a]   ✓ 3 lines"]


def test_tool_result_empty() -> None:
    assert agent_lines(Renderer(), tool_result("")) == ["[a]   ✓ (no output)"]


def test_tool_result_error() -> None:
    assert agent_lines(Renderer(), ERROR_RESULT) == [
        "[a]   ✗ Claude requested permissions to write to /w/w1/x.txt, "
        "but you haven't granted it yet."
    ]


def test_tool_result_error_strips_tags_and_truncates() -> None:
    text = "<tool_use_error>Error: No such tool available: Write. " + "y" * 300
    (line,) = agent_lines(Renderer(), tool_result(text + "\nmore</tool_use_error>", True))
    assert line.startswith("[a]   ✗ Error: No such tool available: Write. yyy")
    assert "<tool_use_error>" not in line
    assert line.endswith("…")
    assert len(line) < 140


def test_structured_output_result_is_folded_away() -> None:
    r = Renderer()
    call = {"type": "tool_use", "id": "toolu_x", "name": "StructuredOutput", "input": {"a": 1}}
    assert agent_lines(r, assistant(call)) == ["[a] → StructuredOutput"]
    assert agent_lines(r, tool_result("Structured output provided successfully")) == []


def test_replay_prints_nothing() -> None:
    payload = json.dumps(
        {"type": "user", "message": {"role": "user", "content": "hi"}, "isReplay": True}
    )
    assert agent_lines(Renderer(), payload) == []


def test_synthetic_nudge_is_one_dim_line() -> None:
    text = "[structured-output-enforce] You MUST call the StructuredOutput tool\nsecond line"
    payload = json.dumps(
        {
            "type": "user",
            "message": {"role": "user", "content": [{"type": "text", "text": text}]},
            "isSynthetic": True,
        }
    )
    lines = agent_lines(Renderer(), payload)
    assert len(lines) == 1
    assert "You MUST call the StructuredOutput tool" in lines[0]


def test_api_retry() -> None:
    assert agent_lines(Renderer(), API_RETRY) == ["[a] ! API retry 1/10 (server_error)"]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "system", "subtype": "thinking_tokens", "estimated_tokens": 9},
        {"type": "system", "subtype": "status", "status": "requesting"},
        {"type": "system", "subtype": "task_started", "task_id": "t", "task_type": "local_bash"},
        {"type": "stream_event", "event": {"type": "content_block_delta", "index": 0}},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
        {"type": "control_response", "response": {"subtype": "success"}},
    ],
)
def test_other_events_print_nothing(event: dict[str, Any]) -> None:
    assert agent_lines(Renderer(), json.dumps(event)) == []


def test_result_success() -> None:
    assert agent_lines(Renderer(), result()) == ["[a] ✓ done in 2 turns, $0.0003"]


def test_result_api_error() -> None:
    assert agent_lines(Renderer(), RESULT_API_ERROR) == [
        "[a] ✗ failed: api_error: API Error: 500 Internal server error"
    ]


def test_result_max_turns_uses_errors() -> None:
    payload = result(
        subtype="error_max_turns",
        is_error=True,
        terminal_reason="max_turns",
        errors=["Reached maximum number of turns (2)"],
    )
    assert agent_lines(Renderer(), payload) == [
        "[a] ✗ failed: max_turns: Reached maximum number of turns (2)"
    ]


def test_result_error_without_reason_uses_subtype() -> None:
    payload = json.dumps({"type": "result", "subtype": "error_during_execution", "is_error": True})
    assert agent_lines(Renderer(), payload) == ["[a] ✗ failed: error_during_execution"]


def test_non_json_line_printed_as_is() -> None:
    assert agent_lines(Renderer(), "npm WARN deprecated foo@1.0") == [
        "[a] npm WARN deprecated foo@1.0"
    ]


def test_non_object_json_printed_as_is() -> None:
    assert agent_lines(Renderer(), "42") == ["[a] 42"]


def test_blank_line_prints_nothing() -> None:
    assert agent_lines(Renderer(), "   ") == []


def test_escape_sequences_in_payload_are_shown_escaped() -> None:
    payload = assistant({"type": "text", "text": "\x1b[31mred\x1b[0m text\x07"})
    assert agent_lines(Renderer(), payload) == ["[a] \\x1b[31mred\\x1b[0m text\\x07"]


def test_control_characters_in_task_events_are_shown_escaped() -> None:
    r = Renderer(color=True)
    event = {
        "type": "task",
        "state": "failed",
        "reason": "API error: \x1b]0;pwned\x07 \x9b2J\u202e",
    }
    assert task_lines(r, event) == [
        "\x1b[31m── task failed: API error: \\x1b]0;pwned\\x07 \\x9b2J\\u202e\x1b[0m"
    ]
    plan = {"type": "plan", "subtasks": [{"id": "a\x1bb", "name": "n\x07", "depends_on": ["\x1b"]}]}
    assert task_lines(Renderer(), plan)[1:] == ["   a\\x1bb  n\\x07  (after \\x1b)"]


def test_a_lone_carriage_return_is_shown_not_obeyed() -> None:
    payload = assistant({"type": "text", "text": "safe\rspoofed\r\nnext"})
    assert agent_lines(Renderer(), payload) == ["[a] safe\\x0dspoofed", "[a] next"]


def test_agent_names_are_made_safe() -> None:
    assert agent_lines(Renderer(), TEXT, agent="\x1b]0;x\x07") == [
        "[\\x1b]0;x\\x07] I'll write the file."
    ]


def test_show_agent_false_has_no_prefix() -> None:
    r = Renderer(show_agent=False)
    assert agent_lines(r, TEXT) == ["I'll write the file."]
    assert agent_lines(r, result()) == ["✓ done in 2 turns, $0.0003"]


def test_agent_names_padded_to_common_width() -> None:
    r = Renderer()
    agent_lines(r, TEXT, agent="backend")
    assert agent_lines(r, TEXT, agent="a") == ["[a]       I'll write the file."]


def test_subagent_output_is_indented() -> None:
    payload = assistant({"type": "text", "text": "sub"}, parent_tool_use_id="toolu_agent")
    assert agent_lines(Renderer(), payload) == ["[a]   sub"]


# -- task events --------------------------------------------------------------------------------


def test_task_state() -> None:
    r = Renderer()
    assert task_lines(r, {"type": "task", "state": "planning", "reason": ""}) == [
        "── task planning"
    ]
    assert task_lines(r, {"type": "task", "state": "failed", "reason": "no credentials"}) == [
        "── task failed: no credentials"
    ]


def test_plan() -> None:
    event = {
        "type": "plan",
        "version": 1,
        "strategy": "dag",
        "subtasks": [
            {"id": "a", "name": "Write it", "depends_on": []},
            {"id": "b", "name": "Test it", "depends_on": ["a"]},
        ],
    }
    assert task_lines(Renderer(), event) == [
        "── plan v1 (dag), 2 subtasks",
        "   a  Write it",
        "   b  Test it  (after a)",
    ]


def test_plan_pads_ids() -> None:
    event = {
        "type": "plan",
        "version": 2,
        "strategy": "parallel",
        "subtasks": [{"id": "api", "name": "API"}, {"id": "ui", "name": "UI", "depends_on": 3}],
    }
    assert task_lines(Renderer(), event) == [
        "── plan v2 (parallel), 2 subtasks",
        "   api  API",
        "   ui   UI",
    ]


def test_questions() -> None:
    event = {
        "type": "questions",
        "questions": [{"id": "q1", "text": "Which DB?"}, {"id": "q2", "text": "Which port?"}],
    }
    assert task_lines(Renderer(), event) == [
        "── planner asks:",
        "   q1: Which DB?",
        "   q2: Which port?",
    ]


def test_questions_say_their_round() -> None:
    event = {"type": "questions", "round": 2, "questions": [{"id": "q3", "text": "Which cache?"}]}
    assert task_lines(Renderer(), event) == ["── planner asks (round 2):", "   q3: Which cache?"]


def test_answers() -> None:
    event = {"type": "answers", "answered": ["db", "port\x1b[2J"]}
    assert task_lines(Renderer(), event) == ["── answered: db, port\\x1b[2J"]
    assert task_lines(Renderer(), {"type": "answers", "answered": []}) == []


def test_an_edited_plan_says_so() -> None:
    event = {
        "type": "plan",
        "version": 3,
        "source": "edit",
        "strategy": "dag",
        "subtasks": [{"id": "a", "name": "Write it", "depends_on": []}],
    }
    assert task_lines(Renderer(), event) == [
        "── plan v3 (dag, edited), 1 subtask",
        "   a  Write it",
    ]
    planner = {**event, "source": "planner", "strategy": ""}
    assert task_lines(Renderer(), planner)[0] == "── plan v3, 1 subtask"


def test_subtask() -> None:
    event = {"type": "subtask", "id": "a", "name": "Write it", "state": "running"}
    assert task_lines(Renderer(), event) == ["── subtask a running"]


def test_agent_lifecycle() -> None:
    r = Renderer()
    assert task_lines(r, {"type": "agent", "agent": "a", "state": "starting"}) == [
        "── agent a started"
    ]
    assert task_lines(r, {"type": "agent", "agent": "a", "state": "running"}) == []
    completed = {
        "type": "agent",
        "agent": "a",
        "state": "completed",
        "exit_code": 0,
        "cost_usd": 0.001,
        "reason": "",
    }
    assert task_lines(r, completed) == ["── agent a completed (exit 0)"]
    failed = {"type": "agent", "agent": "b", "state": "failed", "exit_code": 1, "reason": "oom"}
    assert task_lines(r, failed) == ["── agent b failed (exit 1): oom"]


def test_unknown_task_event() -> None:
    assert task_lines(Renderer(), {"type": "mystery", "x": 1}) == []


def test_unknown_kind() -> None:
    assert Renderer().render(1, "a", 7, TEXT) == []


# -- robustness ---------------------------------------------------------------------------------

MALFORMED_AGENT = [
    "{}",
    "[]",
    "null",
    '{"type": ["assistant"]}',
    '{"type": "assistant"}',
    '{"type": "assistant", "message": "oops"}',
    '{"type": "assistant", "message": {"content": [null, 3, {"type": "tool_use"}]}}',
    '{"type": "assistant", "message": {"content": [{"type": "tool_use", "name": 5, "input": []}]}}',
    '{"type": "assistant", "message": {"content": [{"type": "text", "text": null}]}}',
    '{"type": "assistant", "is_api_error_message": true, "message": null}',
    '{"type": "user", "message": {"content": [{"type": "tool_result", "content": {"x": 1}}]}}',
    '{"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": []}]}}',
    '{"type": "user", "isSynthetic": true, "message": {"content": 7}}',
    '{"type": "system", "subtype": "init", "model": 5, "cwd": [], "session_id": {}}',
    '{"type": "system", "subtype": "api_retry", "attempt": "x", "error": null}',
    '{"type": "result", "total_cost_usd": "lots", "num_turns": "two", "is_error": "no"}',
    '{"type": "result", "is_error": true, "errors": [null], "result": 5}',
    '{"type": "result", "total_cost_usd": NaN}',
    "[" * 100000,
    '{"type": "assistant"',
]

MALFORMED_TASK: list[Any] = [
    "not json",
    "[]",
    {},
    {"type": "task"},
    {"type": "plan", "subtasks": "many", "version": "one"},
    {"type": "plan", "subtasks": [None, {"id": None, "depends_on": [1, None]}]},
    {"type": "questions", "questions": None},
    {"type": "questions", "questions": [None, {"text": 5}, {"id": 1, "text": "ok?"}]},
    {"type": "questions", "round": "two", "questions": [{"id": "q", "text": "ok?"}]},
    {"type": "answers", "answered": "db"},
    {"type": "answers", "answered": [None, 5, ["x"], "db"]},
    {"type": "answers"},
    {"type": "plan", "source": ["edit"], "subtasks": []},
    {"type": "subtask"},
    {"type": "agent", "exit_code": "zero", "cost_usd": -1, "reason": ["x"]},
    {"type": "control", "control": 5},
    {"type": "control"},
    {"type": "agent", "agent": "a", "state": "starting", "epoch": "one", "resume": "yes"},
    {"type": "agent", "agent": "a", "state": "starting", "epoch": -3},
    {"type": "task", "state": "paused", "resume_at": "soon"},
    {"type": "task", "state": "paused", "resume_at": 1e300},
    {"type": "task", "state": "paused", "resume_at": True, "reason": None},
]


@pytest.mark.parametrize("payload", MALFORMED_AGENT)
def test_malformed_agent_events_never_raise(payload: str) -> None:
    lines = Renderer(color=True).render(1, "a", 1, payload)
    assert isinstance(lines, list)
    assert all(isinstance(line, str) and "\n" not in line for line in lines)


@pytest.mark.parametrize("event", MALFORMED_TASK)
def test_malformed_task_events_never_raise(event: Any) -> None:
    payload = event if isinstance(event, str) else json.dumps(event)
    lines = Renderer(color=True).render(1, "a", 2, payload)
    assert isinstance(lines, list)
    assert all(isinstance(line, str) and "\n" not in line for line in lines)


def test_malformed_examples_degrade() -> None:
    r = Renderer()
    assert task_lines(r, {"type": "plan", "subtasks": "many"}) == ["── plan, 0 subtasks"]
    assert agent_lines(r, '{"type": "system", "subtype": "api_retry"}') == ["[a] ! API retry"]
    assert agent_lines(r, '{"type": "result", "is_error": true}') == ["[a] ✗ failed"]
    assert task_lines(
        r, {"type": "questions", "questions": [None, {"text": 5}, {"id": 1, "text": "ok?"}]}
    ) == ["── planner asks:", "   1: ok?"]


def test_wrong_argument_types_never_raise() -> None:
    r = Renderer()
    assert r.render(1, None, 1, None) == []  # type: ignore[arg-type]
    assert r.render(1, "a", 2, b"{}") == []  # type: ignore[arg-type]


# -- color --------------------------------------------------------------------------------------

ALL_AGENT_PAYLOADS = [
    INIT,
    TEXT,
    WRITE,
    WRITE_RESULT,
    ERROR_RESULT,
    API_RETRY,
    API_ERROR_MESSAGE,
    result(),
    RESULT_API_ERROR,
    "plain text",
]
ALL_TASK_EVENTS: list[dict[str, Any]] = [
    {"type": "task", "state": "planning", "reason": ""},
    {"type": "plan", "version": 1, "strategy": "dag", "subtasks": [{"id": "a", "name": "W"}]},
    {"type": "questions", "round": 1, "questions": [{"id": "q1", "text": "Which DB?"}]},
    {"type": "answers", "answered": ["q1"]},
    {"type": "subtask", "id": "a", "name": "Write it", "state": "completed"},
    {"type": "agent", "agent": "a", "state": "starting"},
    {"type": "agent", "agent": "a", "state": "failed", "exit_code": 1, "reason": "x"},
    {"type": "control", "control": "stop"},
    {"type": "agent", "agent": "a", "state": "starting", "epoch": 1, "resume": True},
]


def render_all(r: Renderer) -> list[str]:
    lines: list[str] = []
    for payload in ALL_AGENT_PAYLOADS:
        lines += agent_lines(r, payload)
    for event in ALL_TASK_EVENTS:
        lines += task_lines(r, event)
    return lines


def test_no_ansi_without_color() -> None:
    lines = render_all(Renderer(color=False))
    assert len(lines) >= 15
    assert not has_ansi(lines)
    assert not has_ansi(Renderer().summary())


def test_color_output() -> None:
    r = Renderer(color=True)
    lines = render_all(r)
    assert has_ansi(lines)
    success = agent_lines(r, result())[0]
    failure = agent_lines(r, RESULT_API_ERROR)[0]
    assert "\x1b[32m✓ done" in success
    assert "\x1b[31m✗ failed" in failure
    assert "\x1b[2m" in agent_lines(r, tool_result("ok"))[0]


def test_agent_color_is_stable() -> None:
    first = agent_lines(Renderer(color=True), TEXT, agent="worker")[0]
    second = agent_lines(Renderer(color=True), TEXT, agent="worker")[0]
    assert first == second
    assert first.startswith("\x1b[")


# -- summary ------------------------------------------------------------------------------------


def test_summary_totals_last_result_per_agent() -> None:
    r = Renderer()
    agent_lines(r, result(cost=0.002, result_index=0), agent="a")
    agent_lines(r, result(cost=0.005, result_index=1), agent="a")  # cumulative: replaces 0.002
    agent_lines(r, result(cost=0.0073), agent="b")
    assert r.summary() == ["cost: $0.0123 (2 agents)"]


def test_summary_single_agent_and_errors_count() -> None:
    r = Renderer()
    agent_lines(r, RESULT_API_ERROR, agent="a")
    assert r.summary() == ["cost: $0.0000 (1 agent)"]


def test_summary_empty_when_no_costs() -> None:
    r = Renderer()
    agent_lines(r, TEXT)
    assert r.summary() == []


def test_summary_uses_daemon_agent_cost() -> None:
    r = Renderer()
    agent_lines(r, result(cost=0.001), agent="a")
    task_lines(r, {"type": "agent", "agent": "b", "state": "completed", "cost_usd": 0.002})
    assert r.summary() == ["cost: $0.0030 (2 agents)"]


def test_notice_event_renders_its_text() -> None:
    renderer = Renderer()
    line = renderer.render(1, "", 2, json.dumps({"type": "notice", "text": "building the image"}))
    assert line == ["── building the image"]


# -- stop, resume, cancel -----------------------------------------------------------------------


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test, so times shown are known."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


RESUME_AT = 1796158800.0  # 2026-12-01 21:00:00 UTC


def test_control_events() -> None:
    r = Renderer()
    assert task_lines(r, {"type": "control", "control": "stop"}) == ["── stop requested"]
    assert task_lines(r, {"type": "control", "control": "cancel"}) == ["── cancel requested"]
    assert task_lines(r, {"type": "control", "control": ""}) == []
    assert task_lines(Renderer(color=True), {"type": "control", "control": "stop"}) == [
        "\x1b[33m── stop requested\x1b[0m"
    ]
    assert task_lines(r, {"type": "control", "control": "st\x1bop"}) == ["── st\\x1bop requested"]


def test_agent_runs_after_the_first() -> None:
    r = Renderer()

    def agent(state: str, epoch: int, **extra: Any) -> list[str]:
        return task_lines(
            r, {"type": "agent", "agent": "write", "state": state, "epoch": epoch, **extra}
        )

    assert agent("starting", 0) == ["── agent write started"]
    assert agent("running", 0) == []
    assert agent("stopped", 0, exit_code=130, reason="stopped by user", cost_usd=0.01) == [
        "── agent write stopped (exit 130): stopped by user"
    ]
    assert agent("starting", 1, resume=True) == ["── agent write resumed (run 2)"]
    assert agent("running", 1) == []
    assert agent("failed", 1, exit_code=1, reason="boom") == [
        "── agent write failed (exit 1): boom"
    ]
    assert agent("starting", 2) == ["── agent write started (run 3)"]
    assert agent("stopped", 2, reason="usage limit reached") == [
        "── agent write stopped: usage limit reached"
    ]


def test_a_follower_joining_mid_run_announces_the_run() -> None:
    # With --since past the starting event, the running event is the first it sees.
    r = Renderer()
    event = {"type": "agent", "agent": "write", "state": "running", "epoch": 1}
    assert task_lines(r, event) == ["── agent write started (run 2)"]
    assert task_lines(r, event) == []


def test_agent_events_without_epoch_are_as_before() -> None:
    # Events stored by 0.1.0 carry no epoch.
    r = Renderer()
    assert task_lines(r, {"type": "agent", "agent": "a", "state": "starting"}) == [
        "── agent a started"
    ]
    assert task_lines(r, {"type": "agent", "agent": "a", "state": "running"}) == []


def test_a_resumed_agent_name_is_made_safe() -> None:
    event = {"type": "agent", "agent": "w\x1b]0;x\x07", "state": "starting", "epoch": 1}
    assert task_lines(Renderer(), {**event, "resume": True}) == [
        "── agent w\\x1b]0;x\\x07 resumed (run 2)"
    ]


def test_stopped_and_cancelled_subtasks_with_their_reason() -> None:
    r = Renderer()
    stopped = {"type": "subtask", "id": "write", "state": "stopped", "reason": "stopped by user"}
    assert task_lines(r, stopped) == ["── subtask write stopped: stopped by user"]
    cancelled = {"type": "subtask", "id": "test", "state": "cancelled"}
    assert task_lines(r, cancelled) == ["── subtask test cancelled"]
    assert task_lines(Renderer(color=True), stopped) == [
        "\x1b[33m── subtask write stopped: stopped by user\x1b[0m"
    ]
    # A subtask going again may still carry the reason it stopped for: it explains nothing now.
    again = {"type": "subtask", "id": "write", "state": "running", "reason": "stopped by user"}
    assert task_lines(r, again) == ["── subtask write running"]
    evil = {"type": "subtask", "id": "w", "state": "stopped", "reason": "x\x1b[2Jy\nz"}
    assert task_lines(r, evil) == ["── subtask w stopped: x\\x1b[2Jy …"]


def test_task_paused_with_its_reason() -> None:
    event = {"type": "task", "state": "paused", "reason": "stopped by user"}
    assert task_lines(Renderer(), event) == ["── task paused: stopped by user"]
    assert task_lines(Renderer(color=True), event) == [
        "\x1b[33m── task paused: stopped by user\x1b[0m"
    ]


def test_task_paused_until_a_limit_lifts_says_when_it_resumes(utc: None) -> None:
    event = {"type": "task", "state": "paused", "reason": "usage limit", "resume_at": RESUME_AT}
    assert task_lines(Renderer(), event) == [
        "── task paused: usage limit; resumes by itself at 2026-12-01 21:00:00 UTC"
    ]
    bare = {"type": "task", "state": "paused", "reason": "", "resume_at": RESUME_AT}
    assert task_lines(Renderer(), bare) == [
        "── task paused: resumes by itself at 2026-12-01 21:00:00 UTC"
    ]


def test_a_reason_that_says_when_is_not_repeated() -> None:
    reason = "usage limit reached (429); resumes by itself at 2026-12-01 21:00:00 UTC"
    event = {"type": "task", "state": "paused", "reason": reason, "resume_at": RESUME_AT}
    assert task_lines(Renderer(), event) == [f"── task paused: {reason}"]


@pytest.mark.parametrize("value", ["soon", None, True, -1, 0, 1e300, [RESUME_AT]])
def test_a_bad_resume_time_is_left_out(value: Any) -> None:
    event = {"type": "task", "state": "paused", "reason": "limit", "resume_at": value}
    assert task_lines(Renderer(), event) == ["── task paused: limit"]


# -- task show and the last line of wait and run ------------------------------------------------


def a_task(**fields: Any) -> Task:
    task = Task(**{"id": "3f2a9c1e0b7d", "name": "n", "prompt": "p", "state": 6, **fields})
    task.created_at.FromSeconds(1796150000)
    return task


def stamp(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromSeconds(int(seconds))
    return value


def planned(*subtasks: Subtask) -> Plan:
    return Plan(analysis="a", strategy="dag", subtasks=list(subtasks))


def test_show_gives_a_failed_or_stopped_subtask_its_reason() -> None:
    task = a_task(
        plan=planned(
            Subtask(id="write", name="Write", state="failed", reason="exit 1: \x1b[31mboom"),
            Subtask(id="lint", name="Lint", state="stopped", reason="stopped by user"),
            Subtask(id="test", name="Test", state="running", reason="stopped by user"),
            Subtask(id="doc", name="Doc", state="completed", reason="old"),
        )
    )
    lines = fmt.details(task)
    start = lines.index("plan (dag): a")
    assert lines[start + 1 :] == [
        "  write  failed     Write",
        "                    exit 1: \\x1b[31mboom",
        "  lint   stopped    Lint",
        "                    stopped by user",
        "  test   running    Test",
        "  doc    completed  Doc",
    ]


def test_show_counts_an_agents_runs_when_it_ran_again() -> None:
    task = a_task(
        agents=[
            Agent(name="write", state="stopped", exit_code=130, cost_usd=0.5, runs=3, reason="why"),
            Agent(name="lint", state="running", exit_code=-1, runs=1),
        ]
    )
    assert fmt.details(task)[-2:] == [
        "  write  stopped    exit 130  $0.5000  3 runs  why",
        "  lint   running             $0.0000",
    ]


@pytest.mark.parametrize(
    ("control", "shown"), [("stop", "running (stopping…)"), ("cancel", "running (cancelling…)")]
)
def test_show_says_a_stop_or_cancel_is_under_way(control: str, shown: str) -> None:
    assert f"state:      {shown}" in fmt.details(a_task(control=control))


def test_show_says_when_a_paused_task_resumes_by_itself(utc: None) -> None:
    task = a_task(state=9, reason="usage limit reached", resume_at=stamp(RESUME_AT))
    assert (
        "state:      paused (usage limit reached; resumes by itself at 2026-12-01 21:00:00 UTC)"
        in (fmt.details(task))
    )
    said = "usage limit; resumes by itself at 2026-12-01 21:00:00 UTC"
    again = a_task(state=9, reason=said, resume_at=stamp(RESUME_AT))
    assert f"state:      paused ({said})" in fmt.details(again)


def test_json_of_a_task_carries_reason_runs_resume_at_and_control() -> None:
    task = a_task(
        state=9,
        reason="limit",
        resume_at=stamp(RESUME_AT),
        control="",
        plan=planned(Subtask(id="write", state="stopped", reason="usage limit")),
        agents=[Agent(name="write", state="stopped", runs=2, exit_code=-1)],
    )
    data = fmt.task_dict(task)
    assert data["resume_at"] == "2026-12-01T21:00:00Z"
    assert data["control"] == ""
    assert data["plan"]["subtasks"][0]["reason"] == "usage limit"
    assert data["agents"][0]["runs"] == 2
    plain = fmt.task_dict(a_task(control="stop"))
    assert plain["resume_at"] is None and plain["control"] == "stop"
    assert fmt.summary_dict(a_task())["resume_at"] is None


def test_last_line_of_a_paused_task_says_what_comes_next(utc: None) -> None:
    by_user = a_task(state=9, reason="stopped by user")
    assert fmt.outcome(by_user) == (
        "task 3f2a9c1e paused: stopped by user; resume it with `klaudio task resume 3f2a9c1e`"
    )
    limited = a_task(state=9, reason="usage limit reached", resume_at=stamp(RESUME_AT))
    assert fmt.outcome(limited) == (
        "task 3f2a9c1e paused: usage limit reached; resumes by itself at 2026-12-01 21:00:00 UTC"
    )
    said = "usage limit; resumes by itself at 2026-12-01 21:00:00 UTC"
    assert fmt.outcome(a_task(state=9, reason=said, resume_at=stamp(RESUME_AT))) == (
        f"task 3f2a9c1e paused: {said}"
    )
    assert fmt.outcome(a_task(state=8, reason="boom")) == "task 3f2a9c1e failed: boom"
    assert fmt.outcome(a_task(state=7)) == "task 3f2a9c1e completed"


def test_show_names_the_team_and_the_approved_plan_version() -> None:
    plan = Plan(version=3, source="edit", strategy="dag", analysis="a")
    lines = fmt.details(
        a_task(plan=plan, approved_plan_version=2, settings=TaskSettings(team="solo"))
    )
    assert "team:       solo" in lines
    assert lines[lines.index("plan (dag): a") - 1] == "plan:       v3 (edited); v2 was approved"
    approved = a_task(
        plan=Plan(version=1, source="planner", strategy="dag"), approved_plan_version=1
    )
    assert "plan:       v1 (by the planner), approved" in fmt.details(approved)
    assert "team:       (none)" in fmt.details(approved)


def test_show_gives_answers() -> None:
    task = a_task(
        state=3,
        questions=[
            Question(id="db", text="Which DB?", options=["a", "b"], answer="b", round=1),
            Question(id="port", text="Which port?", round=2),
        ],
    )
    lines = fmt.details(task)
    assert lines[lines.index("questions:") + 1 :] == [
        "  db: Which DB? (options: a, b) -> b",
        "  port: Which port?",
    ]


def test_json_of_a_task_carries_settings_versions_and_rounds() -> None:
    task = a_task(
        plan=Plan(version=2, source="edit", strategy="dag"),
        approved_plan_version=1,
        settings=TaskSettings(team="dev-review", max_agents=3, max_question_rounds=3, cpus=2.0),
        questions=[Question(id="db", round=2)],
    )
    data = fmt.task_dict(task)
    assert data["settings"]["team"] == "dev-review"
    assert set(data["settings"]) == {
        "team",
        "model",
        "max_turns",
        "image",
        "max_agents",
        "memory",
        "cpus",
        "pids_limit",
        "max_question_rounds",
        "network",
    }
    assert data["approved_plan_version"] == 1
    assert (data["plan"]["version"], data["plan"]["source"]) == (2, "edit")
    assert data["questions"][0]["round"] == 2
    bare = fmt.task_dict(a_task())
    assert (bare["settings"], bare["approved_plan_version"]) == (None, None)


def test_the_outcome_of_a_task_awaiting_answers_says_where_the_questions_are() -> None:
    assert fmt.outcome(a_task(state=3)) == (
        "task 3f2a9c1e awaiting_answers; see the questions with `klaudio task questions 3f2a9c1e`"
    )


# -- delivery: the stream, task show and its JSON -----------------------------------------------

COMMIT = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d"
BASE = "2f41afe61f5f1cb7e4b59dd4e5ef76ca64f5602e"
PR_URL = "https://github.com/acme/widgets/pull/7"


def delivered_task(**delivery: Any) -> Task:
    fields = {"template": "widgets", "forge": "github", "commit": True, "push": True, "pr": True}
    return a_task(
        state=7,
        branch="klaudio/3f2a9c1e",
        base_branch="main",
        base_commit=BASE,
        delivery=Delivery(**{**fields, "pr_target": "main", **delivery}),
    )


def test_delivery_steps_render_in_the_stream() -> None:
    r = Renderer()
    assert task_lines(r, {"type": "delivery", "state": "delivering"}) == ["── delivering…"]
    assert task_lines(
        r, {"type": "delivery", "state": "delivered", "delivered_commit": COMMIT, "pr_url": PR_URL}
    ) == [f"── delivered: commit 1a2b3c4d5e6f, pull request {PR_URL}"]
    assert task_lines(
        r, {"type": "delivery", "state": "delivered", "delivered_commit": COMMIT, "pr_url": ""}
    ) == ["── delivered: commit 1a2b3c4d5e6f"]
    failed = {
        "type": "delivery",
        "state": "failed",
        "delivery_reason": "push refused: 403 \x1b[2Jbad token ***\nsecond line",
    }
    assert task_lines(r, failed) == [
        "── delivery failed: push refused: 403 \\x1b[2Jbad token *** …"
    ]
    assert task_lines(r, {"type": "delivery", "state": "failed"}) == [
        "── delivery failed: no reason given"
    ]


def test_delivery_lines_are_coloured_by_outcome() -> None:
    r = Renderer(color=True)
    ok = task_lines(r, {"type": "delivery", "state": "delivered", "delivered_commit": COMMIT})
    bad = task_lines(r, {"type": "delivery", "state": "failed", "delivery_reason": "x"})
    assert ok == ["\x1b[32m── delivered: commit 1a2b3c4d5e6f\x1b[0m"]
    assert bad == ["\x1b[31m── delivery failed: x\x1b[0m"]


@pytest.mark.parametrize("event", [{"type": "delivery"}, {"type": "delivery", "state": 3}])
def test_an_odd_delivery_event_prints_nothing(event: dict[str, Any]) -> None:
    assert task_lines(Renderer(), event) == []


def test_show_has_a_git_section_with_the_delivery() -> None:
    lines = fmt.details(delivered_task(state="delivered", commit_id=COMMIT, pr_url=PR_URL))
    start = lines.index("git:")
    assert lines[start : start + 6] == [
        "git:",
        "  branch:    klaudio/3f2a9c1e",
        "  base:      main@2f41afe61f5f",
        "  delivery:  delivered (commit, push, pull request to main; template widgets)",
        "  commit:    1a2b3c4d5e6f",
        f"  pr:        {PR_URL}",
    ]
    assert lines[start + 6] == "prompt:"


def test_show_gives_a_failed_delivery_its_reason() -> None:
    task = delivered_task(state="failed", reason="github: 401 Bad credentials\x07", pr=False)
    lines = fmt.details(task)
    start = lines.index("git:")
    assert lines[start + 3 :][:2] == [
        "  delivery:  failed (commit, push; template widgets)",
        "  reason:    github: 401 Bad credentials\\x07",
    ]


def test_show_of_a_clone_without_delivery_and_of_an_empty_workspace() -> None:
    cloned = fmt.details(a_task(base_branch="main", base_commit=BASE))
    start = cloned.index("git:")
    assert cloned[start : start + 3] == [
        "git:",
        "  base:      main@2f41afe61f5f",
        "  delivery:  none (the work stays in the workspace)",
    ]
    assert "git:" not in fmt.details(a_task())
    waiting = fmt.details(delivered_task(pr=False, push=False, template=""))
    assert "  delivery:  not yet (commit)" in waiting
    assert "  delivery:  delivering… (commit)" in fmt.details(
        delivered_task(pr=False, push=False, template="", state="delivering")
    )


def test_show_names_the_inputs() -> None:
    assert "inputs:     spec.pdf, data (in input/)" in fmt.details(
        a_task(inputs=["spec.pdf", "data"])
    )


def test_json_of_a_task_carries_its_branches_inputs_and_delivery() -> None:
    data = fmt.task_dict(delivered_task(state="delivered", commit_id=COMMIT, pr_url=PR_URL))
    assert (data["branch"], data["base_branch"], data["base_commit"]) == (
        "klaudio/3f2a9c1e",
        "main",
        BASE,
    )
    assert data["delivery"] == {
        "template": "widgets",
        "forge": "github",
        "commit": True,
        "push": True,
        "pr": True,
        "pr_target": "main",
        "reviewers": [],
        "state": "delivered",
        "reason": "",
        "commit_id": COMMIT,
        "pr_url": PR_URL,
    }
    bare = fmt.task_dict(a_task(inputs=["spec.pdf"]))
    assert bare["delivery"] is None and bare["inputs"] == ["spec.pdf"]
    assert (bare["branch"], bare["base_branch"], bare["base_commit"]) == ("", "", "")


def test_the_delivery_in_words() -> None:
    said = fmt.delivery_said(delivered_task(state="delivered", commit_id=COMMIT, pr_url=PR_URL))
    assert said == (
        f"delivered: commit 1a2b3c4d5e6f on klaudio/3f2a9c1e, pushed; pull request {PR_URL}"
    )
    committed = delivered_task(state="delivered", commit_id=COMMIT, push=False, pr=False)
    assert fmt.delivery_said(committed) == "delivered: commit 1a2b3c4d5e6f on klaudio/3f2a9c1e"
    assert fmt.delivery_said(committed, pushed=True).endswith(", pushed")
    assert fmt.delivery_said(delivered_task(state="failed", reason="no\nway")) == (
        "delivery failed: no\\nway"
    )
    assert fmt.delivery_said(delivered_task()) == "has not delivered yet"


def test_settled_prints_the_pull_request_url_last_and_fails_a_failed_delivery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from klaudio.cli.task import settled

    done = delivered_task(state="delivered", commit_id=COMMIT, pr_url=PR_URL)
    assert settled(done) == 0
    out, err = capsys.readouterr()
    assert out == f"{PR_URL}\n"
    assert err.splitlines() == [
        "klaudio: task 3f2a9c1e completed",
        f"klaudio: task 3f2a9c1e delivered: commit 1a2b3c4d5e6f on klaudio/3f2a9c1e, pushed; "
        f"pull request {PR_URL}",
    ]
    # A completed task whose later publication failed.
    assert settled(delivered_task(state="failed", reason="github: 401 Bad credentials")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (
        "klaudio: task 3f2a9c1e delivery failed: github: 401 Bad credentials"
    )
    failed = a_task(
        state=8,
        reason="delivery failed: boom",
        delivery=Delivery(push=True, state="failed", reason="boom"),
    )
    assert settled(failed) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "klaudio: task 3f2a9c1e failed: delivery failed: boom\n")
    assert settled(a_task(state=7)) == 0
    assert capsys.readouterr() == ("", "klaudio: task 3f2a9c1e completed\n")
