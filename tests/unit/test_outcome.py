"""klaudiod.agent: judging a finished agent from its out.jsonl, and its command line.

The result lines follow the measured samples in claude-code-headless.md sections 0.3 and 2.4.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from klaudio.config import ClaudeConfig, Config
from klaudiod.agent import (
    PLANNER_SYSTEM,
    WORKER_SYSTEM,
    command,
    outcome,
    planner_prompt,
    worker_prompt,
)
from klaudiod.plan import PLANNER_SCHEMA
from klaudiod.settings import from_config

SESSION = "6dc66eaa-f248-46b6-a850-529d8c21cd45"
INIT = {
    "type": "system",
    "subtype": "init",
    "cwd": "/workspace",
    "session_id": SESSION,
    "tools": ["Bash", "Read", "Write"],
    "model": "claude-opus-5-5",
    "permissionMode": "bypassPermissions",
    "claude_code_version": "2.1.328",
}
ASSISTANT = {
    "type": "assistant",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "Writing the result now"}],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 1},
    },
    "parent_tool_use_id": None,
    "session_id": SESSION,
}
TOOL_RESULT = {
    "type": "user",
    "message": {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Exit code 137"}],
    },
    "session_id": SESSION,
}


def result(**fields: Any) -> dict[str, Any]:
    """A result event shaped like the measured success sample, with fields replaced."""
    event: dict[str, Any] = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done: wrote hello.txt",
        "num_turns": 2,
        "session_id": SESSION,
        "stop_reason": "end_turn",
        "terminal_reason": "completed",
        "api_error_status": None,
        "duration_ms": 209,
        "duration_api_ms": 45,
        "total_cost_usd": 0.00028,
        "usage": {"input_tokens": 20, "output_tokens": 10},
        "modelUsage": {"claude-opus-5-5": {"inputTokens": 20, "outputTokens": 10}},
        "permission_denials": [],
        "result_index": 0,
        "uuid": "b2c8",
    }
    event.update(fields)
    return event


def out_file(tmp_path: Path, *events: dict[str, Any] | str) -> Path:
    path = tmp_path / "out.jsonl"
    lines = [e if isinstance(e, str) else json.dumps(e) for e in events]
    path.write_text("".join(line + "\n" for line in lines))
    return path


# outcome() ----------------------------------------------------------------------------------------


def test_a_normal_run_succeeds(tmp_path: Path) -> None:
    path = out_file(tmp_path, INIT, ASSISTANT, TOOL_RESULT, result())

    judged = outcome(path, 0)

    assert judged.ok
    assert judged.reason == ""
    assert judged.exit_code == 0
    assert judged.result == "Done: wrote hello.txt"
    assert judged.cost_usd == pytest.approx(0.00028)
    assert judged.session_id == SESSION
    assert judged.structured is None


def test_an_api_error_fails_with_the_api_message(tmp_path: Path) -> None:
    message = "API Error: 500 Internal server error (fake). This is a server-side issue"
    path = out_file(
        tmp_path,
        INIT,
        result(is_error=True, result=message, terminal_reason="api_error", api_error_status=500),
    )

    judged = outcome(path, 1)

    assert not judged.ok
    assert judged.reason.startswith("API error")
    assert message in judged.reason
    assert judged.reason.endswith("(exit 1)")
    assert judged.exit_code == 1


def test_no_credentials_fails_naming_the_message(tmp_path: Path) -> None:
    path = out_file(
        tmp_path,
        result(is_error=True, result="Not logged in · Please run /login", terminal_reason=None),
    )

    judged = outcome(path, 1)

    assert not judged.ok
    assert "Not logged in" in judged.reason


def test_a_failure_reason_never_calls_itself_success(tmp_path: Path) -> None:
    # Measured: no credentials -> subtype success, is_error true, empty terminal_reason, exit 1.
    path = out_file(
        tmp_path,
        result(is_error=True, result="Not logged in · Please run /login", terminal_reason=""),
    )

    reason = outcome(path, 1).reason

    assert not reason.startswith("success")


def test_sigint_with_exit_zero_is_not_success(tmp_path: Path) -> None:
    path = out_file(
        tmp_path,
        INIT,
        ASSISTANT,
        result(
            subtype="error_during_execution",
            is_error=True,
            terminal_reason="aborted_tools",
            result=None,
        ),
    )

    judged = outcome(path, 0)

    assert not judged.ok
    assert "aborted_tools" in judged.reason
    assert "error_during_execution" in judged.reason


def test_max_turns_names_the_first_error(tmp_path: Path) -> None:
    path = out_file(
        tmp_path,
        result(
            subtype="error_max_turns",
            is_error=True,
            terminal_reason="max_turns",
            errors=["Reached maximum number of turns (2)", "second"],
        ),
    )

    judged = outcome(path, 1)

    assert not judged.ok
    assert judged.reason == "max_turns: Reached maximum number of turns (2) (exit 1)"


def test_sigterm_without_a_result_line_names_exit_143(tmp_path: Path) -> None:
    path = out_file(tmp_path, INIT, ASSISTANT, TOOL_RESULT)

    judged = outcome(path, 143)

    assert not judged.ok
    assert "exit 143" in judged.reason
    assert judged.cost_usd == 0.0 and judged.result == ""


def test_a_missing_output_file_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    judged = outcome(tmp_path / "never-written.jsonl", 137)

    assert not judged.ok
    assert "exit 137" in judged.reason


def test_a_nonzero_exit_after_a_success_result_is_a_failure(tmp_path: Path) -> None:
    judged = outcome(out_file(tmp_path, result()), 1)

    assert not judged.ok
    assert "(exit 1)" in judged.reason


def test_an_early_terminal_reason_with_exit_zero_is_a_failure(tmp_path: Path) -> None:
    judged = outcome(out_file(tmp_path, result(terminal_reason="budget_exhausted")), 0)

    assert not judged.ok
    assert judged.reason == "ended early: budget_exhausted"


def test_the_last_of_several_result_lines_is_used(tmp_path: Path) -> None:
    # An async subagent makes the CLI emit a second result (result_index 1) before exiting.
    path = out_file(
        tmp_path,
        INIT,
        result(result="first turn done", total_cost_usd=0.001, result_index=0),
        ASSISTANT,
        result(result="subagent finished too", total_cost_usd=0.0042, result_index=1),
    )

    judged = outcome(path, 0)

    assert judged.ok
    assert judged.result == "subagent finished too"
    assert judged.cost_usd == pytest.approx(0.0042)


def test_an_error_in_the_last_result_wins_over_an_earlier_success(tmp_path: Path) -> None:
    path = out_file(
        tmp_path,
        result(),
        result(is_error=True, result="API Error: 529 Overloaded", terminal_reason="api_error"),
    )

    judged = outcome(path, 1)

    assert not judged.ok
    assert "529 Overloaded" in judged.reason


def test_garbage_and_partial_lines_are_skipped(tmp_path: Path) -> None:
    path = out_file(
        tmp_path,
        result(result="the real one"),
        '{"type":"result","result": truncated',
        "not json at all",
        '"result"',
    )

    judged = outcome(path, 0)

    assert judged.ok
    assert judged.result == "the real one"


def test_a_tool_result_mentioning_result_is_not_taken_for_the_result(tmp_path: Path) -> None:
    decoy = dict(TOOL_RESULT)
    decoy["result"] = "not the result event"
    path = out_file(tmp_path, result(result="real"), decoy)

    assert outcome(path, 0).result == "real"


def test_the_planner_needs_structured_output(tmp_path: Path) -> None:
    # The model never called StructuredOutput: success, but without the field.
    path = out_file(tmp_path, result(result="Here is my plan in prose."))

    judged = outcome(path, 0, needs_structured=True)

    assert not judged.ok
    assert "structured output" in judged.reason


def test_structured_output_is_returned_when_present(tmp_path: Path) -> None:
    plan = {"kind": "plan", "subtasks": [{"id": "a", "name": "A", "prompt": "do a"}]}
    path = out_file(
        tmp_path, result(stop_reason="tool_use", result=json.dumps(plan), structured_output=plan)
    )

    judged = outcome(path, 0, needs_structured=True)

    assert judged.ok
    assert judged.structured == plan


def test_structured_output_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = out_file(tmp_path, result(structured_output=["kind", "plan"]))

    assert not outcome(path, 0, needs_structured=True).ok


def test_out_of_memory_mentions_memory(tmp_path: Path) -> None:
    judged = outcome(out_file(tmp_path, INIT, ASSISTANT), 137, oom_killed=True)

    assert not judged.ok
    assert "memory" in judged.reason
    assert "137" in judged.reason


def test_oom_wins_even_after_a_success_line(tmp_path: Path) -> None:
    judged = outcome(out_file(tmp_path, result()), 0, oom_killed=True)

    assert not judged.ok
    assert "memory" in judged.reason


def test_no_exit_code_means_the_container_disappeared(tmp_path: Path) -> None:
    judged = outcome(out_file(tmp_path, INIT, result()), None)

    assert not judged.ok
    assert judged.exit_code is None
    assert "disappeared" in judged.reason


def test_a_long_multiline_error_is_cut_to_one_line(tmp_path: Path) -> None:
    message = "API Error: 400 " + "x" * 1000 + "\nsecond line"
    path = out_file(tmp_path, result(is_error=True, result=message, terminal_reason="api_error"))

    reason = outcome(path, 1).reason

    assert "\n" not in reason
    assert "second line" not in reason
    assert len(reason) < 400


# command() ----------------------------------------------------------------------------------------


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_planner_command_is_read_only_with_a_schema() -> None:
    args = command(from_config(Config()), "sess-1", planner=True)

    assert args[0] == "-p"
    assert option(args, "--output-format") == "stream-json"
    assert "--verbose" in args
    assert option(args, "--tools") == "Read,Grep,Glob"
    assert json.loads(option(args, "--json-schema")) == PLANNER_SCHEMA
    assert option(args, "--session-id") == "sess-1"
    assert option(args, "--append-system-prompt") == PLANNER_SYSTEM
    assert "--dangerously-skip-permissions" not in args


def test_the_worker_command_skips_permissions_and_has_no_schema() -> None:
    args = command(from_config(Config()), "sess-2", planner=False)

    assert "--dangerously-skip-permissions" in args
    assert option(args, "--session-id") == "sess-2"
    assert option(args, "--append-system-prompt") == WORKER_SYSTEM
    assert "--json-schema" not in args
    assert "--tools" not in args
    assert option(args, "--output-format") == "stream-json" and "--verbose" in args


@pytest.mark.parametrize("planner", [True, False])
def test_model_is_passed_only_when_configured(planner: bool) -> None:
    assert "--model" not in command(from_config(Config()), "s", planner)

    configured = Config(claude=ClaudeConfig(model="claude-opus-5-5"))
    args = command(from_config(configured), "s", planner)

    assert option(args, "--model") == "claude-opus-5-5"


def test_max_turns_comes_from_the_config() -> None:
    args = command(from_config(Config(claude=ClaudeConfig(max_turns=7))), "s", planner=False)

    assert option(args, "--max-turns") == "7"


# Prompts ------------------------------------------------------------------------------------------


def test_the_planner_prompt_contains_the_task() -> None:
    assert "Task:\nbuild a thing" in planner_prompt("build a thing")


def test_the_worker_prompt_carries_its_dependencies_results() -> None:
    prompt = worker_prompt("overall", "Copy", "copy the file", {"write": "wrote greeting.txt\n\n"})

    assert "Overall task:\noverall" in prompt
    assert "Your subtask (Copy):\ncopy the file" in prompt
    assert "--- write ---\nwrote greeting.txt\n" in prompt


def test_a_worker_without_dependencies_gets_no_context_section() -> None:
    assert "Results of the subtasks" not in worker_prompt("overall", "A", "do a", {})


def test_a_run_without_a_result_says_what_the_agent_printed_on_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    (tmp_path / "err.log").write_text(
        "some noise\nError: When using --print, --output-format=stream-json requires --verbose\n\n"
    )

    result = outcome(out, 1)

    assert not result.ok
    assert result.reason == (
        "exit 1 without a result event: Error: When using --print, "
        "--output-format=stream-json requires --verbose"
    )


def test_a_run_without_a_result_or_stderr_says_just_that(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")

    assert outcome(out, 1).reason == "exit 1 without a result event"


@pytest.mark.parametrize(("code", "signal"), [(143, "SIGTERM"), (137, "SIGKILL")])
def test_a_run_killed_by_a_signal_before_its_result_is_interrupted_not_failed(
    tmp_path: Path, code: int, signal: str
) -> None:
    judged = outcome(out_file(tmp_path, INIT, ASSISTANT), code)

    assert not judged.ok
    assert judged.killed and judged.interrupted
    assert judged.reason == f"killed by {signal} (exit {code}) before it finished its turn"


def test_a_run_killed_after_its_successful_result_is_not_interrupted(tmp_path: Path) -> None:
    # It finished its turn; the signal came later (exit 143 with a success result and exit 0
    # would be a contradiction claude does not produce, but the result decides).
    judged = outcome(out_file(tmp_path, INIT, result()), 143)

    assert not judged.killed


def test_judging_reads_a_huge_line_in_bounded_memory(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / "out.jsonl"
    with path.open("wb") as handle:
        handle.write(json.dumps(INIT).encode() + b"\n")
        handle.write(b"x" * (64 << 20))  # 64 MiB with no newline: an agent's junk
        handle.write(b"\n" + json.dumps(result()).encode() + b"\n")
    tracemalloc.start()
    try:
        judged = outcome(path, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert judged.ok
    assert peak < 40 << 20
