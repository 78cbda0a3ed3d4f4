"""Single-machine mode, the service without a hub: who its one user is, and where their token is kept.

The token itself is kept by ``gpujobs.localaccess`` (the client reads it there too).  A service run by
an ordinary account serves that account, and jobs run as it.  A service run as root with the local
executor serves the account named by ``local_user`` (root never runs jobs), and that account owns the
token file; with the Kubernetes executor, jobs run in pods and any name will do.
"""

from __future__ import annotations

import os
import pwd
import re

from ..config import Settings
from ..executors.accounts import account_name
from ..localaccess import LocalAccess, keep_local_access

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class LocalModeRefused(Exception):
    """The service cannot serve one user as configured; the message says what to change."""


def local_user(settings: Settings, *, euid: int | None = None) -> tuple[str, int]:
    """The one user's name and the uid that owns their token file."""
    euid = os.geteuid() if euid is None else euid
    name = settings.local_user
    if name is not None and not _NAME.fullmatch(name):
        raise LocalModeRefused(
            f"local_user {name!r} is not a user name (letters, digits, '.', '_', '@', '-')"
        )
    if name is None:
        try:
            own_name: str | None = pwd.getpwuid(euid).pw_name
        except KeyError:  # a uid with no account (a container run with --user 12345)
            own_name = None
    if euid != 0:
        if name is None and own_name is None:
            raise LocalModeRefused(
                f"this account (uid {euid}) has no name on this machine: name the user with --local-user NAME"
            )
        return name or str(own_name), euid
    if settings.executor == "kubernetes":  # jobs run in pods, as non-root users: any name will do
        name = name or own_name or "root"
        try:
            return name, pwd.getpwnam(account_name(settings, name)).pw_uid
        except KeyError:
            return name, euid
    if name is None:
        raise LocalModeRefused(
            "without a hub, gpujobs serves one user, and as root it must be told who: --local-user NAME "
            "(an ordinary account: their jobs run as it, and they get the token); root never runs jobs"
        )
    account = account_name(settings, name)
    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        raise LocalModeRefused(
            f"local_user {name!r}: there is no account {account!r} on this machine"
        ) from None
    if entry.pw_uid < settings.job_account_min_uid:
        raise LocalModeRefused(
            f"local_user {name!r}: the account {account!r} is root or a system account (uid {entry.pw_uid}); "
            "jobs never run as it"
        )
    return name, entry.pw_uid


def local_url(settings: Settings) -> str:
    host, port = settings.bind()
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine reaches it on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{settings.service_prefix}"


def prepare_local_access(settings: Settings) -> LocalAccess:
    """The user's token (kept from an earlier start) and the URL, written where the client looks."""
    name, owner = local_user(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return keep_local_access(settings.data_dir, url=local_url(settings), user=name, owner_uid=owner)


def how_to_use(access: LocalAccess, access_file: str) -> str:
    """What ``gpujobs serve`` prints at start in single-machine mode."""
    return (
        f"gpujobs: no JupyterHub is configured, so this service serves one user, {access.user!r}, at "
        f"{access.url}\n"
        f"gpujobs: their token is kept in {access_file} (readable by them only); the gpujobs CLI and "
        "gpujobs.Client find it there:\n"
        "    gpujobs gpus\n"
        "    gpujobs submit train.py --gpus 1 --follow\n"
        "gpujobs: with another data dir, set GPUJOBS_DATA_DIR; any other token is refused"
    )
