"""The Kubernetes executor against the simulated cluster: the service, its API and real pods' processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import Api, kubernetes_service_args, pid_alive, script, tiny_wheel_folder, wait_for

WAIT_FOR_FILE = "import os, time\nwhile not os.path.exists({path!r}):\n    time.sleep(0.02)\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> FakeCluster:
    root = tmp_path_factory.mktemp("kube")
    started = FakeCluster(
        "a100-80gb:2x2,t4:1x1,cpu:0x1",
        work_dir=root / "cluster",
        claims={"*": str(root / "claims" / "{claim}")},
    ).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def service_args(cluster: FakeCluster, tmp_path_factory) -> list[str]:
    return kubernetes_service_args(cluster, tmp_path_factory.mktemp("kc"))


@pytest.fixture(scope="module")
def alice(service_args: list[str], module_world, tmp_path_factory) -> Api:
    wheels = tiny_wheel_folder(tmp_path_factory.mktemp("wheels"))
    images = "gpujobs-runtime:cpu,gpujobs-runtime:gpu,registry.example/does-not-exist:1"
    service = module_world.start_in_process(
        *service_args,
        env={"GPUJOBS_ALLOWED_IMAGES": images, "GPUJOBS_PIP_EXTRA_ARGS": f"--no-index,--find-links={wheels}"},
    )
    return Api(service.client(module_world.hub.add_user("alice")))


def gpu_node(api: Api, name: str) -> dict:
    status = api.http.get("api/k8s/gpu-status").json()["data"]
    return next(n for n in status["gpu_nodes"] if n["name"] == name)


def test_gpu_status_comes_from_the_cluster(alice: Api) -> None:
    status = alice.http.get("api/k8s/gpu-status").json()["data"]
    assert status["source"] == "kubernetes"
    assert {t["gpu_type"]: t["total"] for t in status["gpu_types"]} == {"a100-80gb": 4, "t4-16gb": 1}
    node = next(n for n in status["gpu_nodes"] if n["name"] == "t4-node-0")
    assert node["taints"] == ["nvidia.com/gpu=present:NoSchedule"]
    assert [(d["product"], d["memory_mib"]) for d in node["devices"]] == [("Tesla-T4", 15360)]


def test_a_job_runs_as_a_kubernetes_job_and_its_logs_are_kept(alice: Api, cluster: FakeCluster) -> None:
    job = alice.submit_ok(
        **script(
            "import sys; print('hello from a pod', sys.argv[1:])", gpu_count=2, gpu_type="a100", args=["--x"]
        )
    )
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert done["status"] == "completed" and done["node"].startswith("a100-80gb-node-")
    assert alice.logs(job["job_id"]) == "hello from a pod ['--x']\n"
    kube_job = httpx.get(f"{cluster.url}/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{job['job_id']}").json()
    assert kube_job["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/hostname"] == done["node"]


def test_failures_carry_the_reason(alice: Api) -> None:
    failing = alice.submit_ok(**script("raise SystemExit(3)"))
    done = alice.wait_status(failing["job_id"], "failed")
    assert (done["reason"], done["exit_code"]) == ("NonZeroExit", 3)
    slow = alice.submit_ok(**script("import time; time.sleep(60)", timeout_seconds=1))
    assert alice.wait_status(slow["job_id"], "failed")["reason"] == "Timeout"
    hungry = alice.submit_ok(
        **script(
            "import time\nx = []\n"
            "for _ in range(100):\n    x.append(bytearray(16 * 2**20)); time.sleep(0.02)\n",
            memory_limit="64Mi",
        )
    )
    assert alice.wait_status(hungry["job_id"], "failed")["reason"] == "OOMKilled"


def test_cancel_deletes_the_job_and_stops_its_process(
    alice: Api, cluster: FakeCluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    job = alice.submit_ok(
        **script(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    )
    wait_for(pid_file.exists, what="the pod to start")
    assert alice.http.post(f"api/k8s/job/{job['job_id']}/cancel").status_code == 200
    wait_for(lambda: not pid_alive(int(pid_file.read_text())), what="the process to end")
    gone = httpx.get(f"{cluster.url}/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{job['job_id']}")
    assert gone.status_code == 404


def test_a_job_deleted_behind_gpujobs_back_ends_as_lost(alice: Api, cluster: FakeCluster) -> None:
    job = alice.submit_ok(**script("import time; time.sleep(300)"))
    alice.wait_status(job["job_id"], "running")
    # What "kubectl delete job" does: the Job and its pods go.
    httpx.delete(f"{cluster.url}/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{job['job_id']}")
    lost = alice.wait_status(job["job_id"], "failed")
    assert lost["reason"] == "Lost" and "deleted outside gpujobs" in lost["message"]


def test_gpus_held_by_other_pods_count(alice: Api, cluster: FakeCluster) -> None:
    notebook = {
        "metadata": {"name": "jupyter-bob"},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": "x",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
        },
    }
    assert httpx.post(f"{cluster.url}/api/v1/namespaces/default/pods", json=notebook).status_code == 201
    try:

        def t4() -> dict:
            status = alice.http.get("api/k8s/gpu-status").json()["data"]
            return next(t for t in status["gpu_types"] if t["gpu_type"] == "t4-16gb")

        wait_for(lambda: t4()["used"] == 1, what="the notebook's GPU to show")
        assert t4()["available"] == 0
        job = alice.submit_ok(**script("print(1)", gpu_count=1, gpu_type="t4"))
        waiting = wait_for(lambda: (v := alice.status(job["job_id"]))["queue_position"] and v, what="a cycle")
        assert waiting["message"] == "no free t4: 0 of 1 free, 1 needed"
        alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    finally:
        httpx.delete(f"{cluster.url}/api/v1/namespaces/default/pods/jupyter-bob")


def test_a_job_the_cluster_cannot_place_says_why_and_an_unpullable_image_fails(
    alice: Api, cluster: FakeCluster
) -> None:
    # gpujobs does not count other workloads' memory, the cluster does: its scheduler's words reach
    # the user.  Another team's pod takes most of the t4 node's memory.
    hog = {
        "metadata": {"name": "memory-hog"},
        "spec": {
            "containers": [
                {
                    "name": "hog",
                    "image": "x",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                    "resources": {"requests": {"memory": "200Gi"}},
                }
            ],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"nvidia.com/gpu.product": "Tesla-T4"},
        },
    }
    assert httpx.post(f"{cluster.url}/api/v1/namespaces/default/pods", json=hog).status_code == 201
    try:
        job = alice.submit_ok(**script("print(1)", gpu_count=1, gpu_type="t4", memory_limit="100Gi"))
        waiting = wait_for(
            lambda: (v := alice.status(job["job_id"]))["message"] and "cluster" in v["message"] and v,
            what="the cluster's reason",
        )
        assert waiting["status"] == "pending"
        assert "Insufficient memory" in waiting["message"] and waiting["message"].startswith(
            "waiting in the cluster: 0/"
        )
        alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    finally:
        httpx.delete(f"{cluster.url}/api/v1/namespaces/default/pods/memory-hog")
    # More memory than any node has is refused at submit, naming the largest node.
    refused = alice.submit(**script("print(1)", memory_limit="512Gi"))
    assert refused.status_code == 422 and "at most 256 GiB" in refused.json()["message"]
    unpullable = alice.submit_ok(**script("print(1)", image="registry.example/does-not-exist:1"))
    failed = alice.wait_status(unpullable["job_id"], "failed")
    assert failed["reason"] == "ImagePullBackOff" and "does-not-exist" in failed["message"]


def test_requirements_come_from_an_init_container_and_logs_follow_live(alice: Api, tmp_path: Path) -> None:
    release = tmp_path / "release"
    code = (
        "import gpujobs_tiny_pkg\nprint(gpujobs_tiny_pkg.GREETING, flush=True)\n"
        + WAIT_FOR_FILE.format(path=str(release))
        + "print('last line')\n"
    )
    job = alice.submit_ok(**script(code, requirements=["gpujobs-tiny-pkg==1.0"]))
    received = []
    with alice.http.stream("GET", f"api/k8s/job/{job['job_id']}/logs", params={"follow": "true"}) as stream:
        for line in stream.iter_lines():
            received.append(line)
            if line == "hello from tiny-pkg":
                assert alice.status(job["job_id"])["status"] == "running"  # streamed before the end
                release.touch()
    assert received[-2:] == ["hello from tiny-pkg", "last line"]
    assert alice.wait_status(job["job_id"], "completed")["exit_code"] == 0
    broken = alice.submit_ok(**script("print('never')", requirements=["gpujobs-no-such-package==9.9"]))
    failed = alice.wait_status(broken["job_id"], "failed", timeout=120)
    assert failed["reason"] == "RequirementsFailed"
    logs = alice.logs(broken["job_id"])
    assert "gpujobs-no-such-package" in logs and "never" not in logs  # pip's own words


def test_an_evicted_pod_does_not_use_up_the_jobs_retries(
    alice: Api, cluster: FakeCluster, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    code = (
        f"import os\nopen({str(started)!r}, 'a').write('x')\n"
        + WAIT_FOR_FILE.format(path=str(release))
        + "print('finished')\n"
    )
    job = alice.submit_ok(**script(code, retries=0))
    wait_for(started.exists, what="the first attempt")
    assert cluster.call(cluster.simulator.evict("gpujobs", f"gpujob-{job['job_id']}-0"))
    second = wait_for(lambda: (v := alice.status(job["job_id"]))["message"] and v, what="news of a new pod")
    assert (second["status"], second["attempts"]) == ("running", 2)
    assert "Evicted: The node was low on resource: memory." in second["message"]
    wait_for(lambda: started.read_text() == "xx", what="the second attempt to start")
    release.touch()
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert done["status"] == "completed" and done["attempts"] == 2


def test_a_cordoned_or_not_ready_node_offers_nothing_and_types_are_routed(
    alice: Api, cluster: FakeCluster
) -> None:
    simulator = cluster.simulator
    cluster.call(simulator.set_node("a100-80gb-node-0", ready=False))
    cluster.call(simulator.set_node("a100-80gb-node-1", cordoned=True))
    try:
        wait_for(
            lambda: (
                not gpu_node(alice, "a100-80gb-node-0")["ready"]
                and not gpu_node(alice, "a100-80gb-node-1")["schedulable"]
            ),
            what="the nodes' state to reach gpu-status",
        )
        status = alice.http.get("api/k8s/gpu-status").json()["data"]
        a100 = next(t for t in status["gpu_types"] if t["gpu_type"] == "a100-80gb")
        assert (a100["total"], a100["available"]) == (4, 0)
        job = alice.submit_ok(**script("print('on a100')", gpu_count=1, gpu_type="a100"))
        waiting = wait_for(lambda: (v := alice.status(job["job_id"]))["queue_position"] and v, what="a cycle")
        assert waiting["status"] == "queued" and "a100" in waiting["message"]
        t4 = alice.submit_ok(**script("print('on t4')", gpu_count=1, gpu_type="t4"))
        assert alice.wait_status(t4["job_id"], "completed")["node"] == "t4-node-0"
        cluster.call(simulator.set_node("a100-80gb-node-1", cordoned=False))
        done = alice.wait_status(job["job_id"], "completed")
        assert done["node"] == "a100-80gb-node-1"
    finally:
        cluster.call(simulator.set_node("a100-80gb-node-0", ready=True))
        cluster.call(simulator.set_node("a100-80gb-node-1", cordoned=False))


def test_the_cache_survives_dropped_watches_compaction_and_api_errors(
    alice: Api, cluster: FakeCluster
) -> None:
    def node_watches() -> int:
        return sum(
            1 for _, path, query, _ in cluster.faults.requests if path == "/api/v1/nodes" and "watch" in query
        )

    before = node_watches()
    cluster.faults.drop_watches = True
    try:
        wait_for(lambda: node_watches() >= before + 2, what="the service to reconnect its watch")
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=True))  # missed while dropped...
        cluster.compact()  # ...and gone from the history: the service must list again (410)
    finally:
        cluster.faults.drop_watches = False
    try:
        wait_for(lambda: not gpu_node(alice, "t4-node-0")["schedulable"], what="the relist to see the cordon")
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=False))
        wait_for(lambda: gpu_node(alice, "t4-node-0")["schedulable"], what="the watch to resume")
    finally:
        cluster.call(cluster.simulator.set_node("t4-node-0", cordoned=False))
    cluster.faults.errors = 2  # the API server fails the next calls: creating the Job is retried
    job = alice.submit_ok(**script("print('despite errors')"))
    assert alice.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
    assert alice.logs(job["job_id"]) == "despite errors\n"
    cluster.faults.delay_seconds = 0.3  # a slow API server: every answer late, none lost
    try:
        slow = alice.submit_ok(**script("print('slowly')"))
        assert alice.wait_status(slow["job_id"], "completed", "failed")["status"] == "completed"
        assert alice.logs(slow["job_id"]) == "slowly\n"
    finally:
        cluster.faults.delay_seconds = 0.0


def test_a_restart_reattaches_finishes_and_loses_what_happened_meanwhile(
    module_world, cluster: FakeCluster, service_args: list[str], tmp_path: Path
) -> None:
    # A service of its own: it is killed and replaced.
    service = module_world.start(*service_args, data_dir=tmp_path / "data")
    alice = Api(service.client(module_world.hub.add_user("alice")))

    def waiting_job(name: str, said: str) -> str:
        code = WAIT_FOR_FILE.format(path=str(tmp_path / name)) + f"print({said!r})\n"
        return alice.submit_ok(**script(code))["job_id"]

    survivor, early, doomed = (
        waiting_job("a", "survived"),
        waiting_job("b", "ended meanwhile"),
        waiting_job("c", ""),
    )
    for job_id in (survivor, early, doomed):
        alice.wait_status(job_id, "running")
    service.kill_hard()
    # While the service is down: one job ends, another's Job is deleted by hand.
    (tmp_path / "b").touch()
    kube_job = f"{cluster.url}/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{early}"
    wait_for(
        lambda: any(
            c["type"] == "Complete" for c in httpx.get(kube_job).json()["status"].get("conditions", [])
        ),
        what="the job to end in the cluster",
    )
    httpx.delete(f"{cluster.url}/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{doomed}")
    restarted = module_world.start(*service.args, data_dir=service.data_dir)
    again = Api(restarted.client(module_world.hub.add_user("alice")))
    assert again.status(survivor)["status"] == "running"
    ended = again.wait_status(early, "completed", "failed")
    assert (ended["status"], again.logs(early)) == ("completed", "ended meanwhile\n")
    lost = again.wait_status(doomed, "failed")  # once it has been missing a few seconds
    assert lost["reason"] == "Lost"
    (tmp_path / "a").touch()
    assert again.wait_status(survivor, "completed")["exit_code"] == 0
    assert again.logs(survivor) == "survived\n"
