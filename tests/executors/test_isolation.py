"""Jobs under real system accounts: never root, nothing of another user's or the service's to read,
nothing left running after the job ends.

Needs root (to make accounts and switch to them).  The accounts (``gjtest-alice``, ``gjtest-bob``) are
made for this module and removed after it; jobs run with Debian's /usr/bin/python3, which every
account may run (the test's own interpreter may live in a private folder).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import Api, ServiceProcess, World, pid_alive, script, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make accounts and switch to them")

PYTHON = "/usr/bin/python3"
ACCOUNTS = {"alice": "gjtest-alice", "bob": "gjtest-bob"}


@pytest.fixture(scope="module")
def accounts() -> Iterator[dict[str, pwd.struct_passwd]]:
    if not os.access(PYTHON, os.X_OK) or shutil.which("useradd") is None:
        pytest.skip("needs /usr/bin/python3 and useradd")
    made = []
    for name in ACCOUNTS.values():
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
            made.append(name)
    try:
        yield {user: pwd.getpwnam(name) for user, name in ACCOUNTS.items()}
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module")
def shared_world(accounts: dict[str, pwd.struct_passwd]) -> Iterator[World]:
    # pytest's folders are private to root; the job accounts must reach their homes.
    root = Path(tempfile.mkdtemp(prefix="gpujobs-isolation-", dir="/var/tmp"))
    os.chmod(root, 0o755)  # noqa: S103
    world = World(root)
    os.chmod(world.homes, 0o755)  # noqa: S103
    for user, account in accounts.items():
        home = world.homes / user
        home.mkdir(exist_ok=True)
        os.chown(home, account.pw_uid, account.pw_gid)
        os.chmod(home, 0o700)
    try:
        yield world
    finally:
        world.close()
        shutil.rmtree(root, ignore_errors=True)


ISOLATED = {
    "GPUJOBS_JOB_PYTHON": PYTHON,
    "GPUJOBS_JOB_ACCOUNT_TEMPLATE": "gjtest-{username}",
    "GPUJOBS_JOBS_AS_SERVICE_ACCOUNT": "false",
}


@pytest.fixture(scope="module")
def service(shared_world: World) -> ServiceProcess:
    return shared_world.start(env=ISOLATED, data_dir=shared_world.root / "data")


def _api(world: World, service: ServiceProcess, user: str) -> Api:
    return Api(service.client(world.hub.add_user(user)))


def test_a_job_runs_as_its_users_account(
    shared_world: World, service: ServiceProcess, accounts: dict[str, pwd.struct_passwd]
) -> None:
    alice = _api(shared_world, service, "alice")
    job = alice.submit_ok(**script("import os; print(os.getuid(), os.getgid(), oct(os.umask(0)))"))
    assert alice.wait_status(job["job_id"], "completed", "failed")["status"] == "completed", alice.logs(
        job["job_id"]
    )
    uid, gid, umask = alice.logs(job["job_id"]).split()
    assert (int(uid), int(gid)) == (accounts["alice"].pw_uid, accounts["alice"].pw_gid)
    assert umask == "0o22"  # not the service's private 077


def test_a_job_cannot_read_other_users_logs_the_database_or_the_services_secrets(
    shared_world: World, service: ServiceProcess
) -> None:
    bob = _api(shared_world, service, "bob")
    secret_job = bob.submit_ok(**script("print('bob-secret-line')"))
    bob.wait_status(secret_job["job_id"], "completed")
    runner_json = service.data_dir / "jobs" / secret_job["job_id"] / "runner.json"
    targets = {
        "bob's log": str(service.data_dir / "jobs" / secret_job["job_id"] / "output.log"),
        "the database": str(service.data_dir / "gpujobs.sqlite"),
        "the jobs folder listing": str(service.data_dir / "jobs"),
        "the service's environment": f"/proc/{service.process.pid}/environ",
        "bob's launch plan": str(runner_json.with_name("launch.json")),
    }
    probe = (
        "import json, os, sys\n"
        f"targets = {json.dumps(targets)}\n"
        "for what, path in targets.items():\n"
        "    try:\n"
        "        content = os.listdir(path) if os.path.isdir(path) else open(path, 'rb').read()\n"
        "        print('READ', what, str(content)[:80])\n"
        "    except OSError as exc:\n"
        "        print('DENIED', what, exc.__class__.__name__)\n"
        "print('TOKEN' if any('JUPYTERHUB' in k for k in os.environ) else 'NO-TOKEN')\n"
    )
    alice = _api(shared_world, service, "alice")
    job = alice.submit_ok(**script(probe))
    alice.wait_status(job["job_id"], "completed")
    lines = alice.logs(job["job_id"]).splitlines()
    assert not [line for line in lines if line.startswith("READ")], lines
    assert len([line for line in lines if line.startswith("DENIED")]) == len(targets), lines
    assert "NO-TOKEN" in lines
    assert "bob-secret-line" not in alice.logs(job["job_id"])


def test_the_working_folder_is_entered_as_the_jobs_account_not_as_root(
    shared_world: World, service: ServiceProcess
) -> None:
    # A folder in alice's home that only root may enter: the submit check (run by the service, as
    # root) finds it, but the job's account must not get in (as it would if root entered it for it,
    # say after alice swapped the folder for a link to someone else's).
    locked = shared_world.homes / "alice" / "locked"
    locked.mkdir(exist_ok=True)
    os.chown(locked, 0, 0)
    os.chmod(locked, 0o700)
    alice = _api(shared_world, service, "alice")
    job = alice.submit_ok(**script("import os; print(os.listdir('.'))", working_dir=str(locked)))
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert done["status"] == "failed"
    assert "cannot enter the working folder" in alice.logs(job["job_id"])


def test_a_user_without_an_account_is_refused_with_the_reason(
    shared_world: World, service: ServiceProcess
) -> None:
    carol = _api(shared_world, service, "carol")  # no gjtest-carol account, no fallback
    answer = carol.http.post("api/k8s/submit-job", json=script("print(1)"))
    assert answer.status_code == 403
    message = answer.json()["message"]
    assert "gjtest-carol" in message and "job_account_fallback" in message
    assert carol.http.get("api/k8s/jobs").json()["data"]["jobs"] == []  # nothing half-made


def test_the_fallback_account_runs_users_without_one(shared_world: World) -> None:
    nobody = pwd.getpwnam("nobody")
    env = {**ISOLATED, "GPUJOBS_JOB_ACCOUNT_FALLBACK": "nobody"}
    fallback = shared_world.start(env=env, data_dir=shared_world.root / "data-fallback")
    carol = _api(shared_world, fallback, "carol")
    job = carol.submit_ok(**script("import os; print(os.getuid())"))
    assert carol.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
    assert carol.logs(job["job_id"]).strip() == str(nobody.pw_uid)


def test_root_is_never_a_fallback(shared_world: World) -> None:
    refusing = shared_world.start(
        env={**ISOLATED, "GPUJOBS_JOB_ACCOUNT_FALLBACK": "root"}, data_dir=shared_world.root / "data-root"
    )
    carol = _api(shared_world, refusing, "carol")
    answer = carol.http.post("api/k8s/submit-job", json=script("print(1)"))
    assert answer.status_code == 403
    assert "root" in answer.json()["message"]


ESCAPE = (
    # A grandchild that leaves the session, clears its environment (no job id to find it by) and
    # outlives its parent; the job itself ends at once, successfully.
    "import os, sys, time\n"
    "pid_file = sys.argv[1]\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        open(pid_file, 'w').write(str(os.getpid()))\n"
    "        os.execve('/bin/sleep', ['sleep', '300'], {})\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "while not os.path.exists(pid_file):\n"
    "    time.sleep(0.01)\n"
    "print('left a grandchild behind')\n"
)


@pytest.mark.parametrize("cgroups", ["true", "false"])
def test_a_double_forked_grandchild_with_a_clean_environment_ends_with_its_job(
    shared_world: World, accounts: dict[str, pwd.struct_passwd], cgroups: str
) -> None:
    # With cgroups the kernel keeps the grandchild in the job's group; without, the runner is its
    # subreaper and finds it among its descendants.
    env = {**ISOLATED, "GPUJOBS_JOB_CGROUPS": cgroups}
    escaping = shared_world.start(env=env, data_dir=shared_world.root / f"data-escape-{cgroups}")
    alice = _api(shared_world, escaping, "alice")
    pid_file = shared_world.homes / "alice" / f"grandchild-{cgroups}.pid"
    job = alice.submit_ok(**script(ESCAPE, args=[str(pid_file)]))
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert done["status"] == "completed", alice.logs(job["job_id"])
    grandchild = int(pid_file.read_text())
    assert not pid_alive(grandchild), "the grandchild outlived its job"
    # And its GPUs (none here) and cgroup are given back: nothing of the job is left.
    leftover = subprocess.run(["pgrep", "-u", str(accounts["alice"].pw_uid)], capture_output=True, text=True)
    assert leftover.stdout.split() == []


def test_cancel_ends_a_grandchild_that_escaped_while_the_job_runs(
    shared_world: World, service: ServiceProcess
) -> None:
    alice = _api(shared_world, service, "alice")
    pid_file = shared_world.homes / "alice" / "grandchild-cancel.pid"
    code = ESCAPE + "time.sleep(300)\n"
    job = alice.submit_ok(**script(code, args=[str(pid_file)]))
    wait_for(pid_file.exists, timeout=60, what="the grandchild to start")
    grandchild = int(pid_file.read_text())
    assert alice.http.post(f"api/k8s/job/{job['job_id']}/cancel").status_code == 200
    alice.wait_status(job["job_id"], "cancelled")
    wait_for(lambda: not pid_alive(grandchild), timeout=30, what="the grandchild to be ended")


@pytest.mark.parametrize("cgroups", ["true", "false"])
def test_a_job_over_its_memory_limit_is_oom_killed(shared_world: World, cgroups: str) -> None:
    # With a cgroup the kernel enforces the limit; without, the runner measures the whole tree. The
    # memory is taken by a child process: the job's own process stays small.
    env = {**ISOLATED, "GPUJOBS_JOB_CGROUPS": cgroups}
    limited = shared_world.start(env=env, data_dir=shared_world.root / f"data-memory-{cgroups}")
    alice = _api(shared_world, limited, "alice")
    code = (
        "import subprocess, sys\n"
        "hog = 'b = bytearray(400 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n'\n"
        "hog += 'import time; time.sleep(60)'\n"
        "subprocess.run([sys.executable, '-c', hog])\n"
    )
    job = alice.submit_ok(**script(code, memory_limit="128Mi", timeout_seconds=120))
    done = alice.wait_status(job["job_id"], "completed", "failed", timeout=120)
    assert (done["status"], done["reason"]) == ("failed", "OOMKilled"), alice.logs(job["job_id"])
