"""Each JupyterHub configuration we ship loads with traitlets and wires the service, roles and hook."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from traitlets.config import Config, PyFileConfigLoader

REPO = Path(__file__).resolve().parents[2]
SCOPE = "access:services!service=gpujobs"


def load(name: str, env: dict[str, str] | None = None) -> Config:
    """The config as JupyterHub loads it, in this process: what it changes here (the environment, the
    umask, which the single-machine config sets to 077 as root) is put back for the other tests."""
    old = dict(os.environ)
    os.environ.update(env or {})
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        return PyFileConfigLoader(name, path=str(REPO / "deploy" / "jupyterhub")).load_config()
    finally:
        os.environ.clear()
        os.environ.update(old)
        os.umask(umask)


def fake_spawner(name: str) -> SimpleNamespace:
    return SimpleNamespace(
        user=SimpleNamespace(name=name),
        environment={"KEEP": "1"},
        log=SimpleNamespace(info=lambda *a: None, warning=lambda *a: None),
    )


def assert_roles(roles: list[dict]) -> None:
    by_name = {role["name"]: role for role in roles}
    assert SCOPE in by_name["user"]["scopes"] and "self" in by_name["user"]["scopes"]
    assert by_name["gpujobs-service"]["services"] == ["gpujobs"]
    assert "read:users" in by_name["gpujobs-service"]["scopes"]


def test_the_single_machine_config(tmp_path: Path) -> None:
    c = load(
        "jupyterhub_config.py",
        {
            "GPUJOBS_HUB_DATA_DIR": str(tmp_path),
            "GPUJOBS_HUB_PORT": "8123",
            "GPUJOBS_HUB_PASSWORD": "a-password",
            "GPUJOBS_SIMULATE_GPUS": "t4:1",
            "GPUJOBS_HUB_USER_PYTHON": "/opt/users-python/bin/python",  # made by `gpujobs hub` as root
        },
    )
    (service,) = c.JupyterHub.services
    assert service["name"] == "gpujobs" and service["url"] == "http://127.0.0.1:8766"
    assert service["command"][1:] == ["-m", "gpujobs.cli", "serve"]
    assert service["environment"]["GPUJOBS_SIMULATE_GPUS"] == "t4:1"
    assert "GPUJOBS_HUB_PASSWORD" not in service["environment"]  # the hub's secrets stay with the hub
    assert_roles(c.JupyterHub.load_roles)
    assert SCOPE in c.Spawner.server_token_scopes
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SharedPasswordAuthenticator.user_password == "a-password"
    if os.geteuid() == 0:  # users get accounts: servers and jobs run as them, from the users' environment
        assert c.JupyterHub.spawner_class.__name__ == "AccountSpawner"
        assert c.Spawner.cmd[0] == "/opt/users-python/bin/python"
        assert service["environment"]["GPUJOBS_JOB_ACCOUNT_TEMPLATE"] == "jupyter-{username}"
        assert service["environment"]["GPUJOBS_JOB_PYTHON"] == "/opt/users-python/bin/python"
        assert "GPUJOBS_JOBS_AS_SERVICE_ACCOUNT" not in service["environment"]
    else:  # one account for everything
        assert c.JupyterHub.spawner_class == "simple"
        assert service["environment"]["GPUJOBS_JOBS_AS_SERVICE_ACCOUNT"] == "true"
    spawner = fake_spawner("dora")
    made = os.geteuid() == 0 and not _account_exists("jupyter-dora")
    try:
        c.Spawner.pre_spawn_hook(spawner)
        assert spawner.environment == {"KEEP": "1", "GPUJOBS_URL": "http://127.0.0.1:8123/services/gpujobs/"}
        if os.geteuid() == 0:
            # The account is made and owns its home; the files are deployed by the account itself (the
            # end-to-end tests see them), which cannot reach pytest's private folder here.
            account = pwd.getpwnam("jupyter-dora")
            assert (tmp_path / "home" / "dora").stat().st_uid == account.pw_uid
            assert account.pw_gecos == "gpujobs hub user"
        else:
            assert (tmp_path / "home" / "dora" / "k8s-gpu-integration-init.ipynb").exists()
    finally:
        if made:
            subprocess.run(["userdel", "jupyter-dora"], check=False)


def _account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_the_kubespawner_config_has_gpu_profiles() -> None:
    c = load("kubespawner_config.py")
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    (service,) = c.JupyterHub.services
    assert "command" not in service and service["url"].startswith("http://gpujobs.")
    assert_roles(c.JupyterHub.load_roles)
    assert SCOPE in c.KubeSpawner.server_token_scopes
    gpu_profiles = [p for p in c.KubeSpawner.profile_list if "kubespawner_override" in p]
    assert len(gpu_profiles) == 2
    for profile in gpu_profiles:
        override = profile["kubespawner_override"]
        assert override["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
        assert override["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert "nvidia.com/gpu.product" in override["node_selector"]
    assert c.KubeSpawner.lifecycle_hooks["postStart"]["exec"]["command"][:3] == [
        "python",
        "-m",
        "gpujobs.hub",
    ]


def test_the_dockerspawner_config(tmp_path: Path) -> None:
    c = load("dockerspawner_config.py", {"GPUJOBS_HUB_DATA_DIR": str(tmp_path)})
    assert c.JupyterHub.spawner_class == "dockerspawner.DockerSpawner"
    assert c.DockerSpawner.volumes[str(tmp_path / "home" / "{username}")] == "/home/jovyan"
    (service,) = c.JupyterHub.services
    assert service["environment"]["GPUJOBS_HOME_TEMPLATE"] == str(tmp_path / "home" / "{username}")
    assert_roles(c.JupyterHub.load_roles)
    spawner = fake_spawner("erin")
    c.Spawner.pre_spawn_hook(spawner)
    assert spawner.environment["GPUJOBS_URL"].endswith("/services/gpujobs/")
    assert (tmp_path / "home" / "erin" / "gpujobs-examples" / "gpu_performance_test.py").exists()


def test_the_zero_to_jupyterhub_values(tmp_path: Path) -> None:
    values = yaml.safe_load((REPO / "deploy" / "z2jh" / "values.yaml").read_text())
    hub = values["hub"]
    assert hub["services"]["gpujobs"]["url"].startswith("http://gpujobs.")
    roles = [{"name": name, **role} for name, role in hub["loadRoles"].items()]
    assert_roles(roles)
    # The chart turns hub.config into traitlets config as it is.
    c = Config(hub["config"])
    assert SCOPE in c.KubeSpawner.server_token_scopes
    single = values["singleuser"]
    assert single["extraEnv"]["GPUJOBS_URL"].endswith("/services/gpujobs/")
    command = single["lifecycleHooks"]["postStart"]["exec"]["command"]
    # The init notebook reaches the home through this hook: run it as the server would.
    home = tmp_path / "jovyan"
    result = subprocess.run(
        [sys.executable, *command[1:-1], str(home)], capture_output=True, text=True, check=True
    )
    assert "k8s-gpu-integration-init.ipynb" in result.stdout
    assert (home / "k8s-gpu-integration-init.ipynb").exists()
    again = subprocess.run(
        [sys.executable, *command[1:-1], str(home)], capture_output=True, text=True, check=True
    )
    assert again.stdout == ""  # nothing rewritten the second time


@pytest.mark.parametrize("profile", [0, 1])
def test_z2jh_profiles_are_well_formed(profile: int) -> None:
    values = yaml.safe_load((REPO / "deploy" / "z2jh" / "values.yaml").read_text())
    entry = values["singleuser"]["profileList"][profile]
    assert entry["display_name"]
