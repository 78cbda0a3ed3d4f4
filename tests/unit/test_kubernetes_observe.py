"""What the Kubernetes executor makes of its cache, step by step: the Jobs' watch and the pods' watch are
two streams, so a Job's end can arrive before the pod states that say why it ended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builders import stored_job
from gpujobs.config import Settings
from gpujobs.executors.base import Phase
from gpujobs.executors.kubernetes import executor as kube
from gpujobs.executors.kubernetes.cache import JOB_ID_LABEL, pod_usage
from gpujobs.models import JobStatus

OURS = {"app.kubernetes.io/managed-by": "gpujobs", JOB_ID_LABEL: "j1"}


def failed_job(reason: str) -> dict[str, Any]:
    condition = {"type": "Failed", "status": "True", "reason": reason, "message": "Job has failed"}
    return {"metadata": {"name": "gpujob-j1", "labels": OURS}, "status": {"conditions": [condition]}}


def job_pod(phase: str, init_state: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": OURS, "uid": "pod-1"},
        "spec": {
            "nodeName": "t4-1",
            "containers": [{"name": "job"}],
            "initContainers": [{"name": "requirements"}],
        },
        "status": {"phase": phase, "initContainerStatuses": [{"name": "requirements", "state": init_state}]},
    }


INSTALLING = job_pod("Pending", {"running": {"startedAt": "2026-12-07T10:00:00Z"}})
INSTALL_FAILED = job_pod("Failed", {"terminated": {"exitCode": 1, "reason": "Error"}})


def executor_seeing(tmp_path: Path, kube_job: dict[str, Any], pod: dict[str, Any]) -> kube.KubernetesExecutor:
    executor = kube.KubernetesExecutor(Settings(executor="kubernetes", data_dir=tmp_path, nvml=False))
    executor.cache.replace_jobs([kube_job])
    executor.cache.replace_pods([("pod-1", pod_usage(pod), pod)])
    return executor


def see(executor: kube.KubernetesExecutor, pod: dict[str, Any]) -> None:
    executor.cache.pod_event("MODIFIED", "pod-1", pod_usage(pod), pod)


async def test_a_failed_job_waits_for_its_pods_last_states_to_say_why(tmp_path: Path) -> None:
    executor = executor_seeing(tmp_path, failed_job("BackoffLimitExceeded"), INSTALLING)
    job = stored_job("j1", status=JobStatus.PENDING)
    early = (await executor.observe([job]))["j1"]
    assert early.phase is not Phase.ENDED  # not "BackoffLimitExceeded": the pod's end is on its way
    see(executor, INSTALL_FAILED)
    seen = (await executor.observe([job]))["j1"]
    assert (seen.phase, seen.status, seen.reason) == (Phase.ENDED, JobStatus.FAILED, "RequirementsFailed")
    assert seen.settled


async def test_pods_that_never_report_do_not_hold_up_the_end_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube, "POD_LAG_SECONDS", 0.0)  # the wait is over at once
    executor = executor_seeing(tmp_path, failed_job("BackoffLimitExceeded"), INSTALLING)
    seen = (await executor.observe([stored_job("j1", status=JobStatus.PENDING)]))["j1"]
    assert (seen.phase, seen.reason) == (Phase.ENDED, "BackoffLimitExceeded")
    assert not seen.settled  # its pod still holds the node's GPUs until it is seen gone


async def test_a_deadline_is_the_reason_whatever_the_pods_still_show(tmp_path: Path) -> None:
    running = job_pod("Running", {"terminated": {"exitCode": 0, "reason": "Completed"}})
    executor = executor_seeing(tmp_path, failed_job("DeadlineExceeded"), running)
    seen = (await executor.observe([stored_job("j1", status=JobStatus.RUNNING)]))["j1"]
    assert (seen.phase, seen.reason, seen.settled) == (Phase.ENDED, "Timeout", False)
