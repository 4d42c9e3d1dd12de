"""`klaudio image build`: build the agent image from the files shipped with klaudio."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from klaudio import errors
from klaudio.cli.common import connect, note, out

app = typer.Typer(help="Build the agent image.", no_args_is_help=True, rich_markup_mode=None)


@app.command("build")
def build(
    base_image: Annotated[
        str,
        typer.Option("--base-image", help="Debian-based image to build from (docker.base_image)."),
    ] = "",
    extra_ca_file: Annotated[
        str, typer.Option("--extra-ca-file", help="PEM file of extra CA certificates to trust.")
    ] = "",
    tag: Annotated[str, typer.Option("--tag", help="Image tag (docker.image).")] = "",
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if up to date.")] = False,
) -> None:
    """Build the agent image (Claude Code, git, a non-root user).

    The daemon builds it on first use too, and rebuilds it when klaudio's image files change.
    """
    if extra_ca_file:
        ca = Path(extra_ca_file).expanduser()
        if not ca.is_file():
            raise errors.InvalidArgument(f"--extra-ca-file {extra_ca_file}: no such file")
        extra_ca_file = str(ca.resolve())
    built = ""
    for message in connect().build_image(base_image, extra_ca_file, tag, force):
        if message.line:
            out(message.line)
        built = message.tag or built
    note(f"agent image {built} ready")
