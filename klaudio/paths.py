"""Where klaudio keeps its config, data, state and socket: one place, built on platformdirs."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from klaudio.errors import InvalidArgument

# A Unix socket's address (sun_path) holds 108 bytes on Linux, the last of them a NUL.
SOCKET_PATH_MAX = 107


@dataclass(frozen=True)
class Paths:
    """The directories and files of one klaudio instance."""

    config_file: Path
    data_dir: Path
    state_dir: Path
    runtime_dir: Path

    @property
    def db_file(self) -> Path:
        return self.data_dir / "klaudio.db"

    @property
    def tasks_dir(self) -> Path:
        return self.data_dir / "tasks"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "klaudiod.sock"

    @property
    def token_file(self) -> Path:
        return self.state_dir / "token"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "klaudiod.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "klaudiod.log"

    @property
    def instance_id(self) -> str:
        """A stable id of this instance, labelled on its containers.

        Instances sharing a Docker engine (other users, KLAUDIO_HOMEs, test runs) never touch
        each other's containers.
        """
        import hashlib

        return hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]


def resolve(env: Mapping[str, str] | None = None, config_file: str | None = None) -> Paths:
    """Return the paths for this user, or everything under $KLAUDIO_HOME when it is set.

    Args:
        env: the environment to read (default: os.environ).
        config_file: an explicit config file (the --config flag), overriding the default one.
    """
    env = os.environ if env is None else env
    home = env.get("KLAUDIO_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        paths = Paths(root / "config.yaml", root / "data", root / "state", root / "run")
    else:
        import platformdirs

        dirs = platformdirs.PlatformDirs("klaudio", appauthor=False)
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR platformdirs falls back to /tmp/runtime-UID and says so;
            # ensure_private_dir makes that directory private either way.
            warnings.simplefilter("ignore")
            runtime_dir = Path(dirs.user_runtime_dir)
        paths = Paths(
            Path(dirs.user_config_dir) / "config.yaml",
            Path(dirs.user_data_dir),
            Path(dirs.user_state_dir),
            runtime_dir,
        )
    chosen = config_file or env.get("KLAUDIO_CONFIG")
    if chosen:
        paths = Paths(Path(chosen).expanduser().absolute(), *_dirs(paths))
    return paths


def check_socket(paths: Paths) -> Path:
    """The instance's socket path, once it is known to fit in a Unix socket address.

    Raises:
        InvalidArgument: naming the path, its length, the limit and how to shorten it.
    """
    size = len(os.fsencode(paths.socket))
    if size > SOCKET_PATH_MAX:
        raise InvalidArgument(
            f"the socket path {paths.socket} is {size} bytes, over the limit of "
            f"{SOCKET_PATH_MAX} bytes for Unix sockets; set KLAUDIO_HOME to a shorter directory "
            f"(the socket is $KLAUDIO_HOME/run/klaudiod.sock)"
        )
    return paths.socket


def _dirs(paths: Paths) -> tuple[Path, Path, Path]:
    return paths.data_dir, paths.state_dir, paths.runtime_dir


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable by this user only (0700), fixing looser modes."""
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path
