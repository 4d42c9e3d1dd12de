"""The fake Messages API, alone and driven by the real Claude Code CLI in the agent image."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakemodel import FakeModel, Request, error, structured, text, tool_use

IMAGE = os.environ.get("KLAUDIO_TEST_IMAGE", "klaudio-agent:test")
LABEL = "klaudio.test=fakemodel"
RUN_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModel]:
    with FakeModel() as m:
        yield m


# ---- the fake on its own (plain HTTP, no Docker) -----------------------------------------------


def _post(url: str, body: dict[str, Any]) -> tuple[int, str, str]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def _user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


def test_streaming_reply_shape(model: FakeModel) -> None:
    model.script("U-STREAM", [[text("hello there"), tool_use("Bash", {"command": "ls -la /"})]])
    status, ctype, raw = _post(
        model.url + "/v1/messages?beta=true",
        {
            "model": "m",
            "stream": True,
            "messages": [_user("<system-reminder>x</system-reminder>", "go U-STREAM")],
        },
    )
    assert (status, ctype) == (200, "text/event-stream")
    names = [ln[7:] for ln in raw.splitlines() if ln.startswith("event: ")]
    datas = [json.loads(ln[6:]) for ln in raw.splitlines() if ln.startswith("data: ")]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    partial = [
        d["delta"]["partial_json"]
        for d in datas
        if d["type"] == "content_block_delta" and d["index"] == 1
    ]
    assert len(partial) >= 2 and json.loads("".join(partial)) == {"command": "ls -la /"}
    assert datas[-2]["delta"]["stop_reason"] == "tool_use"
    assert model.requests_for("U-STREAM")[-1].turn_index == 0


def test_turn_index_is_stateless_and_non_streaming(model: FakeModel) -> None:
    model.script("U-TURNS", [[text("a")], [text("b")], [tool_use("Read", {"file_path": "/x"})]])
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}
    history = [
        _user("U-TURNS please"),
        {"role": "system", "content": "env"},
        {"role": "assistant", "content": [text("a")]},
        _user("[structured-output-enforce] call the tool"),
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": [result, text("<system-reminder>r</system-reminder>")]},
        {"role": "assistant", "content": [text("c")]},
    ]
    url = model.url + "/v1/messages"
    replies = [json.loads(_post(url, {"messages": history[:n]})[2]) for n in (2, 4, 6, 7)]
    assert [r["content"][0].get("text") for r in replies[:2]] == ["a", "b"]
    assert replies[2]["stop_reason"] == "tool_use"
    # Beyond the end, with a non-text last turn: the exhausted marker.
    assert replies[3]["content"][0]["text"] == "(fake model: script exhausted)"
    # A new human message restarts the script.
    again = json.loads(_post(url, {"messages": [*history, _user("next please")]})[2])
    assert again["content"][0]["text"] == "a" and again["stop_reason"] == "end_turn"
    assert [r.turn_index for r in model.requests_for("U-TURNS")] == [0, 1, 2, 3, 0]


def test_errors_routes_and_unmatched(model: FakeModel) -> None:
    model.script("U-ERR", [error(529, "busy")])
    status, _, raw = _post(model.url + "/v1/messages", {"messages": [_user("U-ERR")]})
    assert status == 529
    assert json.loads(raw) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
    status, _, raw = _post(model.url + "/v1/messages", {"messages": [_user("nothing here")]})
    assert json.loads(raw)["content"][0]["text"] == "(fake model: no script matches)"
    assert model.requests[-1].marker is None
    status, _, raw = _post(model.url + "/v1/messages/count_tokens", {"messages": []})
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    assert _post(model.url + "/v1/nope", {})[0] == 404
    with urllib.request.urlopen(
        urllib.request.Request(model.url + "/api/hello", method="HEAD")
    ) as r:
        assert r.status == 200
    with urllib.request.urlopen(model.url + "/v1/models") as r:
        assert json.loads(r.read())["data"]


# ---- the real CLI in the real image ------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_image() -> Iterator[str]:
    try:
        found = (
            subprocess.run(
                ["docker", "image", "inspect", IMAGE], capture_output=True, timeout=30
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        found = False
    # CI provides both; a missing one is a failure, never a skip.
    assert found, f"needs a Docker engine and the image {IMAGE} (.ci/run builds it)"
    yield IMAGE
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=60)


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    stderr: str
    workspace: Path

    @property
    def result(self) -> dict[str, Any]:
        assert self.events and self.events[-1]["type"] == "result", (self.events, self.stderr)
        return self.events[-1]


def run_claude(
    image: str,
    model: FakeModel,
    tmp: Path,
    prompt: str,
    *args: str,
    files: dict[str, str] | None = None,
) -> Run:
    """Run `claude -p PROMPT ... ARGS` as uid 1000 in a throwaway container against the fake."""
    ws, home = tmp / "ws", tmp / "home"
    for d in (ws, home):
        d.mkdir()
        d.chmod(0o777)
    for name, content in (files or {}).items():
        (ws / name).write_text(content)
    name = f"klaudio-fakemodel-{uuid.uuid4().hex[:10]}"
    # fmt: off
    cmd = [
        "docker", "run", "--rm", "--name", name, "--label", LABEL, "--network", "host",
        "-v", f"{ws}:/workspace", "-v", f"{home}:/klaudio/home",
        "-e", f"ANTHROPIC_BASE_URL={model.url}", "-e", "ANTHROPIC_API_KEY=sk-test",
        "-e", "CLAUDE_CODE_MAX_RETRIES=0",
        "--entrypoint", "claude", image,
        "-p", prompt, "--output-format", "stream-json", "--verbose", *args,
    ]
    # fmt: on
    try:
        p = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        raise
    events = [json.loads(ln) for ln in p.stdout.splitlines() if ln.strip()]
    return Run(p.returncode, events, p.stderr, ws)


@pytest.mark.docker
def test_worker_writes_a_file(docker_image: str, model: FakeModel, tmp_path: Path) -> None:
    model.script(
        "FM-WRITE",
        [
            [
                text("writing"),
                tool_use("Write", {"file_path": "/workspace/hello.txt", "content": "hi\n"}),
            ],
            [text("done FM-WRITE")],
        ],
    )
    run = run_claude(
        docker_image, model, tmp_path, "please FM-WRITE", "--dangerously-skip-permissions"
    )
    assert run.code == 0, run.stderr
    assert (run.workspace / "hello.txt").read_text() == "hi\n"
    res = run.result
    assert res["is_error"] is False and res["result"] == "done FM-WRITE"
    assert res["total_cost_usd"] > 0
    reqs = model.requests_for("FM-WRITE")
    assert [r.turn_index for r in reqs] == [0, 1]
    assert reqs[0].session_id == res["session_id"] == reqs[1].session_id
    assert reqs[1].last_tool_result_text() is not None
    assert "Write" in reqs[0].tools and reqs[0].body["stream"] is True


PLAN_SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"type": "string"},
        "steps": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["kind"],
}


@pytest.mark.docker
def test_structured_output(docker_image: str, model: FakeModel, tmp_path: Path) -> None:
    plan = {"kind": "plan", "steps": ["read", "think"]}
    model.script("FM-PLAN", [[text("here is the plan"), structured(plan)]])
    run = run_claude(
        docker_image,
        model,
        tmp_path,
        "make a FM-PLAN",
        "--tools",
        "Read,Grep,Glob",
        "--permission-mode",
        "dontAsk",
        "--json-schema",
        json.dumps(PLAN_SCHEMA),
    )
    assert run.code == 0, run.stderr
    res = run.result
    assert res["is_error"] is False and res["structured_output"] == plan
    (req,) = model.requests_for("FM-PLAN")
    assert "StructuredOutput" in req.tools and "Read" in req.tools
    assert "Write" not in req.tools


@pytest.mark.docker
@pytest.mark.parametrize("status", [500, 403])
def test_api_error_fails_the_run(
    docker_image: str, model: FakeModel, tmp_path: Path, status: int
) -> None:
    marker = f"FM-ERR-{status}"
    model.script(marker, [error(status, f"fake {status}")])
    run = run_claude(
        docker_image, model, tmp_path, f"try {marker}", "--dangerously-skip-permissions"
    )
    assert run.code != 0
    res = run.result
    assert res["is_error"] is True and res["api_error_status"] == status
    assert f"fake {status}" in res["result"]
    assert len(model.requests_for(marker)) == 1  # 403 is never retried; 500 not with 0 retries


@pytest.mark.docker
def test_callable_turn_echoes_a_tool_result(
    docker_image: str, model: FakeModel, tmp_path: Path
) -> None:
    def echo(req: Request) -> list[dict[str, Any]]:
        return [text(f"the file said: {req.last_tool_result_text()}")]

    model.script("FM-READ", [[tool_use("Read", {"file_path": "/workspace/notes.txt"})], echo])
    run = run_claude(
        docker_image,
        model,
        tmp_path,
        "read it FM-READ",
        "--dangerously-skip-permissions",
        files={"notes.txt": "secret=4711\n"},
    )
    assert run.code == 0, run.stderr
    assert run.result["result"].startswith("the file said:")
    assert "secret=4711" in run.result["result"]
    assert [r.turn_index for r in model.requests_for("FM-READ")] == [0, 1]
