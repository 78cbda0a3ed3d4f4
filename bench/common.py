"""Shared by the benchmarks: start the service (or a baseline) in a subprocess, drive HTTP load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gpujobs.testing.fakehub import FakeHub
from gpujobs.testing.processes import ServiceProcess, wait_for


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Wait for a server that is not gpujobs (the baseline app) to answer ``url``."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"server exited early ({process.returncode})")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=timeout, what=url)


class Service:
    """``gpujobs serve`` with a fake hub and one user, as the tests run it."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.hub = FakeHub()
        self.token = self.hub.add_user("bench")
        (root / "home" / "bench").mkdir(parents=True, exist_ok=True)
        full_env = {
            "JUPYTERHUB_API_URL": self.hub.api_url,
            "GPUJOBS_HOME_TEMPLATE": str(root / "home" / "{username}"),
            "GPUJOBS_NVML": "false",
            "GPUJOBS_LOG_LEVEL": "warning",
            # The bench user has no system account: its jobs run as the benchmark's own.
            "GPUJOBS_JOBS_AS_SERVICE_ACCOUNT": "true",
            **(env or {}),
        }
        self.process = ServiceProcess(root / "data", full_env, list(args)).start()
        self.url = self.process.url

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def close(self) -> None:
        self.process.stop()
        self.hub.close()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _one_connection(
    host: str, port: int, request: bytes, stop: float, latencies: list[float], statuses: dict[int, int]
) -> None:
    """Keep-alive HTTP/1.1 on one connection, as fast as the server answers.

    Hand-written on asyncio streams: a general-purpose client (httpx) costs more CPU per request than
    the server does, and on two cores it would measure itself.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
            if status in (200, 201):
                latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


async def drive(
    url: str, headers: dict[str, str], body: Callable[[], dict[str, Any]], concurrency: int, seconds: float
) -> dict[str, float]:
    """POST ``body()`` from ``concurrency`` keep-alive connections for ``seconds``; accepted/s, ms."""
    parts = httpx.URL(url)
    payload = json.dumps(body()).encode()
    lines = [
        f"POST {parts.raw_path.decode()} HTTP/1.1",
        f"Host: {parts.host}:{parts.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    began = time.perf_counter()
    stop = began + seconds
    await asyncio.gather(
        *(
            _one_connection(parts.host, parts.port or 80, request, stop, latencies, statuses)
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - began
    return {
        "concurrency": concurrency,
        "accepted_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "errors": sum(count for status, count in statuses.items() if status not in (200, 201)),
    }


def timed_ms(function: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds each of ``repeats`` calls of ``function`` took."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000)
    return samples
