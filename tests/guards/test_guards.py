"""Guards: committed stubs and completions match their sources; the CLI starts light."""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh = tmp_path / "klaudio/rpc/v1"
    committed = ROOT / "klaudio/rpc/v1"
    names = sorted(p.name for p in fresh.glob("*_pb2*"))
    assert names == sorted(p.name for p in committed.glob("*_pb2*"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"stale stubs, run `make gen`: {mismatch + errors}"


def test_completion_scripts_match_the_cli(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_completions.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for path in (ROOT / "completions").iterdir():
        assert (tmp_path / path.name).read_text() == path.read_text(), f"run `make gen`: {path}"
    assert {p.name for p in tmp_path.iterdir()} == {"klaudio.bash", "_klaudio", "klaudio.fish"}


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [("klaudio ta", 1, {"task"}), ("klaudio task l", 2, {"list", "logs"})],
)
def test_completion_answers_from_the_cli(words: str, cword: int, expected: set[str]) -> None:
    klaudio = Path(sys.executable).parent / "klaudio"
    env = {
        **os.environ,
        "_KLAUDIO_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(cword),
    }
    result = subprocess.run([str(klaudio)], env=env, capture_output=True, text=True, check=True)
    assert set(result.stdout.split()) == expected


def test_help_loads_no_heavy_modules() -> None:
    probe = (
        "import sys\n"
        "sys.argv = ['klaudio', '--help']\n"
        "from klaudio.cli.main import run\n"
        "assert run() == 0\n"
        "import json\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    heavy = {"grpc", "docker", "peewee", "dulwich", "yaml", "klaudiod", "rich", "google.protobuf"}
    assert not {m for m in loaded if m.split(".")[0] in heavy or m in heavy}
    assert "Usage: klaudio" in result.stdout


def test_cli_never_imports_the_daemon_and_daemon_never_imports_the_cli() -> None:
    daemon_import = re.compile(r"^\s*(from|import)\s+klaudiod\b", re.MULTILINE)
    client_import = re.compile(r"^\s*(from|import)\s+klaudio\.(cli|client)\b", re.MULTILINE)
    for path in (ROOT / "klaudio").rglob("*.py"):
        assert not daemon_import.search(path.read_text()), f"{path} imports the daemon"
    for path in (ROOT / "daemon/klaudiod").rglob("*.py"):
        assert not client_import.search(path.read_text()), f"{path} imports the client side"


def test_proto_field_numbers_are_never_reused() -> None:
    """Every field ever released keeps its number; a removed one leaves its number unused."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from snapshot_proto_fields import SNAPSHOT, current

    released = json.loads(SNAPSHOT.read_text())
    now = current()
    for message, fields in released.items():
        by_number = {number: name for name, number in now.get(message, {}).items()}
        for name, number in fields.items():
            assert by_number.get(number, name) == name, (
                f"{message}: number {number} of removed field {name!r} reused by "
                f"{by_number[number]!r}; reserve it instead"
            )
            if name in now.get(message, {}):
                assert now[message][name] == number, f"{message}.{name} changed its number"
    new = {m: set(f) - set(released.get(m, {})) for m, f in now.items()}
    assert not any(new.values()), (
        f"new fields {new}: run scripts/snapshot_proto_fields.py and commit tests/data/"
    )


def test_every_lifecycle_event_kind_has_one_definition_and_a_renderer() -> None:
    from typing import get_args, get_type_hints

    from klaudio import events
    from klaudio.cli.render import LIFECYCLE_HANDLERS, Renderer

    declared = {get_args(get_type_hints(t)["type"])[0] for t in get_args(events.Lifecycle)}
    assert declared == events.KINDS
    assert set(LIFECYCLE_HANDLERS) == events.KINDS
    for name in LIFECYCLE_HANDLERS.values():
        assert callable(getattr(Renderer, name)), name
