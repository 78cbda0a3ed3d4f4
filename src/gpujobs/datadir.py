"""The one rule for gpujobs' data folders (the service's, and the single-machine hub's): job and user
accounts may pass through them to what is theirs (mode 0711), but list nothing and read none of the
service's own files in them (0600)."""

from __future__ import annotations

import os
from pathlib import Path


def passable_dir(path: Path) -> None:
    """A folder other accounts may pass through but not list."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o711)  # noqa: S103 - traversable, not listable: the point


def protect_data_dir(data_dir: Path) -> None:
    """``data_dir`` passable, and this account's files in it private (files made from now on are
    private anyway where the process runs with umask 077)."""
    passable_dir(data_dir)
    for entry in data_dir.iterdir():
        if entry.is_file() and not entry.is_symlink() and entry.stat().st_uid == os.geteuid():
            os.chmod(entry, 0o600)
