"""What a repository's file names and manifests tell: tables that recognise them, and parsers."""

from __future__ import annotations

import configparser
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Every file is hostile text an agent may have written: a manifest is parsed as data and never
# run, anything of the wrong type in it is nothing, and a dependency or command name is kept
# only when it looks like a name (no spaces, no markup), so it can reach a prompt.

# Tables. A label in TOOL_LABELS is a build or development tool, any other a framework or
# library; FORMATS are prose and data rather than code.

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
BY_EXTENSION = _by_extension(f"{_CODE}, {_DATA}")
FORMATS = frozenset(_by_extension(_DATA).values())
BY_NAME = _pairs(
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
MARKERS = {
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
CI = _pairs(
    ".gitlab-ci.yml: GitLab CI, Jenkinsfile: Jenkins, .travis.yml: Travis CI, "
    "azure-pipelines.yml: Azure Pipelines, bitbucket-pipelines.yml: Bitbucket Pipelines, "
    ".drone.yml: Drone, .circleci/config.yml: CircleCI, .buildkite/pipeline.yml: Buildkite",
    tools=True,
)
WORKFLOWS = ".github/workflows"
_TOOL_LABELS.add("GitHub Actions")
AGENT_DOCS = frozenset({"CLAUDE.md", "AGENTS.md"})
BUILD_FILES = _words(
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
TOOL_LABELS = frozenset(_TOOL_LABELS)  # every table naming tools is built by now

# What a dependency or command name may look like to be shown at all: no spaces, no markup.
_NAME = re.compile(r"[A-Za-z0-9@_][A-Za-z0-9@/._+~:-]{0,99}")
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]{0,99})")
_GEM = re.compile(r"""\s*gem\s+["']([^"'\s]{1,100})["']""")
_DEV_WORDS = ("dev", "test", "lint", "doc")


def ignored_dir(name: str) -> bool:
    """Whether a directory of this name is never descended into (.git, node_modules...)."""
    return name in _IGNORED_DIRS or name.endswith(".egg-info") or name.startswith("bazel-")


# Manifests: each parser takes the text and the file's name and returns what it declares.


@dataclass
class Parsed:
    """What one manifest declares, in the order it declares it, duplicates and all."""

    runtime: list[str] = field(default_factory=list)
    dev: list[str] = field(default_factory=list)  # development and optional
    labels: set[str] = field(default_factory=set)  # frameworks, libraries and tools
    kind: str = ""  # of the commands: "Make targets", "npm scripts"
    commands: list[str] = field(default_factory=list)


def parse(path: str, data: bytes) -> Parsed | None:
    """What the manifest at path (in the workspace) declares; None if path names no manifest.

    Raises:
        ValueError: the manifest is malformed, nested too deeply included.
    """
    parent, _, name = path.rpartition("/")
    manifest = kind(parent, name)
    if manifest is None:
        return None
    try:
        return _PARSERS[manifest](data.decode("utf-8", errors="replace"), name)
    except (RecursionError, configparser.Error) as error:
        raise ValueError(str(error)) from error


def kind(parent: str, name: str) -> str | None:
    """Which parser reads the file name in the directory parent ("" at the top), if any."""
    if name in _MANIFESTS:
        return _MANIFESTS[name]
    return "requirements" if requirements_file(parent, name) else None


def requirements_file(parent: str, name: str) -> bool:
    """Whether the file name in the directory parent is a pip requirements file."""
    return name.endswith(".txt") and (
        name.startswith("requirements")
        or name.endswith("requirements.txt")
        or parent.rpartition("/")[2] == "requirements"
    )


def _pyproject(text: str, _: str) -> Parsed:
    doc = tomllib.loads(text)
    out = Parsed()
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


def _setup_cfg(text: str, _: str) -> Parsed:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.read_string(text)
    out = Parsed()
    out.runtime += _requirement_names(parser.get("options", "install_requires", fallback=""))
    if parser.has_section("options.extras_require"):
        for _, value in parser.items("options.extras_require"):
            out.dev += _requirement_names(value)
    out.labels |= {_SETUP_CFG_SECTIONS[s] for s in parser.sections() if s in _SETUP_CFG_SECTIONS}
    out.labels |= _labels(out.runtime + out.dev, _PY_DEPS, _python_name)
    return out


def _requirements_txt(text: str, name: str) -> Parsed:
    names = []
    for line in text.splitlines():
        line = line.partition(" #")[0].strip()
        if line and not line.startswith(("#", "-")) and "://" not in line:
            names += _requirement_names([line])
    out = Parsed()
    if any(word in name.lower() for word in _DEV_WORDS):
        out.dev = names
    else:
        out.runtime = names
    out.labels = _labels(names, _PY_DEPS, _python_name)
    return out


def _pipfile(text: str, _: str) -> Parsed:
    doc = tomllib.loads(text)
    out = Parsed(_names(_table(doc.get("packages"))), _names(_table(doc.get("dev-packages"))))
    out.labels = _labels(out.runtime + out.dev, _PY_DEPS, _python_name)
    return out


def _package_json(text: str, _: str) -> Parsed:
    doc = _table(json.loads(text))
    out = Parsed(
        _names(_table(doc.get("dependencies"))), _names(_table(doc.get("devDependencies")))
    )
    out.labels = _labels(out.runtime + out.dev, _JS_DEPS, str.lower)
    out.kind, out.commands = "npm scripts", _names(_table(doc.get("scripts")))
    return out


def _cargo(text: str, _: str) -> Parsed:
    doc = tomllib.loads(text)
    workspace = _table(_table(doc.get("workspace")).get("dependencies"))
    out = Parsed(_names(_table(doc.get("dependencies"))) + _names(workspace))
    out.dev = _names(_table(doc.get("dev-dependencies")))
    out.dev += _names(_table(doc.get("build-dependencies")))
    out.labels = _labels(out.runtime + out.dev, _RUST_DEPS, str.lower)
    return out


def _go_mod(text: str, _: str) -> Parsed:
    out = Parsed()
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


def _gemfile(text: str, _: str) -> Parsed:
    out = Parsed()
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


def _composer(text: str, _: str) -> Parsed:
    doc = _table(json.loads(text))

    def wanted(names: list[str]) -> list[str]:
        return [name for name in names if name != "php" and not name.startswith("ext-")]

    out = Parsed(wanted(_names(_table(doc.get("require")))))
    out.dev = wanted(_names(_table(doc.get("require-dev"))))
    out.labels = _labels(out.runtime + out.dev, _PHP_DEPS, str.lower)
    return out


def _jvm(text: str, _: str) -> Parsed:
    lowered = text.lower()
    return Parsed(labels={label for mark, label in _JVM_MARKS.items() if mark in lowered})


def _makefile(text: str, _: str) -> Parsed:
    targets = []
    for line in text.splitlines():
        head, colon, rest = line.partition(":")
        # "X = a:b" and "X := value" are variables; indented lines are recipes.
        if colon and line[:1] not in ("", " ", "\t", ".", "#") and "=" not in head + rest[:1]:
            targets += [name for name in head.split() if _NAME.fullmatch(name)]
    return Parsed(kind="Make targets", commands=targets)


_PARSERS: dict[str, Callable[[str, str], Parsed]] = {
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
