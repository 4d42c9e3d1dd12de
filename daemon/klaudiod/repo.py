"""Git for task workspaces, through dulwich: clone a local path or URL, read its base tree."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from klaudio import validate
from klaudio.errors import InvalidArgument

# Tree entry modes git uses for symbolic links and submodules.
LINK_MODE = 0o120000
SUBMODULE_MODE = 0o160000


def clone(source: str, target: Path) -> str:
    """Clone source (a local path or URL) into target, which must not exist yet.

    Returns:
        The base commit (HEAD's id, hex), or "" for a repository without commits.

    Raises:
        InvalidArgument: naming the source when it cannot be cloned; target is left absent.
    """
    from dulwich import porcelain
    from dulwich.errors import GitProtocolError, HangupException, NotGitRepository

    # Never pass an option to git or ssh (a host or path starting with "-", say).
    validate.repo_source(source, "--repo")
    local = Path(source).expanduser()
    if "://" not in source and not source.startswith("git@"):
        if not local.exists():
            raise InvalidArgument(f"--repo {source}: no such directory")
        source = str(local.absolute())
    try:
        cloned = porcelain.clone(source, str(target), checkout=True, errstream=io.BytesIO())
        with cloned:
            try:
                return cloned.head().decode()
            except KeyError:
                return ""
    except (NotGitRepository, GitProtocolError, HangupException, OSError, KeyError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidArgument(f"--repo {source}: cannot clone: {detail}") from None


def manifest(workspace: Path, commit: str) -> dict[str, str]:
    """Path -> blob id (hex) of every file and link in the commit's tree.

    Called right after the clone, before any agent has touched the repository.
    """
    if not commit:
        return {}
    from dulwich.repo import Repo

    entries: dict[str, str] = {}
    with Repo(str(workspace)) as repository:
        tree = repository[commit.encode()].tree  # type: ignore[attr-defined]
        for entry in repository.object_store.iter_tree_contents(tree):
            if entry.mode != SUBMODULE_MODE:
                entries[entry.path.decode("utf-8", "surrogateescape")] = entry.sha.decode()
    return entries
