"""A daemon run by an ordinary user (a laptop, not CI's root): agents' files belong to that user."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Instance, created_task
from tests.e2e.test_run import script_two_step
from tests.fakemodel import FakeModel

pytestmark = pytest.mark.docker
USER = "klaudio-e2e"


@pytest.fixture
def ordinary_user() -> Iterator[pwd.struct_passwd | None]:
    """A non-root user who may use Docker (when the tests run as root, as in CI): created for
    the test and removed afterwards if it did not exist before."""
    if os.getuid() != 0:
        yield None
        return
    try:
        yield pwd.getpwnam(USER)
        return
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", USER], check=True)
    try:
        yield pwd.getpwnam(USER)
    finally:
        subprocess.run(["userdel", USER], check=False, capture_output=True)


def test_a_non_root_daemon_runs_agents_as_its_own_user(
    ordinary_user: pwd.struct_passwd | None, instance: Instance, model: FakeModel
) -> None:
    # ordinary_user comes first: it is torn down last, once its daemon has stopped.
    if ordinary_user is not None:
        user = ordinary_user
        docker_gid = grp.getgrnam("docker").gr_gid
        instance.runas = [
            "setpriv",
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            f"--groups={docker_gid}",
            "--",
        ]
        os.chown(instance.home, user.pw_uid, user.pw_gid)
        instance.env["HOME"] = str(instance.home)
        uid = user.pw_uid
    else:
        uid = os.getuid()  # already an ordinary user: the suite's own runs are this case
    instance.start_daemon()
    script_two_step(model)

    result = instance.cli("run", "E2E-TASK as a user", "--auto-approve")

    assert result.returncode == 0, result.stderr + instance.daemon_log()
    task_id = created_task(result)
    workspace = Path(instance.show(task_id)["workspace"])
    for name in ("greeting.txt", "copy.txt", ".klaudio/context/write.md"):
        assert (workspace / name).stat().st_uid == uid, name
    assert (workspace / "copy.txt").read_text() == "hello from write\n"
    assert uid != 0
