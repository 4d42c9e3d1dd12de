"""The settings a task runs with: its team and configuration, recorded when it is created.

A task recovered after a restart, resumed or retried runs with its own snapshot, not with
configuration changed since. Tasks recorded before snapshots existed (schema < 4) have none;
they run with the configuration as it is, and with no team.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from klaudio.config import Config
from klaudiod.records import TaskRecord
from klaudiod.teams import Team, parse_team, team_to_yaml


@dataclass(frozen=True)
class Settings:
    """The effective settings of one task."""

    team: Team | None
    model: str
    max_turns: int
    image: str
    max_agents: int
    memory: str
    cpus: float
    pids_limit: int
    network: str
    max_question_rounds: int


def snapshot(config: Config, team: Team) -> dict[str, Any]:
    """What a new task records: the team (whole, as YAML) and the settings that shape its run.

    The task's agents run at most team.max_agents at once, and never more than the operator's
    agents.per_task.
    """
    return {
        "team": team.name,
        "team_yaml": team_to_yaml(team),
        "model": config.claude.model,
        "max_turns": config.claude.max_turns,
        "image": config.docker.image,
        "max_agents": min(team.max_agents, config.agents.per_task),
        "memory": config.docker.memory,
        "cpus": config.docker.cpus,
        "pids_limit": config.docker.pids_limit,
        "network": config.docker.network,
        "max_question_rounds": config.planning.max_question_rounds,
    }


def of(task: TaskRecord, config: Config) -> Settings:
    """The settings task runs with (its snapshot, the configuration for an older task)."""
    return _read(task.settings, config, f"task {task.id[:8]}'s team")


def from_config(config: Config, team: Team | None = None) -> Settings:
    """The settings a task created now with team would record."""
    return _read(snapshot(config, team) if team else {}, config, "team")


def _read(saved: dict[str, Any], config: Config, source: str) -> Settings:
    text = saved.get("team_yaml")
    team = parse_team(str(text), source) if text else None
    return Settings(
        team=team,
        model=str(saved.get("model", config.claude.model)),
        max_turns=int(saved.get("max_turns", config.claude.max_turns)),
        image=str(saved.get("image", config.docker.image)),
        max_agents=int(saved.get("max_agents", config.agents.per_task)),
        memory=str(saved.get("memory", config.docker.memory)),
        cpus=float(saved.get("cpus", config.docker.cpus)),
        pids_limit=int(saved.get("pids_limit", config.docker.pids_limit)),
        network=str(saved.get("network", config.docker.network)),
        max_question_rounds=int(
            saved.get("max_question_rounds", config.planning.max_question_rounds)
        ),
    )
