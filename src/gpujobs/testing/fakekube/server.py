"""Running the simulated cluster: in a background thread (tests, benchmarks) or in the foreground
(``gpujobs fake-cluster``), with a kubeconfig that points clients at it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import tempfile
import threading
import time
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
    """A simulated cluster on 127.0.0.1.  ``start()`` returns once it answers; ``stop()`` kills its pods.

    Its API server can go away and come back on the same port while the pods go on running
    (``stop_api``/``start_api``), or come back as if etcd had been wiped (``restart(empty=True)``)."""

    def __init__(
        self,
        nodes: str = "a100-80gb:8x2,t4:1x4,cpu:0x1",
        *,
        port: int | None = None,
        work_dir: Path | None = None,
        claims: Mapping[str, str] | None = None,
        other_pods: int = 0,
        bookmark_seconds: float = 5.0,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="gpujobs-fake-cluster-"))
        self.faults = Faults()
        self.bookmark_seconds = bookmark_seconds
        self._nodes = nodes
        self._claims = claims
        self._other_pods = other_pods
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.store: Store | None = None
        self.simulator: Simulator | None = None
        self._controller: asyncio.Task[None] | None = None
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None

    # --- on the cluster's loop ---------------------------------------------------------------------

    async def _main(self) -> None:
        self._done = asyncio.Event()
        await self._build()
        try:
            await self._start_api()
            await self._done.wait()
        finally:
            await self._stop_api()
            await self._stop_simulator()

    async def _build(self) -> None:
        """A new store and simulator: the cluster as constructed (and as it comes back after a wipe)."""
        self.store = Store()
        nodes = node_objects(self._nodes)
        for node in nodes:
            await self.store.create("Node", "", node)
        if self._other_pods:
            self.store.load("Pod", "workloads", other_pods(nodes, self._other_pods))
        for name in ("default", "gpujobs", "workloads"):
            await self.store.create("Namespace", "", {"metadata": {"name": name}})
        self.simulator = Simulator(self.store, work_dir=self.work_dir, claims=self._claims)
        self._controller = asyncio.create_task(self.simulator.run())

    async def _stop_simulator(self) -> None:
        """Stop the controllers and kill every pod's process."""
        if self._controller is not None:
            self._controller.cancel()
            await asyncio.gather(self._controller, return_exceptions=True)
            self._controller = None
        if self.simulator is not None:
            await self.simulator.stop()

    async def _start_api(self) -> None:
        if self._serving is not None:
            return
        assert self.store is not None and self.simulator is not None
        app = build_app(
            self.store,
            self.simulator,
            self.faults,
            bookmark_seconds=self.bookmark_seconds,
            break_connection=self._break_connection,
        )

        async def quiet(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                if not server.should_exit:
                    raise
                # cut by stop_api: the connection is gone, nothing to report

        server = uvicorn.Server(
            uvicorn.Config(
                quiet,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        # Bound here, with SO_REUSEADDR, so that the port can be taken again at once after a stop (and
        # a port that is taken is an OSError here, not a SystemExit in uvicorn).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if serving.done():
            sock.close()
            serving.result()
            raise RuntimeError("the fake cluster's API server stopped as it started")
        self._server, self._serving = server, serving
        serving.add_done_callback(self._api_ended)

    def _api_ended(self, serving: asyncio.Task[None]) -> None:
        """uvicorn stopped by itself (a signal, in ``gpujobs fake-cluster``): the cluster stops too."""
        if serving is self._serving and self._done is not None:
            self._done.set()

    async def _stop_api(self) -> None:
        """Stop listening and cut every open connection (watches, log streams, requests in flight)."""
        server, serving = self._server, self._serving
        self._server = self._serving = None
        if server is None or serving is None:
            return
        server.should_exit = True
        server.force_exit = True  # no graceful wait: open connections are cut below
        for listener in getattr(server, "servers", []):
            listener.close()  # refuse new connections from now on
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                _reset(transport)
        for task in list(server.server_state.tasks):
            task.cancel()
        await asyncio.gather(serving, return_exceptions=True)

    def _break_connection(self, scope: Any) -> bool:
        """Reset the connection a request came on (the injected ``reset-*`` faults)."""
        server = self._server
        client = scope.get("client")
        if server is None or not client:
            return False
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None and getattr(connection, "client", None) == tuple(client):
                _reset(transport)
                return True
        return False

    async def _wipe(self) -> None:
        """As if etcd had been replaced: pods killed, every object gone, nodes and namespaces back."""
        await self._stop_simulator()
        await self._build()

    # --- from other threads ------------------------------------------------------------------------

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

    def stop_api(self) -> None:
        """The API server goes away: its port refuses connections and open watches and log streams
        are cut; the pods go on running."""
        self.call(self._stop_api())

    def start_api(self) -> None:
        """The API server comes back on the same port, with the cluster as it is now."""
        self.call(self._start_api())

    def restart(self, empty: bool = False, down_seconds: float = 0.0) -> None:
        """Restart the API server, down for ``down_seconds``.  ``empty``: it comes back as if etcd had
        been wiped: every pod's process is killed, Jobs, Pods, ConfigMaps and Events are gone, the
        nodes and namespaces are there as at the start, and resourceVersions start low again."""
        self.stop_api()
        if empty:
            self.call(self._wipe())
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start_api()

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
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(done.set)
        if self._thread is not None:
            self._thread.join(timeout=30)


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), as a crashed server or a proxy would."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()


def _answers(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).status_code == 200)
    except httpx.HTTPError:
        return False
