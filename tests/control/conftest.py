"""In-process tests of the control loop: the real app over ASGI (no subprocess, no sockets but the fake
hub's), with a fake executor, and the scheduler and reconciler driven one step at a time.

- ``harness(executor)`` (async context manager): ``h.alice`` / ``h.bob`` (httpx clients with hub
  tokens), ``h.rt`` (the service's runtime), ``await h.cycle()`` (one scheduling cycle),
  ``await h.reconcile()`` (one reconciler pass and the steps it started), ``h.store_refuses_writes()``
  (a context manager: every write fails as on a full disk), ``h.writer_held()`` (the store's writer
  waits until the block ends, so the writes queued inside commit afterwards in their order).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from gpujobs.config import Settings
from gpujobs.executors.base import Executor
from gpujobs.service.app import create_app
from gpujobs.service.runtime import Runtime
from gpujobs.testing.fakehub import FakeHub


class Harness:
    def __init__(self, app: Any, hub: FakeHub) -> None:
        self.app = app
        self.hub = hub
        self.clients: list[httpx.AsyncClient] = []
        self.alice = self.client("alice")
        self.bob = self.client("bob")

    @property
    def rt(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    def client(self, user: str, **kwargs: Any) -> httpx.AsyncClient:
        token = self.hub.add_user(user, **kwargs)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://gpujobs.test/",
            headers={"Authorization": f"token {token}"},
        )
        self.clients.append(client)
        return client

    async def submit(self, client: httpx.AsyncClient, **spec: Any) -> str:
        response = await client.post("api/k8s/submit-job", json={"name": "t", "script": "print(1)", **spec})
        assert response.status_code == 201, response.text
        job_id: str = response.json()["data"]["job_id"]
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        response = await self.alice.get(f"api/k8s/job/{job_id}/status")
        if response.status_code == 404:
            response = await self.bob.get(f"api/k8s/job/{job_id}/status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def cycle(self) -> None:
        await self.rt.scheduler.cycle()

    async def reconcile(self, passes: int = 1) -> None:
        for _ in range(passes):
            await self.rt.reconciler.pass_once()
            await self.rt.reconciler.settle()

    async def step(self, times: int = 1) -> None:
        for _ in range(times):
            await self.cycle()
            await self.reconcile()

    @contextlib.contextmanager
    def store_refuses_writes(self) -> Iterator[None]:
        """Every statement that changes the database fails, as SQLite fails on a full disk."""
        engine = self.rt.store.engine

        def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                raise sqlite3.OperationalError("database or disk is full")

        event.listen(engine, "before_cursor_execute", refuse)
        try:
            yield
        finally:
            event.remove(engine, "before_cursor_execute", refuse)

    @contextlib.asynccontextmanager
    async def writer_held(self) -> AsyncIterator[None]:
        """Hold the store's writer thread: writes asked for inside the block queue up, and commit, in
        the order they were asked, once it ends."""
        entered, leave = threading.Event(), threading.Event()

        def block(_session: Any) -> None:
            entered.set()
            leave.wait(30)

        blocked = asyncio.ensure_future(self.rt.store.write(block))
        await asyncio.to_thread(entered.wait, 30)
        try:
            yield
        finally:
            leave.set()
            await blocked


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    created = FakeHub()
    yield created
    created.close()


@pytest.fixture
def harness(tmp_path: Path, hub: FakeHub) -> Callable[..., contextlib.AbstractAsyncContextManager[Harness]]:
    @contextlib.asynccontextmanager
    async def make(executor: Executor, **overrides: Any) -> AsyncIterator[Harness]:
        (tmp_path / "home" / "alice").mkdir(parents=True, exist_ok=True)
        (tmp_path / "home" / "bob").mkdir(parents=True, exist_ok=True)
        settings = Settings(
            data_dir=tmp_path / "data",
            nvml=False,
            home_template=str(tmp_path / "home" / "{username}"),
            hub_api_url=hub.api_url,
            hub_api_token=hub.service_token,
            kill_grace_seconds=1,
            **overrides,
        )
        app = create_app(settings, executor_factory=lambda _settings: executor, run_loops=False)
        async with app.router.lifespan_context(app):
            made = Harness(app, hub)
            # Steps are driven by hand: a failed step may be tried again on the very next pass.
            made.rt.reconciler.step_backoff = made.rt.reconciler.max_step_backoff = 0.0
            try:
                yield made
            finally:
                for client in made.clients:
                    await client.aclose()
        assert getattr(executor, "double_bookings", []) == [], "two live jobs shared a GPU"

    return make
