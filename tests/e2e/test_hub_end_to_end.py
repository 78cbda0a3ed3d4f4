"""End to end: a real JupyterHub with configurable-http-proxy, started by `gpujobs hub`.

Two users log in through the login form; alice's JupyterLab server is spawned; the pre-spawn hook has
put the init notebook in her home; the notebook is executed headless in her server's environment, so
every call it makes goes through the hub's proxy with her server's own token; her jobs complete and
their logs are there; bob cannot see them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from hubprocess import Hub

from helpers import wait_for

pytestmark = pytest.mark.e2e


def start_server(hub: Hub, admin: httpx.Client, name: str) -> dict[str, str]:
    """Log ``name`` in through the form and spawn their server; the environment it runs with."""
    hub.login(name)
    response = admin.post(f"/users/{name}/server")
    assert response.status_code in (201, 202), response.text
    wait_for(
        lambda: admin.get(f"/users/{name}").json()["servers"].get("", {}).get("ready"),
        timeout=120,
        what=f"{name}'s server to be ready",
    )
    return hub.user_server_env(admin, name)


@pytest.fixture(scope="module")
def alice_server(hub: Hub, admin: httpx.Client) -> dict[str, str]:
    """Alice's server, left as the pre-spawn hook made it: tests that restart a server or plant files
    in a home use users of their own."""
    hub.login("bob")
    return start_server(hub, admin, "alice")


@pytest.fixture
def own_server(hub: Hub, admin: httpx.Client, request: pytest.FixtureRequest) -> Iterator[str]:
    """A user of the test's own, with a running server (stopped afterwards)."""
    name = "user-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:6]  # the same every run
    start_server(hub, admin, name)
    yield name
    admin.delete(f"/users/{name}/server")


def test_the_hub_lists_the_service_and_its_dashboard_logs_in_through_the_hub(hub: Hub) -> None:
    browser = hub.login("carol")
    home = browser.get("/hub/home")
    assert "gpujobs" in home.text  # in the Services menu
    dashboard = browser.get("/services/gpujobs/")
    assert dashboard.status_code == 200 and "static/dashboard.js" in dashboard.text
    assert "k8s-gpu-integration-init.ipynb" in dashboard.text  # where else to use gpujobs from
    # Logged in to the hub is logged in to the dashboard: no second password, no confirmation page.
    arrived = browser.get("/services/gpujobs/oauth_login")
    assert arrived.url.path == "/services/gpujobs/" and browser.cookies.get("gpujobs-session")
    me = browser.get("/services/gpujobs/api/k8s/whoami", headers={"X-Gpujobs-Dashboard": "1"})
    assert me.status_code == 200 and me.json()["data"]["name"] == "carol", me.text
    assert browser.get("/services/gpujobs/api/k8s/whoami").status_code == 401  # the cookie alone: no


def test_the_pre_spawn_hook_deploys_the_notebook_and_sets_the_service_url(hub: Hub, alice_server) -> None:
    home = hub.data_dir / "home" / "alice"
    assert (home / "k8s-gpu-integration-init.ipynb").exists()
    assert (home / "gpujobs-examples" / "ml_training_example.py").exists()
    assert alice_server["GPUJOBS_URL"] == f"{hub.url}/services/gpujobs/"
    assert alice_server["JUPYTERHUB_API_TOKEN"]


def test_the_init_notebook_runs_top_to_bottom_in_alices_server(hub: Hub, alice_server, admin) -> None:
    home = hub.data_dir / "home" / "alice"
    executed = home / "executed.ipynb"
    code = (
        "import nbformat, nbclient, sys\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "resources = {'metadata': {'path': sys.argv[3]}}\n"
        "nbclient.NotebookClient(nb, timeout=300, kernel_name='python3', resources=resources).execute()\n"
        "nbformat.write(nb, sys.argv[2])\n"
    )
    # As her server would: its interpreter, under its account (when the hub gives users accounts).
    python, account = hub.user_server_process(admin, "alice")
    result = subprocess.run(
        [python, "-c", code, str(home / "k8s-gpu-integration-init.ipynb"), str(executed), str(home)],
        env=alice_server,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        user=account,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    notebook = json.loads(executed.read_text())
    outputs = "\n".join(
        item.get("text", "") if isinstance(item.get("text", ""), str) else "".join(item["text"])
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
        for item in cell.get("outputs", [])
    )
    assert "2 of 2 GPUs free (simulated)" in outputs
    assert "completed" in outputs and "held-out accuracy" in outputs
    assert "hello from" in outputs  # the %%gpujob cell ran as a job and its output came back

    token = alice_server["JUPYTERHUB_API_TOKEN"]
    service = httpx.Client(
        base_url=f"{hub.url}/services/gpujobs/", headers={"Authorization": f"token {token}"}
    )
    jobs = service.get("api/k8s/jobs").json()["data"]["jobs"]
    assert {j["name"] for j in jobs} >= {"performance-test", "cnn-training", "hello-from-a-cell"}
    assert all(j["status"] == "completed" and j["user"] == "alice" for j in jobs)
    training = next(j for j in jobs if j["name"] == "cnn-training")
    logs = service.get(f"api/k8s/job/{training['job_id']}/logs").json()["data"]["logs"]
    assert "held-out accuracy" in logs

    bob_token = admin.post("/users/bob/tokens", json={"scopes": ["access:services!service=gpujobs"]}).json()[
        "token"
    ]
    bob = httpx.Client(
        base_url=f"{hub.url}/services/gpujobs/", headers={"Authorization": f"token {bob_token}"}
    )
    assert bob.get(f"api/k8s/job/{training['job_id']}/status").status_code == 404
    assert bob.get("api/k8s/jobs").json()["data"]["jobs"] == []


def restart_server(admin: httpx.Client, name: str) -> None:
    """Stop the user's server and start it again (the pre-spawn hook runs again)."""
    assert admin.delete(f"/users/{name}/server").status_code in (202, 204)
    wait_for(lambda: not admin.get(f"/users/{name}").json()["servers"], timeout=60, what="server to stop")
    assert admin.post(f"/users/{name}/server").status_code in (201, 202)
    wait_for(
        lambda: admin.get(f"/users/{name}").json()["servers"].get("", {}).get("ready"),
        timeout=120,
        what=f"{name}'s server to be ready again",
    )


def test_an_edited_notebook_is_never_overwritten(hub: Hub, admin: httpx.Client, own_server: str) -> None:
    notebook = hub.data_dir / "home" / own_server / "k8s-gpu-integration-init.ipynb"
    notebook.write_text(notebook.read_text().replace("a short tour", "MY OWN NOTES"))
    restart_server(admin, own_server)
    assert "MY OWN NOTES" in notebook.read_text()


def test_a_token_without_the_service_scope_is_refused(hub: Hub, admin: httpx.Client) -> None:
    hub.login("bob")
    token = admin.post("/users/bob/tokens", json={"scopes": ["read:users:name!user=bob"]}).json()["token"]
    response = httpx.get(
        f"{hub.url}/services/gpujobs/api/k8s/jobs", headers={"Authorization": f"token {token}"}
    )
    assert response.status_code == 403


@pytest.mark.skipif(os.geteuid() != 0, reason="users get their own accounts only when the hub runs as root")
def test_run_as_root_the_hub_gives_each_user_an_account_for_server_and_jobs(
    hub: Hub, admin: httpx.Client, alice_server
) -> None:
    account = pwd.getpwnam("jupyter-alice")
    _python, server_uid = hub.user_server_process(admin, "alice")
    assert server_uid == account.pw_uid != 0
    service = httpx.Client(
        base_url=f"{hub.url}/services/gpujobs/",
        headers={"Authorization": f"token {alice_server['JUPYTERHUB_API_TOKEN']}"},
    )
    job = service.post(
        "api/k8s/submit-job", json={"name": "whoami", "script": "import os; print(os.getuid())"}
    )
    job_id = job.json()["data"]["job_id"]
    wait_for(
        lambda: service.get(f"api/k8s/job/{job_id}/status").json()["data"]["status"] == "completed",
        what="the job to finish",
    )
    assert service.get(f"api/k8s/job/{job_id}/logs").json()["data"]["logs"].strip() == str(account.pw_uid)
    # Her home is hers alone, and the hub's own files are not hers to read.
    home = hub.data_dir / "home" / "alice"
    assert home.stat().st_uid == account.pw_uid and stat.S_IMODE(home.stat().st_mode) == 0o700
    hubs_own = [p for p in hub.data_dir.iterdir() if p.is_file()]
    assert {"jupyterhub.sqlite", "jupyterhub_cookie_secret"} <= {p.name for p in hubs_own}
    for private in hubs_own:
        assert stat.S_IMODE(private.stat().st_mode) & 0o077 == 0, private


@pytest.mark.skipif(os.geteuid() != 0, reason="the hub writes into homes as root only when run as root")
def test_links_a_user_plants_in_their_home_never_turn_the_hubs_writes_onto_other_files(
    hub: Hub, admin: httpx.Client, own_server: str
) -> None:
    # What a user could do from their server: point the files the pre-spawn hook writes at root's files.
    home = hub.data_dir / "home" / own_server
    account = pwd.getpwnam(f"jupyter-{own_server}")
    victim_dir = hub.data_dir.parent / "victim"
    victim_dir.mkdir(exist_ok=True)
    victim = victim_dir / "secret"
    victim.write_text("root's own\n")
    for planted, target in (
        (home / ".gpujobs-deployed.json", victim),
        (home / "gpujobs-examples", victim_dir),
    ):
        if planted.is_dir() and not planted.is_symlink():
            shutil.rmtree(planted)
        else:
            planted.unlink(missing_ok=True)
        planted.symlink_to(target)
        os.lchown(planted, account.pw_uid, account.pw_gid)
    restart_server(admin, own_server)
    assert victim.read_text() == "root's own\n"
    assert victim.stat().st_uid == 0 and victim_dir.stat().st_uid == 0
    assert sorted(p.name for p in victim_dir.iterdir()) == ["secret"]


def test_the_cli_pointed_at_the_hub_itself_says_which_address_to_use(hub: Hub) -> None:
    env = {**os.environ, "GPUJOBS_URL": hub.url + "/", "JUPYTERHUB_API_TOKEN": hub.admin_token()}
    ran = subprocess.run(
        [sys.executable, "-m", "gpujobs.cli", "gpus"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 2
    assert "looks like JupyterHub itself" in ran.stderr and f"use {hub.url}/services/gpujobs/" in ran.stderr
