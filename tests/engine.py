"""A private, restartable Docker engine that tests may stop, kill and start again.

(PYTEST_DONT_REWRITE: a plugin, imported by test modules too; its asserts only narrow types.)

Stopping the shared engine would disturb everything else on the machine, so tests that need the
engine to go away mid-task get their own `dockerd`: its own socket, data root, exec root (and so
its own containerd, which that dockerd starts and stops), pid file and cgroup parent. The main
engine's networking is left alone: no iptables, no IP forwarding or masquerading, and a bridge of
its own, kl-engineN with a /30, which tests do not use (their containers use host networking).
Never `--bridge=none`: a dockerd so started deletes the host's docker0, the main engine's bridge
(dockerd 20.10, removeDefaultBridgeInterface). It needs root, like any dockerd.

Layout (short paths: unix socket paths must stay under 108 bytes), per slot N (0..SLOTS-1):
    /var/tmp/kl-engine/N/docker.sock       the API socket; `host` is unix://...
    /var/tmp/kl-engine/N/docker.pid        dockerd's pid file
    /var/tmp/kl-engine/N/dockerd.log       dockerd's (and its containerd's) log, one per session
    /var/tmp/kl-engine/N/daemon.json       an empty config: /etc/docker/daemon.json is not read
    /var/tmp/kl-engine/N/exec/             exec root; containerd/ holds its containerd's socket
    /var/tmp/kl-engine/N/lock              flock held by the session using slot N
    /var/lib/klaudio-test-engine/N/        data root, kept across runs so images are reused
A second test session running at the same time takes the next free slot.

The private engine cannot pull: the agent image (and the base image) come from the main engine
through `docker save | docker -H PRIVATE load`, only when the private copy's image ID differs.

What the engine does when stopped (docker 20.10, no live-restore):
- stop() (SIGTERM): dockerd stops every running container first, as `docker stop` would (the
  container's stop signal, then SIGKILL after its stop timeout, 10 s by default), then stops its
  containerd and exits. The containers stay listed, exited: 143 when PID 1 passed SIGTERM on
  (`--init`, as klaudio's agents run), 137 when it had to be killed (a shell as PID 1).
- kill() (SIGKILL): its containerd dies with it (parent-death signal), but the containers keep
  running under their shims until the engine starts again; then, before it answers, it stops
  them the same way (so that start takes up to their stop timeout) and reports 143/137.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

import pytest

from tests.needs import need

AGENT_IMAGE = os.environ.get("KLAUDIO_TEST_IMAGE", "klaudio-agent:test")
BASE_IMAGE = os.environ.get("KLAUDIO_TEST_BASE_IMAGE", "klaudio-base:bookworm")
EXTRA_CA = os.environ.get("KLAUDIO_TEST_EXTRA_CA", "/etc/ssl/certs/ca-certificates.crt")
RUN_BASE = Path("/var/tmp/kl-engine")
DATA_BASE = Path("/var/lib/klaudio-test-engine")
SLOTS = 4
# Generous: a start after kill() first stops the containers left running (their stop timeout).
START_TIMEOUT = 90.0
# dockerd waits for its containers' stop timeouts (10 s by default) before it exits.
STOP_TIMEOUT = 60.0
POLL_SECONDS = 0.1


class EngineError(RuntimeError):
    """The private engine did not do what was asked of it in time."""


def pid_alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _processes(match: Callable[[list[str]], bool]) -> list[int]:
    """The pids of live processes whose argv matches."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            argv = _argv(pid)
            if argv and match(argv) and pid_alive(pid):
                found.append(pid)
    return found


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of pids is alive; return those still alive at the deadline."""
    left = [p for p in pids if pid_alive(p)]
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        left = [p for p in left if pid_alive(p)]
    return left


def _docker_env() -> dict[str, str]:
    """The environment for docker commands aimed at an explicit -H (no context, no host)."""
    return {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}


def image_id(tag: str, host: str | None = None) -> str | None:
    """The ID of the image tagged so on the engine at host (None: the main engine), or None."""
    where = ["-H", host] if host else []
    result = subprocess.run(
        ["docker", *where, "image", "inspect", "-f", "{{.Id}}", tag],
        env=_docker_env() if host else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


class PrivateEngine:
    """A dockerd of the tests' own, which they may stop, kill and start again.

    Nothing happens on construction. start() takes a free slot (a file lock held until close())
    and starts dockerd; stop(), kill() and restart() act on that slot's dockerd; close() removes
    the containers it ran, stops it and frees the slot. As a context manager: start, then close.
    """

    def __init__(
        self,
        slot: int | None = None,
        *,
        run_base: Path = RUN_BASE,
        data_base: Path = DATA_BASE,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._wanted_slot = slot
        self._run_base = run_base
        self._data_base = data_base
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.slot: int | None = None
        self._lock: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._answered = False  # in this session: only then can it have made containers
        # Seconds the last start took to answer, and the last image load (None: reused).
        self.start_seconds: float | None = None
        self.image_load_seconds: float | None = None
        # tag -> image ID this engine got from the main engine (which may since have rebuilt it).
        self.images: dict[str, str] = {}

    # -- where things are ---------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        if self.slot is None:
            raise EngineError("the private engine has no slot yet: start() it first")
        return self._run_base / str(self.slot)

    @property
    def data_root(self) -> Path:
        if self.slot is None:
            raise EngineError("the private engine has no slot yet: start() it first")
        return self._data_base / str(self.slot)

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "dockerd.log"

    @property
    def bridge(self) -> str:
        """The network bridge of this engine's own (the main engine's docker0 is not touched)."""
        return f"kl-engine{self.slot}"

    @property
    def host(self) -> str:
        """The DOCKER_HOST URL of this engine."""
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        """The pid of this engine's dockerd while it runs."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return None

    def _containerd_pids(self) -> list[int]:
        config = str(self.exec_root / "containerd" / "containerd.toml")
        return _processes(lambda argv: os.path.basename(argv[0]) == "containerd" and config in argv)

    def _stray_dockerds(self) -> list[int]:
        """dockerd processes using this slot that this object did not start (a crashed run's)."""
        flag = f"--exec-root={self.exec_root}"
        return [
            pid
            for pid in _processes(
                lambda argv: os.path.basename(argv[0]) == "dockerd" and flag in argv
            )
            if pid != self.pid
        ]

    # -- life cycle ---------------------------------------------------------------------------

    def open(self) -> PrivateEngine:
        """Take a free slot (or the one asked for) and prepare its directories."""
        if self._lock is not None:
            return self
        if os.geteuid() != 0:
            raise EngineError("a private Docker engine needs root")
        if shutil.which("dockerd") is None:
            raise EngineError("dockerd is not installed")
        slots = range(SLOTS) if self._wanted_slot is None else [self._wanted_slot]
        for slot in slots:
            run_dir = self._run_base / str(slot)
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = open(run_dir / "lock", "wb")  # noqa: SIM115 - held until close()
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock, self.slot = lock, slot
            break
        else:
            raise EngineError(f"every private engine slot {list(slots)} is in use")
        self.data_root.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "daemon.json").write_text("{}\n")
        self.log_file.write_bytes(b"")
        self._log_offset = 0
        return self

    def start(self) -> PrivateEngine:
        """Start dockerd (unless it runs) and wait until it answers."""
        self.open()
        started = time.monotonic()
        if self.pid is None:
            self._clear_stale()
            self._ensure_bridge()
            with open(self.log_file, "ab") as log:
                self._log_offset = log.tell()
                log.write(f"=== tests: starting dockerd at {time.ctime()}\n".encode())
                log.flush()
                self._process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._dockerd_env(),
                    start_new_session=True,  # a ^C to pytest does not reach it
                )
        assert self._process is not None
        deadline = started + self.start_timeout
        while not self.answers():
            code = self._process.poll()
            if code is not None:
                raise EngineError(f"dockerd exited with {code} while starting:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                with contextlib.suppress(EngineError):
                    self.kill()
                raise EngineError(f"dockerd did not answer within {self.start_timeout:g}s:\n{tail}")
            time.sleep(POLL_SECONDS)
        self._answered = True
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float | None = None) -> None:
        """SIGTERM dockerd and wait for it (and its containerd) to exit.

        dockerd stops its running containers first (their stop signal, SIGKILL after their stop
        timeout), so once this returns the containers it ran are dead.
        """
        self._end(signal.SIGTERM, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL dockerd; its containerd dies with it, its containers keep running until the
        engine starts again, which then stops them before it answers."""
        self._end(signal.SIGKILL, self.stop_timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Remove every container of this engine, stop it and free its slot."""
        if self._lock is None:
            return
        try:
            try:
                if self._answered:
                    self.start()  # it may have been left stopped: start it to remove them
                    self.remove_all_containers()
            finally:
                self.stop()
                self._unmount_leftovers()
                self._remove_bridge()
        finally:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> PrivateEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- using it -----------------------------------------------------------------------------

    def answers(self) -> bool:
        """Whether the engine answers on its socket now."""
        if not self.socket.exists():
            return False
        try:
            result = self.docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0 and bool(result.stdout.strip())

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this engine."""
        result = subprocess.run(
            ["docker", "-H", self.host, *args],
            env=_docker_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and result.returncode != 0:
            raise EngineError(
                f"docker -H {self.host} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr.strip()}"
            )
        return result

    def remove_all_containers(self) -> int:
        """Remove (killing them first) all containers of this engine; return how many."""
        found = self.docker("ps", "-aq").stdout.split()
        if found:
            self.docker("rm", "-f", *found)
        return len(found)

    def ensure_images(self, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        """Give this engine the main engine's images, loading only those whose ID differs.

        Sets image_load_seconds (None when every image was already there).
        """
        needed = list(required)
        stale: list[str] = []
        for tag in [*needed, *optional]:
            main = image_id(tag)
            if main is None:
                if tag in needed:
                    raise EngineError(f"the main engine has no image {tag} to give the private one")
                continue
            self.images[tag] = main
            if image_id(tag, self.host) != main:
                stale.append(tag)
        self.image_load_seconds = None
        if not stale:
            return
        started = time.monotonic()
        # One archive: the layers the images share travel once.
        save = subprocess.Popen(
            ["docker", "save", *stale], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert save.stdout is not None and save.stderr is not None
        try:
            load = subprocess.run(
                ["docker", "-H", self.host, "load", "-q"],
                env=_docker_env(),
                stdin=save.stdout,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        finally:
            save.stdout.close()
            save_err = save.stderr.read().decode(errors="replace")
            save.wait(timeout=60)
        if save.returncode != 0 or load.returncode != 0:
            raise EngineError(
                f"docker save {' '.join(stale)} | docker -H {self.host} load failed:\n"
                f"{save_err.strip()}\n{load.stderr.strip()}"
            )
        self.image_load_seconds = time.monotonic() - started
        # The versions these tags named before are dangling now.
        self.docker("image", "prune", "-f")
        for tag in stale:
            loaded = image_id(tag, self.host)
            if loaded is None:
                raise EngineError(f"the private engine still lacks {tag} after loading it")
            self.images[tag] = loaded  # the main engine may have rebuilt it meanwhile

    def log_tail(self, lines: int = 40) -> str:
        """The end of this engine's log since its last start."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    # -- inside -------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        return [
            "dockerd",
            f"--config-file={self.run_dir / 'daemon.json'}",
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pid_file}",
            # The main engine's networking stays untouched: containers use host networking.
            # A bridge of its own: with --bridge=none dockerd would delete the host's docker0.
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            # Containers' cgroups under a parent of their own, whatever the main engine uses.
            "--exec-opt=native.cgroupdriver=cgroupfs",
            f"--cgroup-parent=/klaudio-test-engine-{self.slot}",
        ]

    @staticmethod
    def _dockerd_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        path = env.get("PATH", "").split(":")
        env["PATH"] = ":".join([*path, *(p for p in ("/usr/sbin", "/sbin") if p not in path)])
        return env

    def _clear_stale(self) -> None:
        """Put away what a crashed run left in this slot: its dockerd, pid file and socket."""
        strays = self._stray_dockerds()
        for pid in strays:
            os.kill(pid, signal.SIGTERM)
        left = _wait_gone(strays, self.stop_timeout)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if _wait_gone(left, 10):
            raise EngineError(f"a stale dockerd of {self.run_dir} would not exit: {left}")
        # A pid file naming a live process (a reused pid) would stop dockerd from starting.
        self.pid_file.unlink(missing_ok=True)
        # A containerd of ours that outlived its dockerd is reused by the next one; a pid file
        # naming any other process would make dockerd wait for a containerd that is not there.
        containerd_pid = self.exec_root / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            if int(containerd_pid.read_text().strip()) not in self._containerd_pids():
                containerd_pid.unlink()
        self.socket.unlink(missing_ok=True)

    def _bridge_exists(self) -> bool:
        return Path("/sys/class/net", self.bridge).exists()

    def _ensure_bridge(self) -> None:
        """Create this engine's bridge with a /30 of its own (dockerd adopts its address)."""
        if not self._bridge_exists():
            self._ip("link", "add", "name", self.bridge, "type", "bridge")
        has_address = self._ip("-4", "-o", "addr", "show", "dev", self.bridge).strip()
        if not has_address:
            self._ip("addr", "add", f"10.199.{self.slot}.1/30", "dev", self.bridge)

    @staticmethod
    def _ip(*args: str) -> str:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EngineError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _remove_bridge(self) -> None:
        if self._bridge_exists():
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)

    def _unmount_leftovers(self) -> None:
        """Unmount what a dockerd of this slot left mounted after it was killed.

        dockerd bind-mounts its data root onto itself and its exec root's netns/default; a
        graceful stop unmounts the first, but not after a killed run (the next one reuses them).
        """
        mine = (str(self.data_root), str(self.exec_root) + "/")
        points = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                point = line.split()[4]
                if point == mine[0] or point.startswith(mine[1]):
                    points.append(point)
        for point in sorted(points, reverse=True):
            subprocess.run(["umount", point], capture_output=True, check=False)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        containerds = self._containerd_pids()
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise EngineError(
                f"dockerd did not exit within {timeout:g}s of {sig.name}; killed it:\n"
                f"{self.log_tail()}"
            ) from None
        finally:
            self._process = None
        # Gracefully, dockerd stops its containerd; killed, its parent-death signal does.
        left = _wait_gone(containerds, 15)
        if left:
            raise EngineError(
                f"containerd {left} outlived dockerd ({sig.name}):\n{self.log_tail()}"
            )


def refresh_main_image() -> None:
    """Bring the main engine's agent image up to date with this checkout, as .ci/run does.

    `klaudio image build` is a no-op when the image's content hash matches agent-docker/. A
    daemon on the private engine cannot build the image itself (no network for builds there),
    so the copy it gets must already be current.
    """
    home = tempfile.mkdtemp(prefix="kl-img-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAUDIO_", "ANTHROPIC_"))}
    env["KLAUDIO_HOME"] = home
    klaudio = [sys.executable, "-m", "klaudio"]
    build = ["image", "build", "--base-image", BASE_IMAGE, "--extra-ca-file", EXTRA_CA]
    try:
        result = subprocess.run(
            [*klaudio, *build, "--tag", AGENT_IMAGE],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if result.returncode != 0:
            raise EngineError(
                f"klaudio image build --tag {AGENT_IMAGE} (main engine) failed:\n"
                + "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            )
    finally:
        subprocess.run(
            [*klaudio, "daemon", "stop"], env=env, capture_output=True, timeout=60, check=False
        )
        shutil.rmtree(home, ignore_errors=True)


def _started_engine() -> PrivateEngine:
    """A started private engine with the current agent image (and the base image)."""
    refresh_main_image()
    engine = PrivateEngine()
    try:
        engine.start()
        engine.remove_all_containers()  # a crashed run's
        engine.ensure_images([AGENT_IMAGE], optional=[BASE_IMAGE])
    except BaseException:
        engine.close()
        raise
    return engine


@pytest.fixture(scope="session")
def private_engine_session() -> Iterator[PrivateEngine]:
    """The session's private engine; tests use `private_engine`, which tidies up after each."""
    need(os.geteuid() == 0, "root, for a private Docker engine")
    need(shutil.which("dockerd") is not None, "dockerd, for a private Docker engine")
    engine = _started_engine()
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def private_engine(private_engine_session: PrivateEngine) -> Iterator[PrivateEngine]:
    """A started private engine with the agent image and no containers; tests may stop, kill
    and restart it. Afterwards it is started again (if left down) and its containers removed."""
    engine = private_engine_session
    engine.start()
    yield engine
    engine.start()
    engine.remove_all_containers()
