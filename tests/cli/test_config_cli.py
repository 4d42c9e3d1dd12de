"""`klaudio config show|path`: the effective configuration, secrets masked (no daemon needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import Instance

SECRET = "sk-very-secret-value"


def run(instance: Instance, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m klaudio ARGS` with the instance's environment plus env."""
    return subprocess.run(
        [sys.executable, "-m", "klaudio", *args],
        env={**instance.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def shown(instance: Instance, **env: str) -> dict[str, Any]:
    result = run(instance, "config", "show", "--json", **env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_show_masks_the_api_key(instance: Instance) -> None:
    result = run(instance, "config", "show", ANTHROPIC_API_KEY=SECRET)

    assert result.returncode == 0, result.stderr
    assert '  ANTHROPIC_API_KEY: "set (hidden)"' in result.stdout.splitlines()
    assert SECRET not in result.stdout + result.stderr
    assert '  CLAUDE_CODE_OAUTH_TOKEN: "not set"' in result.stdout.splitlines()


def test_show_json_never_contains_the_secrets(instance: Instance) -> None:
    result = run(
        instance,
        "config",
        "show",
        "--json",
        ANTHROPIC_API_KEY=SECRET,
        CLAUDE_CODE_OAUTH_TOKEN="oauth-very-secret-token",
    )

    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    assert "oauth-very-secret-token" not in result.stdout
    assert json.loads(result.stdout)["credentials"] == {
        "ANTHROPIC_API_KEY": "set (hidden)",
        "CLAUDE_CODE_OAUTH_TOKEN": "set (hidden)",
    }


def test_show_json_has_every_section(instance: Instance) -> None:
    data = shown(instance)

    assert list(data) == [
        "claude",
        "docker",
        "agents",
        "planning",
        "teams",
        "git",
        "checkpoints",
        "daemon",
        "credentials",
        "paths",
    ]
    assert data["paths"] == {
        "config_file": str(instance.home / "config.yaml"),
        "data_dir": str(instance.home / "data"),
        "state_dir": str(instance.home / "state"),
        "socket": str(instance.socket),
    }
    # The fixture's environment is what is shown.
    assert data["claude"]["base_url"] == instance.env["KLAUDIO_CLAUDE_BASE_URL"]
    assert data["claude"]["max_retries"] == 0
    assert data["agents"] == {"max_concurrent": 4, "per_task": 4}


def test_the_environment_sets_the_network(instance: Instance) -> None:
    assert shown(instance, KLAUDIO_DOCKER_NETWORK="host")["docker"]["network"] == "host"
    assert shown(instance, KLAUDIO_DOCKER_NETWORK="none")["docker"]["network"] == "none"


def test_the_text_form_shows_values(instance: Instance) -> None:
    result = run(instance, "config", "show", KLAUDIO_DOCKER_NETWORK="host")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    docker = lines.index("docker:")
    assert '  network: "host"' in lines[docker:]
    assert "  per_task: 4" in lines


def test_the_file_is_read_and_the_environment_wins(instance: Instance) -> None:
    (instance.home / "config.yaml").write_text(
        "docker:\n  network: none\n  memory: 8g\nagents:\n  per_task: 3\n"
    )

    data = shown(instance, KLAUDIO_DOCKER_NETWORK="host")

    assert data["docker"]["network"] == "host"
    assert data["docker"]["memory"] == "8g"
    assert data["agents"]["per_task"] == 3


def test_config_flag_chooses_the_file(instance: Instance) -> None:
    other = instance.home / "other.yaml"
    other.write_text("docker:\n  memory: 1g\n")

    result = run(instance, "--config", str(other), "config", "show", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["docker"]["memory"] == "1g"
    assert data["paths"]["config_file"] == str(other)
    assert data["paths"]["data_dir"] == str(instance.home / "data")


def test_a_bad_environment_value_exits_2_naming_the_variable(instance: Instance) -> None:
    result = run(instance, "config", "show", KLAUDIO_AGENTS_PER_TASK="x")

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0] == "klaudio: KLAUDIO_AGENTS_PER_TASK: agents.per_task must be int, got 'x'"


def test_an_unknown_key_in_the_file_exits_2_naming_it(instance: Instance) -> None:
    config_file = instance.home / "config.yaml"
    config_file.write_text("docker:\n  netwrok: host\n")

    result = run(instance, "config", "show")

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"klaudio: {config_file}: unknown config key 'docker.netwrok'"
    ]


def test_config_path_is_under_klaudio_home(instance: Instance) -> None:
    result = run(instance, "config", "path")

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{instance.home / 'config.yaml'}\n"
    assert not (instance.home / "config.yaml").exists()


def test_config_path_follows_klaudio_config(instance: Instance) -> None:
    result = run(instance, "config", "path", KLAUDIO_CONFIG=str(instance.home / "x" / "c.yaml"))

    assert result.stdout == f"{instance.home / 'x' / 'c.yaml'}\n"


def test_config_commands_start_no_daemon(instance: Instance) -> None:
    run(instance, "config", "show")
    run(instance, "config", "path")

    assert not instance.socket.exists()
    assert not (instance.home / "state" / "klaudiod.pid").exists()
