"""Repository memory: a short static summary of a workspace for the planner and agents.

A summary comes from one link-safe pass over the workspace (names, kinds and sizes from lstat)
and the contents of a handful of manifests near the top (pyproject.toml, package.json,
Cargo.toml, go.mod...), parsed as data and never run: no model call, no network, no git
command (an agent may have planted hooks). Every file is hostile text: a malformed, oversized
or non-regular manifest is skipped, and names reach the prompt only escaped or, for
dependency names, only when they look like names. Memory caches one summary per repository
and commit, as one JSON file per key.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import logging
import os
import re
import stat
import threading
import tomllib
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from klaudiod import safefs

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


# Tables. A label in _TOOL_LABELS is a build or development tool, any other a framework or
# library; _FORMATS are prose and data rather than code.

_TOOL_LABELS: set[str] = set()


def _pairs(spec: str, tools: bool = False) -> dict[str, str]:
    table = {key: label for key, _, label in (item.partition(": ") for item in spec.split(", "))}
    if tools:
        _TOOL_LABELS.update(table.values())
    return table


def _words(spec: str) -> frozenset[str]:
    return frozenset(spec.split())


def _by_extension(spec: str) -> dict[str, str]:
    return {ext: label for label, exts in _pairs(spec).items() for ext in exts.split()}


_CODE = (
    "Python: py pyi pyx pxd, Jupyter Notebook: ipynb, JavaScript: js mjs cjs jsx, "
    "TypeScript: ts tsx mts cts, Go: go, Rust: rs, Java: java, Kotlin: kt kts, Scala: scala sc, "
    "Groovy: groovy gradle, Clojure: clj cljs cljc, Ruby: rb rake gemspec, PHP: php, C: c h, "
    "C++: cc cpp cxx c++ hh hpp hxx ipp, C#: cs csx, F#: fs fsi fsx, Swift: swift, "
    "Objective-C: m mm, Dart: dart, Lua: lua, Perl: pl pm, R: r, Julia: jl, Elixir: ex exs, "
    "Erlang: erl hrl, Haskell: hs lhs, OCaml: ml mli, Elm: elm, Zig: zig, Nim: nim, "
    "Solidity: sol, CUDA: cu cuh, Fortran: f f90 f95, Assembly: asm s, "
    "Shell: sh bash zsh fish ksh, PowerShell: ps1 psm1, Batchfile: bat cmd, SQL: sql, "
    "HTML: html htm, CSS: css, SCSS: scss sass, Less: less, Vue: vue, Svelte: svelte, "
    "Astro: astro, Protocol Buffers: proto, GraphQL: graphql gql, Terraform: tf tfvars, "
    "Nix: nix, CMake: cmake, Makefile: mk, Dockerfile: dockerfile"
)
_DATA = (
    "Markdown: md markdown mdx, reStructuredText: rst, AsciiDoc: adoc, JSON: json jsonc json5, "
    "YAML: yaml yml, TOML: toml, XML: xml, CSV: csv tsv, INI: ini"
)
_BY_EXT = _by_extension(f"{_CODE}, {_DATA}")
_FORMATS = frozenset(_by_extension(_DATA).values())
_BY_NAME = _pairs(
    "Dockerfile: Dockerfile, Containerfile: Dockerfile, Makefile: Makefile, "
    "GNUmakefile: Makefile, makefile: Makefile, CMakeLists.txt: CMake, Jenkinsfile: Groovy, "
    "Rakefile: Ruby, Gemfile: Ruby, Vagrantfile: Ruby"
)

# Never descended into: vendored, generated, caches, environments, version control.
_IGNORED_DIRS = _words(
    ".git .hg .svn node_modules bower_components jspm_packages vendor third_party dist build "
    "target out-tsc .venv venv __pycache__ .tox .nox .mypy_cache .pytest_cache .ruff_cache "
    ".hypothesis .eggs .next .nuxt .svelte-kit .angular .expo .vercel .turbo .parcel-cache "
    ".cache .gradle .idea .terraform .dart_tool .pnpm-store .yarn .direnv .serverless "
    "coverage htmlcov .nyc_output site-packages Pods Carthage DerivedData elm-stuff _build "
    ".docusaurus .stack-work"
)

# Marker files (by name, or by name without its last extension: vite.config.ts -> vite.config)
# near the top of the tree.
_MARKERS = {
    **_pairs(
        "manage.py: Django, conftest.py: pytest, pytest.ini: pytest, angular.json: Angular, "
        "next.config: Next.js, nuxt.config: Nuxt, svelte.config: Svelte, astro.config: Astro, "
        "jest.config: Jest, vitest.config: Vitest, playwright.config: Playwright, "
        "cypress.config: Cypress, tailwind.config: Tailwind CSS"
    ),
    **_pairs(
        "Makefile: Make, GNUmakefile: Make, makefile: Make, CMakeLists.txt: CMake, "
        "meson.build: Meson, Dockerfile: Docker, Containerfile: Docker, "
        "docker-compose.yml: Docker Compose, docker-compose.yaml: Docker Compose, "
        "compose.yml: Docker Compose, compose.yaml: Docker Compose, Cargo.toml: Cargo, "
        "go.mod: Go modules, pom.xml: Maven, build.gradle: Gradle, build.gradle.kts: Gradle, "
        "Gemfile: Bundler, composer.json: Composer, package-lock.json: npm, yarn.lock: Yarn, "
        "pnpm-lock.yaml: pnpm, bun.lockb: Bun, bun.lock: Bun, deno.json: Deno, "
        "poetry.lock: Poetry, uv.lock: uv, Pipfile: Pipenv, pdm.lock: PDM, setup.py: setuptools, "
        "tox.ini: tox, noxfile.py: nox, .pre-commit-config.yaml: pre-commit, Justfile: just, "
        "justfile: just, Taskfile.yml: Task, WORKSPACE: Bazel, MODULE.bazel: Bazel, "
        "BUILD.bazel: Bazel, flake.nix: Nix, shell.nix: Nix, mix.exs: Mix, Package.swift: SwiftPM, "
        "pubspec.yaml: Dart pub, tsconfig.json: TypeScript, Chart.yaml: Helm, vite.config: Vite, "
        "webpack.config: webpack, rollup.config: Rollup, .eslintrc: ESLint, eslint.config: ESLint, "
        ".prettierrc: Prettier, biome.json: Biome, turbo.json: Turborepo, nx.json: Nx, "
        "lerna.json: Lerna, .babelrc: Babel, babel.config: Babel, mkdocs.yml: MkDocs, "
        "ruff.toml: ruff, .ruff.toml: ruff, mypy.ini: mypy, .flake8: flake8, "
        ".golangci.yml: golangci-lint, .rubocop.yml: RuboCop, renovate.json: Renovate, "
        "dependabot.yml: Dependabot",
        tools=True,
    ),
}
_CI = _pairs(
    ".gitlab-ci.yml: GitLab CI, Jenkinsfile: Jenkins, .travis.yml: Travis CI, "
    "azure-pipelines.yml: Azure Pipelines, bitbucket-pipelines.yml: Bitbucket Pipelines, "
    ".drone.yml: Drone, .circleci/config.yml: CircleCI, .buildkite/pipeline.yml: Buildkite",
    tools=True,
)
_WORKFLOWS = ".github/workflows"
_TOOL_LABELS.add("GitHub Actions")
_AGENT_DOCS = frozenset({"CLAUDE.md", "AGENTS.md"})
_BUILD_FILES = _words(
    "pyproject.toml setup.py setup.cfg Pipfile package.json tsconfig.json Cargo.toml go.mod "
    "pom.xml build.gradle build.gradle.kts settings.gradle settings.gradle.kts Gemfile "
    "composer.json Makefile GNUmakefile makefile CMakeLists.txt meson.build Dockerfile "
    "Containerfile docker-compose.yml docker-compose.yaml compose.yml compose.yaml Justfile "
    "justfile Taskfile.yml WORKSPACE MODULE.bazel BUILD.bazel flake.nix mix.exs Package.swift "
    "pubspec.yaml tox.ini noxfile.py"
)

# Declared dependencies (normalised names) that name a framework, library or tool.
_PY_DEPS = {
    **_pairs(
        "django: Django, flask: Flask, fastapi: FastAPI, starlette: Starlette, aiohttp: aiohttp, "
        "tornado: Tornado, sanic: Sanic, litestar: Litestar, pyramid: Pyramid, falcon: Falcon, "
        "sqlalchemy: SQLAlchemy, alembic: Alembic, peewee: peewee, celery: Celery, "
        "pydantic: Pydantic, pytest: pytest, hypothesis: Hypothesis, numpy: NumPy, "
        "pandas: pandas, polars: Polars, scipy: SciPy, scikit-learn: scikit-learn, "
        "torch: PyTorch, tensorflow: TensorFlow, jax: JAX, transformers: Transformers, "
        "langchain: LangChain, anthropic: Anthropic SDK, openai: OpenAI SDK, "
        "streamlit: Streamlit, gradio: Gradio, typer: Typer, click: Click, grpcio: gRPC, "
        "scrapy: Scrapy, boto3: AWS SDK, textual: Textual, pyside6: Qt, pyqt5: Qt, pyqt6: Qt"
    ),
    **_pairs(
        "ruff: ruff, mypy: mypy, black: Black, isort: isort, flake8: flake8, pylint: Pylint, "
        "pyright: Pyright, tox: tox, nox: nox, pre-commit: pre-commit, coverage: coverage, "
        "pytest-cov: coverage, sphinx: Sphinx, mkdocs: MkDocs, mkdocs-material: MkDocs",
        tools=True,
    ),
}
_PY_TOOL_SECTIONS = _pairs(
    "ruff: ruff, mypy: mypy, black: Black, isort: isort, poetry: Poetry, hatch: Hatch, "
    "pdm: PDM, setuptools: setuptools, setuptools_scm: setuptools-scm, coverage: coverage, "
    "pyright: Pyright, pylint: Pylint, uv: uv, tox: tox, cibuildwheel: cibuildwheel, "
    "maturin: maturin, flit: Flit, commitizen: Commitizen, codespell: codespell, "
    "bandit: Bandit, towncrier: towncrier",
    tools=True,
) | {"pytest": "pytest"}
_PY_BACKENDS = _pairs(
    "hatchling: Hatch, poetry: Poetry, setuptools: setuptools, flit_core: Flit, pdm: PDM, "
    "maturin: maturin, scikit_build_core: scikit-build, mesonpy: meson-python, uv_build: uv",
    tools=True,
)
_SETUP_CFG_SECTIONS = _pairs(
    "tool:pytest: pytest, flake8: flake8, mypy: mypy, isort: isort, coverage:run: coverage"
)
_JS_DEPS = {
    **_pairs(
        "react: React, vue: Vue, next: Next.js, nuxt: Nuxt, svelte: Svelte, "
        "@sveltejs/kit: SvelteKit, @angular/core: Angular, solid-js: Solid, preact: Preact, "
        "express: Express, fastify: Fastify, koa: Koa, @nestjs/core: NestJS, hono: Hono, "
        "electron: Electron, react-native: React Native, expo: Expo, astro: Astro, "
        "gatsby: Gatsby, @remix-run/react: Remix, jest: Jest, vitest: Vitest, mocha: Mocha, "
        "cypress: Cypress, @playwright/test: Playwright, tailwindcss: Tailwind CSS, "
        "redux: Redux, @reduxjs/toolkit: Redux, graphql: GraphQL, prisma: Prisma, "
        "@prisma/client: Prisma, mongoose: Mongoose, three: three.js, storybook: Storybook"
    ),
    **_pairs(
        "typescript: TypeScript, vite: Vite, webpack: webpack, rollup: Rollup, "
        "esbuild: esbuild, parcel: Parcel, eslint: ESLint, prettier: Prettier, turbo: Turborepo, "
        "nx: Nx, lerna: Lerna, @babel/core: Babel, @biomejs/biome: Biome",
        tools=True,
    ),
}
_RUST_DEPS = _pairs(
    "tokio: Tokio, actix-web: Actix Web, axum: Axum, rocket: Rocket, warp: warp, serde: Serde, "
    "clap: clap, bevy: Bevy, tauri: Tauri, diesel: Diesel, sqlx: SQLx, tonic: tonic, "
    "reqwest: reqwest, leptos: Leptos, yew: Yew"
)
_GO_DEPS = _pairs(
    "github.com/gin-gonic/gin: Gin, github.com/labstack/echo: Echo, "
    "github.com/gofiber/fiber: Fiber, github.com/gorilla/mux: Gorilla mux, "
    "github.com/go-chi/chi: chi, github.com/spf13/cobra: Cobra, google.golang.org/grpc: gRPC, "
    "gorm.io/gorm: GORM, github.com/stretchr/testify: testify, k8s.io/client-go: client-go"
)
_RUBY_DEPS = {
    **_pairs(
        "rails: Rails, sinatra: Sinatra, hanami: Hanami, rspec: RSpec, rspec-rails: RSpec, "
        "minitest: Minitest, sidekiq: Sidekiq, jekyll: Jekyll"
    ),
    **_pairs("rubocop: RuboCop", tools=True),
}
_PHP_DEPS = _pairs(
    "laravel/framework: Laravel, symfony/framework-bundle: Symfony, phpunit/phpunit: PHPUnit, "
    "slim/slim: Slim"
)
_JVM_MARKS = _pairs(
    "org.springframework.boot: Spring Boot, io.quarkus: Quarkus, io.micronaut: Micronaut, "
    "junit: JUnit, com.android.application: Android"
)

# What a dependency or command name may look like to be shown at all: no spaces, no markup.
_NAME = re.compile(r"[A-Za-z0-9@_][A-Za-z0-9@/._+~:-]{0,99}")
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]{0,99})")
_GEM = re.compile(r"""\s*gem\s+["']([^"'\s]{1,100})["']""")
_DEV_WORDS = ("dev", "test", "lint", "doc")


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

    Args:
        workspace: a trusted root (the daemon's directory for the task's tree).

    Raises:
        safefs.Refused: workspace is a link or not a directory.
        FileNotFoundError: workspace is missing.
    """
    walk = _Walk()
    with closing(_entries(workspace, walk)) as entries:
        for seen, (path, entry) in enumerate(entries, 1):
            if seen > MAX_ENTRIES:
                walk.partial = True
                break
            walk.add(path, entry)
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


def _entries(workspace: Path, walk: _Walk) -> Generator[tuple[str, safefs.Entry], None, None]:
    """Each entry beneath workspace as (path, entry), not descending into ignored top dirs.

    safefs.scan() enters every directory, so the top level is listed here and each top-level
    directory not ignored is scanned as a root of its own: its name was just seen to be a
    directory, and a link put there meanwhile is refused by the scan (opened O_NOFOLLOW).
    Ignored directories deeper down are walked, their entries dropped by _Walk.
    """
    subdirs: list[str] = []
    with safefs.directory(workspace) as fd:
        with os.scandir(fd) as listing:
            names = sorted(item.name for item in listing)
        for name in names:
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue  # removed since the listing
            yield name, safefs.Entry(name, st, name, fd)
            if stat.S_ISDIR(st.st_mode) and not _ignored_dir(name):
                subdirs.append(name)
    for name in subdirs:
        try:
            with closing(safefs.scan(workspace / name)) as tree:
                for entry in tree:
                    yield f"{name}/{entry.path}", entry
        except FileNotFoundError:
            continue  # removed since the listing
        except (OSError, safefs.Refused) as error:  # unreadable, or replaced by a link
            log.info("repository memory: %s/ not summarised: %s", _show(name), error)
            walk.partial = True


def _ignored_dir(name: str) -> bool:
    return name in _IGNORED_DIRS or name.endswith(".egg-info") or name.startswith("bazel-")


class _Walk:
    """What one pass over the entries collects; summary() makes the Summary of it."""

    def __init__(self) -> None:
        self.files = 0
        self.counts: Counter[str] = Counter()
        self.dirs: dict[str, int] = {}
        self.top_files: list[str] = []
        self.ignored_top: list[str] = []
        self.ignored: set[str] = set()  # paths of ignored directories, to drop what is beneath
        self.key_files: list[tuple[int, str]] = []  # (rank, path)
        self.labels: set[str] = set()
        self.manifests: list[tuple[str, bytes]] = []
        self.partial = False

    def add(self, path: str, entry: safefs.Entry) -> None:
        """Count one entry (this runs for every entry: keep it lean)."""
        parent, _, name = path.rpartition("/")
        mode = entry.stat.st_mode
        if parent in self.ignored:
            if stat.S_ISDIR(mode):
                self.ignored.add(path)
            return
        if stat.S_ISDIR(mode):
            if _ignored_dir(name):
                self.ignored.add(path)
                if not parent:
                    self.ignored_top.append(name)
            elif not parent:
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
        label = _BY_NAME.get(name)
        if label is None and "." in name:
            label = _BY_EXT.get(name.rpartition(".")[2].lower())
        if label is not None:
            self.counts[label] += 1
        if "/" not in parent:
            self._near_top(path, parent, name, entry)
        elif name in _AGENT_DOCS:
            self.key_files.append((1, path))
        elif parent == _WORKFLOWS and name.endswith((".yml", ".yaml")):
            self.labels.add("GitHub Actions")
            self.key_files.append((5, path))

    def _near_top(self, path: str, parent: str, name: str, entry: safefs.Entry) -> None:
        """A regular file at the top level or one directory down."""
        label = _MARKERS.get(name) or _MARKERS.get(name.rpartition(".")[0]) or _CI.get(path)
        if label is not None:
            self.labels.add(label)
        rank = _key_rank(path, parent, name)
        if rank is not None:
            self.key_files.append((rank, path))
        if (
            _manifest_kind(parent, name) is not None
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
        for path, data in self.manifests:
            parsed = _parse(path, data)
            if parsed is None:
                continue
            labels |= parsed.labels
            if parsed.runtime or parsed.dev:
                dependencies.append(parsed.dependencies(_show(path)))
            names = _unique(parsed.commands)
            if names:
                commands.append(Commands(_show(path), parsed.kind, names[:_SHOW_COMMANDS]))
        return Summary(
            files=self.files,
            languages=tuple(pair for pair in ranked if pair[0] not in _FORMATS),
            formats=tuple(pair for pair in ranked if pair[0] in _FORMATS),
            frameworks=tuple(sorted((x for x in labels if x not in _TOOL_LABELS), key=str.lower)),
            tools=tuple(sorted((x for x in labels if x in _TOOL_LABELS), key=str.lower)),
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
    if name in _AGENT_DOCS:
        return 1
    if name in _BUILD_FILES or _requirements(parent, name):
        return 4
    if path in _CI:
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


# Manifests: each parser takes the text and the file's name and returns what it declares.


@dataclass
class _Parsed:
    runtime: list[str] = field(default_factory=list)
    dev: list[str] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    kind: str = ""  # of the commands
    commands: list[str] = field(default_factory=list)

    def dependencies(self, source: str) -> Dependencies:
        runtime = _unique(self.runtime)
        dev = tuple(name for name in _unique(self.dev) if name not in runtime)
        more = max(0, len(runtime) - _SHOW_RUNTIME) + max(0, len(dev) - _SHOW_DEV)
        return Dependencies(source, runtime[:_SHOW_RUNTIME], dev[:_SHOW_DEV], more)


def _parse(path: str, data: bytes) -> _Parsed | None:
    parent, _, name = path.rpartition("/")
    kind = _manifest_kind(parent, name)
    if kind is None:
        return None
    try:
        return _PARSERS[kind](data.decode("utf-8", errors="replace"), name)
    except (ValueError, RecursionError, configparser.Error) as error:
        log.info("repository memory: %s skipped: %s", _show(path), _show(str(error)))
        return None


def _manifest_kind(parent: str, name: str) -> str | None:
    if name in _MANIFESTS:
        return _MANIFESTS[name]
    return "requirements" if _requirements(parent, name) else None


def _requirements(parent: str, name: str) -> bool:
    return name.endswith(".txt") and (
        name.startswith("requirements")
        or name.endswith("requirements.txt")
        or parent.rpartition("/")[2] == "requirements"
    )


def _pyproject(text: str, _: str) -> _Parsed:
    doc = tomllib.loads(text)
    out = _Parsed()
    project = _table(doc.get("project"))
    out.runtime += _requirement_names(project.get("dependencies"))
    for group in _table(project.get("optional-dependencies")).values():
        out.dev += _requirement_names(group)
    for group in _table(doc.get("dependency-groups")).values():
        out.dev += _requirement_names(group)
    tool = _table(doc.get("tool"))
    poetry = _table(tool.get("poetry"))
    out.runtime += [n for n in _names(_table(poetry.get("dependencies"))) if n != "python"]
    out.dev += _names(_table(poetry.get("dev-dependencies")))
    for group in _table(poetry.get("group")).values():
        out.dev += _names(_table(_table(group).get("dependencies")))
    out.labels |= {_PY_TOOL_SECTIONS[name] for name in tool if name in _PY_TOOL_SECTIONS}
    backend = _table(doc.get("build-system")).get("build-backend")
    if isinstance(backend, str) and backend.partition(".")[0] in _PY_BACKENDS:
        out.labels.add(_PY_BACKENDS[backend.partition(".")[0]])
    out.labels |= _labels(out.runtime + out.dev, _PY_DEPS, _python_name)
    return out


def _setup_cfg(text: str, _: str) -> _Parsed:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    out = _Parsed()
    out.runtime += _requirement_names(parser.get("options", "install_requires", fallback=""))
    if parser.has_section("options.extras_require"):
        for _, value in parser.items("options.extras_require"):
            out.dev += _requirement_names(value)
    out.labels |= {_SETUP_CFG_SECTIONS[s] for s in parser.sections() if s in _SETUP_CFG_SECTIONS}
    out.labels |= _labels(out.runtime + out.dev, _PY_DEPS, _python_name)
    return out


def _requirements_txt(text: str, name: str) -> _Parsed:
    names = []
    for line in text.splitlines():
        line = line.partition(" #")[0].strip()
        if line and not line.startswith(("#", "-")) and "://" not in line:
            names += _requirement_names([line])
    out = _Parsed()
    if any(word in name.lower() for word in _DEV_WORDS):
        out.dev = names
    else:
        out.runtime = names
    out.labels = _labels(names, _PY_DEPS, _python_name)
    return out


def _pipfile(text: str, _: str) -> _Parsed:
    doc = tomllib.loads(text)
    out = _Parsed(_names(_table(doc.get("packages"))), _names(_table(doc.get("dev-packages"))))
    out.labels = _labels(out.runtime + out.dev, _PY_DEPS, _python_name)
    return out


def _package_json(text: str, _: str) -> _Parsed:
    doc = _table(json.loads(text))
    out = _Parsed(
        _names(_table(doc.get("dependencies"))), _names(_table(doc.get("devDependencies")))
    )
    out.labels = _labels(out.runtime + out.dev, _JS_DEPS, str.lower)
    out.kind, out.commands = "npm scripts", _names(_table(doc.get("scripts")))
    return out


def _cargo(text: str, _: str) -> _Parsed:
    doc = tomllib.loads(text)
    workspace = _table(_table(doc.get("workspace")).get("dependencies"))
    out = _Parsed(_names(_table(doc.get("dependencies"))) + _names(workspace))
    out.dev = _names(_table(doc.get("dev-dependencies")))
    out.dev += _names(_table(doc.get("build-dependencies")))
    out.labels = _labels(out.runtime + out.dev, _RUST_DEPS, str.lower)
    return out


def _go_mod(text: str, _: str) -> _Parsed:
    out = _Parsed()
    block = False
    for line in text.splitlines():
        code, _, comment = line.partition("//")
        words = code.split()
        if block:
            if words == [")"]:
                block = False
                continue
        elif words[:2] == ["require", "("] or words[:1] == ["require("]:
            block = True
            continue
        elif words[:1] == ["require"]:
            words = words[1:]
        else:
            continue
        if words and "indirect" not in comment:  # indirect: not required by the module itself
            out.runtime += _names(words[:1])
    out.labels = _labels(out.runtime, _GO_DEPS, lambda name: re.sub(r"/v\d+$", "", name))
    return out


def _gemfile(text: str, _: str) -> _Parsed:
    out = _Parsed()
    group = False
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["group"] and words[-1:] == ["do"]:
            group = True
        elif words == ["end"]:
            group = False
        elif match := _GEM.match(line):
            (out.dev if group else out.runtime).extend(_names([match[1]]))
    out.labels = _labels(out.runtime + out.dev, _RUBY_DEPS, str.lower)
    return out


def _composer(text: str, _: str) -> _Parsed:
    doc = _table(json.loads(text))

    def wanted(names: list[str]) -> list[str]:
        return [name for name in names if name != "php" and not name.startswith("ext-")]

    out = _Parsed(wanted(_names(_table(doc.get("require")))))
    out.dev = wanted(_names(_table(doc.get("require-dev"))))
    out.labels = _labels(out.runtime + out.dev, _PHP_DEPS, str.lower)
    return out


def _jvm(text: str, _: str) -> _Parsed:
    lowered = text.lower()
    return _Parsed(labels={label for mark, label in _JVM_MARKS.items() if mark in lowered})


def _makefile(text: str, _: str) -> _Parsed:
    targets = []
    for line in text.splitlines():
        head, colon, rest = line.partition(":")
        # "X = a:b" and "X := value" are variables; indented lines are recipes.
        if colon and line[:1] not in ("", " ", "\t", ".", "#") and "=" not in head + rest[:1]:
            targets += [name for name in head.split() if _NAME.fullmatch(name)]
    return _Parsed(kind="Make targets", commands=targets)


_PARSERS: dict[str, Callable[[str, str], _Parsed]] = {
    "pyproject": _pyproject,
    "setup.cfg": _setup_cfg,
    "requirements": _requirements_txt,
    "pipfile": _pipfile,
    "npm": _package_json,
    "cargo": _cargo,
    "go": _go_mod,
    "gem": _gemfile,
    "composer": _composer,
    "jvm": _jvm,
    "make": _makefile,
}
_MANIFESTS = _pairs(
    "pyproject.toml: pyproject, setup.cfg: setup.cfg, Pipfile: pipfile, package.json: npm, "
    "Cargo.toml: cargo, go.mod: go, Gemfile: gem, composer.json: composer, pom.xml: jvm, "
    "build.gradle: jvm, build.gradle.kts: jvm, Makefile: make, GNUmakefile: make, makefile: make"
)


# Helpers for hostile data: anything of the wrong type is nothing.


def _table(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _names(values: Iterable[object]) -> list[str]:
    """The strings among values that look like names."""
    return [v for v in values if isinstance(v, str) and _NAME.fullmatch(v)]


def _requirement_names(value: object) -> list[str]:
    """Project names of PEP 508 requirements: a list of them, or one per line of a string."""
    items = value.splitlines() if isinstance(value, str) else value
    if not isinstance(items, list):
        return []
    matches = (_REQUIREMENT.match(item) for item in items if isinstance(item, str))
    return [match[1] for match in matches if match is not None]


def _python_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _labels(names: Iterable[str], table: Mapping[str, str], key: Callable[[str], str]) -> set[str]:
    return {table[k] for k in map(key, names) if k in table}


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
