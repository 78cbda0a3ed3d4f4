# JupyterHub with gpujobs on one machine.
#
# `gpujobs hub` runs `jupyterhub -f` on this file, with the choices it was given in GPUJOBS_HUB_*
# variables.  To adapt it, copy it and change what you need; every setting below says why it is there.
# Users log in with a shared password; their JupyterLab servers run as local processes; jobs run on
# this machine's GPUs through the gpujobs service, which the hub starts and keeps running.
# Run as root, each user gets a system account (jupyter-<name>, made on their first spawn) and both
# their server and their jobs run as it, from a users' environment in /opt/gpujobs/user; run as
# anyone else, everything runs as that one account (a single-user machine).

import os
import secrets
import shutil
import sys
from pathlib import Path

from gpujobs.datadir import passable_dir, protect_data_dir
from gpujobs.hub import gpujobs_roles, gpujobs_service, make_pre_spawn_hook, server_token_scopes
from gpujobs.hub.accounts import ACCOUNT_TEMPLATE, AccountSpawner, ensure_account, system_account_name
from gpujobs.hub.userenv import ensure_user_environment

c = get_config()  # noqa: F821 - provided by JupyterHub

env = os.environ.get
data_dir = Path(env("GPUJOBS_HUB_DATA_DIR", "gpujobs-hub-data")).resolve()
ip = env("GPUJOBS_HUB_IP", "127.0.0.1")
port = int(env("GPUJOBS_HUB_PORT", "8000"))
service_port = int(env("GPUJOBS_HUB_SERVICE_PORT", "8766"))  # `gpujobs serve` alone keeps 8765
public_url = f"http://{ip}:{port}"
homes = data_dir / "home"
accounts = os.geteuid() == 0
data_dir.mkdir(parents=True, exist_ok=True)
homes.mkdir(exist_ok=True)
if accounts:
    # Users' accounts pass through to their homes (and the service's job folders), list nothing, and
    # read none of the hub's files (its database, secrets): private from now on, and made so if an
    # earlier start left them readable.
    os.umask(0o077)
    protect_data_dir(data_dir)
    passable_dir(homes)

# --- the hub and its proxy --------------------------------------------------------------------
c.JupyterHub.bind_url = public_url
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{env('GPUJOBS_HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('GPUJOBS_HUB_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [
    env("GPUJOBS_HUB_PROXY_COMMAND") or shutil.which("configurable-http-proxy") or "configurable-http-proxy"
]
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")

# --- who may log in -------------------------------------------------------------------------------
# One shared password for users; admins (if any) log in with a separate one of 32+ characters.
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env("GPUJOBS_HUB_PASSWORD") or secrets.token_urlsafe(12)
admins = {name for name in env("GPUJOBS_HUB_ADMINS", "").split(",") if name}
if admins:
    c.Authenticator.admin_users = admins
    c.SharedPasswordAuthenticator.admin_password = env("GPUJOBS_HUB_ADMIN_PASSWORD")
c.Authenticator.allow_all = True

# --- user servers -------------------------------------------------------------------------------
# JupyterLab as a local process, with its home under the data folder.
if accounts:
    user_python = env("GPUJOBS_HUB_USER_PYTHON") or str(ensure_user_environment())
    c.JupyterHub.spawner_class = AccountSpawner
    c.AccountSpawner.account_template = ACCOUNT_TEMPLATE
    c.AccountSpawner.popen_kwargs = {"umask": 0o022}  # users' own files as a login shell makes them
    c.Spawner.cmd = [user_python, "-m", "jupyterhub.singleuser"]
else:
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = str(homes / "{username}")
    c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
# JupyterLab's first start on a busy small machine takes longer than JupyterHub's default 30 s.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
# The server's own token may call gpujobs (the client in a notebook uses it).
c.Spawner.server_token_scopes = server_token_scopes("gpujobs")
# Make the user's account (as root), deploy the init notebook and the examples into the home, and
# tell the server where gpujobs is.
c.Spawner.pre_spawn_hook = make_pre_spawn_hook(
    service_url=f"{public_url}/services/gpujobs/",
    home_of=lambda name: homes / name,
    account=(
        (lambda name: ensure_account(system_account_name(ACCOUNT_TEMPLATE, name), homes / name))
        if accounts
        else None
    ),
    user_python=user_python if accounts else None,
)

# --- the gpujobs service ------------------------------------------------------------------------
# A managed service: the hub starts it, restarts it if it dies, and gives it JUPYTERHUB_* variables.
service_env = {
    key: value
    for key, value in os.environ.items()
    if key.startswith("GPUJOBS_") and not key.startswith("GPUJOBS_HUB_")
}
service_env.update(
    {
        "GPUJOBS_DATA_DIR": str(data_dir / "gpujobs"),
        "GPUJOBS_HOME_TEMPLATE": str(homes / "{username}"),
        "GPUJOBS_ADMIN_USERS": ",".join(sorted(admins)),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
)
if accounts:  # jobs run as their users' accounts, with the users' environment
    service_env.update(GPUJOBS_JOB_ACCOUNT_TEMPLATE=ACCOUNT_TEMPLATE, GPUJOBS_JOB_PYTHON=user_python)
else:  # one account for everything: jobs run as it too
    service_env["GPUJOBS_JOBS_AS_SERVICE_ACCOUNT"] = "true"
c.JupyterHub.services = [gpujobs_service(url=f"http://127.0.0.1:{service_port}", environment=service_env)]
c.JupyterHub.load_roles = gpujobs_roles("gpujobs")
