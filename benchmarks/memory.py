"""Repository memory on a generated 100,000-file repository: summarize() against `find` and os.walk.

    .venv/bin/python benchmarks/memory.py [--files N] [--repeat N] [--keep]

Generates a repository in a temporary directory (Python, TypeScript, Go, Rust, docs and config in
nested directories, a node_modules at the top and another one level down, a .git, and the usual
manifests), then times memory.summarize(): once cold (a fresh process, the first pass after the
generation; the page cache still holds the tree, as it does for a clone just made), the median
of --repeat warm passes, and the median with the tree one level down (node_modules and .git are
then below the top: ignored directories are skipped at any depth, so this should cost what the
warm pass does). Baselines run in the same process and run: `find . -type f | wc -l` (names
only, in C) and os.walk counting files (names only, not link-safe). The target is summarize()
under 2 s for 100,000 files in each of those cases; the exit status is 1 when it is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    from klaudiod import memory
except ImportError as exc:  # a usage error, not a measurement
    sys.exit(f"benchmarks: {exc}; run it with the project's venv: .venv/bin/python {__file__}")

TARGET_S = 2.0

# (directory, extensions, share of the files, files per directory)
MIX = [
    ("src/app", ("py",), 0.22, 25),
    ("tests", ("py",), 0.08, 25),
    ("web/src", ("ts", "tsx", "css"), 0.15, 20),
    ("services", ("go",), 0.08, 15),
    ("engine/src", ("rs",), 0.05, 15),
    ("docs", ("md", "rst"), 0.04, 30),
    ("config", ("yaml", "json", "toml"), 0.02, 40),
    ("scripts", ("sh",), 0.01, 50),
    ("node_modules", ("js", "json", "md", "ts"), 0.25, 12),  # not entered (top level)
    ("web/node_modules", ("js", "json"), 0.05, 12),  # not entered (one level down)
    (".git/objects", ("",), 0.05, 60),  # not entered
]

MANIFESTS = {
    "README.md": "# shop\n",
    "CLAUDE.md": "Run `make test`.\n",
    "LICENSE": "MIT\n",
    "Makefile": "test:\n\tpytest\nlint:\n\truff check\n",
    "pyproject.toml": '[project]\nname = "shop"\ndependencies = ["django>=5", "celery"]\n'
    '[dependency-groups]\ndev = ["pytest", "ruff"]\n[tool.ruff]\nline-length = 100\n',
    "web/package.json": json.dumps(
        {
            "scripts": {"dev": "vite", "build": "vite build", "test": "vitest"},
            "dependencies": {"react": "^18", "react-dom": "^18"},
            "devDependencies": {"vite": "^5", "typescript": "^5", "vitest": "^1"},
        }
    ),
    "package.json": json.dumps({"private": True, "devDependencies": {"prettier": "^3"}}),
    "services/go.mod": "module example.com/svc\n\nrequire github.com/gin-gonic/gin v1.9.1\n",
    "engine/Cargo.toml": '[package]\nname = "engine"\n[dependencies]\ntokio = "1"\n',
    ".github/workflows/ci.yml": "on: push\n",
    "Dockerfile": "FROM python:3.12\n",
}


def generate(root: Path, total: int) -> None:
    """total files under root, in the mix above; manifests included."""
    for rel, text in MANIFESTS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    left = total - len(MANIFESTS)
    counts = [int(left * share) for _, _, share, _ in MIX]
    counts[0] += left - sum(counts)
    for (base, exts, _, per_dir), count in zip(MIX, counts, strict=True):
        for i in range(count):
            group, index = divmod(i, per_dir)
            directory = root / base / f"pkg{group // 40}" / f"mod{group % 40}"
            if index == 0:
                directory.mkdir(parents=True, exist_ok=True)
            ext = exts[i % len(exts)]
            name = f"f{index}.{ext}" if ext else f"{i:038x}"
            with open(directory / name, "wb") as file:
                file.write(b"x\n")


def timed(work: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return times


def cold(root: Path) -> tuple[float, int]:
    """summarize() in a fresh process: its seconds (imports excluded) and the files counted."""
    code = (
        "import json, sys, time\nfrom pathlib import Path\nfrom klaudiod import memory\n"
        "start = time.perf_counter()\nsummary = memory.summarize(Path(sys.argv[1]))\n"
        "print(json.dumps([time.perf_counter() - start, summary.files]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], check=True, capture_output=True, text=True
    )
    seconds, files = json.loads(out.stdout)
    return float(seconds), int(files)


def find_count(root: Path) -> int:
    out = subprocess.run(
        "find . -type f | wc -l", shell=True, cwd=root, check=True, capture_output=True, text=True
    )
    return int(out.stdout)


def walk_count(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def line(label: str, times: list[float]) -> str:
    figures = f"{statistics.median(times):6.3f} s  (min {min(times):.3f}, max {max(times):.3f})"
    return f"  {label:<50} {figures}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files to generate")
    parser.add_argument("--repeat", type=int, default=5, help="warm runs of each command")
    parser.add_argument("--keep", action="store_true", help="keep the generated repository")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="klaudio-bench-memory-"))
    root = base / "repo"
    root.mkdir()
    try:
        start = time.perf_counter()
        generate(root, args.files)
        made = time.perf_counter() - start
        print(f"repository memory: {args.files:,} files generated in {made:.1f} s under {root}")
        print(f"  machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")

        cold_s, counted = cold(root)
        summary = memory.summarize(root)
        warm = timed(lambda: memory.summarize(root), args.repeat)
        found = timed(lambda: find_count(root), args.repeat)
        walked = timed(lambda: walk_count(root), args.repeat)
        # The same tree one level down: node_modules and .git are then below the top, where
        # they are skipped as well (safefs.scan's enter), not walked and dropped.
        deeper = timed(lambda: memory.summarize(base), args.repeat)

        print(f"  {'summarize(), cold: fresh process, first pass':<50} {cold_s:6.3f} s")
        print(line(f"summarize(), warm: median of {args.repeat}", warm))
        print(line("summarize(), repo one level down: pruned at depth", deeper))
        print(line("baseline: find . -type f | wc -l", found))
        print(line("baseline: os.walk, names only, not link-safe", walked))
        print(
            f"  files: {find_count(root):,} on disk, {counted:,} summarised "
            f"(not looked into: {', '.join(summary.ignored)}; web/node_modules neither)"
        )
        rendered = summary.render()
        print(f"  render(): {len(rendered.splitlines())} lines, {len(rendered.encode()):,} bytes")
        worst = max(cold_s, statistics.median(warm), statistics.median(deeper))
        verdict = "met" if worst < TARGET_S else "MISSED"
        print(f"  target: summarize() < {TARGET_S:.0f} s for 100,000 files: {verdict}")
        return 0 if worst < TARGET_S else 1
    finally:
        if args.keep:
            print(f"  kept: {root}")
        else:
            shutil.rmtree(base)


if __name__ == "__main__":
    sys.exit(main())
