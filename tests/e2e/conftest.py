"""End-to-end fixtures: ``hub`` is one real JupyterHub (``hubprocess.Hub``) shared by this folder's
tests; ``admin`` is a hub API client with an admin's token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hubprocess import Hub


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = Hub(tmp_path_factory.mktemp("hub") / "data")
    yield started
    started.stop()


@pytest.fixture(scope="session")
def admin(hub: Hub) -> httpx.Client:
    return hub.api(hub.admin_token())
