"""The agent image: found in the installed package, hashed, and built when missing or stale."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from klaudio.errors import InvalidArgument, NotFound
from klaudiod.runtime import Runtime

LABEL_HASH = "klaudio.content-hash"
LABEL_BASE = "klaudio.base-image"
SHIPPED = ("Dockerfile", "install-node.sh", "klaudio-agent")


def source_dir() -> Path:
    """The agent-docker files: inside the installed package, or the checkout's agent-docker/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "agent_docker", here.parent.parent / "agent-docker"):
        if (candidate / "Dockerfile").is_file():
            return candidate
    raise NotFound("the agent image's files (agent-docker/) are not installed")


def content_hash(base_image: str, extra_ca_file: str = "") -> str:
    """A hash of what the image is built from; the image is rebuilt when it changes.

    It covers the shipped files, the base image's name and the extra CA certificates.
    """
    directory = source_dir()
    digest = hashlib.sha256()
    for name in SHIPPED:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    digest.update(base_image.encode() + b"\0" + _extra_ca(extra_ca_file))
    return digest.hexdigest()[:16]


def is_current(runtime: Runtime, tag: str, base_image: str, extra_ca_file: str = "") -> bool:
    """Whether an image with this tag exists and was built from exactly these inputs."""
    labels = runtime.has_image(tag)
    expected = content_hash(base_image, extra_ca_file)
    return labels is not None and labels.get(LABEL_HASH) == expected


def _extra_ca(path: str) -> bytes:
    if not path:
        return b""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidArgument(f"extra CA file {path} does not exist")
    return file.read_bytes()


def build(runtime: Runtime, tag: str, base_image: str, extra_ca_file: str = "") -> Iterator[str]:
    """Build the agent image from the shipped files, yielding the build's output lines."""
    src = source_dir()
    with tempfile.TemporaryDirectory(prefix="klaudio-image-") as ctx:
        for name in SHIPPED:
            shutil.copy2(src / name, Path(ctx) / name)
        (Path(ctx) / "extra-ca.crt").write_bytes(_extra_ca(extra_ca_file))
        yield from runtime.build(
            ctx,
            tag,
            buildargs={"BASE_IMAGE": base_image},
            labels={LABEL_HASH: content_hash(base_image, extra_ca_file), LABEL_BASE: base_image},
        )
