"""The Kubernetes executor when the API server misbehaves: every kind of client error on create, watch
and log calls, a ConfigMap that cannot be made, a pod stuck being created, the API server going away
and coming back empty, and the service killed while jobs are being handed over.

The simulated cluster really fails the calls (``FakeCluster.faults``) and really restarts on the same
port; the service is the real one, in its own process.  Every job's code writes a line to ``runs`` when
it starts, so a job that ran twice shows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import Api, kubernetes_service_args, script, wait_for

FAST = {
    "GPUJOBS_KUBE_WATCH_TIMEOUT_SECONDS": "3",
    "GPUJOBS_KUBE_SILENCE_SECONDS": "4",
    "GPUJOBS_KUBE_CONTAINER_CREATING_SECONDS": "3",
    "GPUJOBS_KUBE_REQUEST_TIMEOUT_SECONDS": "2",
    "GPUJOBS_LAUNCH_RETRY_SECONDS": "30",
}
JOBS = "/apis/batch/v1/namespaces/gpujobs/jobs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[FakeCluster]:
    root = tmp_path_factory.mktemp("kube-faults")
    started = FakeCluster(
        "a100-80gb:2x2,t4:1x1",
        work_dir=root / "cluster",
        claims={"*": str(root / "claims" / "{claim}")},
        bookmark_seconds=0.5,
    ).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def service_args(cluster: FakeCluster, tmp_path_factory) -> list[str]:
    return kubernetes_service_args(cluster, tmp_path_factory.mktemp("kc"))


@pytest.fixture(scope="module")
def alice(module_world, service_args: list[str]) -> Api:
    service = module_world.start_in_process(*service_args, env=FAST)
    return Api(service.client(module_world.hub.add_user("alice")))


@pytest.fixture(autouse=True)
def healthy(request, cluster: FakeCluster) -> Iterator[None]:
    """Each test starts and ends with a well-behaved API server (and, when it uses the shared service,
    with that service in sync with it)."""
    cluster.faults.clear()
    cluster.faults.silent_watches = cluster.faults.drop_watches = False
    if "alice" in request.fixturenames:
        in_sync(request.getfixturevalue("alice"))
    yield
    cluster.faults.clear()
    cluster.faults.silent_watches = cluster.faults.drop_watches = False
    cluster.simulator.unmountable_claims.clear()


def in_sync(api: Api) -> None:
    wait_for(lambda: gpu_status(api)["stale"] is False, timeout=60, what="the service to be in sync")


def gpu_status(api: Api) -> dict[str, Any]:
    data: dict[str, Any] = api.http.get("api/k8s/gpu-status").json()["data"]
    return data


def health(api: Api) -> dict[str, Any]:
    data: dict[str, Any] = api.http.get("healthz").json()["data"]
    return data


class Runs:
    """Job code that records each start of it, and the count of those starts."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "runs"
        self.folder = folder

    def code(self, token: str, *, wait_for_file: str | None = None, say: str = "done") -> str:
        lines = [f"open({str(self.path)!r}, 'a').write({token!r} + '\\n')"]
        if wait_for_file:
            gate = str(self.folder / wait_for_file)
            lines += ["import os, time", f"while not os.path.exists({gate!r}):", "    time.sleep(0.05)"]
        lines.append(f"print({say!r})")
        return "\n".join(lines) + "\n"

    def count(self, token: str) -> int:
        return self.path.read_text().split().count(token) if self.path.exists() else 0


def posts_to(cluster: FakeCluster, path: str) -> int:
    return sum(1 for method, url, _, _ in cluster.faults.requests if method == "POST" and url.endswith(path))


@pytest.mark.parametrize(
    "fault",
    [
        {"fault": "status", "status": 500, "times": 3},
        {"fault": "status", "status": 503, "times": 2},
        {"fault": "status", "status": 429, "retry_after": 1, "times": 2},
        {"fault": "reset-before", "times": 2},
        {"fault": "reset-after", "times": 1},  # the Job was made, the answer lost: adopted, not made twice
        {"fault": "hang", "seconds": 3, "times": 1},  # longer than the service waits for an answer
    ],
    ids=["500", "503", "429-retry-after", "reset-before", "reset-after", "timeout"],
)
def test_passing_trouble_creating_the_job_is_retried_and_it_runs_once(
    alice: Api, cluster: FakeCluster, tmp_path: Path, fault: dict[str, Any]
) -> None:
    runs, token = Runs(tmp_path), uuid.uuid4().hex
    posts_before = posts_to(cluster, JOBS)
    rule = cluster.faults.inject(method="POST", path=JOBS, **fault)
    job = alice.submit_ok(**script(runs.code(token)))
    ended = alice.wait_status(job["job_id"], "completed", "failed")
    assert (ended["status"], ended["reason"]) == ("completed", None), ended
    assert rule.used == fault["times"]  # the fault really happened, as many times as asked
    assert posts_to(cluster, JOBS) - posts_before == fault["times"] + 1  # tried again until it took
    assert runs.count(token) == 1 and alice.logs(job["job_id"]) == "done\n"
    if fault["fault"] == "reset-after":  # made by the first try: read and adopted
        adopted = f"{JOBS}/gpujob-{job['job_id']}"
        assert any(m == "GET" and url == adopted for m, url, _, _ in cluster.faults.requests)


def test_a_job_made_and_deleted_before_it_was_adopted_is_not_made_again(
    alice: Api, cluster: FakeCluster, tmp_path: Path
) -> None:
    """409 says the job's Job was made; if it is gone when read, it may have run: Lost, never twice."""
    runs, token = Runs(tmp_path), uuid.uuid4().hex
    posts_before = posts_to(cluster, JOBS)
    cluster.faults.inject(method="POST", path=JOBS, fault="status", status=409)
    job = alice.submit_ok(**script(runs.code(token)))
    ended = alice.wait_status(job["job_id"], "failed")
    assert ended["reason"] == "Lost" and "not started again" in ended["message"]
    assert posts_to(cluster, JOBS) - posts_before == 1 and runs.count(token) == 0


def test_thirty_errors_in_a_row_fail_no_job(alice: Api, cluster: FakeCluster, tmp_path: Path) -> None:
    """An API server in trouble for a while (30 answers of 500 to Job creation, shared by 12 jobs):
    every job starts in the end, once."""
    runs = Runs(tmp_path)
    tokens = [uuid.uuid4().hex for _ in range(12)]
    rule = cluster.faults.inject(method="POST", path=JOBS, fault="status", status=500, times=30)
    jobs = [alice.submit_ok(**script(runs.code(token)))["job_id"] for token in tokens]
    ended = [alice.wait_status(job_id, "completed", "failed", timeout=120) for job_id in jobs]
    assert [e["status"] for e in ended] == ["completed"] * 12, [e["message"] for e in ended]
    assert rule.used == 30 and [runs.count(token) for token in tokens] == [1] * 12


def test_a_refusal_fails_the_job_at_once_in_the_servers_words(alice: Api, cluster: FakeCluster) -> None:
    rule = cluster.faults.inject(method="POST", path=JOBS, fault="status", status=403)
    job = alice.submit_ok(**script("print('never')"))
    ended = alice.wait_status(job["job_id"], "failed")
    assert ended["reason"] == "LaunchFailed" and rule.used == 1
    assert (
        ended["message"].startswith("the cluster did not take the Job: ") and "injected" in ended["message"]
    )


def test_a_configmap_that_fails_for_a_while_is_made_in_the_end(
    alice: Api, cluster: FakeCluster, tmp_path: Path
) -> None:
    runs, token = Runs(tmp_path), uuid.uuid4().hex
    rule = cluster.faults.inject(method="POST", path="/configmaps", fault="status", status=500, times=2)
    job = alice.submit_ok(**script(runs.code(token)))
    assert alice.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
    assert rule.used == 2 and runs.count(token) == 1


def test_a_refused_configmap_fails_the_job_and_removes_its_job(alice: Api, cluster: FakeCluster) -> None:
    cluster.faults.inject(method="POST", path="/configmaps", fault="status", status=422)
    job = alice.submit_ok(**script("print('never')", gpu_count=1, gpu_type="t4"))
    ended = alice.wait_status(job["job_id"], "failed")
    assert ended["reason"] == "LaunchFailed"
    assert ended["message"].startswith("could not store the job's script in a ConfigMap: ")
    kube_job = f"{cluster.url}{JOBS}/gpujob-{job['job_id']}"
    wait_for(lambda: httpx.get(kube_job, timeout=30).status_code == 404, what="its Job to be deleted")
    # ...and its GPU is free again.
    wait_for(lambda: gpu_status(alice)["available_gpus"] == 5, what="the t4 to be free")


def test_a_pod_stuck_being_created_fails_with_the_clusters_warning(alice: Api, cluster: FakeCluster) -> None:
    cluster.simulator.unmountable_claims.add("claim-alice")  # her home volume never mounts
    job = alice.submit_ok(**script("print('never')", gpu_count=1, gpu_type="t4"))
    ended = alice.wait_status(job["job_id"], "failed", timeout=60)
    assert ended["reason"] == "ContainerCreatingTimeout"
    assert ended["message"].startswith("its pod was still being created after 3 s: FailedMount: ")
    assert 'volume "home"' in ended["message"] and "DeadlineExceeded" in ended["message"]
    kube_job = f"{cluster.url}{JOBS}/gpujob-{job['job_id']}"
    wait_for(lambda: httpx.get(kube_job, timeout=30).status_code == 404, what="its Job to be deleted")
    wait_for(lambda: gpu_status(alice)["available_gpus"] == 5, what="the t4 to be free")


@pytest.mark.parametrize(
    "fault",
    [{"fault": "status", "status": 500, "times": 3}, {"fault": "reset-before", "times": 2}],
    ids=["500", "reset"],
)
def test_log_calls_that_fail_are_retried_and_the_log_is_whole(
    alice: Api, cluster: FakeCluster, fault: dict[str, Any]
) -> None:
    rule = cluster.faults.inject(method="GET", path="/log", **fault)
    code = "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.2)\n"
    job = alice.submit_ok(**script(code))
    assert alice.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
    assert alice.logs(job["job_id"]) == "".join(f"line {i}\n" for i in range(5))
    assert rule.used == fault["times"]


def test_a_silent_watch_is_noticed_and_listed_again(alice: Api, cluster: FakeCluster) -> None:
    def node_lists() -> int:
        return sum(
            1
            for method, url, query, _ in cluster.faults.requests
            if method == "GET" and url == "/api/v1/nodes" and "watch" not in query
        )

    def schedulable() -> bool:
        node = next(n for n in gpu_status(alice)["gpu_nodes"] if n["name"] == "t4-node-0")
        return bool(node["schedulable"])

    lists = node_lists()
    cluster.faults.silent_watches = True  # connected, and nothing arrives: not even bookmarks
    try:
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=True))  # the watch misses it
        # Noticed twice: the watch that fell silent, then the one opened after the fresh list, which
        # never says a thing (a silence from the very start counts too).
        wait_for(lambda: node_lists() >= lists + 2, what="each silence to be noticed (a fresh list)")
        wait_for(lambda: not schedulable(), what="the fresh list to show the cordon")
    finally:
        cluster.faults.silent_watches = False
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=False))
    wait_for(schedulable, what="the watch to deliver again")


def test_watch_errors_and_a_refused_list_heal(alice: Api, cluster: FakeCluster) -> None:
    """Watches and lists of nodes fail (503, then cut connections) while a node is cordoned: gpujobs
    says it is stale meanwhile, and the truth once the API server answers again."""
    cluster.faults.inject(method="GET", path="/api/v1/nodes", fault="status", status=503, times=None)
    cluster.faults.drop_watches = True  # the open watches break, and lists of nodes are refused
    try:
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=True))
        wait_for(lambda: gpu_status(alice)["stale"], what="gpu-status to say it is stale")
        problems = health(alice)["problems"]
        assert any("watch of Nodes is down" in p for p in problems), problems
    finally:
        cluster.faults.clear()
        cluster.faults.drop_watches = False
    try:
        wait_for(lambda: not gpu_status(alice)["stale"], what="the view to be in sync again")
        node = next(n for n in gpu_status(alice)["gpu_nodes"] if n["name"] == "t4-node-0")
        assert node["schedulable"] is False
        wait_for(lambda: health(alice)["status"] == "ok", what="healthz to say ok again")
    finally:
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=False))


def test_an_api_server_that_comes_back_empty_is_noticed_and_healed(
    alice: Api, cluster: FakeCluster, tmp_path: Path
) -> None:
    """The scenario of the issue: jobs running, the API server killed, back on the same port with
    nothing (a wiped etcd).  While it is away gpujobs says it is stale and admits nothing; within 30 s
    of it answering again gpu-status is true and the jobs that vanished with it are Lost."""
    runs = Runs(tmp_path)
    tokens = [uuid.uuid4().hex for _ in range(3)]
    running = [
        alice.submit_ok(**script(runs.code(t, wait_for_file="never"), gpu_count=1, gpu_type="a100"))["job_id"]
        for t in tokens
    ]
    for job_id in running:
        alice.wait_status(job_id, "running")
    assert gpu_status(alice)["used_gpus"] == 3
    cluster.stop_api()
    try:
        wait_for(lambda: gpu_status(alice)["stale"], what="gpu-status to say it is stale")
        status = alice.http.get("api/k8s/gpu-status").json()
        assert "the view of the cluster is stale" in status["message"] and status["data"]["synced_at"]
        assert health(alice)["status"] == "degraded"
        # Submitting still works: the wish is recorded, and nothing is admitted onto the stale view.
        late_token = uuid.uuid4().hex
        late = alice.submit_ok(**script(runs.code(late_token), gpu_count=1, gpu_type="a100"))["job_id"]
        view = alice.status(late)
        assert view["status"] == "queued" and "in touch with the cluster again" in view["message"]
    finally:
        cluster.restart(empty=True)
    back = time.monotonic()
    wait_for(lambda: not gpu_status(alice)["stale"], timeout=30, what="the view to be in sync again")
    for job_id in running:
        ended = alice.wait_status(job_id, "failed", timeout=30)
        assert ended["reason"] == "Lost" and "gone" in ended["message"]
    assert time.monotonic() - back < 30
    wait_for(lambda: health(alice)["status"] == "ok", what="healthz to say ok again")
    assert alice.wait_status(late, "completed", "failed")["status"] == "completed"  # started once back
    assert gpu_status(alice)["used_gpus"] == 0
    assert [runs.count(t) for t in (*tokens, late_token)] == [1, 1, 1, 1]  # nothing ran twice


def test_the_service_killed_mid_launch_never_runs_a_job_twice(
    world, cluster: FakeCluster, service_args: list[str], tmp_path: Path
) -> None:
    """Eight one-GPU jobs on five GPUs; the service is killed as soon as five Jobs exist; two of those
    Jobs are deleted while it is down; it restarts.  The deleted ones end Lost (they may have run), the
    others finish, the queued ones run after them: no job's code runs twice."""
    runs = Runs(tmp_path)
    service = world.start(*service_args, env=FAST)
    api = Api(service.client(world.hub.add_user("alice")))
    in_sync(api)
    tokens = {uuid.uuid4().hex: None for _ in range(8)}
    for token in tokens:
        spec = script(runs.code(token, wait_for_file="go"), gpu_count=1, gpu_type="any", name=token[:8])
        tokens[token] = api.submit_ok(**spec)["job_id"]

    def kube_jobs() -> list[dict]:
        items: list[dict] = httpx.get(f"{cluster.url}{JOBS}", timeout=30).json()["items"]
        return [j for j in items if j["metadata"]["labels"].get("gpujobs.io/job-id") in tokens.values()]

    wait_for(lambda: len(kube_jobs()) >= 5, what="five Jobs")
    service.kill_hard()
    time.sleep(2)  # the scenario of the issue: deleted a moment after the kill
    deleted = [j["metadata"]["labels"]["gpujobs.io/job-id"] for j in kube_jobs()[:2]]
    for job_id in deleted:
        httpx.delete(f"{cluster.url}{JOBS}/gpujob-{job_id}", timeout=30)
    restarted = world.start(*service.args, data_dir=service.data_dir, env=FAST)
    api = Api(restarted.client(world.hub.add_user("alice")))
    for job_id in deleted:
        assert api.wait_status(job_id, "failed")["reason"] == "Lost"
    (tmp_path / "go").touch()
    for job_id in set(tokens.values()) - set(deleted):
        ended = api.wait_status(job_id, "completed", "failed", timeout=120)
        assert ended["status"] == "completed", ended
    assert max(runs.count(token) for token in tokens) == 1  # 0 for a deleted job that never started


def test_a_service_started_while_the_api_server_is_away_takes_jobs_and_runs_them_once_it_is_back(
    world, cluster: FakeCluster, service_args: list[str], tmp_path: Path
) -> None:
    runs, token = Runs(tmp_path), uuid.uuid4().hex
    cluster.stop_api()
    try:
        service = world.start_in_process(*service_args, env=FAST)
        api = Api(service.client(world.hub.add_user("alice")))
        assert health(api)["status"] == "degraded" and gpu_status(api)["stale"] is True
        assert gpu_status(api)["synced_at"] is None  # never in touch yet: it says so
        # Its nodes are unknown yet: the job is taken (the scheduler checks it once they are known).
        job = api.submit_ok(**script(runs.code(token), gpu_count=1, gpu_type="a100"))["job_id"]
        assert api.status(job)["status"] == "queued"
    finally:
        cluster.start_api()
    assert api.wait_status(job, "completed", "failed")["status"] == "completed"
    assert runs.count(token) == 1
    wait_for(lambda: health(api)["status"] == "ok", what="healthz to say ok again")
