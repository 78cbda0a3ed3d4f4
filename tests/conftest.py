"""Fixtures, by tier.

- ``world`` / ``module_world``: a ``World``: a real HTTP fake of the JupyterHub API (``world.hub``,
  see ``fakehub.FakeHub``; add users with tokens), users' homes (``world.homes / "alice"``), a shared
  root (``world.shared``), and ``world.start(*args, env=...)`` which starts ``gpujobs serve`` in a
  subprocess the way a hub does (``helpers.ServiceProcess``).  Everything is stopped at the end, and no
  job process is left behind.  ``module_world`` is shared by a module's tests (one service start).
- ``postgres_url``: a throwaway PostgreSQL server (``postgres.Postgres``) for the store's tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import World
from postgres import Postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for this session (skips when the machine has no PostgreSQL binaries)."""
    server = Postgres()
    url = server.start()
    if url is None:
        pytest.skip("no PostgreSQL binaries here (./scripts/test.sh installs them on Debian)")
    yield url
    server.stop()


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
