"""``gpu-status`` on a simulated 5,000-node / 100,000-pod cluster, against the brief's approach.

The cluster is ``gpujobs fake-cluster`` (real HTTP; pods of other workloads fill the nodes, and on
every other GPU node one of them holds half the GPUs).  gpujobs answers from the cache its list+watch
keeps; the brief's original code, measured in the same run on the same cluster, lists the nodes and
then the pods of every GPU node, on every request.  Also the service's resident memory with that
cluster cached and 100,000 finished jobs in its store.

Targets (DESIGN §6): no Kubernetes API call per request; p99 ≤ 5 ms for the per-type summary
(``?nodes=false``), ≤ 50 ms for the full node list; ≤ 300 MB RSS.  Also measured: a page of 100
nodes of the filtered list (``?limit=100&gpu_type=a100&free=1&cursor=…``), as a dashboard asks.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from common import Service, percentile
from sqlalchemy import insert

from gpujobs.executors.kubernetes.nodes import GPU_RESOURCES, TERMINAL_PHASES, kube_node, pod_gpu_request
from gpujobs.store.database import Store
from gpujobs.store.orm import JobRow
from gpujobs.store.repository import new_job_values
from gpujobs.testing.fakekube.nodes import parse_spec
from gpujobs.testing.processes import free_port, wait_for

NODES = "a100-80gb:8x2000,h100:8x1000,t4:4x1500,cpu:0x500"  # 5,000 nodes, 34,000 GPUs


def start_cluster(root: Path, nodes: str, pods: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    kubeconfig = root / "kubeconfig"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gpujobs.cli", "fake-cluster", "--nodes", nodes, "--other-pods", str(pods),
            "--port", str(port), "--kubeconfig", str(kubeconfig), "--work-dir", str(root / "cluster"),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise SystemExit("the fake cluster exited")
        try:
            return httpx.get(f"{url}/version", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, timeout=300, what="the fake cluster")
    return process, url, kubeconfig


def fill_store(data_dir: Path, count: int) -> None:
    """``count`` finished jobs, as a store that has served a while holds them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{data_dir / 'gpujobs.sqlite'}")
    start = datetime.now(timezone.utc) - timedelta(days=30)
    rows = []
    for index in range(count):
        created = start + timedelta(seconds=20 * index)
        values = new_job_values(
            job_id=uuid.uuid4().hex[:16], user=f"user{index % 200}", groups=[], name=f"job-{index}",
            priority="normal", gpu_required=True, gpu_count=1, gpu_type="a100", cpu_request=0.0,
            spec={"name": f"job-{index}", "script": "print(1)", "gpu_count": 1}, created_at=created,
            timeout_seconds=3600,
        )  # fmt: skip
        values.update(status="completed", exit_code=0, attempts=1, finished_at=created + timedelta(minutes=5))
        rows.append(values)
    for chunk in range(0, count, 10_000):
        store.write_sync(lambda s, part=rows[chunk : chunk + 10_000]: s.execute(insert(JobRow), part))
    store.close()


def timed(client: httpx.Client, url: str, headers: dict[str, str], count: int) -> tuple[list[float], int]:
    latencies, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return latencies, size


def timed_for(client: httpx.Client, url: str, headers: dict[str, str], seconds: float) -> list[float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        latencies += timed(client, url, headers, 1)[0]
    return latencies


def brief_approach(client: httpx.Client, cluster: str) -> dict[str, int]:
    """The original code's way, per request: list nodes, then one pod list per GPU node."""
    nodes = client.get(f"{cluster}/api/v1/nodes").json()["items"]
    totals: dict[str, list[int]] = {}
    for node in nodes:
        inventory = kube_node(node)
        if not inventory.node.devices:
            continue
        pods = client.get(
            f"{cluster}/api/v1/pods", params={"fieldSelector": f"spec.nodeName={node['metadata']['name']}"}
        ).json()["items"]
        used = sum(
            pod_gpu_request(pod, resource)
            for pod in pods
            if pod.get("status", {}).get("phase") not in TERMINAL_PHASES
            for resource in GPU_RESOURCES
        )
        gpu_type = inventory.node.devices[0].gpu_type
        counts = totals.setdefault(gpu_type, [0, 0])
        counts[0] += len(inventory.node.devices)
        counts[1] += used
    return {gpu_type: total - used for gpu_type, (total, used) in totals.items()}


class Churn:
    """Other workloads coming and going: every ``1/rate`` s a pod holding one GPU starts on a GPU node or
    the last one ends, so the cache (and gpu-status) keeps changing while it is measured."""

    def __init__(self, cluster: str, nodes: list[str], rate: float) -> None:
        self.cluster, self.nodes, self.rate = cluster, nodes, rate
        self.events = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Churn:
        self.started = time.perf_counter()
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.achieved = self.events / (time.perf_counter() - self.started)  # the API server sets the pace
        if self.events % 2:  # end as it began: the last pod started goes
            name = f"churn-{self.events // 2}"
            httpx.delete(f"{self.cluster}/api/v1/namespaces/workloads/pods/{name}").raise_for_status()
            self.events += 1

    def _run(self) -> None:
        pods = f"{self.cluster}/api/v1/namespaces/workloads/pods"
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(1 / self.rate):
                name = f"churn-{self.events // 2}"
                if self.events % 2 == 0:
                    node = self.nodes[(self.events // 2) % len(self.nodes)]
                    gpu = {"nvidia.com/gpu": "1"}
                    client.post(
                        pods,
                        json={
                            "metadata": {"name": name},
                            "spec": {
                                "nodeName": node,
                                "containers": [
                                    {
                                        "name": "main",
                                        "image": "x",
                                        "resources": {"requests": gpu, "limits": gpu},
                                    }
                                ],
                            },
                            "status": {"phase": "Running"},
                        },
                    ).raise_for_status()
                else:
                    client.delete(f"{pods}/{name}").raise_for_status()
                self.events += 1


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", default=NODES)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=100_000, help="finished jobs in the store")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-requests", type=int, default=3)
    parser.add_argument("--churn", type=float, default=10.0, help="GPU-holding pod events per second")
    parser.add_argument("--churn-seconds", type=float, default=5.0, help="how long to measure each answer")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        cluster_process, cluster, kubeconfig = start_cluster(root, options.nodes, options.pods)
        print(f"cluster up: {options.nodes}, {options.pods:,} pods ({time.perf_counter() - started:.1f} s)")
        fill_store(root / "data", options.jobs)
        started = time.perf_counter()
        service = Service(root, "--executor", "kubernetes", "--kubeconfig", str(kubeconfig))
        startup = time.perf_counter() - started
        print(f"service up, cluster listed and cached: {startup:.1f} s")
        try:
            with httpx.Client(timeout=600) as client:
                headers = service.headers()
                summary_url = service.url + "api/k8s/gpu-status?nodes=false"
                full_url = service.url + "api/k8s/gpu-status"
                timed(client, full_url, headers, 5)  # warm-up (auth cache, first build)
                calls_before = client.get(f"{cluster}/fake/stats").json()["requests"]
                summary, summary_size = timed(client, summary_url, headers, options.requests)
                full, full_size = timed(client, full_url, headers, options.requests // 3)
                # A page of a filtered node list, as the dashboard asks for it (from the middle).
                page_query = "limit=100&gpu_type=a100&free=1&cursor=a100-80gb-node-1000"
                page_url = service.url + "api/k8s/gpu-status?" + page_query
                page, page_size = timed(client, page_url, headers, options.requests)
                api_calls = client.get(f"{cluster}/fake/stats").json()["requests"] - calls_before
                gpu_nodes = [
                    n["name"]
                    for n in client.get(full_url, headers=headers).json()["data"]["gpu_nodes"]
                    if n["available"]
                ]

                def available() -> dict[str, int]:
                    data = client.get(summary_url, headers=headers).json()["data"]
                    return {t["gpu_type"]: t["available"] for t in data["gpu_types"]}

                quiet = available()
                with Churn(cluster, gpu_nodes[1::2], options.churn) as churn:
                    churn_summary = timed_for(client, summary_url, headers, options.churn_seconds)
                    churn_full = timed_for(client, full_url, headers, options.churn_seconds)
                wait_for(lambda: available() == quiet, what="the cache to see the churn end")
                status = client.get(summary_url, headers=headers).json()["data"]
                ours = {t["gpu_type"]: t["available"] for t in status["gpu_types"]}
                rss = rss_mib(service.process.process.pid)  # type: ignore[union-attr]
                baseline, answer = [], {}
                for _ in range(options.baseline_requests):
                    begun = time.perf_counter()
                    answer = brief_approach(client, cluster)
                    baseline.append((time.perf_counter() - begun) * 1000)
        finally:
            service.close()
            cluster_process.terminate()
            cluster_process.wait(timeout=30)

    assert answer == ours, f"the two approaches disagree: {answer} vs {ours}"
    figures = {
        "nodes": sum(count for _, _, count in parse_spec(options.nodes)),
        "other_pods": options.pods,
        "job_rows": options.jobs,
        "api_calls_during_gpujobs_requests": api_calls,
        "summary_p50_ms": round(percentile(summary, 0.5), 2),
        "summary_p99_ms": round(percentile(summary, 0.99), 2),
        "summary_bytes": summary_size,
        "full_p50_ms": round(percentile(full, 0.5), 2),
        "full_p99_ms": round(percentile(full, 0.99), 2),
        "full_bytes": full_size,
        "page_p50_ms": round(percentile(page, 0.5), 2),
        "page_p99_ms": round(percentile(page, 0.99), 2),
        "page_bytes": page_size,
        "churn_events_per_s": round(churn.achieved, 1),
        "churn_summary_p50_ms": round(percentile(churn_summary, 0.5), 2),
        "churn_summary_p99_ms": round(percentile(churn_summary, 0.99), 2),
        "churn_full_p50_ms": round(percentile(churn_full, 0.5), 2),
        "churn_full_p99_ms": round(percentile(churn_full, 0.99), 2),
        "brief_approach_p50_ms": round(percentile(baseline, 0.5), 1),
        "brief_approach_calls_per_request": 1
        + sum(count for _, gpus, count in parse_spec(options.nodes) if gpus),
        "ratio_full_p50": round(percentile(baseline, 0.5) / percentile(full, 0.5), 1),
        "ratio_summary_p50": round(percentile(baseline, 0.5) / percentile(summary, 0.5), 1),
        "service_rss_mib": round(rss, 1),
        "service_startup_s": round(startup, 1),
    }
    print(
        f"gpujobs summary: p50 {figures['summary_p50_ms']} ms, p99 {figures['summary_p99_ms']} ms (target 5)"
    )
    print(f"gpujobs full list: p50 {figures['full_p50_ms']} ms, p99 {figures['full_p99_ms']} ms (target 50)")
    print(
        f"gpujobs page of 100 filtered nodes: p50 {figures['page_p50_ms']} ms, "
        f"p99 {figures['page_p99_ms']} ms ({page_size:,} bytes)"
    )
    print(
        f"with {churn.achieved:.1f} GPU-holding pod events/s: "
        f"summary p50 {figures['churn_summary_p50_ms']} ms, "
        f"p99 {figures['churn_summary_p99_ms']} ms; full p50 {figures['churn_full_p50_ms']} ms, "
        f"p99 {figures['churn_full_p99_ms']} ms"
    )
    print(f"brief's approach: p50 {figures['brief_approach_p50_ms']} ms per request")
    print(f"Kubernetes API calls made by gpujobs while answering: {api_calls} (target 0)")
    print(f"service RSS: {figures['service_rss_mib']} MiB (target 300)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
