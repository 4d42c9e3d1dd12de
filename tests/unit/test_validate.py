"""The input checks shared by the CLI and the daemon (pure functions)."""

from __future__ import annotations

import math

import pytest

from klaudio import validate
from klaudio.errors import InvalidArgument


def refused(check: object, *args: object) -> str:
    """The message of the InvalidArgument check(*args) raises."""
    assert callable(check)
    with pytest.raises(InvalidArgument) as caught:
        check(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# Prompts ------------------------------------------------------------------------------------------


def test_a_good_prompt_is_returned_unchanged() -> None:
    text = "  write a haiku\n\twith tabs, ünïcode and \x1b[31m colour  \n"
    assert validate.prompt(text) == text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "prompt is empty"),
        (" \n\t ", "prompt is empty"),
        ("\x00\x00\x00", "prompt contains a NUL character"),
        ("a\x00b", "prompt contains a NUL character"),
        ("bad \udcff byte", "prompt is not valid UTF-8"),
    ],
)
def test_bad_prompts_are_refused(text: str, problem: str) -> None:
    assert refused(validate.prompt, text) == problem


def test_the_prompt_limit_counts_utf8_bytes() -> None:
    limit = validate.MAX_PROMPT_BYTES
    assert limit == 4 * 1024 * 1024
    assert validate.prompt("x" * limit) == "x" * limit
    message = refused(validate.prompt, "é" * (limit // 2 + 1))  # two bytes each
    assert f"is {limit + 2} bytes" in message and f"limit is {limit} bytes (4 MiB)" in message


def test_the_field_is_named() -> None:
    assert refused(validate.prompt, " ", "the prompt read from stdin") == (
        "the prompt read from stdin is empty"
    )


# Names --------------------------------------------------------------------------------------------


def test_names() -> None:
    assert validate.name("") == ""  # not given: the daemon names the task after its prompt
    assert validate.name("my task ✓") == "my task ✓"
    assert validate.name("x" * 200) == "x" * 200


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("x" * 201, "--name is 201 characters; the limit is 200"),
        ("two\nlines", "--name must be one line"),
        ("cr\r", "--name must be one line"),
        ("\x00", "--name contains a NUL character"),
        ("\x1b]0;x\x07", "--name contains a control character (U+001B)"),
        ("tab\there", "--name contains a control character (U+0009)"),
        ("c1\x9b", "--name contains a control character (U+009B)"),
        ("   ", "--name is blank"),
        ("\udcff", "--name is not valid UTF-8"),
    ],
)
def test_bad_names_are_refused(text: str, problem: str) -> None:
    assert refused(validate.name, text) == problem


# Repository sources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "",
        "/home/me/repo",
        "./my-repo",
        "repo",
        "https://github.com/org/repo.git",
        "http://host:8080/repo",
        "ssh://git@host:22/org/repo.git",
        "ssh://[::1]/repo",
        "git://host/repo",
        "file:///srv/repo",
        "git@github.com:org/repo.git",
        "host:path/to/repo",
        "HTTPS://Host/Repo",
        "/path/with/-dash",
    ],
)
def test_good_repo_sources(source: str) -> None:
    assert validate.repo_source(source) == source


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("ssh://-oProxyCommand=touch${IFS}x/repo", "the host must not start with '-'"),
        ("ssh://%2DoProxyCommand=x/repo", "the host must not start with '-'"),
        ("ssh://-user@host/repo", "the user must not start with '-'"),
        ("ssh://host/-repo", "the path must not start with '-'"),
        ("ssh://host:-p/repo", "the port '-p' is not a number"),
        ("ssh:///repo", "the URL has no host"),
        ("-oProxyCommand=x:repo", "must not start with '-'"),
        ("-host:path", "must not start with '-'"),
        ("--upload-pack=x", "must not start with '-'"),
        ("git@-host:repo", "the host must not be empty or start with '-'"),
        ("-u@host:repo", "must not start with '-'"),
        ("host:-repo", "the path must not start with '-'"),
        (":repo", "the host must not be empty or start with '-'"),
        ("ext::sh -c touch% x", "scheme 'ext' is not allowed"),
        ("fd::17", "scheme 'fd' is not allowed"),
        ("ftp://host/repo", "scheme 'ftp' is not allowed"),
        ("git+ssh://host/repo", "scheme 'git+ssh' is not allowed"),
        ("https://host/re\x1bpo", "contains a control character (U+001B)"),
        ("/path/with\nnewline", "contains a control character (U+000A)"),
        ("https://host/%0Arepo", "contains an escaped control character"),
        ("/a\x00b", "contains a NUL character"),
        ("/bad\udcff", "is not valid UTF-8"),
        ("/" + "x" * 4096, "longer than 4096 bytes"),
    ],
)
def test_bad_repo_sources_are_refused(source: str, problem: str) -> None:
    message = refused(validate.repo_source, source)
    assert message.startswith("--repo")
    assert problem in message


# Timeouts and sequence numbers --------------------------------------------------------------------


def test_timeouts() -> None:
    assert validate.timeout(None) is None
    assert validate.timeout(0.0) == 0.0
    assert validate.timeout(1e9) == 1e9


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (math.nan, "--timeout must be a finite number of seconds, not nan"),
        (math.inf, "--timeout must be a finite number of seconds, not inf"),
        (-math.inf, "--timeout must be a finite number of seconds, not -inf"),
        (-1.0, "--timeout must not be negative"),
    ],
)
def test_bad_timeouts_are_refused(value: float, problem: str) -> None:
    assert refused(validate.timeout, value) == problem


def test_since() -> None:
    assert validate.since(0) == 0
    assert validate.since(2**63 - 1) == 2**63 - 1
    assert refused(validate.since, -1) == "--since must not be negative"
    assert refused(validate.since, 2**63) == f"--since is too large (at most {2**63 - 1})"
    assert refused(validate.since, -5, "since_seq") == "since_seq must not be negative"
