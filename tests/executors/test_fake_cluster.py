"""The simulated Kubernetes cluster: real HTTP, real processes, the Job semantics gpujobs relies on.

Jobs here are built by gpujobs' own manifest builders, so these tests also show the manifests run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from builders import stored_job
from gpujobs.executors.kubernetes.manifests import (
    JobTemplate,
    job_manifest,
    owned_by,
    placement_for,
    script_configmap,
)
from gpujobs.executors.kubernetes.nodes import kube_node
from gpujobs.gputypes import satisfies
from gpujobs.testing.fakekube.api import Faults
from gpujobs.testing.fakekube.server import FakeCluster
from helpers import pid_alive, wait_for

NS = "gpujobs"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
TEMPLATE = JobTemplate(namespace=NS, home_claim_template=None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> FakeCluster:
    started = FakeCluster(
        "a100-80gb:2x2,t4:1x1,cpu:0x1", work_dir=tmp_path_factory.mktemp("cluster"), bookmark_seconds=0.3
    ).start()
    yield started
    started.stop()


@pytest.fixture
def api(cluster: FakeCluster) -> httpx.Client:
    return httpx.Client(base_url=cluster.url, timeout=30)


@pytest.fixture
def faults(cluster: FakeCluster) -> Faults:
    """The shared cluster's faults, all cleared again after the test."""
    yield cluster.faults
    cluster.faults.clear()
    cluster.faults.silent_watches = cluster.faults.drop_watches = False
    cluster.faults.errors, cluster.faults.delay_seconds = 0, 0.0


@pytest.fixture
def small(tmp_path: Path) -> FakeCluster:
    """A cluster of its own, for tests that stop or wipe its API server (no periodic bookmarks)."""
    started = FakeCluster(
        "t4:1x1,cpu:0x1", work_dir=tmp_path / "cluster", other_pods=2, bookmark_seconds=60
    ).start()
    yield started
    started.stop()


counter = iter(range(10_000))


def submit(api: httpx.Client, code: str, **spec: Any) -> tuple[str, dict]:
    """Create the script ConfigMap and the Job as the executor will: Job first, then the owned ConfigMap."""
    job_id = f"{next(counter):016x}"
    spec = {"name": "t", "script": code, **spec}
    record = stored_job(job_id, spec_fields=spec)
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
    # Its process is killed, or (on a busy machine, the deadline passing before the pod started) never
    # starts at all: either way nothing of it runs, now or later.
    wait_for(
        lambda: all(p["status"].get("phase") in ("Succeeded", "Failed") for p in pods_of(api, name)),
        what="its pod to end",
    )
    wait_for(
        lambda: not pid_file.exists() or (pid_file.read_text() and not pid_alive(int(pid_file.read_text()))),
        what="the process to die",
    )
    time.sleep(1)  # a container that was about to start would have started by now...
    assert not pid_file.exists() or not pid_alive(int(pid_file.read_text()))  # ...and is dead


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
            and (w := p[0]["status"]["containerStatuses"][0]["state"].get("waiting"))
            and w["reason"] != "ContainerCreating"  # until its script ConfigMap is there
            and w
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


# --- API-server faults and restarts, as clients see them ----------------------------------------------


def raw_job(name: str, code: str, *, configmap: str | None = None) -> dict:
    """A plain Job (no gpujobs manifest): one python container, optionally mounting a ConfigMap."""
    container: dict[str, Any] = {"name": "main", "image": "python:3.11", "command": ["python", "-c", code]}
    spec: dict[str, Any] = {"containers": [container], "restartPolicy": "Never"}
    if configmap:
        container["volumeMounts"] = [{"name": "script", "mountPath": "/script"}]
        spec["volumes"] = [{"name": "script", "configMap": {"name": configmap}}]
    return {"metadata": {"name": name}, "spec": {"backoffLimit": 0, "template": {"spec": spec}}}


def unique(prefix: str) -> str:
    return f"{prefix}-{next(counter)}"


class Reader:
    """Reads a stream's lines in a thread: what arrived, and how it ended."""

    def __init__(self, client: httpx.Client, path: str, params: dict[str, str]) -> None:
        self.lines: list[Any] = []  # watch events (parsed), or log lines
        self.error: Exception | None = None
        self.ended = threading.Event()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(client, path, params), daemon=True)
        self._thread.start()

    def _read(self, client: httpx.Client, path: str, params: dict[str, str]) -> None:
        try:
            with client.stream("GET", path, params=params) as stream:
                for line in stream.iter_lines():
                    self.lines.append(json.loads(line) if line.startswith("{") else line)
                    if self.stop.is_set():
                        break
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def types(self) -> list[str]:
        return [line["type"] for line in self.lines]

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)


def read_watch(client: httpx.Client, path: str, **params: str) -> list[tuple[float, dict]]:
    """Every line of a watch, with the seconds since it was opened, until the server ends it."""
    started = time.monotonic()
    with client.stream("GET", path, params={"watch": "1", **params}) as stream:
        return [(time.monotonic() - started, json.loads(line)) for line in stream.iter_lines()]


def test_watch_bookmarks_come_only_when_allowed(api: httpx.Client, cluster: FakeCluster) -> None:
    nothing = {"labelSelector": "no-such-label=x"}  # no events: what arrives is bookmarks only
    lines = read_watch(api, JOBS, allowWatchBookmarks="true", timeoutSeconds="1", **nothing)
    assert len(lines) >= 2 and {line["type"] for _, line in lines} == {"BOOKMARK"}
    bookmark = lines[-1][1]["object"]
    assert bookmark["kind"] == "Job" and bookmark["apiVersion"] == "batch/v1"
    assert set(bookmark) == {"kind", "apiVersion", "metadata"}
    assert cluster.store is not None and int(bookmark["metadata"]["resourceVersion"]) <= cluster.store.rv
    # Without allowWatchBookmarks: nothing, and the watch still ends at timeoutSeconds.
    assert read_watch(api, f"/api/v1/namespaces/{NS}/pods", timeoutSeconds="1", **nothing) == []


def test_a_bookmark_comes_shortly_before_the_watch_times_out(small: FakeCluster) -> None:
    with httpx.Client(base_url=small.url, timeout=10) as client:
        lines = read_watch(client, "/api/v1/pods", allowWatchBookmarks="true", timeoutSeconds="1")
    assert [line["type"] for _, line in lines] == ["BOOKMARK"]  # bookmark_seconds=60: only that one
    arrived, bookmark = lines[0]
    assert arrived > 0.5  # sent 0.25 s before the end (2 s before with longer timeouts)
    assert bookmark["object"]["kind"] == "Pod" and bookmark["object"]["apiVersion"] == "v1"
    assert small.store is not None
    assert bookmark["object"]["metadata"]["resourceVersion"] == str(small.store.rv)


def test_a_watch_from_a_resource_version_not_reached_yet_is_504_too_large(
    api: httpx.Client, cluster: FakeCluster
) -> None:
    assert cluster.store is not None
    current = cluster.store.rv
    asked = current + 1000
    answer = api.get(JOBS, params={"watch": "1", "resourceVersion": str(asked)})
    assert answer.status_code == 504 and answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body.pop("metadata") == {}
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": 504,
        "reason": "Timeout",
        "message": f"Too large resource version: {asked}, current: {body['message'].rsplit(' ', 1)[1]}",
        "details": {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    }
    assert int(body["message"].rsplit(" ", 1)[1]) >= current


def test_silent_watches_deliver_nothing_until_they_speak_again(
    api: httpx.Client, cluster: FakeCluster, faults: Faults
) -> None:
    label = unique("silent")
    path = "/api/v1/namespaces/default/configmaps"
    params = {"watch": "1", "allowWatchBookmarks": "true", "labelSelector": f"test={label}"}
    old = Reader(api, path, {**params, "timeoutSeconds": "30"})
    wait_for(lambda: "BOOKMARK" in old.types(), what="the watch to deliver")
    faults.silent_watches = True
    before = len(old.lines)
    new = Reader(api, path, {**params, "timeoutSeconds": "1"})  # opened while silent: outlives its timeout
    wait_for(
        lambda: any(label in query and "timeoutSeconds=1" in query for _, _, query, _ in faults.requests),
        what="the new watch to be open",  # from the version before the change below
    )
    assert api.post(path, json={"metadata": {"name": label, "labels": {"test": label}}}).status_code == 201
    time.sleep(1.5)  # five bookmark periods and past the new watch's timeout: still nothing
    assert len(old.lines) == before and new.lines == [] and not new.ended.is_set()
    faults.silent_watches = False
    for reader in (old, new):
        wait_for(lambda r=reader: "ADDED" in r.types(), what="the event made while silent")
    assert old.lines[before]["type"] == "ADDED" and old.lines[before]["object"]["metadata"]["name"] == label
    wait_for(new.ended.is_set, what="the new watch to end (its timeout passed)")
    assert new.error is None
    wait_for(lambda: old.types()[-1] == "BOOKMARK", what="bookmarks again")
    old.close()


def test_an_injected_status_answers_with_a_status_body_and_retry_after(
    api: httpx.Client, faults: Faults
) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    name = unique("limited")
    rule = faults.inject(
        method="POST", path="/configmaps", fault="status", status=429, retry_after=2, times=2
    )
    for _ in range(2):
        answer = api.post(path, json={"metadata": {"name": name}})
        assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
        body = answer.json()
        assert (body["kind"], body["status"], body["code"], body["reason"]) == (
            "Status",
            "Failure",
            429,
            "TooManyRequests",
        )
        assert "injected" in body["message"] and body["details"] == {"retryAfterSeconds": 2}
        assert api.get(f"{path}/{name}").status_code == 404  # nothing done; GETs are not matched
    assert rule.used == 2 and faults.rules == []  # used up
    assert api.post(path, json={"metadata": {"name": name}}).status_code == 201
    # Other codes get their reasons; a rule for another path leaves this one alone; first match wins.
    faults.inject(path="/no/such/path", fault="status", status=500)
    faults.inject(method="post", path=path, fault="status", status=409)
    faults.inject(method="POST", path=path, fault="status", status=503)
    conflict = api.post(path, json={"metadata": {"name": unique("x")}})
    assert conflict.status_code == 409 and conflict.json()["reason"] == "AlreadyExists"
    assert "retry-after" not in conflict.headers and "details" not in conflict.json()
    assert api.post(path, json={"metadata": {"name": unique("x")}}).json()["reason"] == "ServiceUnavailable"
    faults.inject(method="GET", path="/nodes", fault="status", status=500)
    assert api.get("/api/v1/nodes").json()["reason"] == "InternalError"
    assert api.get("/api/v1/nodes").status_code == 200
    with pytest.raises(ValueError):
        faults.inject(fault="explode")


def test_reset_before_breaks_the_connection_and_does_nothing(api: httpx.Client, faults: Faults) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    name = unique("reset-before")
    faults.inject(method="POST", path="/configmaps", fault="reset-before")
    with pytest.raises(httpx.TransportError) as raised:
        api.post(path, json={"metadata": {"name": name}})
    # Reset while the client still sends its body, it reads on and finds the connection closed.
    assert isinstance(raised.value, (httpx.RemoteProtocolError, httpx.ReadError))
    assert api.get(f"{path}/{name}").status_code == 404


def test_reset_after_does_the_request_but_the_answer_is_lost(api: httpx.Client, faults: Faults) -> None:
    name = unique("reset-after")
    faults.inject(method="POST", path="/jobs", fault="reset-after")
    with pytest.raises(httpx.TransportError) as raised:
        api.post(JOBS, json=raw_job(name, "print('landed')"))
    assert isinstance(raised.value, httpx.ReadError)
    created = api.get(f"{JOBS}/{name}")  # the create landed: the Job is there, and it runs
    assert created.status_code == 200
    wait_for(lambda: _job_condition(api, name) == "Complete", what="the job whose answer was lost")
    again = api.post(JOBS, json=raw_job(name, "print('landed')"))
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    api.delete(f"{JOBS}/{name}")


def test_a_hung_request_times_out_at_the_client(api: httpx.Client, faults: Faults) -> None:
    faults.inject(method="GET", path="/api/v1/nodes", fault="hang", seconds=3)
    with pytest.raises(httpx.TimeoutException) as raised:
        api.get("/api/v1/nodes", timeout=0.3)
    assert isinstance(raised.value, httpx.ReadTimeout)
    assert api.get("/api/v1/nodes", timeout=5).status_code == 200  # one request only
    faults.inject(method="GET", path="/api/v1/nodes", fault="hang", seconds=0.2)
    assert api.get("/api/v1/nodes", timeout=5).status_code == 200  # a short hang is only slow


def test_stop_api_refuses_connections_and_cuts_streams_then_start_api_serves_the_same_state(
    small: FakeCluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = (
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "print('up', flush=True)\ntime.sleep(300)"
    )
    jobs = "/apis/batch/v1/namespaces/default/jobs"
    with httpx.Client(base_url=small.url, timeout=10) as client:
        version = client.get("/api/v1/pods").json()["metadata"]["resourceVersion"]
        job = client.post(jobs, json=raw_job("long", code)).json()
        wait_for(pid_file.exists, what="the pod to start")
        pid = int(pid_file.read_text())
        pod = client.get("/api/v1/namespaces/default/pods", params={"labelSelector": "job-name=long"}).json()
        pod_name = pod["items"][0]["metadata"]["name"]
        log_path = f"/api/v1/namespaces/default/pods/{pod_name}/log"
        wait_for(lambda: client.get(log_path).text == "up\n", what="the pod's output")
        watch = Reader(client, "/api/v1/pods", {"watch": "1", "resourceVersion": version})
        logs = Reader(client, log_path, {"follow": "true"})
        wait_for(lambda: watch.lines and logs.lines, what="the streams to deliver")
        small.stop_api()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{small.url}/api/v1/nodes", timeout=5)
        for stream in (watch, logs):
            wait_for(stream.ended.is_set, what="the stream to be cut")
            assert isinstance(stream.error, httpx.TransportError)
        assert pid_alive(pid)  # the pods go on without the API server
        small.start_api()
        again = client.get(f"{jobs}/long").json()
        assert again["metadata"]["uid"] == job["metadata"]["uid"]
        assert (
            client.get(f"/api/v1/namespaces/default/pods/{pod_name}").json()["status"]["phase"] == "Running"
        )
        small.restart(down_seconds=0.1)  # the same, in one call
        assert client.get(f"{jobs}/long").json()["metadata"]["uid"] == job["metadata"]["uid"]
        assert pid_alive(pid)
        client.delete(f"{jobs}/long")
        wait_for(lambda: not pid_alive(pid), what="the process to end")


def test_an_empty_restart_is_a_fresh_etcd_with_only_nodes_and_namespaces(
    small: FakeCluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"
    with httpx.Client(base_url=small.url, timeout=10) as client:
        nodes = [n["metadata"]["name"] for n in client.get("/api/v1/nodes").json()["items"]]
        assert client.post("/apis/batch/v1/namespaces/gpujobs/jobs", json=raw_job("doomed", code)).is_success
        client.post("/api/v1/namespaces/gpujobs/configmaps", json={"metadata": {"name": "doomed"}})
        wait_for(pid_file.exists, what="the pod to start")
        pid = int(pid_file.read_text())
        before = int(client.get("/api/v1/pods").json()["metadata"]["resourceVersion"])
        old_store, old_simulator = small.store, small.simulator
        small.restart(empty=True, down_seconds=0.1)
        assert small.store is not old_store and small.simulator is not old_simulator
        wait_for(lambda: not pid_alive(pid), what="the pod's process to be killed")
        for kind in ("apis/batch/v1/jobs", "api/v1/configmaps", "api/v1/events"):
            assert client.get(f"/{kind}").json()["items"] == []
        pods = client.get("/api/v1/pods").json()
        assert sorted(p["metadata"]["name"] for p in pods["items"]) == ["workload-0", "workload-1"]
        assert [n["metadata"]["name"] for n in client.get("/api/v1/nodes").json()["items"]] == nodes
        namespaces = client.get("/api/v1/namespaces").json()
        assert sorted(n["metadata"]["name"] for n in namespaces["items"]) == [
            "default",
            "gpujobs",
            "workloads",
        ]
        fresh = int(namespaces["metadata"]["resourceVersion"])
        assert fresh <= len(nodes) + 4 < before  # nodes, other pods, namespaces: a fresh etcd's numbers
        assert all(int(n["metadata"]["resourceVersion"]) <= fresh for n in namespaces["items"])
        # A client resuming its watch from before sees what it would see from a real API server.
        resumed = client.get("/api/v1/pods", params={"watch": "1", "resourceVersion": str(before)})
        assert resumed.status_code == 504
        assert resumed.json()["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
        # And the cluster works as before.
        assert client.post(
            "/apis/batch/v1/namespaces/gpujobs/jobs", json=raw_job("after", "print(1)")
        ).is_success
        wait_for(
            lambda: any(
                c["type"] == "Complete"
                for c in client.get("/apis/batch/v1/namespaces/gpujobs/jobs/after")
                .json()
                .get("status", {})
                .get("conditions", [])
            ),
            what="a job after the restart",
        )


def test_a_pod_waiting_for_its_configmap_is_container_creating_with_a_failed_mount_event(
    api: httpx.Client, cluster: FakeCluster
) -> None:
    name = unique("mounts")
    configmap = f"{name}-script"
    assert api.post(JOBS, json=raw_job(name, "print('mounted')", configmap=configmap)).status_code == 201
    pod = wait_for(
        lambda: (
            (p := pods_of(api, name))
            and p[0]["status"].get("containerStatuses")
            and p[0]["status"]["containerStatuses"][0]["state"].get("waiting")
            and p[0]
        ),
        what="ContainerCreating",
    )
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["waiting"]["reason"] == "ContainerCreating"
    assert (status["name"], status["image"], status["ready"], status["restartCount"]) == (
        "main",
        "python:3.11",
        False,
        0,
    )
    pod_name = pod["metadata"]["name"]
    events_path = f"/api/v1/namespaces/{NS}/events"

    def events(selector: str) -> list[dict]:
        return api.get(events_path, params={"fieldSelector": selector}).json()["items"]

    (event,) = wait_for(lambda: events(f"involvedObject.name={pod_name}"), what="the FailedMount event")
    assert event["kind"] == "Event" and event["metadata"]["namespace"] == NS
    assert event["involvedObject"]["kind"] == "Pod" and event["involvedObject"]["name"] == pod_name
    assert event["involvedObject"]["namespace"] == NS
    assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
    assert (event["reason"], event["type"], event["count"]) == ("FailedMount", "Warning", 1)
    assert (
        event["message"]
        == f'MountVolume.SetUp failed for volume "script" : configmap "{configmap}" not found'
    )
    assert event["source"] == {"component": "kubelet", "host": pod["spec"]["nodeName"]}
    assert event["firstTimestamp"] and event["lastTimestamp"]
    uid = pod["metadata"]["uid"]
    assert events(f"involvedObject.uid={uid},involvedObject.kind=Pod") == [event]
    assert events(f"involvedObject.name={pod_name},involvedObject.kind=Job") == []
    assert events(f"involvedObject.name={pod_name},reason!=FailedMount") == []
    # The kubelet retries: the event is counted again, not repeated.
    assert cluster.simulator is not None
    cluster.simulator.mount_retry_seconds = 0.1
    try:
        wait_for(lambda: events(f"involvedObject.name={pod_name}")[0]["count"] >= 2, what="a retry")
    finally:
        cluster.simulator.mount_retry_seconds = 10.0
    assert len(events(f"involvedObject.name={pod_name}")) == 1
    # The ConfigMap comes: the pod goes on.
    assert api.post(f"/api/v1/namespaces/{NS}/configmaps", json={"metadata": {"name": configmap}}).is_success
    wait_for(lambda: _job_condition(api, name) == "Complete", what="the job to run once mounted")
    assert api.get(f"/api/v1/namespaces/{NS}/pods/{pod_name}/log").text == "mounted\n"


def test_watches_their_clients_abandon_leave_the_cluster_answering(small: FakeCluster) -> None:
    """Clients that drop their watches mid-wait (a service killed, a read timeout) must not leave the
    server's change signal held: every write and every later watch would then hang."""
    path = "/api/v1/namespaces/default/configmaps"

    def abandon_watches(rounds: int) -> None:
        for _ in range(rounds):
            # The read timeout ends the request while the server waits for a change.
            timeout = httpx.Timeout(5, read=0.05)
            with (
                httpx.Client(base_url=small.url, timeout=timeout) as client,
                pytest.raises(httpx.ReadTimeout),
            ):
                read_watch(client, path, timeoutSeconds="30")

    threads = [threading.Thread(target=abandon_watches, args=(25,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=small.url, timeout=10) as client:
        for n in range(60):  # writes wake the waiting watches while their clients go away
            name = unique(f"abandoned-{n}")
            assert client.post(path, json={"metadata": {"name": name}}).status_code == 201
    for thread in threads:
        thread.join()
    with httpx.Client(base_url=small.url, timeout=10) as client:
        label = unique("after")
        assert small.store is not None
        since = str(small.store.rv)  # from before the write below, however late the reader connects
        params = {"watch": "1", "resourceVersion": since, "labelSelector": f"test={label}"}
        watch = Reader(client, path, {**params, "timeoutSeconds": "3"})
        made = client.post(path, json={"metadata": {"name": label, "labels": {"test": label}}})
        assert made.status_code == 201
        wait_for(watch.ended.is_set, what="the watch opened afterwards to end at its timeout")
        assert watch.error is None and watch.types() == ["ADDED"]
