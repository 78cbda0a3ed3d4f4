"""The RBAC manifests grant exactly what the executor does: a service of its own, against a cluster of
its own, is taken through every kind of call it makes (list and watch, a job with requirements, a
cancel, a Job adopted after a lost answer, a pod stuck being created, namespaces where it makes them),
and every call is compared with the manifest: each one granted, each rule used."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import REPO, Api, assert_rbac_is_exact, script, tiny_wheel_folder

HOLD = "import time\nprint('started', flush=True)\ntime.sleep(300)\n"
SINGLE: dict[str, str] = {}
PER_USER = {
    "GPUJOBS_KUBE_NAMESPACE_TEMPLATE": "gpujobs-{username}",
    "GPUJOBS_KUBE_CREATE_NAMESPACES": "true",
    "GPUJOBS_KUBE_HOME_CLAIM_TEMPLATE": "",  # home claims live in the hub's namespace
}


@pytest.mark.parametrize(
    ("manifest", "env"),
    [("rbac.yaml", SINGLE), ("rbac-per-user-namespaces.yaml", PER_USER)],
    ids=["one-namespace", "per-user-namespaces"],
)
def test_the_manifest_grants_exactly_what_the_executor_does(
    world, tmp_path: Path, manifest: str, env: dict[str, str]
) -> None:
    cluster = FakeCluster(
        "t4:1x2,cpu:0x1", work_dir=tmp_path / "cluster", claims={"*": str(tmp_path / "claims" / "{claim}")}
    ).start()
    try:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig", namespace="gpujobs")
        (tmp_path / "wheels").mkdir()
        wheels = tiny_wheel_folder(tmp_path / "wheels")
        service = world.start_in_process(
            "--executor",
            "kubernetes",
            "--kubeconfig",
            str(kubeconfig),
            env={
                **env,
                "GPUJOBS_PIP_EXTRA_ARGS": f"--no-index,--find-links={wheels}",
                "GPUJOBS_KUBE_SHARED_CLAIM": "shared-data",
                "GPUJOBS_KUBE_CONTAINER_CREATING_SECONDS": "2",
            },
        )
        alice = Api(service.client(world.hub.add_user("alice")))
        # Create (ConfigMap, Job, namespace where it makes them), follow and archive logs, init containers.
        done = alice.submit_ok(
            **script("import gpujobs_tiny_pkg; print('ok')", requirements=["gpujobs-tiny-pkg"])
        )
        ended = alice.wait_status(done["job_id"], "completed", "failed")
        assert ended["status"] == "completed", (ended["reason"], ended["message"])
        # A cancel deletes the Job.
        held = alice.submit_ok(**script(HOLD))
        alice.wait_status(held["job_id"], "running")
        assert alice.http.post(f"api/k8s/job/{held['job_id']}/cancel").status_code == 200  # told at once
        # A create whose answer is lost: the Job is read and adopted.
        cluster.faults.inject(method="POST", path="/jobs", fault="reset-after")
        adopted = alice.submit_ok(**script("print('adopted')"))
        assert alice.wait_status(adopted["job_id"], "completed", "failed")["status"] == "completed"
        # A pod stuck being created: its events say why.
        cluster.simulator.unmountable_claims.add("shared-data")
        stuck = alice.submit_ok(**script("print('never')"))
        assert alice.wait_status(stuck["job_id"], "failed")["reason"] == "ContainerCreatingTimeout"
        assert_rbac_is_exact(REPO / "deploy/kubernetes" / manifest, cluster.faults.requests)
    finally:
        cluster.stop()
