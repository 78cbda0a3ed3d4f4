"""Opt-in: gpujobs against a real Kubernetes cluster (DESIGN §5, tier 5).  Skipped unless KUBECONFIG is
set.  A cluster admin runs it as is, from a machine whose kubeconfig may create Jobs there:

    kubectl create namespace gpujobs-test
    KUBECONFIG=~/.kube/config .venv/bin/pytest tests/cluster -v

The service runs on this machine (against the cluster's API server, with a stand-in for the hub's
API); the jobs run in the cluster.  Settings, all optional:

- ``GPUJOBS_TEST_NAMESPACE`` (default ``gpujobs-test``): where the jobs run; it must exist;
- ``GPUJOBS_TEST_IMAGE`` (default ``python:3.12-slim``): any image with ``python`` on its PATH that
  runs as a non-root user (the pods meet Pod Security *restricted*);
- ``GPUJOBS_TEST_TIMEOUT`` (default 300): seconds to wait for a job, image pull included.

When the cluster has a free GPU, one job also asks for one.  Jobs clean up after themselves
(``ttlSecondsAfterFinished``); the tests that cancel check the Job is gone.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from gpujobs.testing.processes import ServiceProcess
from helpers import Api, script

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"), reason="opt-in: set KUBECONFIG to run against a real cluster"
)
NAMESPACE = os.environ.get("GPUJOBS_TEST_NAMESPACE", "gpujobs-test")
IMAGE = os.environ.get("GPUJOBS_TEST_IMAGE", "python:3.12-slim")
TIMEOUT = float(os.environ.get("GPUJOBS_TEST_TIMEOUT", "300"))


def start_service(world: Any) -> ServiceProcess:
    kubeconfig = os.environ["KUBECONFIG"].split(os.pathsep)[0]
    return world.start(  # type: ignore[no-any-return]
        "--executor",
        "kubernetes",
        "--kubeconfig",
        str(Path(kubeconfig).expanduser()),
        env=SERVICE_ENV,
    )


SERVICE_ENV = {
    "GPUJOBS_KUBE_NAMESPACE": NAMESPACE,
    "GPUJOBS_KUBE_IMAGE_CPU": IMAGE,
    "GPUJOBS_KUBE_IMAGE_GPU": IMAGE,
    "GPUJOBS_KUBE_HOME_CLAIM_TEMPLATE": "",  # inline scripts only: no volume is needed
}


@pytest.fixture(scope="module")
def alice(module_world) -> Api:
    return Api(start_service(module_world).client(module_world.hub.add_user("alice")))


def cluster_nodes() -> list[dict]:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Node

    client = Client(KubeConfig.from_env())
    return [node.to_dict() for node in client.list(Node)]


def test_gpu_status_lists_the_clusters_nodes(alice: Api) -> None:
    status = alice.http.get("api/k8s/gpu-status").json()["data"]
    assert status["source"] == "kubernetes"
    names = {node["metadata"]["name"] for node in cluster_nodes()}
    assert {node["name"] for node in status["gpu_nodes"]} == names


def test_a_job_runs_and_its_logs_are_kept(alice: Api) -> None:
    job = alice.submit_ok(**script("import sys; print('hello from the cluster', sys.version_info[0])"))
    done = alice.wait_status(job["job_id"], "completed", "failed", timeout=TIMEOUT)
    assert done["status"] == "completed", done
    assert alice.logs(job["job_id"]) == "hello from the cluster 3\n"


def test_failures_and_timeouts_say_why(alice: Api) -> None:
    failing = alice.submit_ok(**script("raise SystemExit(3)"))
    slow = alice.submit_ok(**script("import time; time.sleep(600)", timeout_seconds=20))
    failed = alice.wait_status(failing["job_id"], "failed", "completed", timeout=TIMEOUT)
    assert (failed["reason"], failed["exit_code"]) == ("NonZeroExit", 3)
    assert alice.wait_status(slow["job_id"], "failed", "completed", timeout=TIMEOUT)["reason"] == "Timeout"


def test_cancel_deletes_the_job(alice: Api) -> None:
    job = alice.submit_ok(**script("import time; print('started', flush=True); time.sleep(600)"))
    alice.wait_status(job["job_id"], "running", timeout=TIMEOUT)
    assert alice.http.post(f"api/k8s/job/{job['job_id']}/cancel").status_code == 200
    assert alice.status(job["job_id"])["status"] == "cancelled"
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.batch_v1 import Job

    client = Client(KubeConfig.from_env())
    with pytest.raises(ApiError) as gone:
        client.get(Job, f"gpujob-{job['job_id']}", namespace=NAMESPACE)
    assert gone.value.status.code == 404


def test_a_gpu_job_gets_a_gpu_when_the_cluster_has_one(alice: Api) -> None:
    status = alice.http.get("api/k8s/gpu-status").json()["data"]
    if not status["available_gpus"]:
        pytest.skip("no free GPU in this cluster")
    job = alice.submit_ok(**script("import os; print('gpu job on', os.environ.get('HOSTNAME'))", gpu_count=1))
    done = alice.wait_status(job["job_id"], "completed", "failed", timeout=TIMEOUT)
    assert done["status"] == "completed", done
    node = next(n for n in status["gpu_nodes"] if n["name"] == done["node"])
    assert node["total"] >= 1 and len(done["gpus"]) == 1


def test_a_restart_never_runs_a_job_twice(world) -> None:
    """The service is killed (kill -9) while two jobs run; one's Job is deleted while it is down.  After
    the restart the deleted one ends Lost (it may have run: never started again) and the other finishes
    with its output printed once."""
    from lightkube import Client, KubeConfig
    from lightkube.resources.batch_v1 import Job
    from lightkube.types import CascadeType

    service = start_service(world)
    api = Api(service.client(world.hub.add_user("alice")))
    token = uuid.uuid4().hex
    kept = api.submit_ok(**script(f"import time; print({token!r}, flush=True); time.sleep(12)"))["job_id"]
    dropped = api.submit_ok(**script("import time; time.sleep(600)"))["job_id"]
    for job_id in (kept, dropped):
        api.wait_status(job_id, "running", timeout=TIMEOUT)
    service.kill_hard()
    Client(KubeConfig.from_env()).delete(
        Job, f"gpujob-{dropped}", namespace=NAMESPACE, cascade=CascadeType.BACKGROUND
    )
    restarted = world.start(*service.args, data_dir=service.data_dir, env=SERVICE_ENV)
    api = Api(restarted.client(world.hub.add_user("alice")))
    assert api.wait_status(dropped, "failed", timeout=TIMEOUT)["reason"] == "Lost"
    assert api.wait_status(kept, "completed", "failed", timeout=TIMEOUT)["status"] == "completed"
    assert api.logs(kept).count(token) == 1
