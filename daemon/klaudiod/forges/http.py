"""JSON over HTTPS for the forges: one request helper turning every failure into one masked line."""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from klaudiod.forges import ForgeError

USER_AGENT = "klaudio"
MAX_BODY = 32 << 20
# Pages a lookup follows at most (100 items a page on GitHub and GitLab, 50 on Bitbucket).
MAX_PAGES = 50
MASK = "***"
_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_REL = re.compile(r'rel\s*=\s*"?([^";,]+)"?')

Describe = Callable[[Any, str], str]


@dataclass(frozen=True)
class Response:
    """A 2xx answer: its status, headers and parsed JSON body (None when empty)."""

    status: int
    headers: Message
    data: Any


class _Redirected(Exception):
    """A redirect to another origin, which would carry the token there."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (a renamed repository) only within the origin the token is for."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if origin(newurl) != origin(req.full_url):
            raise _Redirected(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of url, the port made explicit."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def one_line(text: str, limit: int = 400) -> str:
    """text on one line, whitespace collapsed, cut at limit characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def next_link(header: str | None) -> str | None:
    """The rel="next" URL of a Link header (GitHub's and GitLab's pagination)."""
    for found in _LINK.finditer(header or ""):
        for rel in _REL.findall(found.group(2)):
            if "next" in rel.split():
                return found.group(1)
    return None


def segment(value: str) -> str:
    """value quoted as one URL path segment (a slash becomes %2F)."""
    return quote(value, safe="")


class Api:
    """Calls to one forge's REST API with one token.

    The token goes only into the auth headers given, only to the API's origin (redirects
    elsewhere and pagination links elsewhere are refused), and every message is masked.
    """

    def __init__(
        self,
        forge: str,
        base_url: str,
        headers: Mapping[str, str],
        token: str,
        describe: Describe,
        timeout: float = 30.0,
    ) -> None:
        """An API client; describe extracts the forge's message from an error body."""
        self.forge = forge
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._secrets = sorted({s for s in (token, quote(token), segment(token)) if s}, key=len)
        self._describe = describe
        self._opener = urllib.request.build_opener(_SameOriginRedirects())

    def __repr__(self) -> str:
        """Names the forge and its API, never the token."""
        return f"Api({self.forge!r}, {self.base_url!r})"

    def mask(self, text: str) -> str:
        """text with the token (plain or URL-encoded) replaced by ***."""
        for secret in reversed(self._secrets):
            text = text.replace(secret, MASK)
        return text

    def fail(
        self, action: str, detail: str, *, status: int | None = None, reason: str = ""
    ) -> ForgeError:
        """The one-line error `forge: action: detail`, masked."""
        message = self.mask(one_line(f"{self.forge}: {action}: {detail}", 600))
        return ForgeError(message, status=status, reason=self.mask(reason))

    def request(
        self,
        method: str,
        path: str,
        action: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        """method on base_url + path (segments already quoted); JSON in and out.

        Raises:
            ForgeError: for any status outside 2xx, a timeout, a connection error, or an
                answer that is not JSON.
        """
        url = self.base_url + path
        if query:
            url += "?" + urlencode(query)
        return self._send(method, url, action, body)

    def get_url(self, url: str, action: str) -> Response:
        """GET an absolute URL the API gave (a next page), refused unless on the API's origin."""
        if origin(url) != origin(self.base_url):
            raise self.fail(action, f"the next page is on another host ({urlsplit(url).netloc})")
        return self._send("GET", url, action, None)

    def pages(
        self,
        path: str,
        action: str,
        query: Mapping[str, str],
        next_url: Callable[[Response], str | None],
    ) -> Iterator[Response]:
        """The first page and those after it, as next_url finds them (at most MAX_PAGES)."""
        response = self.request("GET", path, action, query=query)
        for _ in range(MAX_PAGES):
            yield response
            url = next_url(response)
            if not url:
                return
            response = self.get_url(url, action)
        raise self.fail(action, f"more than {MAX_PAGES} pages of results")

    def _send(self, method: str, url: str, action: str, body: Any) -> Response:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                raw = answer.read(MAX_BODY + 1)
                status, answer_headers = answer.status, answer.headers
        except urllib.error.HTTPError as exc:
            raise self._http_error(action, exc) from None
        except _Redirected as exc:
            host = urlsplit(exc.url).netloc
            raise self.fail(action, f"redirected to another host ({host}); not followed") from None
        except urllib.error.URLError as exc:
            raise self._connection_error(action, exc.reason) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._connection_error(action, exc) from None
        if len(raw) > MAX_BODY:
            raise self.fail(action, f"{status}: answer larger than {MAX_BODY >> 20} MiB")
        try:
            parsed = json.loads(raw) if raw.strip() else None
        except ValueError:
            raise self.fail(action, f"{status}: the answer is not JSON", status=status) from None
        return Response(status, answer_headers, parsed)

    def _http_error(self, action: str, exc: urllib.error.HTTPError) -> ForgeError:
        try:
            raw = exc.read(MAX_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            data = None
        status = exc.code
        phrase = http.client.responses.get(status, "") or str(exc.reason or "")
        reason = self._describe(data, text if _is_text(exc.headers) else "").strip()
        if reason.startswith(f"{status} "):  # GitLab's "404 Project Not Found"
            reason = reason[len(str(status)) + 1 :]
        detail = f"{status} {reason or phrase}".strip()
        return self.fail(action, detail, status=status, reason=reason or phrase)

    def _connection_error(self, action: str, reason: object) -> ForgeError:
        host = urlsplit(self.base_url).netloc
        if isinstance(reason, TimeoutError):
            return self.fail(action, f"no answer from {host} within {self.timeout:g}s")
        detail = str(reason) or type(reason).__name__
        return self.fail(action, f"cannot reach {host}: {detail}")


def _is_text(headers: Message | None) -> bool:
    """Whether an error body is worth quoting: plain text, not an HTML error page."""
    kind = (headers.get_content_type() if headers is not None else "") or ""
    return kind.startswith("text/") and kind != "text/html"


def first_line(text: str) -> str:
    """The first non-blank line of text."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
