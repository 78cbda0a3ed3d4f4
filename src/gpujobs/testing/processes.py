"""Real gpujobs processes for tests and benchmarks: ``gpujobs serve`` in a subprocess, free ports,
waiting on conditions (never on sleeps)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until ``condition()`` is truthy and return it; fail after ``timeout`` (a bound, not a bet)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)


class ServiceProcess:
    """``gpujobs serve`` as users run it, on a free port, with its own data dir."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        args: list[str] | None = None,
        *,
        command: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.command = command or [sys.executable, "-m", "gpujobs.cli", "serve"]
        self.port = free_port()
        self.env = {**os.environ, **env}
        self.args = args or []
        self.log_path = data_dir.parent / f"{data_dir.name}-service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/").rstrip("/") + "/"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> ServiceProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                *self.command,
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._healthy, timeout=60, what=f"gpujobs on port {self.port} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"gpujobs exited early:\n{self.log_path.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + "healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def kill_hard(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
