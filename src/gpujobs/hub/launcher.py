"""``gpujobs hub``: JupyterHub with gpujobs on this machine, in one command."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from .accounts import ACCOUNT_TEMPLATE, unreachable_folder
from .userenv import ensure_user_environment

CONFIG = Path(__file__).with_name("jupyterhub_config.py")
ROOT_DATA_DIR = "/var/lib/gpujobs-hub"  # run as root: a system folder, reachable by users' accounts


def find_proxy() -> str | None:
    """configurable-http-proxy: on PATH, or installed by the README's set-up in ./node_modules."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    candidates = [Path.cwd(), *Path(__file__).resolve().parents]
    for folder in candidates:
        binary = folder / "node_modules" / ".bin" / "configurable-http-proxy"
        if binary.exists():
            return str(binary)
    return None


def _remembered_secret(path: Path, given: str | None, length: int) -> tuple[str, bool]:
    """The given secret, else the one generated on an earlier start, else a new one (kept 0600)."""
    if given:
        return given, False
    if path.exists():
        return path.read_text().strip(), False
    secret = secrets.token_urlsafe(length)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret, True


def hub_environment(
    *,
    port: int,
    ip: str,
    data_dir: Path,
    password: str,
    admins: list[str],
    admin_password: str | None,
    executor: str | None,
    simulate_gpus: str | None,
    proxy: str,
    base: dict[str, str],
) -> dict[str, str]:
    env = dict(base)
    env.update(
        GPUJOBS_HUB_PORT=str(port),
        GPUJOBS_HUB_IP=ip,
        GPUJOBS_HUB_DATA_DIR=str(data_dir),
        GPUJOBS_HUB_PASSWORD=password,
        GPUJOBS_HUB_ADMINS=",".join(admins),
        GPUJOBS_HUB_PROXY_COMMAND=proxy,
    )
    if admin_password:
        env["GPUJOBS_HUB_ADMIN_PASSWORD"] = admin_password
    if executor:
        env["GPUJOBS_EXECUTOR"] = executor
    if simulate_gpus:
        env["GPUJOBS_SIMULATE_GPUS"] = simulate_gpus
    return env


def run_hub(
    *,
    port: int = 8000,
    ip: str = "127.0.0.1",
    data_dir: str | None = None,
    password: str | None = None,
    admins: list[str] | None = None,
    executor: str | None = None,
    simulate_gpus: str | None = None,
) -> int:
    proxy = find_proxy()
    if proxy is None:
        print(
            "gpujobs: configurable-http-proxy not found; install it with `npm install "
            "configurable-http-proxy` (./scripts/setup.sh does)",
            file=sys.stderr,
        )
        return 2
    as_root = os.geteuid() == 0
    folder = Path(data_dir or (ROOT_DATA_DIR if as_root else "gpujobs-hub-data")).resolve()
    if as_root:
        # Users' servers and jobs run under their own accounts: they must pass through to their homes.
        private = unreachable_folder(folder.parent)  # the folder itself is made 0711
        if private is not None:
            print(
                f"gpujobs: {private} is private (no o+x), so users' accounts cannot reach their homes in "
                f"{folder}; give --data-dir a folder they can pass through (the default is {ROOT_DATA_DIR})",
                file=sys.stderr,
            )
            return 2
    folder.mkdir(parents=True, exist_ok=True)
    admins = admins or []
    user_password, new_user_password = _remembered_secret(folder / "user-password", password, 12)
    admin_password = None
    if admins:
        admin_password, _ = _remembered_secret(
            folder / "admin-password", os.environ.get("GPUJOBS_HUB_ADMIN_PASSWORD"), 32
        )
    env = hub_environment(
        port=port,
        ip=ip,
        data_dir=folder,
        password=user_password,
        admins=admins,
        admin_password=admin_password,
        executor=executor,
        simulate_gpus=simulate_gpus,
        proxy=proxy,
        base=dict(os.environ),
    )
    print(f"gpujobs: JupyterHub on http://{ip}:{port}/ (data in {folder})")
    where = " (new)" if new_user_password else f" (kept in {folder / 'user-password'})"
    print(f"gpujobs: log in with any user name and the password {user_password}{where}")
    if admins:
        kept = folder / "admin-password"
        print(f"gpujobs: admins {', '.join(admins)} log in with the admin password kept in {kept}")
    if as_root:
        try:
            env["GPUJOBS_HUB_USER_PYTHON"] = str(ensure_user_environment())
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"gpujobs: could not make the users' environment: {exc}", file=sys.stderr)
            return 2
        print(f"gpujobs: users' servers and jobs run as their own accounts ({ACCOUNT_TEMPLATE})")
    sys.stdout.flush()
    os.chdir(folder)
    os.execve(sys.executable, [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], env)  # noqa: S606
    return 0  # not reached
