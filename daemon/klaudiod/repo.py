"""Git for tasks, through dulwich: clone, the base tree, the task branch, commit and push.

A task with a repository has two copies of it: the workspace the agents change (and whose
`.git` they can write), and a bare repository of the daemon's own under the task's directory
that no container mounts. Everything delivery does (build the commit, push the branch) happens
in the bare one, from the workspace's files read link-safely, so no hook, config, alias,
filter or credential helper an agent planted in the workspace's `.git` ever takes effect.
Credentials are passed to dulwich's transport for one call; they are never written into a
URL or a config file.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klaudio import validate
from klaudio.errors import InvalidArgument, KlaudioError, Unavailable
from klaudiod import safefs

# Tree entry modes git uses.
FILE_MODE = 0o100644
EXECUTABLE_MODE = 0o100755
LINK_MODE = 0o120000
SUBMODULE_MODE = 0o160000
# Never part of the work: git's own data, and klaudio's context files.
NOT_WORK = frozenset({".git", ".klaudio"})
IGNORE_FILE_LIMIT = 1 << 20
# The largest file a delivery commits (forges refuse more: GitHub's limit is 100 MB).
MAX_BLOB = 100 << 20


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials for one clone or push (never stored, never in a URL)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True)
class Cloned:
    """What a clone found: the commit it checked out and the branch it came from."""

    commit: str
    branch: str


def _transport_args(credentials: Credentials | None) -> dict[str, Any]:
    """dulwich transport arguments: the credentials, and the daemon's own SSH command.

    Over SSH the daemon user's keys and agent are used, through `ssh` or the command its
    environment names in GIT_SSH_COMMAND or GIT_SSH (as git does; never from a repository).
    """
    args: dict[str, Any] = {}
    ssh = os.environ.get("GIT_SSH_COMMAND") or os.environ.get("GIT_SSH")
    if ssh:
        args["ssh_command"] = ssh
    if credentials is not None:
        args.update(username=credentials.username, password=credentials.password)
    return args


def clone(
    source: str,
    target: Path,
    credentials: Credentials | None = None,
    branch: str = "",
    bare: bool = False,
) -> Cloned:
    """Clone source (a local path or URL) into target, which must not exist yet.

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
        cloned = porcelain.clone(
            source,
            str(target),
            bare=bare,
            checkout=not bare,
            branch=branch or None,
            errstream=io.BytesIO(),
            **_transport_args(credentials),
        )
        with cloned:
            return _cloned(cloned)
    except (NotGitRepository, GitProtocolError, HangupException, OSError, KeyError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise InvalidArgument(f"--repo {source}: cannot clone: {_detail(exc)}") from None
    except ValueError as exc:
        shutil.rmtree(target, ignore_errors=True)
        # dulwich's words for a remote whose HEAD names no branch it has (git clones such a
        # repository with a warning and no checkout; a task needs a base commit).
        if "origin_head" not in str(exc):
            raise Unavailable(f"--repo {source}: cannot clone: {_detail(exc)}") from None
        raise InvalidArgument(
            f"--repo {source}: the repository's HEAD names no branch it has; "
            "name the branch to clone with --branch"
        ) from None
    except Exception as exc:  # dulwich's own (HTTPUnauthorized, ...): one line, no traceback
        shutil.rmtree(target, ignore_errors=True)
        raise Unavailable(f"--repo {source}: cannot clone: {_detail(exc)}") from None


def _cloned(repository: Any) -> Cloned:
    try:
        commit = repository.head().decode()
    except KeyError:
        return Cloned("", "")
    target = repository.refs.get_symrefs().get(b"HEAD", b"")
    return Cloned(commit, target.decode().removeprefix("refs/heads/"))


def checkout(bare: Path, workspace: Path, origin: str, commit: str, branch: str = "") -> None:
    """Make the workspace a clone of the daemon's bare repository, on branch (at commit).

    The workspace's remote "origin" names the original source (no credentials in it); the
    agents see an ordinary clone.
    """
    from dulwich import porcelain

    cloned: Any = porcelain.clone(str(bare), str(workspace), checkout=True, errstream=io.BytesIO())
    with cloned as ws:
        config = ws.get_config()
        config.set((b"remote", b"origin"), b"url", origin.encode())
        config.write_to_path()
        if branch and commit:
            ref = b"refs/heads/" + branch.encode()
            ws.refs[ref] = commit.encode()
            ws.refs.set_symbolic_ref(b"HEAD", ref)


def manifest(git_dir: Path, commit: str) -> dict[str, str]:
    """Path -> blob id (hex) of every file and link in the commit's tree."""
    if not commit:
        return {}
    from dulwich.repo import Repo

    entries: dict[str, str] = {}
    with Repo(str(git_dir)) as repository:
        tree = repository[commit.encode()].tree  # type: ignore[attr-defined]
        for entry in repository.object_store.iter_tree_contents(tree):
            if entry.mode != SUBMODULE_MODE:
                entries[entry.path.decode("utf-8", "surrogateescape")] = entry.sha.decode()
    return entries


def blob(git_dir: Path, commit: str, path: str) -> bytes | None:
    """The content of path in the commit's tree (None when it has none)."""
    from dulwich.object_store import tree_lookup_path
    from dulwich.repo import Repo

    with Repo(str(git_dir)) as repository:
        tree = repository[commit.encode()].tree  # type: ignore[attr-defined]
        try:
            _, sha = tree_lookup_path(repository.__getitem__, tree, path.encode())
        except KeyError:
            return None
        data: bytes = repository[sha].as_raw_string()
        return data


@dataclass(frozen=True)
class Committed:
    """A commit made from a workspace: its id, and how many paths it changed (0: none)."""

    commit: str
    changed: int


def commit_workspace(
    git_dir: Path,
    workspace: Path,
    base: str,
    branch: str,
    message: str,
    author: str,
    skip: frozenset[str] = frozenset(),
) -> Committed:
    """Commit the workspace's files on branch of the daemon's bare repository, parent base.

    The files are read link-safely (a link is committed as a link); `.git`, `.klaudio`, the
    paths in skip (and what is beneath them), and what the workspace's .gitignore files
    exclude are left out.
    Nothing changed against base is not an error: the result has changed 0 and the branch
    points at base.
    """
    from dulwich.index import commit_tree
    from dulwich.object_store import MemoryObjectStore
    from dulwich.objects import Blob, Commit
    from dulwich.repo import Repo

    opened: Any = Repo(str(git_dir))
    with opened as repository:
        store = repository.object_store
        entries: list[tuple[bytes, Any, int]] = []
        new: list[Any] = []
        for path, mode, data in _work(workspace, skip):
            item = Blob.from_string(data)
            if item.id not in store:  # most files are the base's: nothing to write
                new.append(item)
            entries.append((path.encode("utf-8", "surrogateescape"), item.id, mode))
        trees: Any = MemoryObjectStore()
        tree = commit_tree(trees, entries)
        new += [trees[sha] for sha in trees if sha not in store]
        if new:
            # One pack for all of it, not a loose file (and a lock and a rename) per object.
            store.add_objects([(obj, None) for obj in new])
        parent = repository[base.encode()] if base else None
        changed = _changes(store, parent.tree if parent else None, tree)
        ref = b"refs/heads/" + branch.encode()
        if changed == 0 and base:
            repository.refs[ref] = base.encode()
            return Committed(base, 0)
        current = repository.refs.as_dict().get(ref)
        if current is not None and repository[current].tree == tree:
            return Committed(current.decode(), changed)  # delivered before, nothing new
        commit: Any = Commit()
        commit.tree = tree
        commit.parents = [base.encode()] if base else []
        commit.author = commit.committer = author.encode()
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode()
        store.add_object(commit)
        repository.refs[ref] = commit.id
        return Committed(commit.id.decode(), changed)


def _changes(store: Any, old: Any, new: Any) -> int:
    from dulwich.diff_tree import tree_changes

    return len(list(tree_changes(store, old, new)))


def push(git_dir: Path, url: str, branch: str, credentials: Credentials | None) -> None:
    """Push the task branch (and nothing else) from the daemon's bare repository to url.

    The transport gets an empty config: no `url.insteadOf`, proxy, extra header or other
    setting from any config file applies, so the credentials go to url and nowhere else.
    The branch is forced: it is the task's own, and a publication after more work moves it.

    Raises:
        Unavailable: with the remote's one-line reason when the push is refused or fails.
    """
    from dulwich.client import get_transport_and_path
    from dulwich.config import ConfigDict
    from dulwich.errors import GitProtocolError, HangupException
    from dulwich.repo import Repo

    ref = f"refs/heads/{branch}".encode()
    try:
        client, path = get_transport_and_path(
            url, config=ConfigDict(), **_transport_args(credentials)
        )
        opened: Any = Repo(str(git_dir))
        with opened as repository:
            wanted: Any = {ref: repository.refs[ref]}
            result = client.send_pack(
                path.encode() if isinstance(path, str) else path,
                lambda refs: {**refs, **wanted},
                repository.generate_pack_data,
            )
    except (GitProtocolError, HangupException, OSError, KeyError, KlaudioError) as exc:
        raise Unavailable(f"push of {branch} refused: {_detail(exc)}") from None
    except Exception as exc:  # dulwich's own (HTTPUnauthorized, ...): one line, no traceback
        raise Unavailable(f"push of {branch} refused: {_detail(exc)}") from None
    refused = {k: v for k, v in (getattr(result, "ref_status", None) or {}).items() if v}
    if refused:
        why = "; ".join(f"{k.decode()}: {v}" for k, v in refused.items())
        raise Unavailable(f"push of {branch} refused: {why}")


def _work(workspace: Path, skip: frozenset[str]) -> Iterator[tuple[str, int, bytes]]:
    """(path, git mode, content) of each file and link that is part of the work."""
    ignores: dict[str, Any] = {}

    def enter(entry: safefs.Entry) -> bool:
        return entry.path not in skip and not _ignored(ignores, entry.path + "/")

    for entry in safefs.scan(workspace, enter):
        top = entry.path.split("/", 1)[0]
        if top in NOT_WORK or entry.path in skip:
            continue
        safefs.parts(entry.path)  # a name with NUL or newline is refused, named
        mode = entry.stat.st_mode
        if stat.S_ISDIR(mode):
            continue
        if entry.name == ".gitignore" and stat.S_ISREG(mode):
            _read_ignore(ignores, workspace, entry.path)
        if _ignored(ignores, entry.path):
            continue
        if stat.S_ISLNK(mode):
            yield entry.path, LINK_MODE, safefs.read_link(entry).encode("utf-8", "surrogateescape")
        elif stat.S_ISREG(mode):
            if entry.stat.st_size > MAX_BLOB:
                raise InvalidArgument(
                    f"{entry.path} is {entry.stat.st_size} bytes, more than the {MAX_BLOB} a "
                    "commit takes; list it in .gitignore"
                )
            try:
                # Through the scan's own directory fd: any name git takes (a newline, say).
                fd = safefs.open_entry(entry)
            except (FileNotFoundError, safefs.Refused):
                continue  # gone or replaced meanwhile: not committed
            with os.fdopen(fd, "rb") as handle:
                yield entry.path, _file_mode(mode), handle.read(MAX_BLOB + 1)


def _file_mode(mode: int) -> int:
    return EXECUTABLE_MODE if mode & 0o111 else FILE_MODE


def _read_ignore(ignores: dict[str, Any], workspace: Path, path: str) -> None:
    from dulwich.ignore import IgnoreFilter

    try:
        text = safefs.read_bytes(workspace, path, IGNORE_FILE_LIMIT)
    except (FileNotFoundError, safefs.Refused):
        return
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(b"#")]
    ignores[path.rpartition("/")[0]] = IgnoreFilter(lines)


def _ignored(ignores: dict[str, Any], path: str) -> bool:
    """Whether a .gitignore of path's directory or above excludes it (the nearest decides)."""
    parts = path.rstrip("/").split("/")
    verdict: bool | None = None
    for depth in range(len(parts)):
        base = "/".join(parts[:depth])
        found = ignores.get(base)
        if found is None:
            continue
        rel = path[len(base) + 1 :] if base else path
        answer = found.is_ignored(rel)
        if answer is not None:
            verdict = answer
    return bool(verdict)


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
