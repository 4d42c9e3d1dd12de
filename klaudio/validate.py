"""Checks of user input, shared by the CLI (before it sends) and the daemon (on receipt)."""

from __future__ import annotations

import math
import re
from urllib.parse import unquote

from klaudio.errors import InvalidArgument

MAX_PROMPT_BYTES = 4 * 1024 * 1024  # of UTF-8; well under the daemon's gRPC receive limit
MAX_NAME_CHARS = 200
MAX_REPO_BYTES = 4096  # PATH_MAX
MAX_SEQ = 2**63 - 1  # sequence numbers are int64 on the wire
REPO_SCHEMES = ("http", "https", "ssh", "git", "file")

# C0 controls (tab and newline too), DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# git's "<transport>::<address>" form runs helpers such as ext::, which runs a command.
_TRANSPORT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def utf8(text: str, field: str) -> str:
    """Text that a protobuf string can carry: valid UTF-8 (no lone surrogate), no NUL.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    _text(text, field)
    return text


def _text(text: str, field: str) -> bytes:
    """Text's UTF-8, refusing what no terminal, file or protobuf string may carry."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        # Python keeps undecodable bytes of argv as lone surrogates.
        raise InvalidArgument(f"{field} is not valid UTF-8") from None
    if "\x00" in text:
        raise InvalidArgument(f"{field} contains a NUL character")
    return data


def prompt(text: str, field: str = "prompt") -> str:
    """A task's prompt: valid UTF-8, not blank, no NUL, at most MAX_PROMPT_BYTES.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    size = len(_text(text, field))
    if size > MAX_PROMPT_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes; the limit is {MAX_PROMPT_BYTES} bytes (4 MiB) of UTF-8"
        )
    if not text.strip():
        raise InvalidArgument(f"{field} is empty")
    return text


def name(text: str, field: str = "--name") -> str:
    """A task's name: empty (name it after the prompt) or one line of at most MAX_NAME_CHARS.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    _text(text, field)
    if not text:
        return text
    if len(text) > MAX_NAME_CHARS:
        raise InvalidArgument(f"{field} is {len(text)} characters; the limit is {MAX_NAME_CHARS}")
    if "\n" in text or "\r" in text:
        raise InvalidArgument(f"{field} must be one line")
    _no_control(text, field)
    if not text.strip():
        raise InvalidArgument(f"{field} is blank")
    return text


def repo_source(text: str, field: str = "--repo") -> str:
    """A repository to clone: a local path, a URL or scp-like `[user@]host:path`, or empty.

    Nothing in it may reach git or ssh as an option: no part (host, user, path) may start with
    `-`, and only the schemes in REPO_SCHEMES are allowed.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    if len(_text(text, field)) > MAX_REPO_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_REPO_BYTES} bytes")
    if not text:
        return text
    _no_control(text, field)
    if text.startswith("-"):
        raise InvalidArgument(f"{field} must not start with '-' (write ./-x for a directory -x)")
    transport = _TRANSPORT.match(text)
    if transport:
        _scheme(transport[1], field)
    scheme = _SCHEME.match(text)
    if scheme:
        _url(text, scheme[1], field)
    elif _scp_like(text):
        _scp(text, field)
    return text


def _no_control(text: str, field: str) -> None:
    found = _CONTROL.search(text)
    if found:
        raise InvalidArgument(f"{field} contains a control character (U+{ord(found[0]):04X})")


def _scheme(scheme: str, field: str) -> None:
    if scheme.lower() not in REPO_SCHEMES:
        allowed = ", ".join(REPO_SCHEMES)
        raise InvalidArgument(f"{field}: scheme {scheme!r} is not allowed (only {allowed})")


def _url(text: str, scheme: str, field: str) -> None:
    """Check scheme://[user@]host[:port]/path, percent-escapes decoded as git decodes them."""
    _scheme(scheme, field)
    rest = text[len(scheme) + 3 :]
    authority, _, path = rest.partition("/")
    decoded = unquote(authority)
    if _CONTROL.search(decoded) or _CONTROL.search(unquote(path)):
        raise InvalidArgument(f"{field} contains an escaped control character")
    user, _, hostport = decoded.rpartition("@")
    host, port = hostport, ""
    if not hostport.startswith("[") and ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if user.startswith("-"):
        raise InvalidArgument(f"{field}: the user must not start with '-'")
    if host.startswith("-"):
        raise InvalidArgument(f"{field}: the host must not start with '-'")
    if not host and scheme.lower() != "file":
        raise InvalidArgument(f"{field}: the URL has no host")
    if port and not port.isdigit():
        raise InvalidArgument(f"{field}: the port {port!r} is not a number")
    if unquote(path).lstrip("/").startswith("-"):
        raise InvalidArgument(f"{field}: the path must not start with '-'")


def _scp_like(text: str) -> bool:
    """Whether git reads text as `[user@]host:path`: a colon before any slash."""
    colon = text.find(":")
    slash = text.find("/")
    return colon >= 0 and (slash < 0 or colon < slash)


def _scp(text: str, field: str) -> None:
    hostpart, _, path = text.partition(":")
    user, _, host = hostpart.rpartition("@")
    if user.startswith("-"):
        raise InvalidArgument(f"{field}: the user must not start with '-'")
    if host.startswith("-") or not host:
        raise InvalidArgument(f"{field}: the host must not be empty or start with '-'")
    if path.startswith("-"):
        raise InvalidArgument(f"{field}: the path must not start with '-'")


def timeout(value: float | None, field: str = "--timeout") -> float | None:
    """A wait's timeout in seconds: None (no limit) or a finite number, not negative.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    if value is None:
        return None
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be a finite number of seconds, not {value}")
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative")
    return value


def since(value: int, field: str = "--since") -> int:
    """A sequence number to resume after: 0 to MAX_SEQ.

    Raises:
        InvalidArgument: naming field and the problem.
    """
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative")
    if value > MAX_SEQ:
        raise InvalidArgument(f"{field} is too large (at most {MAX_SEQ})")
    return value


# A git branch name as git check-ref-format allows it, restricted to what klaudio needs.
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")


def branch(text: str, field: str = "--branch") -> str:
    """A branch name ("" allowed: the default), never one git or a shell could misread.

    Raises:
        InvalidArgument: naming field, for a name with anything but letters, digits, ".",
            "_", "-" and "/", or starting with "-", "/" or ".", or holding "..", "//" or ending
            with "/", ".lock" or ".".
    """
    utf8(text, field)
    if not text:
        return text
    bad = (
        not _BRANCH.fullmatch(text)
        or text.startswith(("-", "/", "."))
        or text.endswith(("/", ".lock", "."))
        or ".." in text
        or "//" in text
        or "/." in text
    )
    if bad:
        raise InvalidArgument(
            f"{field} {text!r}: not a usable branch name (letters, digits, '.', '_', '-', '/')"
        )
    return text
