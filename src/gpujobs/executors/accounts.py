"""Which system account a local job runs as: never root, never silently the service's own.

The rule, in order:

1. The service is not root: it cannot switch accounts, so jobs run as the service's own account, but
   only where the operator said so (``jobs_as_service_account``: a single-user machine); otherwise
   every submission is refused, because jobs would read everything the service reads.
2. The account named by ``job_account_template`` (``{username}`` by default; ``jupyter-{username}`` the
   way The Littlest JupyterHub names them), if it exists and is not root.
3. ``job_account_fallback``: one unprivileged account for the users who have none.
4. ``jobs_as_service_account``: the service's own account (when the service is root, that is root:
   for tests and throw-away machines only; the service warns at start).
5. Otherwise the submission is refused with a 403 that says why.

``find_account`` is the only place that decides; it reads the account database and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import Forbidden


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, without the primary one


def _account(entry: pwd.struct_passwd) -> Account:
    groups = tuple(g for g in os.getgrouplist(entry.pw_name, entry.pw_gid) if g != entry.pw_gid)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def _lookup(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


_ACCOUNT_NAME = re.compile(r"[a-z_][a-z0-9_-]*")
_DIGESTED = re.compile(r"-[0-9a-f]{8}$")
MAX_ACCOUNT_NAME = 32  # useradd's limit


def system_account_name(template: str, username: str) -> str:
    """The system account for a hub user: ``template`` with ``{username}``, as is when that makes a valid
    account name (lowercase letters, digits, '-', '_'; 32 at most), else with a readable slug of the
    name and a digest of it (``Alice@Lab`` → ``jupyter-alice-lab-1b2c3d4e``), so distinct users never
    share an account.  The hub (which makes the accounts) and the service (which runs jobs under
    them) both name them here."""
    plain = template.format(username=username)
    # A name that already looks like slug-digest goes the digest way too: otherwise a user could pick
    # the name another user's account got ("alice-lab-0255e3b0" for "alice@lab").
    looks_digested = _DIGESTED.search(username) is not None
    if _ACCOUNT_NAME.fullmatch(plain) and len(plain) <= MAX_ACCOUNT_NAME and not looks_digested:
        return plain
    digest = hashlib.sha256(username.encode()).hexdigest()[:8]
    room = max(1, MAX_ACCOUNT_NAME - len(template.replace("{username}", "")) - len(digest) - 1)
    slug = re.sub(r"[^a-z0-9_]+", "-", username.lower()).strip("-")[:room].strip("-") or "u"
    name = template.format(username=f"{slug}-{digest}")
    return name if _ACCOUNT_NAME.match(name) else f"u{name}"[:MAX_ACCOUNT_NAME]


def _check_unprivileged(entry: pwd.struct_passwd, what: str, settings: Settings) -> None:
    """Never root, nor a system account (daemon, www-data: a hub user named so would get its files)."""
    if entry.pw_uid == 0:
        raise Forbidden(f"{what} is root: gpujobs never runs jobs as root")
    if entry.pw_uid < settings.job_account_min_uid:
        raise Forbidden(
            f"{what} is a system account (uid {entry.pw_uid} < job_account_min_uid "
            f"{settings.job_account_min_uid}): gpujobs runs no jobs as it"
        )


def _local_name(settings: Settings, euid: int) -> str:
    return settings.local_user or pwd.getpwuid(euid).pw_name


def account_name(settings: Settings, username: str) -> str:
    return system_account_name(settings.job_account_template, username)


def find_account(settings: Settings, username: str, *, euid: int | None = None) -> Account | None:
    """The account ``username``'s jobs run as; None means the service's own account.  Raises
    ``Forbidden`` (with the reason, for the user and the operator) when no allowed account exists."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        # Without a hub, an ordinary account's service serves that account alone: its jobs are its own.
        if settings.jobs_as_service_account or (
            settings.single_machine and username == _local_name(settings, euid)
        ):
            return None
        raise Forbidden(
            "gpujobs runs as an unprivileged account and cannot run jobs under their users' own accounts; "
            "the operator may set jobs_as_service_account for a single-user machine"
        )
    wanted = account_name(settings, username)
    entry = _lookup(wanted)
    if entry is not None:
        _check_unprivileged(entry, f"the system account {wanted!r} for {username}", settings)
        return _account(entry)
    fallback = settings.job_account_fallback
    if fallback:
        entry = _lookup(fallback)
        if entry is None:
            raise Forbidden(f"the fallback account {fallback!r} (job_account_fallback) does not exist")
        _check_unprivileged(entry, f"the fallback account {fallback!r}", settings)
        return _account(entry)
    if settings.jobs_as_service_account:
        return None
    raise Forbidden(
        f"there is no system account {wanted!r} for {username}, and the operator has set no fallback "
        "account (job_account_fallback): ask them to create one"
    )


def unreachable_folder(path: Path) -> Path | None:
    """The first folder above ``path`` that other accounts may not pass through (no o+x), if any."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return None  # made later, by us, with the right mode
        if not mode & stat.S_IXOTH:
            return folder
    return None
