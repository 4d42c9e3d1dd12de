"""Shell completion of the names a daemon knows (teams), asked only of a daemon that answers."""

from __future__ import annotations

from typing import Any

# The teams shipped with klaudiod (daemon/klaudiod/teams/*.yaml), offered when no daemon answers;
# tests/cli/test_team_cli.py keeps the two lists the same.
BUILT_IN_TEAMS = ("dev-review", "dev-test", "full-team", "parallel-devs", "solo")
ASK_SECONDS = 0.5


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


def _daemon_teams(ctx: Any) -> list[tuple[str, str]] | None:
    from klaudio.client import Client, answers
    from klaudio.paths import resolve

    root = ctx.find_root() if ctx is not None else None
    config_file = root.params.get("config_file") if root is not None else None
    client = Client(resolve(config_file=config_file))
    try:
        if not answers(client, timeout=ASK_SECONDS):
            return None
        teams, _ = client.list_teams()
        return [(t.name, t.description.strip().split("\n")[0]) for t in teams]
    finally:
        client.close()
