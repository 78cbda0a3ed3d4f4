"""End-to-end fixtures: ``hub`` is one real JupyterHub (``hubprocess.Hub``) shared by this folder's
tests; ``admin`` is a hub API client with an admin's token."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hubprocess import Hub


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if os.geteuid() == 0:
        # Users' servers run under their own accounts, which must pass through to their homes:
        # pytest's folders are private to root.
        root = Path(tempfile.mkdtemp(prefix="gpujobs-e2e-", dir="/var/tmp"))
        os.chmod(root, 0o755)  # noqa: S103
    else:
        root = tmp_path_factory.mktemp("hub")
    started = Hub(root / "data")
    yield started
    started.stop()
    if os.geteuid() == 0:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(hub: Hub) -> httpx.Client:
    return hub.api(hub.admin_token())
