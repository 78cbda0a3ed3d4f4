"""Submissions accepted over HTTP (SQLite, admission paused) at 1, 16 and 64 concurrent clients, and
submit → job's code running with the local executor.

Baselines, measured in the same run: a bare FastAPI endpoint on the same stack (bench/baseline_app.py)
for the accept path, and a bare ``python -c pass`` for the start latency.  Targets (DESIGN §6):
≥ 1,000 accepted/s with p99 ≤ 25 ms at 64 clients; submit → running p50 ≤ 50 ms, p99 ≤ 150 ms.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import Service, drive, percentile, wait_healthy

from gpujobs.testing.processes import free_port

SPEC = {"name": "bench", "script": "print('hi')", "gpu_count": 0}


def accept_path(seconds: float, levels: list[int]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as root:
        service = Service(Path(root), env={"GPUJOBS_ADMISSION_PAUSED": "true"})
        try:
            url = service.url + "api/k8s/submit-job"
            asyncio.run(drive(url, service.headers(), lambda: SPEC, 8, 1.0))  # warm-up (and the auth cache)
            ours = []
            for n in levels:
                figures = asyncio.run(drive(url, service.headers(), lambda: SPEC, n, seconds))
                # The service's own measure of how late its event loop ran, worst over the last ~5 s
                # (null from a service that does not report it).
                health = httpx.get(service.url + "healthz", timeout=30).json()["data"]
                lag = health.get("event_loop_lag_max_seconds")
                figures["loop_lag_max_ms"] = round(lag * 1000, 1) if lag is not None else None
                ours.append(figures)
        finally:
            service.close()
    port = free_port()
    baseline = subprocess.Popen([sys.executable, str(Path(__file__).with_name("baseline_app.py")), str(port)])
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", baseline)
        url = f"http://127.0.0.1:{port}/submit"
        asyncio.run(drive(url, {}, lambda: SPEC, 8, 1.0))
        bare = [asyncio.run(drive(url, {}, lambda: SPEC, n, seconds)) for n in levels]
    finally:
        baseline.terminate()
        baseline.wait()
    rows = []
    for mine, theirs in zip(ours, bare, strict=True):
        ratio = mine["accepted_per_s"] / theirs["accepted_per_s"] if theirs["accepted_per_s"] else 0
        rows.append(
            {
                **mine,
                "baseline_per_s": theirs["accepted_per_s"],
                "baseline_p99_ms": theirs["p99_ms"],
                "ratio_to_baseline": round(ratio, 3),
            }
        )
        print(
            f"  {mine['concurrency']:>3} clients: {mine['accepted_per_s']:>7} accepted/s"
            f"  p50 {mine['p50_ms']} ms"
            f"  p99 {mine['p99_ms']} ms  loop lag ≤ {mine['loop_lag_max_ms']} ms"
            f"   (bare FastAPI: {theirs['accepted_per_s']}/s, ratio {ratio:.2f})"
        )
    return {"accept": rows}


def start_latency(samples: int) -> dict[str, object]:
    python_floor = []
    for _ in range(10):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_floor.append(time.perf_counter() - began)
    with tempfile.TemporaryDirectory() as root:
        service = Service(Path(root))
        latencies = []
        try:
            with httpx.Client(base_url=service.url, headers=service.headers(), timeout=30) as client:
                for _ in range(samples):
                    began = time.time()
                    response = client.post(
                        "api/k8s/submit-job",
                        json={"name": "latency", "script": "import time; print(time.time())"},
                    )
                    job_id = response.json()["data"]["job_id"]
                    while True:
                        view = client.get(f"api/k8s/job/{job_id}/status").json()["data"]
                        if view["status"] in ("completed", "failed"):
                            break
                        time.sleep(0.01)
                    logs = client.get(f"api/k8s/job/{job_id}/logs").json()["data"]["logs"]
                    latencies.append(float(logs.split()[0]) - began)
        finally:
            service.close()
    floor = percentile(python_floor, 0.5)
    result = {
        "samples": samples,
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "python_startup_ms": round(floor * 1000, 1),
        "ratio_p50_to_python_startup": round(percentile(latencies, 0.5) / floor, 2),
    }
    print(
        f"  submit → running: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms "
        f"(a bare `python -c pass`: {result['python_startup_ms']} ms)"
    )
    return {"start_latency": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    parser.add_argument("--samples", type=int, default=50, help="jobs for the start latency")
    parser.add_argument("--quick", action="store_true", help="a short run (CI smoke test)")
    options = parser.parse_args()
    if options.quick:
        options.seconds, options.samples = 1.0, 5
    print("accept path (admission paused, SQLite, durable before 201):")
    figures = accept_path(options.seconds, [1, 16, 64])
    print("local executor:")
    figures.update(start_latency(options.samples))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
