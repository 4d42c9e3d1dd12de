"""`klaudio config show|path`: the effective configuration and where it comes from."""

from __future__ import annotations

import json

import typer

from klaudio.cli.common import out, paths

app = typer.Typer(help="Show the configuration.", no_args_is_help=True, rich_markup_mode=None)


@app.command("show")
def show(
    as_json: bool = typer.Option(False, "--json", help="As JSON."),
) -> None:
    """Show the effective configuration (defaults < config.yaml < KLAUDIO_* env); secrets masked."""
    from klaudio import config

    instance = paths()
    loaded = config.load(instance)
    data = {
        **config.as_dict(loaded),
        "credentials": config.credential_summary(),
        "paths": {
            "config_file": str(instance.config_file),
            "data_dir": str(instance.data_dir),
            "state_dir": str(instance.state_dir),
            "socket": str(instance.socket),
        },
    }
    if as_json:
        out(json.dumps(data, indent=2))
        return
    for section, items in data.items():
        out(f"{section}:")
        for key, value in items.items():
            out(f"  {key}: {json.dumps(value) if isinstance(value, str) else value}")


@app.command("path")
def path() -> None:
    """Print the config file's path (it need not exist)."""
    out(str(paths().config_file))
