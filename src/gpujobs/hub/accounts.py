"""System accounts for the hub's users, the way The Littlest JupyterHub makes them: when ``gpujobs hub``
runs as root, each user gets ``jupyter-<name>`` (created on their first spawn), their JupyterLab server
runs as it, and so do their jobs (the service names the account the same way:
``executors.accounts.system_account_name``)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from traitlets import Unicode

from ..executors.accounts import system_account_name, unreachable_folder

ACCOUNT_TEMPLATE = "jupyter-{username}"
OUR_ACCOUNTS = "gpujobs hub user"  # the comment (GECOS) of the accounts made here
__all__ = [
    "ACCOUNT_TEMPLATE",
    "AccountSpawner",
    "ensure_account",
    "system_account_name",
    "unreachable_folder",
]


def ensure_account(name: str, home: Path) -> pwd.struct_passwd:
    """The account ``name`` (made if missing: its own group, ``home`` as its home, bash), with ``home``
    made and owned by it (0700).  ``name`` comes from ``system_account_name``: a valid account name,
    passed to useradd as one argument, never through a shell."""
    made = False
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = True
        subprocess.run(
            ["useradd", "--home-dir", str(home), "--no-create-home", "--shell", "/bin/bash", "--user-group",
             "--comment", OUR_ACCOUNTS, name],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        entry = pwd.getpwnam(name)
    if entry.pw_gecos == OUR_ACCOUNTS and entry.pw_dir != str(home):
        # One of ours from a hub with another data folder: its home is here now.
        subprocess.run(["usermod", "--home", str(home), name], check=True, capture_output=True, timeout=60)
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise PermissionError(f"the account {name!r} is root: refusing to run a user's server as root")
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    os.chmod(home, 0o700)
    if made:  # what the operator put into the home beforehand becomes the new account's
        for folder, dirs, files in os.walk(home):
            for entry_name in [*dirs, *files]:
                os.chown(os.path.join(folder, entry_name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return entry


class AccountSpawner(LocalProcessSpawner):
    """JupyterLab as a local process under the user's system account (``account_template``)."""

    account_template = Unicode(ACCOUNT_TEMPLATE, config=True, help="The system account of a hub user.")

    def account(self) -> str:
        return system_account_name(self.account_template, self.user.name)

    def make_preexec_fn(self, name: str) -> Any:
        return set_user_setuid(self.account())

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        entry = pwd.getpwnam(self.account())
        env.update(USER=entry.pw_name, LOGNAME=entry.pw_name, HOME=entry.pw_dir, SHELL=entry.pw_shell)
        return env
