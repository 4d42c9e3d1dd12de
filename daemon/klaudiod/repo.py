"""Git for task workspaces, through dulwich: clone a local path or URL."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from klaudio.errors import InvalidArgument


def clone(source: str, target: Path) -> None:
    """Clone source (a local path or URL) into target, which must not exist yet.

    Raises:
        InvalidArgument: naming the source when it cannot be cloned; target is left absent.
    """
    from dulwich import porcelain
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    local = Path(source).expanduser()
    if "://" not in source and not source.startswith("git@"):
        if not local.exists():
            raise InvalidArgument(f"--repo {source}: no such directory")
        source = str(local.absolute())
    try:
        porcelain.clone(source, str(target), checkout=True, errstream=io.BytesIO())
    except (NotGitRepository, GitProtocolError, HangupException, OSError, KeyError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidArgument(f"--repo {source}: cannot clone: {detail}") from None
