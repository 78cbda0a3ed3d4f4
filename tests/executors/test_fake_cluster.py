"""The simulated Kubernetes cluster: real HTTP, real processes, the Job semantics gpujobs relies on.

Jobs here are built by gpujobs' own manifest builders, so these tests also show the manifests run."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpujobs.executors.kubernetes.manifests import (
    JobTemplate,
    job_manifest,
    owned_by,
    placement_for,
    script_configmap,
)
from gpujobs.executors.kubernetes.nodes import kube_node
from gpujobs.gputypes import satisfies
from gpujobs.store.repository import new_job_values, record_of
from gpujobs.testing.fakekube.server import FakeCluster
from helpers import pid_alive, wait_for

NS = "gpujobs"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
TEMPLATE = JobTemplate(namespace=NS, home_claim_template=None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> FakeCluster:
    started = FakeCluster("a100-80gb:2x2,t4:1x1,cpu:0x1", work_dir=tmp_path_factory.mktemp("cluster")).start()
    yield started
    started.stop()


@pytest.fixture
def api(cluster: FakeCluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, timeout=30)


counter = iter(range(10_000))


def submit(api: httpx.Client, code: str, **spec: Any) -> tuple[str, dict]:
    """Create the script ConfigMap and the Job as the executor will: Job first, then the owned ConfigMap."""
    job_id = f"{next(counter):016x}"
    spec = {"name": "t", "script": code, **spec}
    gpus = spec.get("gpu_count", 0)
    record = record_of(
        1,
        new_job_values(
            job_id=job_id,
            user="alice",
            groups=[],
            name="t",
            priority="normal",
            gpu_required=bool(gpus),
            gpu_count=gpus,
            gpu_type=spec.get("gpu_type", "any"),
            cpu_request=0.0,
            spec=spec,
            created_at=datetime.now(timezone.utc),
            timeout_seconds=spec.get("timeout_seconds"),
        ),
    )
    nodes = [kube_node(n) for n in api.get("/api/v1/nodes").json()["items"]]
    manifest = job_manifest(record, TEMPLATE, placement_for(record.gpu_type, nodes, satisfies=satisfies))
    created = api.post(JOBS, json=manifest)
    assert created.status_code == 201, created.text
    configmap = script_configmap(record, TEMPLATE)
    assert configmap is not None
    assert (
        api.post(f"/api/v1/namespaces/{NS}/configmaps", json=owned_by(configmap, created.json())).status_code
        == 201
    )
    return manifest["metadata"]["name"], created.json()


def job_condition(api: httpx.Client, name: str) -> dict | None:
    job = api.get(f"{JOBS}/{name}").json()
    return next((c for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"), None)


def pods_of(api: httpx.Client, name: str) -> list[dict]:
    return api.get(f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": f"job-name={name}"}).json()[
        "items"
    ]


def test_nodes_look_like_a_real_gpu_cluster(api: httpx.Client) -> None:
    nodes = {n["metadata"]["name"]: n for n in api.get("/api/v1/nodes").json()["items"]}
    a100 = nodes["a100-80gb-node-0"]
    assert a100["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert a100["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert a100["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
    assert "nvidia.com/gpu" not in nodes["cpu-node-0"]["status"]["allocatable"]
    assert {d.gpu_type for d in kube_node(a100).node.devices} == {"a100-80gb"}


def test_a_job_runs_on_a_matching_node_and_completes_with_its_logs(api: httpx.Client) -> None:
    name, _ = submit(
        api, "import os, sys\nprint('hello', sys.argv)\n", gpu_count=2, gpu_type="a100", args=["x"]
    )
    wait_for(lambda: (c := job_condition(api, name)) and c["type"] == "Complete", what="job to complete")
    (pod,) = pods_of(api, name)
    assert pod["spec"]["nodeName"].startswith("a100-80gb-node-")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    logs = api.get(f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}/log").text
    assert logs.startswith("hello [") and "'x'" in logs


def test_a_pod_that_fits_no_node_stays_pending_as_unschedulable(api: httpx.Client) -> None:
    name, _ = submit(api, "print(1)", gpu_count=1, gpu_type="t4", cpu_limit="64")
    pod = wait_for(lambda: (p := pods_of(api, name)) and p[0]["status"]["conditions"] and p[0], what="a pod")
    condition = wait_for(
        lambda: next(
            (c for c in pods_of(api, name)[0]["status"]["conditions"] if c["type"] == "PodScheduled"), None
        ),
        what="scheduling",
    )
    assert condition["status"] == "False" and condition["reason"] == "Unschedulable"
    assert "Insufficient cpu" in condition["message"] and condition["message"].startswith(
        "0/4 nodes are available"
    )
    api.delete(f"{JOBS}/{name}")
    assert pod


def test_backoff_limit_and_exit_codes(api: httpx.Client) -> None:
    name, _ = submit(api, "raise SystemExit(3)", retries=1)
    condition = wait_for(lambda: (c := job_condition(api, name)) and c, what="job to fail")
    assert condition["type"] == "Failed" and condition["reason"] == "BackoffLimitExceeded"
    pods = pods_of(api, name)
    assert len(pods) == 2  # the first try and one retry
    assert {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in pods} == {3}


def test_active_deadline_kills_the_job(api: httpx.Client, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    name, _ = submit(
        api,
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)",
        timeout_seconds=1,
    )
    condition = wait_for(lambda: (c := job_condition(api, name)) and c, what="the deadline")
    assert condition["reason"] == "DeadlineExceeded"
    wait_for(
        lambda: pid_file.exists() and not pid_alive(int(pid_file.read_text())), what="the process to die"
    )


def test_memory_limit_is_an_oom_kill(api: httpx.Client) -> None:
    code = (
        "import time\nx = []\nfor _ in range(100):\n    x.append(bytearray(16 * 2**20)); time.sleep(0.02)\n"
    )
    name, _ = submit(api, code, memory_limit="64Mi")
    wait_for(lambda: job_condition(api, name), what="the job to end")
    terminated = pods_of(api, name)[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)


def test_deleting_a_job_deletes_its_pods_and_configmap_and_stops_the_process(
    api: httpx.Client, tmp_path
) -> None:
    pid_file = tmp_path / "pid"
    name, _ = submit(
        api, f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"
    )
    wait_for(pid_file.exists, what="the job to start")
    pid = int(pid_file.read_text())
    assert api.delete(f"{JOBS}/{name}").status_code == 200
    wait_for(lambda: not pid_alive(pid), what="the process to end")
    assert pods_of(api, name) == []
    assert api.get(f"/api/v1/namespaces/{NS}/configmaps/{name}-script").status_code == 404


def test_create_twice_is_409_already_exists(api: httpx.Client) -> None:
    name, manifest = submit(api, "print(1)")
    again = api.post(JOBS, json={"metadata": {"name": name}, "spec": manifest["spec"]})
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"


def test_watch_from_a_resource_version_and_410_after_compaction(
    api: httpx.Client, cluster: FakeCluster
) -> None:
    listed = api.get(f"/api/v1/namespaces/{NS}/pods")
    version = listed.json()["metadata"]["resourceVersion"]
    name, _ = submit(api, "print('watched')")
    seen = []
    with api.stream(
        "GET",
        f"/api/v1/namespaces/{NS}/pods",
        params={
            "watch": "1",
            "resourceVersion": version,
            "labelSelector": f"job-name={name}",
            "timeoutSeconds": "20",
        },
    ) as stream:
        for line in stream.iter_lines():
            event = json.loads(line)
            seen.append((event["type"], event["object"]["status"].get("phase")))
            if event["object"]["status"].get("phase") == "Succeeded":
                break
    assert seen[0] == ("ADDED", "Pending") and seen[-1][1] == "Succeeded"
    assert cluster.store is not None
    cluster.call(_compact(cluster))
    with api.stream(
        "GET", f"/api/v1/namespaces/{NS}/pods", params={"watch": "1", "resourceVersion": version}
    ) as s:
        first = json.loads(next(s.iter_lines()))
    assert first["type"] == "ERROR" and first["object"]["code"] == 410


async def _compact(cluster: FakeCluster) -> None:
    assert cluster.store is not None
    cluster.store.compact()


def test_image_pull_backoff_and_injected_errors(api: httpx.Client, cluster: FakeCluster) -> None:
    name, _ = submit(api, "print(1)", image="registry.example/does-not-exist:1")
    waiting = wait_for(
        lambda: (
            (p := pods_of(api, name))
            and p[0]["status"].get("containerStatuses")
            and p[0]["status"]["containerStatuses"][0]["state"].get("waiting")
        ),
        what="image pull",
    )
    assert waiting["reason"] == "ImagePullBackOff"
    api.delete(f"{JOBS}/{name}")
    cluster.faults.errors = 1
    assert api.get("/api/v1/nodes").status_code == 500
    assert api.get("/api/v1/nodes").status_code == 200


def test_a_busy_cluster_lists_in_pages_and_selects_pods_by_node(tmp_path: Path) -> None:
    busy = FakeCluster("t4:4x3,cpu:0x1", work_dir=tmp_path / "cluster", other_pods=25).start()
    try:
        with httpx.Client(base_url=busy.url, timeout=30) as client:
            names, versions, token = [], set(), None
            while True:
                page = client.get(
                    "/api/v1/pods", params={"limit": 10, **({"continue": token} if token else {})}
                )
                body = page.json()
                names += [p["metadata"]["name"] for p in body["items"]]
                versions.add(body["metadata"]["resourceVersion"])
                token = body["metadata"].get("continue")
                if not token:
                    break
                # A change between pages: the list still answers with its first page's version.
                client.post(
                    "/api/v1/namespaces/default/configmaps", json={"metadata": {"name": f"c{len(names)}"}}
                )
            assert sorted(names) == sorted(f"workload-{i}" for i in range(25)) and len(versions) == 1
            on_node = client.get("/api/v1/pods", params={"fieldSelector": "spec.nodeName=t4-node-0"}).json()
            assert {p["spec"]["nodeName"] for p in on_node["items"]} == {"t4-node-0"}
            assert len(on_node["items"]) == 7  # workload-0, -4, -8, ... -24
            node = client.get("/api/v1/nodes/t4-node-0").json()
            held = sum(
                int(p["spec"]["containers"][0]["resources"].get("limits", {}).get("nvidia.com/gpu", 0))
                for p in on_node["items"]
            )
            assert held == 2 and node["status"]["allocatable"]["nvidia.com/gpu"] == "4"  # half its GPUs
    finally:
        busy.stop()


def test_nodes_go_not_ready_or_cordoned_and_pods_get_evicted(api: httpx.Client, cluster: FakeCluster) -> None:
    cluster.call(cluster.simulator.set_node("t4-node-0", ready=False))
    try:
        name, _ = submit(api, "print(1)", gpu_count=1, gpu_type="t4")
        pod = wait_for(lambda: _pod_condition(api, name, "PodScheduled"), what="the scheduler's verdict")
        assert pod["status"] == "False" and "node(s) were not ready" in pod["message"]
    finally:
        cluster.call(cluster.simulator.set_node("t4-node-0", ready=True))
    wait_for(lambda: _job_condition(api, name) == "Complete", what="the job to run once the node is back")
    long, _ = submit(api, "import time; time.sleep(300)")
    running = wait_for(lambda: _running_pod(api, long), what="the pod to run")
    assert cluster.call(cluster.simulator.evict(NS, running["metadata"]["name"]))
    evicted = api.get(f"/api/v1/namespaces/{NS}/pods/{running['metadata']['name']}").json()["status"]
    assert (evicted["phase"], evicted["reason"]) == ("Failed", "Evicted")
    assert any(c["type"] == "DisruptionTarget" for c in evicted["conditions"])
    # The Job's podFailurePolicy ignores the disruption: a new pod, and no failure counted.
    wait_for(lambda: _running_pod(api, long, exclude=running["metadata"]["name"]), what="a replacement pod")
    assert api.get(f"{JOBS}/{long}").json()["status"].get("failed", 0) == 0
    api.delete(f"{JOBS}/{long}")


def _pod_condition(api: httpx.Client, job: str, kind: str) -> dict | None:
    for pod in api.get(f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": f"job-name={job}"}).json()[
        "items"
    ]:
        for condition in pod["status"].get("conditions", []):
            if condition["type"] == kind:
                return condition
    return None


def _job_condition(api: httpx.Client, job: str) -> str | None:
    conditions = api.get(f"{JOBS}/{job}").json().get("status", {}).get("conditions", [])
    return next((c["type"] for c in conditions if c["status"] == "True"), None)


def _running_pod(api: httpx.Client, job: str, exclude: str = "") -> dict | None:
    pods = api.get(f"/api/v1/namespaces/{NS}/pods", params={"labelSelector": f"job-name={job}"}).json()[
        "items"
    ]
    return next(
        (p for p in pods if p["status"]["phase"] == "Running" and p["metadata"]["name"] != exclude), None
    )
