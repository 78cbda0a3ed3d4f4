"""The service in this process: ``gpujobs serve``'s own settings and app, with its scheduler, reconciler
and executor running, on an event loop of its own thread, reached over ASGI (no socket, no process
start).  Most service tests use it; the real-subprocess ``ServiceProcess`` stays for what only a process
shows (the port, uvicorn's forwarded addresses, kill -9 and restarts, the CLI and client over real HTTP,
a browser).

``InProcessService.client(token)`` is a plain synchronous ``httpx.Client``, so a test reads the same
whichever of the two it runs against.  A streamed answer (``logs?follow=true``) arrives piece by piece,
and closing it disconnects, as over a socket.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx

from gpujobs.cli import build_parser, serve_overrides
from gpujobs.config import load_settings
from gpujobs.service.app import create_app

# Inside a test a request never takes long; a hang fails the test instead of the whole run.
REQUEST_TIMEOUT_SECONDS = 60


def settings_of(data_dir: Path, env: dict[str, str], args: list[str]) -> Any:
    """What ``gpujobs serve --data-dir DATA_DIR ARGS`` would run with, given ``env`` as its environment
    (``GPUJOBS_X`` is option ``x``; the hub's ``JUPYTERHUB_*`` keep their names), read by the same code."""
    options = build_parser().parse_args(["serve", "--data-dir", str(data_dir), *args])
    from_env = {
        (name.removeprefix("GPUJOBS_").lower() if name.startswith("GPUJOBS_") else name): value
        for name, value in env.items()
        if name.startswith(("GPUJOBS_", "JUPYTERHUB_"))
    }
    given = {key: value for key, value in serve_overrides(options).items() if value is not None}
    return load_settings(options.config, **{**from_env, **given})


class _Body(httpx.SyncByteStream):
    """The answer's body as the app sends it: a streamed answer arrives piece by piece."""

    def __init__(self, pieces: queue.Queue[tuple[str, Any]], on_close: Any) -> None:
        self.pieces = pieces
        self.on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        while True:
            kind, value = self.pieces.get(timeout=REQUEST_TIMEOUT_SECONDS)
            if kind == "error":
                raise value
            if value:
                yield value
            if kind == "end":
                return

    def close(self) -> None:
        self.on_close()


class _OnTheServiceLoop(httpx.BaseTransport):
    """A synchronous transport that runs each request through the ASGI app on the service's loop, the
    way a server would: the request's scope, its body, the answer as it is sent, and a disconnect when
    the client closes the answer (which ends a followed log)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any) -> None:
        self.loop = loop
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": unquote(request.url.path),
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
        }
        pieces: queue.Queue[tuple[str, Any]] = queue.Queue()
        disconnected = asyncio.Event()
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                pieces.put(("start", message))
            elif message["type"] == "http.response.body":
                more = message.get("more_body", False)
                pieces.put(("body" if more else "end", message.get("body", b"")))

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as exc:  # raised in the test's thread
                pieces.put(("error", exc))

        asyncio.run_coroutine_threadsafe(run(), self.loop)
        kind, start = pieces.get(timeout=REQUEST_TIMEOUT_SECONDS)
        if kind == "error":
            raise start
        return httpx.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_Body(pieces, lambda: self.loop.call_soon_threadsafe(disconnected.set)),
        )


class InProcessService:
    url = "http://gpujobs.test/"

    def __init__(self, data_dir: Path, env: dict[str, str], args: list[str]) -> None:
        self.data_dir = data_dir
        self.settings = settings_of(data_dir, env, args)
        self.app = create_app(self.settings)
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gpujobs-in-process", daemon=True)
        self._clients: list[httpx.Client] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self.app.router.lifespan_context(self.app):
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # handed to the test that started it
            self._failure = exc
            self._ready.set()

    def start(self) -> InProcessService:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise AssertionError("the in-process service did not start in 60 s")
        if self._failure is not None:
            raise AssertionError(f"the in-process service failed to start: {self._failure!r}")
        return self

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        client = httpx.Client(
            base_url=self.url, headers=headers, transport=_OnTheServiceLoop(self.loop, self.app)
        )
        self._clients.append(client)
        return client

    def stop(self) -> None:
        """Shut down as the service does on SIGTERM (the app's lifespan ends); jobs' runners live on."""
        for client in self._clients:
            client.close()
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
        if self._failure is not None:
            raise AssertionError(f"the in-process service failed: {self._failure!r}")
