"""Record every proto message's field numbers in tests/data/proto_fields.json (append-only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests/data/proto_fields.json"


def current() -> dict[str, dict[str, Any]]:
    """Message or enum full name -> {field or value name: number}, for all of klaudio.rpc.v1."""
    from klaudio.rpc.v1 import (
        checkpoints_pb2,
        daemon_pb2,
        files_pb2,
        images_pb2,
        plans_pb2,
        repos_pb2,
        stream_pb2,
        tasks_pb2,
        teams_pb2,
    )

    found: dict[str, dict[str, Any]] = {}
    modules = (
        checkpoints_pb2,
        daemon_pb2,
        files_pb2,
        images_pb2,
        plans_pb2,
        repos_pb2,
        stream_pb2,
        tasks_pb2,
        teams_pb2,
    )
    for module in modules:
        descriptor = module.DESCRIPTOR
        for message in descriptor.message_types_by_name.values():
            found[message.full_name] = {f.name: f.number for f in message.fields}
        for enum in descriptor.enum_types_by_name.values():
            found[enum.full_name] = {v.name: v.number for v in enum.values}
    return found


def main() -> None:
    old = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    merged = {name: {**old.get(name, {}), **fields} for name, fields in current().items()}
    for name, fields in old.items():
        merged.setdefault(name, fields)
    SNAPSHOT.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"snapshot_proto_fields: {len(merged)} messages and enums in {SNAPSHOT}")


if __name__ == "__main__":
    main()
