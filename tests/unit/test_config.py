"""Configuration layering and validation (klaudio.config) and instance paths (klaudio.paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from klaudio.config import (
    DEFAULT_BASE_IMAGE,
    DEFAULT_IMAGE,
    SECRET_ENV,
    Config,
    _coerce,
    as_dict,
    credential_summary,
    load,
)
from klaudio.errors import ConfigError, InvalidArgument
from klaudio.paths import Paths, resolve


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    return resolve({"KLAUDIO_HOME": str(tmp_path)})


def write(paths: Paths, text: str) -> None:
    paths.config_file.write_text(text)


def config_error(paths: Paths, env: dict[str, str] | None = None, **overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(paths, env=env or {}, overrides=overrides or None)
    return str(caught.value)


# Layering -----------------------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags(paths: Paths) -> None:
    config = load(paths, env={})

    assert config == Config()
    assert config.docker.image == DEFAULT_IMAGE
    assert config.docker.base_image == DEFAULT_BASE_IMAGE
    assert config.docker.network == "bridge"
    assert config.docker.cpus == 2.0
    assert config.agents.max_concurrent == 4
    assert config.agents.per_task == 4
    assert config.claude.max_turns == 100
    assert config.claude.max_retries == 10
    assert config.claude.base_url == "" and config.claude.model == ""
    assert config.daemon.log_level == "info"


def test_the_file_overrides_defaults_and_leaves_the_rest(paths: Paths) -> None:
    write(paths, "docker:\n  network: host\n  cpus: 0.5\nagents:\n  per_task: 3\n")

    config = load(paths, env={})

    assert config.docker.network == "host"
    assert config.docker.cpus == 0.5
    assert config.agents.per_task == 3
    assert config.agents.max_concurrent == 4
    assert config.docker.image == DEFAULT_IMAGE


def test_an_empty_file_gives_the_defaults(paths: Paths) -> None:
    write(paths, "")

    assert load(paths, env={}) == Config()


def test_the_environment_overrides_the_file(paths: Paths) -> None:
    write(paths, "docker:\n  network: none\nagents:\n  per_task: 3\n")

    config = load(paths, env={"KLAUDIO_DOCKER_NETWORK": "host"})

    assert config.docker.network == "host"
    assert config.agents.per_task == 3  # not in the environment: the file's value stays


def test_environment_values_are_coerced_to_the_field_type(paths: Paths) -> None:
    config = load(
        paths,
        env={
            "KLAUDIO_AGENTS_MAX_CONCURRENT": "9",
            "KLAUDIO_DOCKER_CPUS": "1.5",
            "KLAUDIO_CLAUDE_MAX_RETRIES": "0",
        },
    )

    assert config.agents.max_concurrent == 9
    assert config.docker.cpus == 1.5
    assert config.claude.max_retries == 0


def test_flags_override_the_environment_and_the_file(paths: Paths) -> None:
    write(paths, "docker:\n  network: none\n")

    config = load(
        paths,
        env={"KLAUDIO_DOCKER_NETWORK": "host"},
        overrides={"docker.network": "mynet", "daemon.log_level": "debug"},
    )

    assert config.docker.network == "mynet"
    assert config.daemon.log_level == "debug"


def test_unrelated_environment_variables_are_ignored(paths: Paths) -> None:
    env = {"KLAUDIO_HOME": "/elsewhere", "KLAUDIO_CONFIG": "/x.yaml", "DOCKER_NETWORK": "host"}

    assert load(paths, env=env) == Config()


@pytest.mark.parametrize("variable", ["KLAUDIO_DOCKER_NETWROK", "KLAUDIO_AGENTS_PERTASK"])
def test_a_misspelt_setting_in_the_environment_is_refused(paths: Paths, variable: str) -> None:
    message = config_error(paths, env={variable: "1"})

    assert message.startswith(f"{variable}: no such setting")


# Errors name the key and where it came from -------------------------------------------------------


def test_an_unknown_key_in_the_file_names_the_key_and_the_file(paths: Paths) -> None:
    write(paths, "docker:\n  netwrok: host\n")

    message = config_error(paths)

    assert "docker.netwrok" in message
    assert str(paths.config_file) in message


def test_an_unknown_section_in_the_file_is_an_error(paths: Paths) -> None:
    write(paths, "dockr:\n  network: host\n")

    message = config_error(paths)

    assert "dockr.network" in message and str(paths.config_file) in message


def test_a_file_that_is_not_a_mapping_is_an_error(paths: Paths) -> None:
    write(paths, "- docker\n- agents\n")

    assert config_error(paths) == f"{paths.config_file}: expected a mapping of sections"


def test_a_section_that_is_not_a_mapping_is_an_error(paths: Paths) -> None:
    write(paths, "docker: host\n")

    assert config_error(paths) == f"{paths.config_file}: section 'docker' must be a mapping"


def test_invalid_yaml_is_an_error_naming_the_file(paths: Paths) -> None:
    write(paths, "docker:\n  image: 'unterminated\n")

    message = config_error(paths)

    assert message.startswith(f"{paths.config_file}: cannot read:")
    assert "\n" not in message


def test_a_bad_int_in_the_environment_names_the_variable(paths: Paths) -> None:
    message = config_error(paths, env={"KLAUDIO_AGENTS_PER_TASK": "two"})

    assert message == "KLAUDIO_AGENTS_PER_TASK: agents.per_task must be int, got 'two'"


def test_a_float_string_for_an_int_is_an_error(paths: Paths) -> None:
    message = config_error(paths, env={"KLAUDIO_CLAUDE_MAX_TURNS": "2.5"})

    assert "KLAUDIO_CLAUDE_MAX_TURNS" in message and "claude.max_turns must be int" in message


def test_a_bad_float_in_the_file_names_the_file(paths: Paths) -> None:
    write(paths, "docker:\n  cpus: lots\n")

    message = config_error(paths)

    assert message == f"{paths.config_file}: docker.cpus must be float, got 'lots'"


@pytest.mark.parametrize("value", ["true", "2.0"])
def test_a_yaml_bool_or_float_for_an_int_is_an_error(paths: Paths, value: str) -> None:
    write(paths, f"agents:\n  per_task: {value}\n")

    message = config_error(paths)

    assert "agents.per_task must be int" in message and str(paths.config_file) in message


def test_a_bad_flag_value_says_command_line(paths: Paths) -> None:
    message = config_error(paths, **{"agents.per_task": "x"})

    assert message.startswith("command line: agents.per_task must be int")


def test_an_unknown_flag_key_is_an_error(paths: Paths) -> None:
    assert config_error(paths, **{"docker.bogus": "1"}) == "unknown config key 'docker.bogus'"


def test_config_error_is_a_usage_error() -> None:
    assert issubclass(ConfigError, InvalidArgument)
    assert ConfigError.exit_code == 2


# Validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KLAUDIO_DAEMON_LOG_LEVEL", "verbose", "daemon.log_level must be debug, info"),
        ("KLAUDIO_DAEMON_LOG_LEVEL", "INFO", "daemon.log_level must be debug, info"),
        ("KLAUDIO_CLAUDE_BASE_URL", "ftp://example.com", "claude.base_url must be an http://"),
        ("KLAUDIO_CLAUDE_BASE_URL", "localhost:8080", "claude.base_url must be an http://"),
        ("KLAUDIO_AGENTS_MAX_CONCURRENT", "0", "agents.max_concurrent must be at least 1"),
        ("KLAUDIO_AGENTS_PER_TASK", "-1", "agents.per_task must be at least 1"),
        ("KLAUDIO_CLAUDE_MAX_TURNS", "0", "claude.max_turns must be at least 1"),
        ("KLAUDIO_CLAUDE_MAX_RETRIES", "-1", "claude.max_retries must not be negative"),
        ("KLAUDIO_DOCKER_CPUS", "0", "docker.cpus must be positive"),
        ("KLAUDIO_DOCKER_CPUS", "nan", "docker.cpus must be positive"),
        ("KLAUDIO_DOCKER_PIDS_LIMIT", "15", "docker.pids_limit must be at least 16"),
        ("KLAUDIO_DOCKER_IMAGE", "", "docker.image must not be empty"),
    ],
)
def test_invalid_values_are_refused(paths: Paths, variable: str, value: str, message: str) -> None:
    # The message names where the bad value came from, then what is wrong with it.
    assert config_error(paths, env={variable: value}).startswith(f"{variable}: {message}")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9999", "https://api.example.com/v1"])
def test_http_and_https_base_urls_are_accepted(paths: Paths, url: str) -> None:
    assert load(paths, env={"KLAUDIO_CLAUDE_BASE_URL": url}).claude.base_url == url


def test_the_smallest_allowed_values_are_accepted(paths: Paths) -> None:
    config = load(
        paths,
        env={
            "KLAUDIO_AGENTS_MAX_CONCURRENT": "1",
            "KLAUDIO_AGENTS_PER_TASK": "1",
            "KLAUDIO_CLAUDE_MAX_TURNS": "1",
            "KLAUDIO_CLAUDE_MAX_RETRIES": "0",
            "KLAUDIO_DOCKER_PIDS_LIMIT": "16",
        },
    )

    assert config.agents.max_concurrent == 1 and config.docker.pids_limit == 16


# Booleans (no section has a bool field yet; the coercion rule is there for when one does) ---------


@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on"])
def test_true_spellings(raw: str) -> None:
    assert _coerce("s.flag", raw, bool, "KLAUDIO_S_FLAG") is True


@pytest.mark.parametrize("raw", ["0", "false", "FALSE", "no", "Off"])
def test_false_spellings(raw: str) -> None:
    assert _coerce("s.flag", raw, bool, "KLAUDIO_S_FLAG") is False


@pytest.mark.parametrize("raw", ["", "2", "maybe", "y"])
def test_other_bool_spellings_are_errors(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _coerce("s.flag", raw, bool, "KLAUDIO_S_FLAG")

    assert str(caught.value) == f"KLAUDIO_S_FLAG: s.flag must be bool, got {raw!r}"


def test_a_yaml_bool_stays_a_bool() -> None:
    assert _coerce("s.flag", False, bool, "file") is False


# Known coercion bugs ------------------------------------------------------------------------------


def test_an_empty_yaml_value_does_not_become_the_string_none(paths: Paths) -> None:
    write(paths, "claude:\n  model:\n")

    try:
        model = load(paths, env={}).claude.model
    except ConfigError:
        return  # refusing it is fine too
    assert model == ""


def test_a_yaml_list_for_a_string_key_is_an_error(paths: Paths) -> None:
    write(paths, "docker:\n  image: [a, b]\n")

    message = config_error(paths)

    assert "docker.image" in message and str(paths.config_file) in message


def test_a_yaml_bool_for_a_float_key_is_an_error(paths: Paths) -> None:
    write(paths, "docker:\n  cpus: true\n")

    assert "docker.cpus must be float" in config_error(paths)


# as_dict and credentials --------------------------------------------------------------------------


def test_as_dict_has_every_section_as_plain_values() -> None:
    data = as_dict(Config())

    assert list(data) == [
        "claude",
        "docker",
        "agents",
        "planning",
        "teams",
        "git",
        "checkpoints",
        "daemon",
    ]
    assert data["planning"] == {"max_question_rounds": 3}
    assert data["teams"] == {"default": "solo"}
    assert data["docker"]["network"] == "bridge"
    assert data["agents"] == {"max_concurrent": 4, "per_task": 4}
    assert data["checkpoints"] == {"interval": 300.0, "keep": 3, "retention_days": 7.0}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("KLAUDIO_CHECKPOINTS_INTERVAL", "-1", "checkpoints.interval must be"),
        ("KLAUDIO_CHECKPOINTS_INTERVAL", "nan", "checkpoints.interval must be"),
        ("KLAUDIO_CHECKPOINTS_KEEP", "0", "checkpoints.keep must be at least 1"),
        ("KLAUDIO_CHECKPOINTS_RETENTION_DAYS", "0", "checkpoints.retention_days must be"),
    ],
)
def test_bad_checkpoint_settings_name_their_source(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load(resolve(env={"KLAUDIO_HOME": str(tmp_path)}), env={name: value})

    assert str(raised.value) == f"{name}: {message}" or str(raised.value).startswith(
        f"{name}: {message}"
    )


def test_credential_summary_masks_the_secret() -> None:
    secret = "sk-ant-very-secret-value-123"

    summary = credential_summary({"ANTHROPIC_API_KEY": secret, "CLAUDE_CODE_OAUTH_TOKEN": ""})

    assert summary == {"ANTHROPIC_API_KEY": "set (hidden)", "CLAUDE_CODE_OAUTH_TOKEN": "not set"}
    assert secret not in repr(summary)
    assert "secret" not in repr(summary)


def test_credential_summary_names_every_secret_variable() -> None:
    summary = credential_summary({name: f"value-of-{name}" for name in SECRET_ENV})

    assert set(summary) == set(SECRET_ENV)
    assert all(value == "set (hidden)" for value in summary.values())
    assert not any("value-of" in value for value in summary.values())


# Paths --------------------------------------------------------------------------------------------


def test_klaudio_home_puts_everything_under_it(tmp_path: Path) -> None:
    paths = resolve({"KLAUDIO_HOME": str(tmp_path)})

    assert paths.config_file == tmp_path / "config.yaml"
    assert paths.data_dir == tmp_path / "data"
    assert paths.state_dir == tmp_path / "state"
    assert paths.runtime_dir == tmp_path / "run"
    assert paths.db_file == tmp_path / "data" / "klaudio.db"
    assert paths.tasks_dir == tmp_path / "data" / "tasks"
    assert paths.socket == tmp_path / "run" / "klaudiod.sock"
    assert paths.token_file == tmp_path / "state" / "token"
    assert paths.pid_file.parent == paths.log_file.parent == tmp_path / "state"


def test_a_relative_klaudio_home_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    paths = resolve({"KLAUDIO_HOME": "rel/home"})

    assert paths.data_dir == tmp_path / "rel" / "home" / "data"
    assert paths.config_file.is_absolute()


def test_klaudio_config_moves_only_the_config_file(tmp_path: Path) -> None:
    home = resolve({"KLAUDIO_HOME": str(tmp_path)})
    other = tmp_path / "elsewhere" / "my.yaml"

    paths = resolve({"KLAUDIO_HOME": str(tmp_path), "KLAUDIO_CONFIG": str(other)})

    assert paths.config_file == other
    assert (paths.data_dir, paths.state_dir, paths.runtime_dir) == (
        home.data_dir,
        home.state_dir,
        home.runtime_dir,
    )


def test_an_explicit_config_file_wins_over_klaudio_config(tmp_path: Path) -> None:
    flag = tmp_path / "flag.yaml"

    paths = resolve(
        {"KLAUDIO_HOME": str(tmp_path), "KLAUDIO_CONFIG": str(tmp_path / "env.yaml")},
        config_file=str(flag),
    )

    assert paths.config_file == flag
    assert paths.data_dir == tmp_path / "data"


def test_without_klaudio_home_the_paths_are_per_user_and_distinct(tmp_path: Path) -> None:
    paths = resolve({"HOME": str(tmp_path)})

    assert paths.config_file.name == "config.yaml"
    assert len({paths.config_file.parent, paths.data_dir, paths.state_dir}) == 3
    assert all(p.is_absolute() for p in (paths.data_dir, paths.state_dir, paths.runtime_dir))


def test_the_instance_id_is_stable_and_differs_per_home(tmp_path: Path) -> None:
    one = resolve({"KLAUDIO_HOME": str(tmp_path / "one")})
    again = resolve({"KLAUDIO_HOME": str(tmp_path / "one"), "KLAUDIO_CONFIG": "/c.yaml"})
    two = resolve({"KLAUDIO_HOME": str(tmp_path / "two")})

    assert one.instance_id == again.instance_id
    assert one.instance_id != two.instance_id
    assert len(one.instance_id) == 12 and int(one.instance_id, 16) >= 0


def test_load_reads_the_file_klaudio_config_points_at(tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("docker:\n  network: none\n")
    (tmp_path / "config.yaml").write_text("docker:\n  network: host\n")

    paths = resolve({"KLAUDIO_HOME": str(tmp_path), "KLAUDIO_CONFIG": str(other)})

    assert load(paths, env={}).docker.network == "none"
