"""A throwaway PostgreSQL server for tests, from the machine's PostgreSQL binaries (Debian's package).

Started once per test session on a free port, in a temporary folder, as the ``postgres`` system user
(initdb refuses root).  ``start_postgres()`` returns the SQLAlchemy URL, or None when the binaries are
missing (the tests that need it are then skipped; ./scripts/test.sh installs them on Debian).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from helpers import free_port


class Postgres:
    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        self.bin = Path(binaries[-1]).parent if binaries else None
        self.folder: Path | None = None
        self.url: str | None = None

    def _as_postgres(self, *argv: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=120)

    def start(self) -> str | None:
        if self.bin is None:
            return None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                return None
        self.folder = Path(tempfile.mkdtemp(prefix="gpujobs-pg-"))
        if os.geteuid() == 0:
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        data = self.folder / "data"
        port = free_port()
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "gpujobs", "--no-sync"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {self.folder} -h 127.0.0.1 -F",
        )
        self.url = f"postgresql+psycopg://gpujobs@127.0.0.1:{port}/postgres"
        return self.url

    def stop(self) -> None:
        if self.folder is None or self.bin is None:
            return
        try:
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"
            )
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
