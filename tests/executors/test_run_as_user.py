"""When the service runs as root and the job's user exists on the system, the job runs as that user."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import Api, World, script

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


def test_jobs_run_as_the_matching_system_user() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this system")
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3 that other users may run")
    # pytest's tmp dirs are private to root; the job's user must be able to reach its folders.
    root = Path(tempfile.mkdtemp(prefix="gpujobs-runas-", dir="/var/tmp"))
    os.chmod(root, 0o755)  # noqa: S103
    world = World(root)
    for folder in (world.homes, world.homes / "nobody"):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o755)  # noqa: S103
    os.chown(world.homes / "nobody", nobody.pw_uid, nobody.pw_gid)
    try:
        service = world.start(env={"GPUJOBS_JOB_PYTHON": python})
        os.chmod(service.data_dir, 0o755)  # noqa: S103
        runs_as = Api(service.client(world.hub.add_user("nobody")))
        job = runs_as.submit_ok(**script("import os; print(os.getuid(), os.getgid())"))
        done = runs_as.wait_status(job["job_id"], "completed", "failed")
        logs = runs_as.logs(job["job_id"])
        assert done["status"] == "completed", logs
        assert logs.split() == [str(nobody.pw_uid), str(nobody.pw_gid)]

        root_user = Api(service.client(world.hub.add_user("alice")))  # no system user 'alice'
        other = root_user.submit_ok(**script("import os; print(os.getuid())"))
        root_user.wait_status(other["job_id"], "completed")
        assert root_user.logs(other["job_id"]).strip() == str(os.geteuid())
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)
