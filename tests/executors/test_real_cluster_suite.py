"""The opt-in real-cluster suite (tests/cluster) must run as a cluster admin would run it: here it
runs, as is, against the simulated cluster, with KUBECONFIG pointing there."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from gpujobs.testing.fakekube.server import FakeCluster
from helpers import REPO


def test_the_real_cluster_suite_runs_as_documented(tmp_path) -> None:
    cluster = FakeCluster("a100-80gb:2x1,cpu:0x1", work_dir=tmp_path / "cluster").start()
    try:
        kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig")
        # The suite's one set-up step: "kubectl create namespace gpujobs-test".
        created = httpx.post(f"{cluster.url}/api/v1/namespaces", json={"metadata": {"name": "gpujobs-test"}})
        assert created.status_code == 201
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "GPUJOBS_TEST_TIMEOUT": "60"}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/cluster"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        cluster.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "6 passed" in run.stdout, run.stdout[-2000:]
