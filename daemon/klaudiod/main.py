"""klaudiod: the daemon process (foreground), its start-up, signals and shutdown."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
import time

from klaudio import __version__
from klaudio.config import Config, load
from klaudio.errors import KlaudioError
from klaudio.paths import Paths, check_socket, ensure_private_dir, resolve
from klaudiod import server
from klaudiod.db import Db
from klaudiod.runtime import Runtime
from klaudiod.scheduler import Scheduler
from klaudiod.services.checkpoints import CheckpointService
from klaudiod.services.daemon import DaemonService
from klaudiod.services.files import FileService
from klaudiod.services.images import ImageService
from klaudiod.services.plans import PlanService
from klaudiod.services.repos import RepoService
from klaudiod.services.stream import StreamService
from klaudiod.services.tasks import TaskService
from klaudiod.services.teams import TeamService
from klaudiod.stream import Bus

log = logging.getLogger("klaudiod")


async def serve(config: Config, paths: Paths) -> None:
    """Run the daemon until SIGTERM, SIGINT or a StopDaemon call."""
    check_socket(paths)  # before anything is created: a path the OS cannot bind is refused
    for folder in (paths.data_dir, paths.state_dir):
        ensure_private_dir(folder)
    pid_fd = _claim_pid_file(paths)
    token = server.ensure_token(paths.token_file)
    db = Db()
    await db.open(paths.db_file)
    bus = Bus()
    runtime = Runtime(paths.instance_id)
    scheduler = Scheduler(config, paths, db, bus, runtime)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    grpc_server = await server.start(
        paths,
        token,
        {
            "tasks": TaskService(scheduler, db),
            "stream": StreamService(db, bus),
            "daemon": DaemonService(config, paths, db, scheduler, time.time(), stopping.set),
            "images": ImageService(config, runtime),
            "checkpoints": CheckpointService(scheduler, db),
            "plans": PlanService(scheduler, db),
            "teams": TeamService(scheduler),
            "repos": RepoService(db),
            "files": FileService(db, paths.tasks_dir, paths.state_dir / "scratch"),
        },
    )
    log.info("klaudiod %s listening on %s (pid %d)", __version__, paths.socket, os.getpid())
    await scheduler.recover()
    await stopping.wait()
    log.info("stopping; agents keep running and are adopted on the next start")
    await grpc_server.stop(grace=0.5)
    await scheduler.close()
    await db.close()
    paths.socket.unlink(missing_ok=True)
    # Emptied rather than removed: a daemon already waiting on its lock keeps the same file.
    os.ftruncate(pid_fd, 0)
    os.close(pid_fd)


def _claim_pid_file(paths: Paths) -> int:
    """Lock the pid file for this process's lifetime and write our pid into it.

    The lock, not the pid, decides: two daemons started at once cannot both serve an instance,
    and a stale file left by a crash never blocks a start. Returns the open descriptor.
    """
    fd = os.open(paths.pid_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise KlaudioError(
            f"another klaudiod (pid {other}) already serves {paths.socket}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def main(argv: list[str] | None = None) -> None:
    """Entry point of the klaudiod console script."""
    parser = argparse.ArgumentParser(
        prog="klaudiod",
        description="The klaudio daemon, in the foreground (for service managers). "
        "Usually `klaudio` starts it for you.",
    )
    parser.add_argument("--config", help="config file (default: the platform config dir)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version=f"klaudiod {__version__}")
    args = parser.parse_args(argv)
    try:
        paths = resolve(config_file=args.config)
        overrides = {"daemon.log_level": args.log_level} if args.log_level else {}
        config = load(paths, overrides=overrides)
    except KlaudioError as exc:
        print(f"klaudiod: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    logging.basicConfig(
        level=config.daemon.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config, paths))
    except KlaudioError as exc:
        log.error("%s", exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
