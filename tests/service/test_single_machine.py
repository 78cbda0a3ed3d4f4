"""The service without a hub (single-machine mode): one user, whose token the service keeps in its
data dir, and a CLI that finds it there — the README's "service only" path (``scripts/serve.sh``), run
as users run it."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.localaccess import ACCESS_FILE, local_proof, read_local_access
from helpers import ServiceProcess

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make an account and switch to it")

ACCOUNT = "gjtest-solo"


@pytest.fixture(scope="module")
def account() -> Iterator[pwd.struct_passwd]:
    if not os.access("/usr/bin/python3", os.X_OK) or shutil.which("useradd") is None:
        pytest.skip("needs /usr/bin/python3 and useradd")
    try:
        pwd.getpwnam(ACCOUNT)
        made = False
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", ACCOUNT], check=True)
        made = True
    try:
        yield pwd.getpwnam(ACCOUNT)
    finally:
        if made:
            subprocess.run(["userdel", ACCOUNT], check=False)


@pytest.fixture
def root_folder() -> Iterator[Path]:
    # pytest's folders are private to root; the job's account must pass through to its home.
    folder = Path(tempfile.mkdtemp(prefix="gpujobs-solo-", dir="/var/tmp"))
    os.chmod(folder, 0o755)  # noqa: S103
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def without_hub() -> dict[str, str]:
    """The test's own environment, less anything that names a hub or a token."""
    return {
        name: value for name, value in os.environ.items() if not name.startswith(("JUPYTERHUB_", "GPUJOBS_"))
    }


def cli(*args: str, data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``gpujobs`` as the user runs it: no URL, no token, only where the service keeps its data."""
    env = {**without_hub(), "GPUJOBS_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "gpujobs.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_hub_one_user_gets_a_token_and_the_cli_finds_it(
    account: pwd.struct_passwd, root_folder: Path
) -> None:
    home = root_folder / "homes" / "solo"
    home.mkdir(parents=True)
    os.chown(home, account.pw_uid, account.pw_gid)
    (home / "whoami.py").write_text("import os\nprint('uid', os.getuid())\n")
    data_dir = root_folder / "data"
    env = {
        **without_hub(),
        "GPUJOBS_JOB_PYTHON": "/usr/bin/python3",
        "GPUJOBS_JOB_ACCOUNT_TEMPLATE": "gjtest-{username}",
        "GPUJOBS_HOME_TEMPLATE": str(root_folder / "homes" / "{username}"),
        "GPUJOBS_NVML": "false",
    }
    # The README's command, as a newcomer types it (the set-up it runs first finds everything in place).
    serve_sh = str(Path(__file__).resolve().parents[2] / "scripts" / "serve.sh")
    args = ["--local-user", "solo", "--simulate-gpus", "t4:1"]
    service = ServiceProcess(data_dir, env, args, command=[serve_sh])
    service.env = env  # nothing of the test's hub may leak in
    service.start()
    try:
        access_file = data_dir / ACCESS_FILE
        log = service.log()
        assert "serves one user, 'solo'" in log and str(access_file) in log
        facts = access_file.stat()
        assert stat.S_IMODE(facts.st_mode) == 0o600 and facts.st_uid == account.pw_uid  # theirs alone
        access = read_local_access({"GPUJOBS_DATA_DIR": str(data_dir)})
        assert access is not None and access.user == "solo" and access.url == service.url

        gpus = cli("gpus", data_dir=data_dir, cwd=home)
        assert gpus.returncode == 0, gpus.stderr
        assert "t4" in gpus.stdout
        ran = cli("submit", "whoami.py", "--follow", data_dir=data_dir, cwd=home)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"uid {account.pw_uid}" in ran.stdout  # the user's own account, never root

        with service.client(None) as anyone:  # the proof needs no token, and gives none away
            nonce = "ab" * 16
            proof = anyone.get("api/local/proof", params={"nonce": nonce}).json()["data"]["proof"]
            assert proof == local_proof(access.token, nonce) and access.token not in proof
            assert anyone.get("api/local/proof", params={"nonce": "x"}).status_code == 422
        with service.client("not-the-token") as stranger:
            refused = stranger.get("api/k8s/jobs")
        assert refused.status_code == 401 and str(access_file) in refused.json()["message"]
        with service.client(access.token) as owner:
            listed = owner.get("api/k8s/jobs").json()["data"]
        assert [job["user"] for job in listed["jobs"]] == ["solo"]

        service.stop()
        service.start()  # the token outlives a restart: scripts and notebooks keep working
        kept = read_local_access({"GPUJOBS_DATA_DIR": str(data_dir)})
        assert kept is not None and kept.token == access.token
        with service.client(access.token) as owner:
            assert owner.get("api/k8s/gpu-status").status_code == 200
    finally:
        service.stop()


def serve_refused(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``gpujobs serve`` without a hub, expected to refuse at once (no port is ever bound)."""
    serve = [sys.executable, "-m", "gpujobs.cli", "serve"]
    command = [*serve, "--data-dir", str(data_dir), "--port", "1", *args]
    return subprocess.run(command, env=without_hub(), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), ["--local-user NAME", "root never runs jobs"]),  # as root, the user must be named
        (("--local-user", "nobody-here-x"), ["no account 'nobody-here-x'"]),
        (("--local-user", "daemon"), ["root or a system account"]),
    ],
    ids=["unnamed", "no-such-account", "system-account"],
)
def test_as_root_without_a_hub_the_user_must_be_an_ordinary_account(
    root_folder: Path, args: tuple[str, ...], says: list[str]
) -> None:
    started = serve_refused(root_folder / "data", *args)
    assert started.returncode == 2 and all(text in started.stderr for text in says), started.stderr
    assert not (root_folder / "data" / ACCESS_FILE).exists()
