"""The Kubernetes executor against the simulated cluster: the service, its API and real pods' processes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import Api, pid_alive, script, wait_for


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
def alice(cluster: FakeCluster, module_world, tmp_path_factory) -> Api:
    kubeconfig = cluster.write_kubeconfig(tmp_path_factory.mktemp("kc") / "config", namespace="gpujobs")
    images = "gpujobs-runtime:cpu,gpujobs-runtime:gpu,registry.example/does-not-exist:1"
    service = module_world.start(
        "--executor", "kubernetes", "--kubeconfig", str(kubeconfig), env={"GPUJOBS_ALLOWED_IMAGES": images}
    )
    return Api(service.client(module_world.hub.add_user("alice")))


def test_gpu_status_comes_from_the_cluster(alice: Api) -> None:
    status = alice.http.get("api/k8s/gpu-status").json()["data"]
    assert status["source"] == "kubernetes"
    assert {t["gpu_type"]: t["total"] for t in status["gpu_types"]} == {"a100-80gb": 4, "t4-16gb": 1}
    node = next(n for n in status["gpu_nodes"] if n["name"] == "t4-node-0")
    assert node["taints"] == ["nvidia.com/gpu=present:NoSchedule"]


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


def test_a_job_the_cluster_cannot_place_says_why_and_an_unpullable_image_fails(alice: Api) -> None:
    # gpujobs does not schedule memory, the cluster does: its scheduler's words reach the user.
    job = alice.submit_ok(**script("print(1)", memory_limit="512Gi"))
    waiting = wait_for(
        lambda: (v := alice.status(job["job_id"]))["message"] and "cluster" in v["message"] and v,
        what="the cluster's reason",
    )
    assert waiting["status"] == "pending"
    assert "Insufficient memory" in waiting["message"] and waiting["message"].startswith(
        "waiting in the cluster: 0/"
    )
    alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    unpullable = alice.submit_ok(**script("print(1)", image="registry.example/does-not-exist:1"))
    failed = alice.wait_status(unpullable["job_id"], "failed")
    assert failed["reason"] == "ImagePullBackOff" and "does-not-exist" in failed["message"]


def test_a_restart_reattaches_to_running_jobs(alice: Api, module_world, tmp_path: Path) -> None:
    # Last of the tests that use ``alice``: it replaces the service she talks to.
    release = tmp_path / "release"
    job = alice.submit_ok(
        **script(
            f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
            "print('survived')\n"
        )
    )
    alice.wait_status(job["job_id"], "running")
    (service,) = [s for s in module_world.services if s.process and s.process.poll() is None]
    service.kill_hard()
    restarted = module_world.start(*service.args, data_dir=service.data_dir)
    again = Api(restarted.client(module_world.hub.add_user("alice")))
    assert again.status(job["job_id"])["status"] == "running"
    release.touch()
    assert again.wait_status(job["job_id"], "completed")["exit_code"] == 0
    assert again.logs(job["job_id"]) == "survived\n"


def test_rbac_allows_exactly_what_the_executor_does(cluster: FakeCluster) -> None:
    """Every call the service made in these tests is allowed by deploy/kubernetes/rbac.yaml, and every
    rule there is used."""
    import yaml

    rbac = [
        d
        for d in yaml.safe_load_all(
            (Path(__file__).resolve().parents[2] / "deploy/kubernetes/rbac.yaml").read_text()
        )
        if d
    ]
    allowed: set[tuple[str, str, bool]] = set()  # (resource, verb, cluster-wide)
    for document in rbac:
        if document["kind"] in ("ClusterRole", "Role"):
            for rule in document["rules"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        allowed.add((resource, verb, document["kind"] == "ClusterRole"))
    used: set[tuple[str, str, bool]] = set()
    for method, path, query in cluster.faults.requests:
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis") or "/namespaces/default/" in path:
            continue  # not the service's (the tests' own pod lives in "default")
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        cluster_wide = rest[0] != "namespaces" or len(rest) < 3
        if not cluster_wide:
            rest = rest[2:]
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        named = len(rest) > 1
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(method) or (
            "watch" if "watch=" in query else "get" if named else "list"
        )
        used.add((resource, verb, cluster_wide))
    service_calls = used
    for resource, verb, cluster_wide in service_calls:
        assert (resource, verb, True) in allowed or (
            not cluster_wide and (resource, verb, False) in allowed
        ), f"{verb} {resource} ({'cluster' if cluster_wide else 'namespace'}) is not granted"
    assert {(r, v) for r, v, _ in allowed} == {(r, v) for r, v, _ in service_calls}  # nothing unused
