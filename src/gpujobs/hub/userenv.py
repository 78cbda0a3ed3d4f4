"""The users' environment: a virtual environment every account may run, for the users' JupyterLab
servers and their jobs (the service's own environment may live where they cannot read it: under
/root, say).  Made once by ``gpujobs hub`` when it runs as root; The Littlest JupyterHub keeps the same
thing in /opt/tljh/user.

It holds JupyterLab, JupyterHub's single-user server at the hub's own version (so that servers speak
the hub's protocol), ipywidgets, pip (jobs install their requirements with it) and gpujobs' client
and widgets at this gpujobs, and what the examples use (PyTorch).  pip resolves the rest for the
environment's Python, with the operator's pip configuration (their index, their mirror).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from ..executors.accounts import unreachable_folder

DEFAULT_PATH = Path("/opt/gpujobs/user")
PACKAGES = ["pip", "jupyterlab", "ipywidgets"]
_STAMP = ".gpujobs-user-env"


def base_python() -> str:
    """An interpreter every account may run: this one if it is reachable, else the system's."""
    own = os.path.realpath(sys.executable)
    if unreachable_folder(Path(own).parent) is None:
        return own
    system = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if system is None:
        raise RuntimeError(
            f"no Python that other accounts may run: {own} lies in a private folder and there is no "
            "/usr/bin/python3; install Debian's python3"
        )
    return system


def gpujobs_requirement() -> str:
    """gpujobs itself: the source tree this one runs from (a development checkout), or its release."""
    source = Path(__file__).resolve().parents[3]
    if (source / "pyproject.toml").exists() and (source / "src" / "gpujobs").is_dir():
        return f"gpujobs[notebook,examples] @ {source.as_uri()}"
    return f"gpujobs[notebook,examples]=={metadata.version('gpujobs')}"


def _source_digest() -> str:
    """What gpujobs' files hold now: a development checkout changes without a new version number."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_user_environment(path: Path = DEFAULT_PATH, *, say: Callable[[str], object] = print) -> Path:
    """The environment's interpreter, making the environment first when gpujobs (or what it asks
    for) changed.  ``path`` is a link to the current version, ``<path>-<digest>``, and the interpreter
    returned lies in that version: a rebuild makes a new version beside it and moves the link, so
    servers and jobs already running keep the environment they started from.  The version before
    stays; older ones are removed.  Slow the first time (pip downloads JupyterLab): says so."""
    wanted = [*PACKAGES, f"jupyterhub=={metadata.version('jupyterhub')}", gpujobs_requirement()]
    python = base_python()
    want = hashlib.sha256("\n".join([python, *wanted, _source_digest()]).encode()).hexdigest()
    version = path.with_name(f"{path.name}-{want[:12]}")
    interpreter = version / "bin" / "python"
    if not ((version / _STAMP).exists() and interpreter.exists()):
        say(f"gpujobs: making the users' environment in {version} (once; a few minutes the first time)")
        _build(version, python, wanted)
        (version / _STAMP).write_text(want)
    previous = path.resolve() if path.is_symlink() else None
    _point(path, version)
    for other in path.parent.glob(f"{path.name}-*"):
        made_here = re.fullmatch(rf"{re.escape(path.name)}-[0-9a-f]{{12}}", other.name)
        if made_here and other not in (version, previous) and not other.is_symlink():
            shutil.rmtree(other, ignore_errors=True)
    return interpreter


def _build(version: Path, python: str, wanted: list[str]) -> None:
    if version.exists():
        shutil.rmtree(version)  # a build that did not finish
    version.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0o022)  # every account reads and runs what is made here (the hub's own is 077)
    try:
        subprocess.run([python, "-m", "venv", "--without-pip", str(version)], check=True)
        # This environment's pip installs into the new one (--python): the system's Python may lack
        # ensurepip.
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(version / "bin" / "python"), "install", "--quiet",
             "--disable-pip-version-check", *wanted],
            check=True,
        )  # fmt: skip
    finally:
        os.umask(umask)
    for folder, dirs, files in os.walk(version):
        for name in [*dirs, *files]:
            entry = os.path.join(folder, name)
            if not os.path.islink(entry):
                mode = os.stat(entry).st_mode
                runnable = os.path.isdir(entry) or mode & 0o100
                os.chmod(entry, mode | 0o444 | (0o111 if runnable else 0))
    for top in (version.parent, version):
        os.chmod(top, 0o755)  # noqa: S103 - every account runs it: the point


def _point(link: Path, version: Path) -> None:
    """``link`` → ``version``, swapped in one step (an environment made before versions is kept
    aside: servers may still run from it)."""
    if link.is_symlink() and link.resolve() == version:
        return
    if link.exists() and not link.is_symlink():
        link.rename(link.with_name(f"{link.name}-unversioned"))
    fresh = link.with_name(f".{link.name}.link")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(version.name)
    os.replace(fresh, link)
