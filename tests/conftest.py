"""Fixtures, by tier.

- ``world`` / ``module_world``: a ``World``: a real HTTP fake of the JupyterHub API (``world.hub``,
  see ``fakehub.FakeHub``; add users with tokens), users' homes (``world.homes / "alice"``), a shared
  root (``world.shared``), and ``world.start(*args, env=...)`` which starts ``gpujobs serve`` in a
  subprocess the way a hub does (``helpers.ServiceProcess``).  Everything is stopped at the end, and no
  job process is left behind.  ``module_world`` is shared by a module's tests (one service start).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.testing.fakehub import FakeHub
from helpers import ServiceProcess


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = FakeHub()
        self.homes = root / "home"
        self.shared = root / "shared"
        for name in ("alice", "bob", "root-admin"):
            (self.homes / name).mkdir(parents=True, exist_ok=True)
        (self.shared / "examples").mkdir(parents=True, exist_ok=True)
        self.services: list[ServiceProcess] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "JUPYTERHUB_API_URL": self.hub.api_url,
            "JUPYTERHUB_API_TOKEN": self.hub.service_token,
            "JUPYTERHUB_SERVICE_NAME": "gpujobs",
            "GPUJOBS_HOME_TEMPLATE": str(self.homes / "{username}"),
            "GPUJOBS_SHARED_ROOTS": str(self.shared),
            "GPUJOBS_KILL_GRACE_SECONDS": "1",
            "GPUJOBS_SCHEDULE_INTERVAL_SECONDS": "0.5",
            "GPUJOBS_NVML": "false",
        }

    def start(
        self, *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> ServiceProcess:
        service = ServiceProcess(data_dir or self.root / "data", {**self.env, **(env or {})}, list(args))
        self.services.append(service.start())
        return service

    def close(self) -> None:
        for service in self.services:
            service.stop()
            kill_leftover_jobs(service.data_dir)
        self.hub.close()


def kill_leftover_jobs(data_dir: Path) -> None:
    """Runners are detached on purpose (they outlive the service); tests must not leave them behind."""
    jobs = data_dir / "jobs"
    if not jobs.exists():
        return
    for job_dir in jobs.iterdir():
        for name in ("started.json", "runner.json"):
            path = job_dir / name
            if path.exists():
                pid = json.loads(path.read_text())["pid"]
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    created = World(tmp_path)
    yield created
    created.close()


@pytest.fixture(scope="module")
def module_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    created = World(tmp_path_factory.mktemp("world"))
    yield created
    created.close()
