"""A scripted stdlib-only fake of the Anthropic Messages API, for the real Claude Code CLI."""

from __future__ import annotations

import json
import re
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeAlias
from urllib.parse import urlsplit

Block = dict[str, Any]

USAGE_IN = 10
USAGE_OUT = 5
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
# Texts the CLI itself puts into user messages; they are not the human speaking.
_CLI_TEXT_PREFIXES = (
    "[structured-output-enforce]",
    "[Request interrupted",
    "Output token limit hit",
    "Tool loaded.",
)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ERROR_BLOCK = "__fake_http_error__"


def _block_texts(content: Any) -> list[str]:
    """Text of the text blocks of a message content (a string or a list of blocks)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
    ]


def _is_human_text(s: str) -> bool:
    rest = _REMINDER.sub("", s).strip()
    return bool(rest) and not rest.startswith(_CLI_TEXT_PREFIXES)


@dataclass
class Request:
    """One recorded POST /v1/messages request, plus how the fake matched it."""

    body: dict[str, Any]
    headers: dict[str, str]
    marker: str | None = None
    turn_index: int = 0
    reply: list[Block] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []

    @property
    def tools(self) -> list[str]:
        return [str(t.get("name")) for t in self.body.get("tools") or [] if isinstance(t, dict)]

    @property
    def session_id(self) -> str | None:
        return self.headers.get("x-claude-code-session-id")

    def first_user_text(self) -> str:
        for m in self.messages:
            if m.get("role") == "user":
                return "\n".join(_block_texts(m.get("content")))
        return ""

    def last_tool_result_text(self) -> str | None:
        users = [m for m in self.messages if m.get("role") == "user"]
        content = users[-1].get("content") if users else None
        if not isinstance(content, list):
            return None
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        return "\n".join(_block_texts(results[-1].get("content"))) if results else None

    def compute_turn_index(self) -> int:
        """Assistant replies since the last human user message (consecutive ones count once)."""
        count, prev_role = 0, ""
        for m in self.messages:
            role = m.get("role")
            if role == "user" and any(_is_human_text(t) for t in _block_texts(m.get("content"))):
                count = 0
            elif role == "assistant" and prev_role != "assistant":
                count += 1
            if role != "system":
                prev_role = str(role)
        return count


Turn: TypeAlias = list[Block] | Callable[[Request], list[Block]]


def text(s: str) -> Block:
    """A text content block."""
    return {"type": "text", "text": s}


def tool_use(name: str, input: dict[str, Any]) -> Block:
    """A tool_use content block with a fresh id."""
    return {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": input,
    }


def structured(obj: dict[str, Any]) -> Block:
    """A call of the StructuredOutput tool that --json-schema adds."""
    return tool_use("StructuredOutput", obj)


def usage_limit(resets_at: float, message: str = "usage limit reached") -> Turn:
    """A 429 the way the API rejects a subscription over its usage limit, with its reset time.

    With OAuth credentials Claude Code turns these headers into a rate_limit_event carrying
    resetsAt (reference section 11b); x-should-retry: false stops it retrying.
    """
    headers = {
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(int(resets_at)),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "x-should-retry": "false",
    }
    err = {
        "status": 429,
        "error_type": "rate_limit_error",
        "message": message,
        "retry_after": None,
        "headers": headers,
    }
    return [{"type": _ERROR_BLOCK, **err}]


def error(status: int, message: str = "fake error", retry_after: float | None = None) -> Turn:
    """A turn whose whole reply is an HTTP error with the Anthropic JSON error body."""
    etype = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    err = {"status": status, "error_type": etype, "message": message, "retry_after": retry_after}
    return [{"type": _ERROR_BLOCK, **err}]


def _chunks(s: str, n: int = 3) -> list[str]:
    """Split s into up to n non-empty pieces (at least 2 when s has 2+ characters)."""
    size = max(1, -(-len(s) // n))
    return [s[i : i + size] for i in range(0, len(s), size)] or [""]


def _message(blocks: list[Block], model: str) -> dict[str, Any]:
    """The non-streaming Messages API reply carrying blocks."""
    stop = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    usage = {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT}
    usage |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {
        "id": f"msg_fake_{uuid.uuid4().hex[:20]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _stream(message: dict[str, Any]) -> bytes:
    """The same reply as Server-Sent Events, text and tool input split into several deltas."""
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for i, b in enumerate(message["content"]):
        if b.get("type") == "tool_use":
            first = {**b, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": c}
                for c in _chunks(json.dumps(b.get("input") or {}))
            ]
        else:
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(str(b.get("text", "")))]
        events.append({"type": "content_block_start", "index": i, "content_block": first})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    usage = {"output_tokens": message["usage"]["output_tokens"]}
    events += [{"type": "message_delta", "delta": delta, "usage": usage}, {"type": "message_stop"}]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


class FakeModel:
    """Threaded HTTP server on 127.0.0.1 that answers /v1/messages from registered scripts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Turn]] = {}
        self._requests: list[Request] = []
        self._thread: threading.Thread | None = None
        self._server = _Server((host, port), _Handler)
        self._server.model = self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeModel:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, marker: str, turns: list[Turn]) -> None:
        with self._lock:
            self._scripts[marker] = list(turns)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, marker: str) -> list[Request]:
        return [r for r in self.requests if r.marker == marker]

    def answer(self, req: Request) -> list[Block]:
        """Pick the script and turn for req, evaluate it, record req, and return the blocks."""
        haystack = _REMINDER.sub("", req.first_user_text())
        with self._lock:
            match = next(((m, t) for m, t in self._scripts.items() if m in haystack), None)
        req.turn_index = req.compute_turn_index()
        if match is None:
            blocks = [text("(fake model: no script matches)")]
        else:
            req.marker, turns = match
            try:
                blocks = _evaluate(req, turns)
            except Exception:  # a broken callable turn should show up in the run, not hang it
                blocks = [text("(fake model: turn raised)\n" + traceback.format_exc())]
        req.reply = _fresh_ids(req, blocks)
        with self._lock:
            self._requests.append(req)
        return req.reply


def _evaluate(req: Request, turns: list[Turn]) -> list[Block]:
    if not turns:
        return [text("(fake model: script exhausted)")]
    turn = turns[min(req.turn_index, len(turns) - 1)]
    blocks = list(turn(req) if callable(turn) else turn)
    if req.turn_index >= len(turns) and any(b.get("type") != "text" for b in blocks):
        return [text("(fake model: script exhausted)")]
    return blocks


def _fresh_ids(req: Request, blocks: list[Block]) -> list[Block]:
    """Copy blocks, giving a tool_use a new id if that id is already in the conversation."""
    seen = {
        b.get("id")
        for m in req.messages
        if isinstance(m.get("content"), list)
        for b in m["content"]
        if isinstance(b, dict)
    }
    out = [dict(b) for b in blocks]
    for b in out:
        if b.get("type") == "tool_use" and (not b.get("id") or b["id"] in seen):
            b["id"] = f"toolu_{uuid.uuid4().hex[:24]}"
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    model: FakeModel


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        """Send obj as JSON, or as an SSE body when it is already bytes."""
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        ctype = "text/event-stream" if isinstance(obj, bytes) else "application/json"
        headers = {"Content-Type": ctype, "Content-Length": str(len(body))}
        headers["request-id"] = f"req_fake_{uuid.uuid4().hex[:20]}"
        for k, v in (headers | (extra or {})).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, etype: str, message: str, **headers: str) -> None:
        self._send(status, {"type": "error", "error": {"type": etype, "message": message}}, headers)

    def do_HEAD(self) -> None:
        ok = urlsplit(self.path).path in ("/", "/api/hello")
        self._send(200 if ok else 404, {})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/api/hello"):
            self._send(200, {})
        elif path == "/v1/models":
            m = {
                "type": "model",
                "id": "claude-fake-1",
                "display_name": "Fake model",
                "created_at": "2025-01-01T00:00:00Z",
            }
            self._send(
                200, {"data": [m], "has_more": False, "first_id": m["id"], "last_id": m["id"]}
            )
        else:
            self._error(404, "not_found_error", f"fake model: no route for GET {path}")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._error(400, "invalid_request_error", "fake model: body is not a JSON object")
        elif path == "/v1/messages/count_tokens":
            self._send(200, {"input_tokens": max(1, len(raw) // 4)})
        elif path == "/v1/messages":
            headers = {k.lower(): v for k, v in self.headers.items()}
            blocks = self.server.model.answer(Request(body=body, headers=headers))
            err = next((b for b in blocks if b.get("type") == _ERROR_BLOCK), None)
            if err is not None:
                ra = {} if err["retry_after"] is None else {"retry-after": str(err["retry_after"])}
                ra |= err.get("headers") or {}
                self._error(err["status"], err["error_type"], err["message"], **ra)
                return
            message = _message(blocks, str(body.get("model") or "claude-fake-1"))
            self._send(200, _stream(message) if body.get("stream") else message)
        else:
            self._error(404, "not_found_error", f"fake model: no route for POST {path}")


__all__ = [
    "Block",
    "FakeModel",
    "Request",
    "Turn",
    "error",
    "structured",
    "text",
    "tool_use",
    "usage_limit",
]
