"""Single-machine mode: the service without a hub, for one user, who holds a token kept in the data dir.

``gpujobs serve`` with no JupyterHub configured writes ``local-access.json`` in its data dir: the
service's URL, the user's name and a token.  The file is ``0600`` and belongs to that user, so nobody
else on the machine can read the token.  The CLI and the Python client read it when they are given no
URL or token, so on one machine nothing needs setting.  Standard library only: the client imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

ACCESS_FILE = "local-access.json"
ROOT_DATA_DIR = Path("/var/lib/gpujobs")


def default_data_dir(env: Mapping[str, str] | None = None, *, euid: int | None = None) -> Path:
    """Where the service keeps its data when not told: a system folder as root (jobs run as other
    accounts and must pass through it, so not under /root), else the user's XDG data folder."""
    env = os.environ if env is None else env
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_DATA_DIR
    base = env.get("XDG_DATA_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "gpujobs"


@dataclass(frozen=True)
class LocalAccess:
    url: str
    user: str
    token: str


def _parse(text: str) -> LocalAccess | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    url, user, token = (data.get(name) for name in ("url", "user", "token"))
    if not all(isinstance(value, str) and value for value in (url, user, token)):
        return None
    return LocalAccess(str(url), str(user), str(token))


def read_local_access(env: Mapping[str, str] | None = None, *, euid: int | None = None) -> LocalAccess | None:
    """What a service in single-machine mode left for its user: from ``GPUJOBS_DATA_DIR`` when set,
    else this account's default data dir, else the one a root service uses.  None when there is none
    that this account may read."""
    env = os.environ if env is None else env
    if env.get("GPUJOBS_DATA_DIR"):
        folders = [Path(env["GPUJOBS_DATA_DIR"])]
    else:
        folders = list(dict.fromkeys([default_data_dir(env, euid=euid), ROOT_DATA_DIR]))
    for folder in folders:
        try:
            text = (folder / ACCESS_FILE).read_text(encoding="utf-8")
        except OSError:
            continue
        access = _parse(text)
        if access is not None:
            return access
    return None


def keep_local_access(data_dir: Path, *, url: str, user: str, owner_uid: int | None) -> LocalAccess:
    """The user's access, written to ``data_dir``: the token kept from an earlier start (the URL may
    change), else a new one.  Written whole or not at all (a temporary file renamed), ``0600``, and
    owned by ``owner_uid`` (the local user, when the service runs as root)."""
    path = data_dir / ACCESS_FILE
    try:  # never through a link: the token kept is only ever the one this service wrote here
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as handle:
            earlier = _parse(handle.read())
    except OSError:
        earlier = None
    token = earlier.token if earlier is not None and earlier.user == user else secrets.token_hex(32)
    access = LocalAccess(url=url, user=user, token=token)
    # A fresh name, made here (O_EXCL) and changed through its descriptor only: nothing another account
    # placed in the folder (a file, a link) is written to or handed over.
    temporary = path.with_name(f".{ACCESS_FILE}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            if owner_uid is not None and owner_uid != os.geteuid():
                os.fchown(handle.fileno(), owner_uid, -1)
            json.dump(asdict(access), handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return access


def local_proof(token: str, nonce: str) -> str:
    """What the service answers to ``nonce`` to show it holds ``token`` without sending it: the client
    checks it before it sends the token (whatever listens on the port while the service is down could
    otherwise collect it)."""
    return hmac.new(token.encode(), b"gpujobs-local-proof:" + nonce.encode(), hashlib.sha256).hexdigest()
