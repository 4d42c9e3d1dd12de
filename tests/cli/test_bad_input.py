"""Bad input through a real daemon: one `klaudio:` line, exit 2, and nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from klaudio import errors
from klaudio.client import TOKEN_METADATA, Client
from klaudio.paths import SOCKET_PATH_MAX, resolve
from klaudio.validate import MAX_NAME_CHARS, MAX_PROMPT_BYTES
from tests.cli.test_errors import listed, one_error_line
from tests.conftest import Instance

MiB = 1024 * 1024


def cli_bytes(instance: Instance, *args: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    """Run `python -m klaudio ARGS` with raw bytes on stdin."""
    result = subprocess.run(
        [sys.executable, "-m", "klaudio", *args],
        env=instance.env,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )


def refused(instance: Instance, result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Check the shape of a refusal, that it names the problem, and that nothing was created."""
    assert result.returncode == 2, result.stderr
    line = one_error_line(result)
    for word in words:
        assert word in line, line
    assert result.stdout == ""
    assert instance.task_ids() == []
    return line


# Prompts ------------------------------------------------------------------------------------------


def test_a_prompt_of_invalid_utf8_on_stdin(daemon: Instance) -> None:
    result = cli_bytes(daemon, "run", "-", stdin=b"fix the \xff\xfe bug\n")

    refused(daemon, result, "prompt read from stdin is not valid UTF-8", "0xff", "offset 8")
    assert listed(daemon) == []


def test_a_prompt_of_invalid_utf8_in_argv(daemon: Instance) -> None:
    # Python hands undecodable argv bytes over as lone surrogates; subprocess encodes them back.
    result = daemon.cli("task", "create", "fix the \udcff bug")

    refused(daemon, result, "prompt is not valid UTF-8")
    assert listed(daemon) == []


@pytest.mark.parametrize("prompt", ["", " \n\t  "])
def test_an_empty_or_blank_prompt(daemon: Instance, prompt: str) -> None:
    result = daemon.cli("run", prompt, "--auto-approve")

    assert refused(daemon, result) == "klaudio: prompt is empty"
    assert listed(daemon) == []


@pytest.mark.parametrize("prompt", [b"\x00\x00\x00", b"do \x00 it"])
def test_a_prompt_with_nul_bytes(daemon: Instance, prompt: bytes) -> None:
    # argv cannot carry a NUL; stdin can.
    result = cli_bytes(daemon, "task", "create", "-", stdin=prompt)

    refused(daemon, result, "prompt read from stdin contains a NUL character")
    assert listed(daemon) == []


@pytest.mark.parametrize("size", [MAX_PROMPT_BYTES + 1, 17 * MiB])
def test_a_prompt_over_the_limit(daemon: Instance, size: int) -> None:
    # 17 MiB used to reach the daemon and come back as "Received message larger than max".
    result = cli_bytes(daemon, "task", "create", "-", stdin=b"x" * size)

    refused(daemon, result, "over the limit of 4194304 bytes (4 MiB)")
    assert listed(daemon) == []


def test_a_prompt_at_the_limit_is_accepted(daemon: Instance) -> None:
    # The largest request the CLI sends stays under the daemon's receive limit.
    name = "n" * MAX_NAME_CHARS
    result = cli_bytes(daemon, "task", "create", "-", "--name", name, stdin=b"x" * MAX_PROMPT_BYTES)

    assert result.returncode == 0, result.stderr
    assert [t["name"] for t in listed(daemon)] == [name]


# Names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("two\nlines", "--name must be one line"),
        ("x" * (MAX_NAME_CHARS + 1), "--name is 201 characters; the limit is 200"),
        ("\x1b]0;pwned\x07", "--name contains a control character (U+001B)"),
        ("   ", "--name is blank"),
        ("bad \udcff", "--name is not valid UTF-8"),
    ],
)
def test_a_bad_task_name(daemon: Instance, name: str, problem: str) -> None:
    result = daemon.cli("task", "create", "a task", "--name", name)

    assert refused(daemon, result) == f"klaudio: {problem}"
    assert listed(daemon) == []


# Numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "problem"),
    [
        ("99999999999999999999999", "--since is too large (at most 9223372036854775807)"),
        ("-1", "--since must not be negative"),
    ],
)
def test_a_bad_since(daemon: Instance, since: str, problem: str) -> None:
    task_id = daemon.cli("task", "create", "a task", check=True).stdout.strip()

    result = daemon.cli("task", "logs", task_id, "--since", since)

    assert result.returncode == 2, result.stderr
    assert one_error_line(result) == f"klaudio: {problem}"


@pytest.mark.parametrize(
    ("timeout", "problem"),
    [
        ("nan", "--timeout must be a finite number of seconds, not nan"),
        ("inf", "--timeout must be a finite number of seconds, not inf"),
        ("-1", "--timeout must not be negative"),
    ],
)
def test_a_bad_wait_timeout(daemon: Instance, timeout: str, problem: str) -> None:
    task_id = daemon.cli("task", "create", "a task", check=True).stdout.strip()

    result = daemon.cli("task", "wait", task_id, "--timeout", timeout)

    assert result.returncode == 2, result.stderr
    assert one_error_line(result) == f"klaudio: {problem}"


# Repository sources -------------------------------------------------------------------------------

BAD_REPOS = [
    ("ssh://-oProxyCommand=touch${IFS}/tmp/pwned/repo", "the host must not start with '-'"),
    ("ssh://%2DoProxyCommand=x/repo", "the host must not start with '-'"),
    ("-oProxyCommand=x:repo", "must not start with '-'"),
    ("-host:path", "must not start with '-'"),
    ("git@-host:repo", "the host must not be empty or start with '-'"),
    ("ssh://-user@host/repo", "the user must not start with '-'"),
    ("ssh://host/-repo", "the path must not start with '-'"),
    ("git@host:-repo", "the path must not start with '-'"),
    ("https://host/re\x1bpo", "contains a control character (U+001B)"),
    ("ftp://host/repo", "scheme 'ftp' is not allowed"),
    ("ext::sh -c touch% /tmp/pwned", "scheme 'ext' is not allowed"),
]


@pytest.mark.parametrize(("repo", "problem"), BAD_REPOS)
def test_a_repo_that_would_pass_options_to_git_or_ssh(
    daemon: Instance, repo: str, problem: str
) -> None:
    result = daemon.cli("task", "create", "a task", "--repo", repo)

    line = refused(daemon, result, problem)
    assert line.startswith("klaudio: --repo")
    assert listed(daemon) == []


# The socket path ----------------------------------------------------------------------------------


def long_home(instance: Instance) -> Path:
    """Point the instance at a KLAUDIO_HOME whose socket path is too long for AF_UNIX."""
    home = instance.home / ("d" * 110)
    instance.env["KLAUDIO_HOME"] = str(home)
    return home


def test_a_socket_path_over_the_limit_is_refused_before_starting_a_daemon(
    instance: Instance,
) -> None:
    home = long_home(instance)
    socket = home / "run" / "klaudiod.sock"

    for args in (("task", "list"), ("task", "create", "a task"), ("daemon", "start")):
        result = instance.cli(*args)

        assert result.returncode == 2, result.stderr
        line = one_error_line(result)
        assert str(socket) in line
        assert f"is {len(str(socket))} bytes" in line and f"limit of {SOCKET_PATH_MAX}" in line
        assert "set KLAUDIO_HOME to a shorter directory" in line
    assert not (home / "state" / "klaudiod.pid").exists()  # no daemon was started
    assert not (home / "data" / "tasks").exists()


def test_the_daemon_refuses_a_socket_path_over_the_limit_in_one_line(instance: Instance) -> None:
    home = long_home(instance)

    result = subprocess.run(
        [sys.executable, "-m", "klaudiod"],
        env=instance.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    log = result.stdout + result.stderr
    assert "Traceback" not in log and "grpc" not in log.lower()
    problems = [line for line in log.splitlines() if " ERROR " in line]
    assert len(problems) == 1, log
    assert str(home / "run" / "klaudiod.sock") in problems[0]
    assert f"limit of {SOCKET_PATH_MAX} bytes" in problems[0]
    assert log.rstrip("\n").endswith(problems[0])  # the last word of its log
    assert not (home / "run" / "klaudiod.sock").exists()


# The daemon checks on its own ---------------------------------------------------------------------

BAD_CREATES = [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": " \n "}, "prompt is empty"),
    ({"prompt": "\x00\x00\x00"}, "prompt contains a NUL character"),
    ({"prompt": "x" * (MAX_PROMPT_BYTES + 1)}, "limit is 4194304 bytes (4 MiB)"),
    ({"name": "two\nlines"}, "name must be one line"),
    ({"name": "x" * (MAX_NAME_CHARS + 1)}, "name is 201 characters"),
    ({"name": "\x1b]0;pwned\x07"}, "name contains a control character"),
    *(({"repo": repo}, problem) for repo, problem in BAD_REPOS),
]


def test_the_daemon_refuses_bad_requests_that_bypass_the_cli(daemon: Instance) -> None:
    client = Client(resolve(env=daemon.env))
    try:
        for fields, problem in BAD_CREATES:
            request = {"prompt": "a task", **fields}
            with pytest.raises(errors.InvalidArgument) as caught:  # INVALID_ARGUMENT
                client.create_task(
                    request["prompt"], request.get("name", ""), request.get("repo", "")
                )
            assert problem in str(caught.value), fields
        for timeout in (float("nan"), float("inf"), -1.0):
            with pytest.raises(errors.InvalidArgument, match="timeout_seconds"):
                client.wait_task("nosuchtask", timeout)
        with pytest.raises(errors.InvalidArgument, match="since_seq must not be negative"):
            list(client.follow_task("nosuchtask", since_seq=-1))
    finally:
        client.close()
    assert listed(daemon) == []
    assert daemon.task_ids() == []


def test_the_daemon_refuses_invalid_utf8_on_the_wire(daemon: Instance) -> None:
    # The Python client cannot even encode it; a raw request can carry it.
    paths = resolve(env=daemon.env)
    token = paths.token_file.read_text().strip()
    channel = grpc.insecure_channel(f"unix:{paths.socket}")
    try:
        metadata = ((TOKEN_METADATA, token),)
        create = channel.unary_unary("/klaudio.rpc.v1.TaskService/CreateTask")
        with pytest.raises(grpc.RpcError) as caught:
            create(b"\x0a\x05a \xff b", metadata=metadata, timeout=10)  # prompt = "a \xff b"
        follow = channel.unary_stream("/klaudio.rpc.v1.StreamService/FollowTask")
        with pytest.raises(grpc.RpcError) as streamed:
            list(follow(b"\x0a\x01\xff", metadata=metadata, timeout=10))  # task_id = "\xff"
    finally:
        channel.close()
    for refusal in (caught.value, streamed.value):
        assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT, refusal
        assert "malformed request" in (refusal.details() or "")
    assert listed(daemon) == []
    assert daemon.task_ids() == []
