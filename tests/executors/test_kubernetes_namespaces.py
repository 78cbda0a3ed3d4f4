"""Per-user namespaces (``kube_namespace_template``): each user's jobs in a namespace of their own,
created by gpujobs (Pod Security *restricted*) when configured to, found again after a restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import Api, script, wait_for

PER_USER = {
    "GPUJOBS_KUBE_NAMESPACE_TEMPLATE": "gpujobs-{username}",
    # Zero to JupyterHub's home claims live in the hub's namespace: a user's namespace cannot mount them.
    "GPUJOBS_KUBE_HOME_CLAIM_TEMPLATE": "",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> FakeCluster:
    started = FakeCluster("t4:1x2,cpu:0x1", work_dir=tmp_path_factory.mktemp("kube") / "cluster").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def kubeconfig(cluster: FakeCluster, tmp_path_factory) -> Path:
    return cluster.write_kubeconfig(tmp_path_factory.mktemp("kc") / "config", namespace="gpujobs")


@pytest.fixture(scope="module")
def service(kubeconfig: Path, module_world):
    return module_world.start_in_process(
        "--executor",
        "kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        env={**PER_USER, "GPUJOBS_KUBE_CREATE_NAMESPACES": "true"},
    )


def kube_get(cluster: FakeCluster, path: str) -> httpx.Response:
    return httpx.get(f"{cluster.url}{path}")


def test_each_user_gets_a_namespace_of_their_own(service, module_world, cluster: FakeCluster) -> None:
    alice = Api(service.client(module_world.hub.add_user("alice")))
    bob = Api(service.client(module_world.hub.add_user("Bob.Smith@example.org")))
    jobs = {
        "gpujobs-alice": alice.submit_ok(**script("print('alice here')")),
        "gpujobs-bob-smith-example-org-da50e6af": bob.submit_ok(**script("print('bob here')", gpu_count=1)),
    }
    for (namespace, job), api, said in zip(
        jobs.items(), (alice, bob), ("alice here\n", "bob here\n"), strict=True
    ):
        assert api.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
        assert api.logs(job["job_id"]) == said
        assert kube_get(
            cluster, f"/apis/batch/v1/namespaces/{namespace}/jobs/gpujob-{job['job_id']}"
        ).is_success
        made = kube_get(cluster, f"/api/v1/namespaces/{namespace}").json()
        assert made["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        assert made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gpujobs"
    assert made["metadata"]["annotations"]["gpujobs.io/user"] == "Bob.Smith@example.org"
    assert not kube_get(cluster, f"/apis/batch/v1/namespaces/gpujobs/jobs/gpujob-{job['job_id']}").is_success


def test_cancel_and_restart_find_the_job_in_its_namespace(
    kubeconfig: Path, module_world, cluster: FakeCluster, tmp_path: Path
) -> None:
    # A service of its own: it is killed and replaced.
    service = module_world.start(
        "--executor",
        "kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        env={**PER_USER, "GPUJOBS_KUBE_CREATE_NAMESPACES": "true"},
        data_dir=tmp_path / "data",
    )
    alice = Api(service.client(module_world.hub.add_user("alice")))
    release = tmp_path / "release"
    code = (
        f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)\nprint('survived')\n"
    )
    survivor = alice.submit_ok(**script(code))
    doomed = alice.submit_ok(**script("import time; time.sleep(300)"))
    alice.wait_status(survivor["job_id"], "running")
    alice.wait_status(doomed["job_id"], "running")
    assert alice.http.post(f"api/k8s/job/{doomed['job_id']}/cancel").status_code == 200
    wait_for(
        lambda: (
            kube_get(
                cluster, f"/apis/batch/v1/namespaces/gpujobs-alice/jobs/gpujob-{doomed['job_id']}"
            ).status_code
            == 404
        ),
        what="the cancelled Job to be deleted",
    )
    service.kill_hard()
    restarted = module_world.start(*service.args, data_dir=service.data_dir, env=PER_USER)
    again = Api(restarted.client(module_world.hub.add_user("alice")))
    assert again.status(survivor["job_id"])["status"] == "running"
    release.touch()
    assert again.wait_status(survivor["job_id"], "completed")["exit_code"] == 0
    assert again.logs(survivor["job_id"]) == "survived\n"


def test_a_missing_namespace_that_gpujobs_may_not_create_fails_the_job_clearly(
    kubeconfig: Path, module_world, tmp_path: Path
) -> None:
    service = module_world.start_in_process(
        "--executor", "kubernetes", "--kubeconfig", str(kubeconfig), env=PER_USER, data_dir=tmp_path / "data"
    )
    carol = Api(service.client(module_world.hub.add_user("carol")))
    job = carol.submit_ok(**script("print(1)"))
    failed = carol.wait_status(job["job_id"], "failed")
    assert failed["reason"] == "LaunchFailed"
    assert 'namespaces "gpujobs-carol" not found' in failed["message"]
