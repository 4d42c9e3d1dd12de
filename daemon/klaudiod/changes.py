"""What a task changed in its workspace since its base: files added, modified or deleted.

The base is a manifest (path -> git blob id) recorded when the workspace was cloned, kept
in the task's own directory where no agent can write. The workspace is read link-safely and
its .git is never consulted: agents could have rewritten it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from klaudiod import safefs

# Not part of the work: git's own data, and klaudio's context files.
IGNORED = frozenset({".git", ".klaudio"})
MANIFEST_LIMIT = 256 << 20


@dataclass(frozen=True)
class Change:
    """One changed path: added, modified or deleted."""

    status: str
    path: str


def save(path: Path, entries: dict[str, str]) -> None:
    """Write a base manifest (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, sort_keys=True))
    os.replace(tmp, path)


def load(path: Path) -> dict[str, str]:
    """A base manifest ({} when the task has none: an empty workspace)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {str(k): str(v) for k, v in data.items()}


def changed(
    workspace: Path, base: dict[str, str], skip: frozenset[str] = frozenset()
) -> list[Change]:
    """The workspace's changes against base, sorted by path.

    The paths in skip, and what is beneath them (a task's inputs), are left out.
    """
    current: dict[str, str] = {}
    for entry in safefs.scan(workspace):
        rel, st = entry.path, entry.stat
        safefs.parts(rel)  # a name with NUL or newline is refused, named
        if rel.split("/", 1)[0] in IGNORED or any(
            rel == s or rel.startswith(s + "/") for s in skip
        ):
            continue
        try:
            if stat.S_ISREG(st.st_mode):
                current[rel] = _file_blob(entry, st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                current[rel] = _link_blob(entry)
        except (FileNotFoundError, safefs.Refused):
            continue  # gone or replaced since it was listed
    changes = [Change("added" if p not in base else "modified", p) for p in current]
    changes = [c for c in changes if base.get(c.path) != current[c.path]]
    changes += [Change("deleted", p) for p in base if p not in current]
    return sorted(changes, key=lambda c: c.path)


def _blob(size: int) -> hashlib._Hash:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(b"blob %d\0" % size)
    return digest


def _file_blob(entry: safefs.Entry, size: int) -> str:
    digest = _blob(size)
    with os.fdopen(safefs.open_entry(entry), "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _link_blob(entry: safefs.Entry) -> str:
    target = os.fsencode(safefs.read_link(entry))
    digest = _blob(len(target))
    digest.update(target)
    return digest.hexdigest()
