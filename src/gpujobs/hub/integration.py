"""Helpers for a ``jupyterhub_config.py``: each returns plain config values (no I/O) except the hook."""

from __future__ import annotations

import hashlib
import json
import logging
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
INIT_NOTEBOOK = HERE / "k8s-gpu-integration-init.ipynb"
EXAMPLES = HERE / "examples"
EXAMPLES_FOLDER = "gpujobs-examples"
_MANIFEST = ".gpujobs-deployed.json"


def server_token_scopes(service_name: str = "gpujobs") -> list[str]:
    """What a user server's ``JUPYTERHUB_API_TOKEN`` may do: the default server role, plus calling us."""
    return ["users:activity!user", "access:servers!server", f"access:services!service={service_name}"]


def gpujobs_roles(service_name: str = "gpujobs") -> list[dict[str, Any]]:
    """Roles for ``c.JupyterHub.load_roles``: users may reach the service; the service may read users
    and groups (for quotas and admin groups)."""
    return [
        {
            "name": "user",
            "description": "Default user permissions, plus access to gpujobs",
            "scopes": ["self", f"access:services!service={service_name}"],
        },
        {
            "name": f"{service_name}-service",
            "description": "gpujobs reads users' names, groups and admin flags",
            "scopes": ["read:users", "read:groups"],
            "services": [service_name],
        },
    ]


def gpujobs_service(
    *,
    url: str,
    name: str = "gpujobs",
    command: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """An entry for ``c.JupyterHub.services``.

    With ``command=None`` the hub starts ``python -m gpujobs.cli serve`` itself (a *managed* service,
    given ``JUPYTERHUB_SERVICE_URL`` = ``url``); pass ``command=[]`` for a service run elsewhere (such
    as a Kubernetes Deployment), which then needs ``api_token`` set by the caller.
    """
    service: dict[str, Any] = {"name": name, "url": url, "display": True, "oauth_no_confirm": True}
    if command is None:
        command = [python or sys.executable, "-m", "gpujobs.cli", "serve"]
    if command:
        service["command"] = list(command)
        service["environment"] = dict(environment or {})
    return service


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deploy_user_files(home: Path, *, notebook: Path = INIT_NOTEBOOK, examples: Path = EXAMPLES) -> list[Path]:
    """Copy the init notebook and the examples into ``home``, never overwriting a user's edits.

    Run it as the home's owner, never as root in someone else's home: it follows what it finds there
    (``deploy_as`` does that for a hub running as root).

    A file is (re)written only when it is missing or still exactly what we deployed last time (a
    manifest in the home remembers those digests), so a newer gpujobs refreshes untouched copies.
    Returns the files written.
    """
    home.mkdir(parents=True, exist_ok=True)
    manifest_path = home / _MANIFEST
    try:
        deployed: dict[str, str] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        deployed = {}
    sources = {notebook.name: notebook}
    sources.update({f"{EXAMPLES_FOLDER}/{p.name}": p for p in sorted(examples.glob("*.py"))})
    written = []
    for relative, source in sources.items():
        target = home / relative
        if target.exists():
            current = _digest(target)
            if current == _digest(source):
                deployed[relative] = current
                continue  # already up to date
            if current != deployed.get(relative):
                continue  # the user's own copy, or one they edited: leave it alone
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        deployed[relative] = _digest(target)
        written.append(target)
    manifest_path.write_text(json.dumps(deployed, indent=1))
    return written


def deploy_as(owner: pwd.struct_passwd, home: Path, python: str) -> list[str]:
    """``deploy_user_files`` in a process of ``owner``'s (``python -m gpujobs.hub HOME``): root never
    writes into a home a user controls, where a planted link would turn the write onto any file."""
    done = subprocess.run(
        [python, "-m", "gpujobs.hub", str(home)],
        user=owner.pw_uid,
        group=owner.pw_gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise OSError(f"deploying as {owner.pw_name} failed: {done.stderr.strip()[-500:]}")
    return [line.removeprefix("gpujobs: deployed ") for line in done.stdout.splitlines()]


def make_pre_spawn_hook(
    *,
    service_url: str,
    home_of: Callable[[str], Path],
    account: Callable[[str], pwd.struct_passwd] | None = None,
    user_python: str | None = None,
) -> Callable[[Any], None]:
    """A ``c.Spawner.pre_spawn_hook``: make the user's system account (``account``, when given: it
    returns the account, made if missing), deploy the init notebook and examples (as that account,
    with ``user_python``, when there is one), and tell the server where gpujobs is (``GPUJOBS_URL``)."""

    def pre_spawn_hook(spawner: Any) -> None:
        name = spawner.user.name
        owner = account(name) if account is not None else None  # no account: the spawn must fail
        try:
            if owner is not None:
                written: list[Any] = deploy_as(owner, home_of(name), user_python or sys.executable)
            else:
                written = deploy_user_files(home_of(name))
        except OSError as exc:  # a full or read-only home must not stop the server from starting
            spawner.log.warning("gpujobs: could not deploy the init notebook for %s: %s", name, exc)
        else:
            if written:
                spawner.log.info("gpujobs: deployed %d file(s) for %s", len(written), name)
        spawner.environment = {**spawner.environment, "GPUJOBS_URL": service_url}

    return pre_spawn_hook
