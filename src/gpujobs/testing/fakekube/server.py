"""Running the simulated cluster: in a background thread (tests, benchmarks) or in the foreground
(``gpujobs fake-cluster``), with a kubeconfig that points clients at it."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from ..processes import free_port, wait_for
from .api import Faults, build_app
from .controllers import Simulator
from .nodes import node_objects, other_pods
from .store import Store


def kubeconfig(url: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gpujobs-fake", "cluster": {"server": url}}],
        "users": [{"name": "gpujobs-fake", "user": {"token": "fake-cluster-token"}}],
        "contexts": [
            {
                "name": "gpujobs-fake",
                "context": {"cluster": "gpujobs-fake", "user": "gpujobs-fake", "namespace": namespace},
            }
        ],
        "current-context": "gpujobs-fake",
    }


class FakeCluster:
    """A simulated cluster on 127.0.0.1.  ``start()`` returns once it answers; ``stop()`` kills its pods."""

    def __init__(
        self,
        nodes: str = "a100-80gb:8x2,t4:1x4,cpu:0x1",
        *,
        port: int | None = None,
        work_dir: Path | None = None,
        claims: Mapping[str, str] | None = None,
        other_pods: int = 0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="gpujobs-fake-cluster-"))
        self.faults = Faults()
        self._nodes = nodes
        self._claims = claims
        self._other_pods = other_pods
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.store: Store | None = None
        self.simulator: Simulator | None = None
        self._server: uvicorn.Server | None = None

    async def _main(self) -> None:
        self.store = Store()
        nodes = node_objects(self._nodes)
        for node in nodes:
            await self.store.create("Node", "", node)
        if self._other_pods:
            self.store.load("Pod", "workloads", other_pods(nodes, self._other_pods))
        for name in ("default", "gpujobs", "workloads"):
            await self.store.create("Namespace", "", {"metadata": {"name": name}})
        self.simulator = Simulator(self.store, work_dir=self.work_dir, claims=self._claims)
        app = build_app(self.store, self.simulator, self.faults)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        controller = asyncio.create_task(self.simulator.run())
        try:
            await self._server.serve()
        finally:
            controller.cancel()
            await self.simulator.stop()

    def run_forever(self) -> None:
        asyncio.run(self._main())

    def start(self) -> FakeCluster:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._main())

        self._thread = threading.Thread(target=run, name="gpujobs-fake-cluster", daemon=True)
        self._thread.start()
        import httpx

        wait_for(lambda: _answers(httpx, f"{self.url}/version"), timeout=30, what="the fake cluster")
        return self

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the cluster's loop (tests use it to cordon nodes, compact history, ...)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def compact(self) -> None:
        """Forget the event history: the next watch from before now gets 410 Gone."""

        async def run() -> None:
            assert self.store is not None
            self.store.compact()

        self.call(run())

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(yaml.safe_dump(kubeconfig(self.url, namespace)))
        return path

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def _answers(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).status_code == 200)
    except httpx.HTTPError:
        return False
