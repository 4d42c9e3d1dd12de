"""Shell completion of names a daemon knows (teams, repository templates), asked of a live one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The teams shipped with klaudiod (daemon/klaudiod/teams/*.yaml), offered when no daemon answers;
# tests/cli/test_team_cli.py keeps the two lists the same.
BUILT_IN_TEAMS = ("dev-review", "dev-test", "full-team", "parallel-devs", "solo")
ASK_SECONDS = 0.5
Names = list[tuple[str, str]]


def team_names(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """The team names starting with incomplete, with their descriptions when a daemon answers.

    A running daemon is asked (the user's own teams too); none is ever started for a
    completion. Without a daemon, the built-in names. Never raises: a completion that fails
    offers nothing rather than an error in the middle of a command line.
    """
    try:
        found = _daemon_teams(ctx)
    except Exception:
        found = None
    if found is None:
        found = [(name, "") for name in BUILT_IN_TEAMS]
    return [(name, about) for name, about in found if name.startswith(incomplete)]


def repo_names(ctx: Any, incomplete: str) -> list[tuple[str, str]]:
    """The repository template names starting with incomplete, each with its URL.

    Only a running daemon knows them: without one (none is started for a completion), or when
    asking fails, nothing is offered.
    """
    try:
        found = _ask(ctx, lambda client: [(r.name, r.url) for r in client.list_repos()])
    except Exception:
        found = None
    return [(name, about) for name, about in found or [] if name.startswith(incomplete)]


def _daemon_teams(ctx: Any) -> list[tuple[str, str]] | None:
    def teams(client: Any) -> list[tuple[str, str]]:
        found, _ = client.list_teams()
        return [(t.name, t.description.strip().split("\n")[0]) for t in found]

    return _ask(ctx, teams)


def _ask(ctx: Any, question: Callable[[Any], Names]) -> Names | None:
    """What question(client) answers when a daemon answers on this instance's socket; else None."""
    from klaudio.client import Client, answers
    from klaudio.paths import resolve

    root = ctx.find_root() if ctx is not None else None
    config_file = root.params.get("config_file") if root is not None else None
    client = Client(resolve(config_file=config_file))
    try:
        if not answers(client, timeout=ASK_SECONDS):
            return None
        return question(client)
    finally:
        client.close()
