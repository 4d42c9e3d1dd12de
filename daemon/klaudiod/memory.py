"""Repository memory: a short static summary of a workspace for the planner and agents."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from klaudiod import manifests, safefs

# A summary comes from one link-safe pass over the workspace (names, kinds and sizes from
# lstat) and the contents of a handful of manifests near the top, parsed as data by manifests:
# no model call, no network, no git command (an agent may have planted hooks). Every file is
# hostile text: a malformed, oversized or non-regular manifest is skipped, and names reach the
# prompt only escaped. Memory caches one summary per repository and commit, one JSON file each.

log = logging.getLogger(__name__)

SCHEMA = 1  # of the cached JSON: another version is analysed again
READ_LIMIT = 256 * 1024  # bytes: a larger manifest is skipped, never read in part
MAX_MANIFESTS = 16  # manifests read per summary; the top level's are met first
MAX_ENTRIES = 400_000  # entries looked at before the summary is called partial
RENDER_LIMIT = 4096  # bytes of render()
_CACHE_LIMIT = 1 << 20
_SHOW_DIRS = 15
_SHOW_TOP_FILES = 20
_SHOW_KEY_FILES = 25
_SHOW_SOURCES = 6
_SHOW_RUNTIME = 30
_SHOW_DEV = 20
_SHOW_COMMANDS = 20
_LINE = 200  # characters of one rendered list


@dataclass(frozen=True)
class Dependencies:
    """The dependency names one manifest declares: runtime, development (and optional)."""

    source: str  # the manifest's path in the workspace
    runtime: tuple[str, ...]
    dev: tuple[str, ...]
    more: int = 0  # names left out past the caps


@dataclass(frozen=True)
class Commands:
    """Commands a manifest defines: Make targets or npm scripts."""

    source: str
    kind: str  # "Make targets", "npm scripts"
    names: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """What a workspace holds, from its file names and manifests; see render()."""

    files: int = 0  # regular files outside ignored directories
    languages: tuple[tuple[str, int], ...] = ()  # code and markup, by file count
    formats: tuple[tuple[str, int], ...] = ()  # prose and data (Markdown, YAML...), by count
    frameworks: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    key_files: tuple[str, ...] = ()
    more_key_files: int = 0
    dirs: tuple[tuple[str, int], ...] = ()  # top-level directories, files beneath each
    more_dirs: int = 0
    top_files: tuple[str, ...] = ()
    more_top_files: int = 0
    ignored: tuple[str, ...] = ()  # top-level directories not looked into (.git, node_modules)
    dependencies: tuple[Dependencies, ...] = ()
    commands: tuple[Commands, ...] = ()
    partial: bool = False  # too large, or parts unreadable: counts are of what was seen

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data; from_dict() reads it back."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain

    @classmethod
    def from_dict(cls, data: object) -> Summary:
        """A summary from to_dict()'s data.

        Raises:
            ValueError: data of any other shape.
        """
        if not isinstance(data, dict):
            raise ValueError("a summary is a JSON object")
        partial = data.get("partial")
        if not isinstance(partial, bool):
            raise ValueError("'partial' is not a boolean")
        return cls(
            files=_count(data.get("files")),
            languages=_counts(data.get("languages")),
            formats=_counts(data.get("formats")),
            frameworks=_strings(data.get("frameworks")),
            tools=_strings(data.get("tools")),
            key_files=_strings(data.get("key_files")),
            more_key_files=_count(data.get("more_key_files")),
            dirs=_counts(data.get("dirs")),
            more_dirs=_count(data.get("more_dirs")),
            top_files=_strings(data.get("top_files")),
            more_top_files=_count(data.get("more_top_files")),
            ignored=_strings(data.get("ignored")),
            dependencies=tuple(
                Dependencies(
                    _string(d.get("source")),
                    _strings(d.get("runtime")),
                    _strings(d.get("dev")),
                    _count(d.get("more")),
                )
                for d in _objects(data.get("dependencies"))
            ),
            commands=tuple(
                Commands(_string(c.get("source")), _string(c.get("kind")), _strings(c.get("names")))
                for c in _objects(data.get("commands"))
            ),
            partial=partial,
        )

    def render(self) -> str:
        """The summary as text for a prompt: most informative first, at most RENDER_LIMIT bytes."""
        head = f"Repository summary (from file names and manifests): {self.files:,} files"
        if self.partial:
            head += " (partial: the tree was too large or unreadable in places)"
        lines = [head]
        if self.languages:
            code = sum(count for _, count in self.languages)
            shares = [f"{name} {count} ({_percent(count, code)})" for name, count in self.languages]
            lines.append(f"Languages (files): {_join(shares)}")
        if self.formats:
            lines.append(f"Docs and data (files): {_join(f'{n} {c}' for n, c in self.formats)}")
        if self.frameworks:
            lines.append(f"Frameworks and libraries: {_join(self.frameworks)}")
        if self.tools:
            lines.append(f"Build, test and CI tools: {_join(self.tools)}")
        lines += [f"{c.kind} ({c.source}): {_join(c.names)}" for c in self.commands]
        if self.key_files:
            lines.append(f"Key files: {_join(self.key_files, self.more_key_files)}")
        if self.dependencies:
            lines.append("Declared dependencies:")
            lines += [f"  {d.source}: {_dependencies(d)}" for d in self.dependencies]
        lines += self._layout()
        return _fit(lines)

    def _layout(self) -> list[str]:
        lines = ["Top-level layout (files beneath each directory):"]
        lines += [f"  {name}/ {count:,}" for name, count in self.dirs]
        if self.more_dirs:
            lines.append(f"  and {self.more_dirs} more directories")
        if self.top_files:
            lines.append(f"  files: {_join(self.top_files, self.more_top_files)}")
        if self.ignored:
            lines.append(f"  not looked into: {_join(f'{name}/' for name in self.ignored)}")
        return lines if len(lines) > 1 else []


def summarize(workspace: Path) -> Summary:
    """Summarise the workspace: one link-safe scan, a few manifests read; nothing run.

    Ignored directories (.git, node_modules...) are not entered, at any depth. A directory
    below the top that cannot be opened or listed ends the scan, which cannot resume past it:
    the summary is then partial, made of what was seen until then.

    Args:
        workspace: a trusted root (the daemon's directory for the task's tree).

    Raises:
        safefs.Refused: workspace is a link or not a directory.
        FileNotFoundError: workspace is missing.
        OSError: workspace itself cannot be read.
    """
    walk = _Walk()
    seen = 0
    try:
        entries = safefs.scan(workspace, enter=lambda entry: not manifests.ignored_dir(entry.name))
        with closing(entries):
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    walk.partial = True
                    break
                walk.add(entry)
    except OSError as error:
        # The top level is listed in full before any directory is entered: nothing seen means
        # the workspace itself failed. (add() raises no OSError: _read() keeps its own.)
        if not seen:
            raise
        log.info("repository memory: scan ended early, summary partial: %s", _show(str(error)))
        walk.partial = True
    return walk.summary()


class Memory:
    """Summaries cached per key (repository and commit): each key is analysed once."""

    def __init__(self, cache_dir: Path) -> None:
        """Cache in cache_dir, a directory of the daemon's own (made when first needed)."""
        self._dir = cache_dir
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, workspace: Path, key: str) -> Summary:
        """The summary of workspace at key, analysed only if no cached one is readable.

        Args:
            workspace: the task's workspace, a trusted root.
            key: names the repository and commit (e.g. a hash of the source, ":", the commit);
                "" (no commit, e.g. an empty workspace) is analysed every time, never cached.
        """
        if not key:
            return summarize(workspace)
        with self._lock(key):  # callers in threads asking for one key wait for one analysis
            cached = self._load(key)
            if cached is not None:
                return cached
            summary = summarize(workspace)
            self._store(key, summary)
            return summary

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _load(self, key: str) -> Summary | None:
        name = _cache_name(key)
        try:
            doc = json.loads(safefs.read_bytes(self._dir, name, _CACHE_LIMIT))
            if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("key") != key:
                raise ValueError("another schema or key")
            return Summary.from_dict(doc.get("summary"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError, safefs.Refused) as error:
            log.warning(
                "repository memory: cache file %s unusable, analysing again: %s", name, error
            )
            return None

    def _store(self, key: str, summary: Summary) -> None:
        doc = {"schema": SCHEMA, "key": key, "summary": summary.to_dict()}
        data = json.dumps(doc, sort_keys=True).encode()
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            safefs.write_bytes(self._dir, _cache_name(key), data, mode=0o600)
        except (OSError, safefs.Refused) as error:  # the summary is good even if not kept
            log.warning("repository memory: could not cache %s: %s", _cache_name(key), error)


def _cache_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() + ".json"


# The walk.


class _Walk:
    """What one pass over the entries collects; summary() makes the Summary of it."""

    def __init__(self) -> None:
        self.files = 0
        self.counts: Counter[str] = Counter()
        self.dirs: dict[str, int] = {}
        self.top_files: list[str] = []
        self.ignored_top: list[str] = []
        self.key_files: list[tuple[int, str]] = []  # (rank, path)
        self.labels: set[str] = set()
        self.manifests: list[tuple[str, bytes]] = []
        self.partial = False

    def add(self, entry: safefs.Entry) -> None:
        """Count one entry (this runs for every entry: keep it lean)."""
        path = entry.path
        parent, _, name = path.rpartition("/")
        mode = entry.stat.st_mode
        if stat.S_ISDIR(mode):
            if not parent:  # an ignored directory is met, never entered: listed if at the top
                if manifests.ignored_dir(name):
                    self.ignored_top.append(name)
                else:
                    self.dirs.setdefault(name, 0)
            return
        if not stat.S_ISREG(mode):
            return  # links are not followed nor counted; FIFOs, sockets, devices neither
        self.files += 1
        if parent:
            top = path[: path.index("/")]
            self.dirs[top] = self.dirs.get(top, 0) + 1
        else:
            self.top_files.append(name)
        label = manifests.BY_NAME.get(name)
        if label is None and "." in name:
            label = manifests.BY_EXTENSION.get(name.rpartition(".")[2].lower())
        if label is not None:
            self.counts[label] += 1
        if "/" not in parent:
            self._near_top(path, parent, name, entry)
        elif name in manifests.AGENT_DOCS:
            self.key_files.append((1, path))
        elif parent == manifests.WORKFLOWS and name.endswith((".yml", ".yaml")):
            self.labels.add("GitHub Actions")
            self.key_files.append((5, path))

    def _near_top(self, path: str, parent: str, name: str, entry: safefs.Entry) -> None:
        """A regular file at the top level or one directory down."""
        markers = manifests.MARKERS
        label = markers.get(name) or markers.get(name.rpartition(".")[0]) or manifests.CI.get(path)
        if label is not None:
            self.labels.add(label)
        rank = _key_rank(path, parent, name)
        if rank is not None:
            self.key_files.append((rank, path))
        if (
            manifests.kind(parent, name) is not None
            and len(self.manifests) < MAX_MANIFESTS
            and entry.stat.st_size <= READ_LIMIT
        ):
            data = _read(entry)
            if data is not None:
                self.manifests.append((path, data))

    def summary(self) -> Summary:
        """The Summary of what was collected, manifests parsed."""
        ranked = sorted(self.counts.items(), key=lambda pair: (-pair[1], pair[0]))
        dirs = sorted(self.dirs.items(), key=lambda pair: (-pair[1], pair[0]))[:_SHOW_DIRS]
        keys = [path for _, path in sorted(self.key_files)]
        dependencies: list[Dependencies] = []
        commands: list[Commands] = []
        labels = set(self.labels)
        tools = manifests.TOOL_LABELS
        for path, data in self.manifests:
            try:
                parsed = manifests.parse(path, data)
            except ValueError as error:
                log.info("repository memory: %s skipped: %s", _show(path), _show(str(error)))
                continue
            if parsed is None:
                continue
            labels |= parsed.labels
            if parsed.runtime or parsed.dev:
                dependencies.append(_declared(parsed, _show(path)))
            names = _unique(parsed.commands)
            if names:
                commands.append(Commands(_show(path), parsed.kind, names[:_SHOW_COMMANDS]))
        return Summary(
            files=self.files,
            languages=tuple(pair for pair in ranked if pair[0] not in manifests.FORMATS),
            formats=tuple(pair for pair in ranked if pair[0] in manifests.FORMATS),
            frameworks=tuple(sorted((x for x in labels if x not in tools), key=str.lower)),
            tools=tuple(sorted((x for x in labels if x in tools), key=str.lower)),
            key_files=tuple(_show(path) for path in keys[:_SHOW_KEY_FILES]),
            more_key_files=max(0, len(keys) - _SHOW_KEY_FILES),
            dirs=tuple(sorted((_show(name), count) for name, count in dirs)),
            more_dirs=len(self.dirs) - len(dirs),
            top_files=tuple(_show(name) for name in self.top_files[:_SHOW_TOP_FILES]),
            more_top_files=max(0, len(self.top_files) - _SHOW_TOP_FILES),
            ignored=tuple(_show(name) for name in self.ignored_top),
            dependencies=tuple(dependencies[:_SHOW_SOURCES]),
            commands=tuple(commands[:_SHOW_SOURCES]),
            partial=self.partial,
        )


def _key_rank(path: str, parent: str, name: str) -> int | None:
    """Where a file near the top goes among the key files (docs first), None if not one."""
    if not parent:
        upper = name.upper()
        if upper.startswith("README"):
            return 0
        if upper.startswith("CONTRIBUTING"):
            return 2
        if upper.startswith(("LICENSE", "LICENCE", "COPYING", "CHANGELOG", "CHANGES")):
            return 3
    if name in manifests.AGENT_DOCS:
        return 1
    if name in manifests.BUILD_FILES or manifests.requirements_file(parent, name):
        return 4
    if path in manifests.CI:
        return 5
    return None


def _read(entry: safefs.Entry) -> bytes | None:
    """The contents of a file the walk met, or None: not regular now, unreadable, too large."""
    try:
        fd = safefs.open_entry(entry)
    except (OSError, safefs.Refused):
        return None
    try:
        data = bytearray()
        while len(data) <= READ_LIMIT:
            chunk = os.read(fd, READ_LIMIT + 1 - len(data))
            if not chunk:
                return bytes(data)
            data += chunk
        return None  # grew past the limit since the lstat
    except OSError:
        return None
    finally:
        os.close(fd)


def _declared(parsed: manifests.Parsed, source: str) -> Dependencies:
    """The dependencies a manifest declares, each name once, those past the caps counted."""
    runtime = _unique(parsed.runtime)
    dev = tuple(name for name in _unique(parsed.dev) if name not in runtime)
    more = max(0, len(runtime) - _SHOW_RUNTIME) + max(0, len(dev) - _SHOW_DEV)
    return Dependencies(source, runtime[:_SHOW_RUNTIME], dev[:_SHOW_DEV], more)


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _show(text: str, limit: int = 80) -> str:
    """A name as one printable line: control, bidi and undecodable characters escaped."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= limit else f"{shown[:limit]}..."


# Rendering.


def _percent(count: int, total: int) -> str:
    share = 100 * count / total
    return "<1%" if share < 1 else f"{share:.0f}%"


def _join(items: Iterable[str], more: int = 0, limit: int = _LINE) -> str:
    """Items joined with ", " within about limit characters; the rest counted."""
    shown: list[str] = []
    left = 0
    used = 0
    for item in items:
        if left or (shown and used + len(item) > limit):
            left += 1
            continue
        shown.append(item)
        used += len(item) + 2
    if left + more:
        shown.append(f"and {left + more} more")
    return ", ".join(shown)


def _dependencies(deps: Dependencies) -> str:
    if not deps.dev:
        return _join(deps.runtime, deps.more, 160)
    dev = f"dev: {_join(deps.dev, deps.more, 100)}"
    return f"{_join(deps.runtime, 0, 120)}; {dev}" if deps.runtime else dev


def _fit(lines: list[str]) -> str:
    """Lines joined, cut at a line so the text stays within RENDER_LIMIT bytes."""
    text = "\n".join(lines)
    if len(text.encode()) <= RENDER_LIMIT:
        return text
    note = "(summary cut short)"
    kept: list[str] = []
    size = len(note)
    for line in lines:
        size += len(line.encode()) + 1
        if size > RENDER_LIMIT:
            break
        kept.append(line)
    return "\n".join([*kept, note])


def _plain(value: Any) -> Any:
    """asdict()'s output with lists for tuples, as JSON has them."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _count(value: object) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("expected a count")
    return value


def _counts(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of [name, count]")
    pairs = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("expected [name, count]")
        pairs.append((_string(item[0]), _count(item[1])))
    return tuple(pairs)


def _objects(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("expected a list of objects")
    return value
