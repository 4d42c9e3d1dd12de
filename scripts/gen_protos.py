"""Regenerate the committed gRPC stubs in klaudio/rpc/v1 from protos/ with pinned generators."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = Path("klaudio/rpc/v1")
# The generators are pinned: a different version may produce different code.
PINNED = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}


def check_pins() -> None:
    """Refuse to run with generator versions other than the pinned ones."""
    for dist, version in PINNED.items():
        found = metadata.version(dist)
        if found != version:
            sys.exit(f"gen_protos: {dist} {found} is installed; pinned is {version}")


def generate(out_root: Path) -> list[Path]:
    """Generate stubs for every proto under protos/ into out_root; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    # protoc finds the mypy plugins by name on PATH: put this interpreter's scripts first.
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("gen_protos: protoc failed")
    return sorted((out_root / OUT_PACKAGE).glob("*_pb2*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="root to write klaudio/rpc/v1 under")
    args = parser.parse_args()
    check_pins()
    with tempfile.TemporaryDirectory() as tmp:
        written = generate(Path(tmp))
        target = args.out / OUT_PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob("*_pb2*"):
            stale.unlink()
        for path in written:
            shutil.copy2(path, target / path.name)
    print(f"gen_protos: wrote {len(written)} files to {target}")


if __name__ == "__main__":
    main()
