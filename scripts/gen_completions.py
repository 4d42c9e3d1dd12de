"""Regenerate the shell completion scripts in completions/ from the installed klaudio CLI."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELLS = {"bash": "klaudio.bash", "zsh": "_klaudio", "fish": "klaudio.fish"}


def script(shell: str) -> str:
    """The completion script klaudio prints for shell."""
    klaudio = Path(sys.executable).parent / "klaudio"
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = subprocess.run(
        [str(klaudio), "--show-completion", shell],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return result.stdout if result.stdout.endswith("\n") else result.stdout + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "completions")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for shell, name in SHELLS.items():
        (args.out / name).write_text(script(shell))
    print(f"gen_completions: wrote {len(SHELLS)} scripts to {args.out}")


if __name__ == "__main__":
    main()
