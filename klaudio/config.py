"""Configuration: defaults < config.yaml < KLAUDIO_* environment < flags, loaded once, frozen."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from klaudio.errors import ConfigError
from klaudio.paths import Paths

DEFAULT_IMAGE = "klaudio-agent:latest"
DEFAULT_BASE_IMAGE = "node:22-bookworm-slim"
# Credentials read from the daemon's environment and handed to agents; never stored or logged.
SECRET_ENV = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")


@dataclass(frozen=True)
class ClaudeConfig:
    """How agents reach the model."""

    base_url: str = ""
    model: str = ""
    max_turns: int = 100
    max_retries: int = 10
    credentials_file: str = ""


@dataclass(frozen=True)
class DockerConfig:
    """How agent containers are built and run."""

    image: str = DEFAULT_IMAGE
    base_image: str = DEFAULT_BASE_IMAGE
    extra_ca_file: str = ""
    network: str = "bridge"
    memory: str = "4g"
    cpus: float = 2.0
    pids_limit: int = 1024


@dataclass(frozen=True)
class AgentsConfig:
    """Limits on concurrent agents."""

    max_concurrent: int = 4
    per_task: int = 4


@dataclass(frozen=True)
class PlanningConfig:
    """How the planner works with people."""

    # Rounds of questions the planner may ask before it must plan.
    max_question_rounds: int = 3


@dataclass(frozen=True)
class TeamsConfig:
    """Team templates."""

    # The team of a task created without --team.
    default: str = "solo"


@dataclass(frozen=True)
class GitConfig:
    """How a task's work is committed and pushed."""

    author_name: str = "klaudio"
    author_email: str = "klaudio@localhost"
    # A task's branch is this followed by the first 8 characters of its id.
    branch_prefix: str = "klaudio/"


@dataclass(frozen=True)
class CheckpointsConfig:
    """Archives of a task's workspace and agent sessions."""

    # Seconds between automatic checkpoints of a running task (0: only on stop).
    interval: float = 300.0
    # Checkpoints kept per task (the newest), and the most days one is kept.
    keep: int = 3
    retention_days: float = 7.0


@dataclass(frozen=True)
class DaemonConfig:
    """The daemon process."""

    log_level: str = "info"


@dataclass(frozen=True)
class Config:
    """The whole configuration; sections mirror config.yaml."""

    claude: ClaudeConfig = field(default_factory=ClaudeConfig)
    docker: DockerConfig = field(default_factory=DockerConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    teams: TeamsConfig = field(default_factory=TeamsConfig)
    git: GitConfig = field(default_factory=GitConfig)
    checkpoints: CheckpointsConfig = field(default_factory=CheckpointsConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)


def load(
    paths: Paths,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Load the configuration for paths, layering file, environment and overrides on defaults.

    Args:
        paths: where config.yaml lives.
        env: the environment (default: os.environ); KLAUDIO_<SECTION>_<KEY> variables apply.
        overrides: dotted keys from command-line flags, e.g. {"docker.network": "host"}.

    Raises:
        ConfigError: naming the bad key, its value and where it came from.
    """
    env = os.environ if env is None else env
    values: dict[str, tuple[Any, str]] = {}
    for key, value in _read_file(paths.config_file).items():
        values[key] = (value, str(paths.config_file))
    known = {"KLAUDIO_" + key.replace(".", "_").upper(): key for key in _all_keys()}
    prefixes = tuple(f"KLAUDIO_{name.upper()}_" for name, _ in _sections())
    for name, value in env.items():
        if name in known:
            values[known[name]] = (value, name)
        elif name.startswith(prefixes):
            raise ConfigError(f"{name}: no such setting (see `klaudio config show`)")
    for key, value in (overrides or {}).items():
        if key not in _all_keys():
            raise ConfigError(f"unknown config key '{key}'")
        values[key] = (value, "command line")
    return _build(values)


def _sections() -> list[tuple[str, Any]]:
    """(name, default section) pairs, in Config's order."""
    defaults = Config()
    return [(f.name, getattr(defaults, f.name)) for f in fields(Config)]


def _all_keys() -> list[str]:
    return [f"{name}.{item.name}" for name, default in _sections() for item in fields(default)]


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    flat: dict[str, Any] = {}
    known = set(_all_keys())
    for section, items in data.items():
        if not isinstance(items, dict):
            raise ConfigError(f"{path}: section '{section}' must be a mapping")
        for key, value in items.items():
            dotted = f"{section}.{key}"
            if dotted not in known:
                raise ConfigError(f"{path}: unknown config key '{dotted}'")
            flat[dotted] = value
    return flat


def _build(values: Mapping[str, tuple[Any, str]]) -> Config:
    sections: dict[str, Any] = {}
    for name, default in _sections():
        changes = {}
        for item in fields(default):
            dotted = f"{name}.{item.name}"
            if dotted in values:
                raw, source = values[dotted]
                changes[item.name] = _coerce(dotted, raw, type(getattr(default, item.name)), source)
        sections[name] = dataclasses.replace(default, **changes)
    config = Config(**sections)
    _validate(config, values)
    return config


def _coerce(key: str, raw: Any, kind: type, source: str) -> Any:
    try:
        if raw is None or isinstance(raw, list | dict):
            raise ValueError(raw)
        if kind is bool and isinstance(raw, str):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind in (int, float) and isinstance(raw, bool):
            raise ValueError(raw)
        if kind is int and isinstance(raw, float):
            raise ValueError(raw)
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {raw!r}") from None


def _validate(config: Config, values: Mapping[str, tuple[Any, str]]) -> None:
    checks = [
        (config.claude.max_turns >= 1, "claude.max_turns must be at least 1"),
        (config.claude.max_retries >= 0, "claude.max_retries must not be negative"),
        (config.agents.max_concurrent >= 1, "agents.max_concurrent must be at least 1"),
        (config.agents.per_task >= 1, "agents.per_task must be at least 1"),
        (config.docker.cpus > 0, "docker.cpus must be positive"),
        (
            math.isfinite(config.checkpoints.interval) and config.checkpoints.interval >= 0,
            "checkpoints.interval must be a number of seconds, 0 or more",
        ),
        (config.checkpoints.keep >= 1, "checkpoints.keep must be at least 1"),
        (
            config.planning.max_question_rounds >= 0,
            "planning.max_question_rounds must not be negative",
        ),
        (
            re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", config.teams.default) is not None,
            "teams.default must be a team name (lower-case letters, digits and dashes)",
        ),
        (
            bool(config.git.author_name.strip()) and "\n" not in config.git.author_name,
            "git.author_name must be one non-empty line",
        ),
        (
            re.fullmatch(r"[^\s<>@]+@[^\s<>@]+", config.git.author_email) is not None,
            "git.author_email must be an e-mail address",
        ),
        (
            re.fullmatch(r"[A-Za-z0-9._/-]{0,60}", config.git.branch_prefix) is not None
            and ".." not in config.git.branch_prefix
            and not config.git.branch_prefix.startswith(("/", "-", ".")),
            "git.branch_prefix must be letters, digits, '.', '_', '-' and '/' (not starting "
            "with '/', '-' or '.', no '..')",
        ),
        (
            math.isfinite(config.checkpoints.retention_days)
            and config.checkpoints.retention_days > 0,
            "checkpoints.retention_days must be positive",
        ),
        (config.docker.pids_limit >= 16, "docker.pids_limit must be at least 16"),
        (bool(config.docker.image), "docker.image must not be empty"),
        (
            config.daemon.log_level in ("debug", "info", "warning", "error"),
            "daemon.log_level must be debug, info, warning or error",
        ),
        (
            not config.claude.base_url
            or config.claude.base_url.startswith(("http://", "https://")),
            "claude.base_url must be an http:// or https:// URL",
        ),
    ]
    for ok, message in checks:
        if not ok:
            key = message.split()[0]
            source = values[key][1] if key in values else "default"
            raise ConfigError(f"{source}: {message}")


def as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Return the configuration as nested plain dicts (for `config show`)."""
    return {
        section.name: dataclasses.asdict(getattr(config, section.name))
        for section in fields(Config)
    }


def credential_summary(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Which credentials the environment provides, masked: never the secret itself."""
    env = os.environ if env is None else env
    return {name: ("set (hidden)" if env.get(name) else "not set") for name in SECRET_ENV}
