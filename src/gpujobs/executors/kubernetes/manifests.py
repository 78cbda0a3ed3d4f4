"""Kubernetes objects for a job, built by pure functions: a job and settings in, plain dicts out.

The Job meets the Pod Security Standard *restricted*; no service-account token is mounted; the script
travels as a ConfigMap (owned by the Job once it exists); requirements are installed by an init
container into an emptyDir that the job has on PYTHONPATH; every command is an argv (no shell).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...models import JobSpec
from ...quantities import parse_cpu
from ...store.records import JobRecord
from .nodes import KubeNode
from .slugs import job_name, kubespawner_slug, label_value, script_configmap_name

MANAGED_BY = {"app.kubernetes.io/managed-by": "gpujobs"}
SCRIPT_DIR = "/gpujobs/script"
DEPS_DIR = "/gpujobs/deps"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class JobTemplate:
    """What the operator decides about every job pod (from the service's config)."""

    namespace: str
    image_cpu: str = "gpujobs-runtime:cpu"
    image_gpu: str = "gpujobs-runtime:gpu"
    python: str = "python"
    run_as_user: int = 1000
    run_as_group: int = 100
    gpu_resource: str = "nvidia.com/gpu"
    home_claim_template: str | None = "claim-{username}"  # Zero to JupyterHub's per-user PVC
    user_slug_scheme: str = "safe"  # how KubeSpawner turns user names into object names
    home_mount_path: str = "/home/jovyan"
    shared_claim: str | None = None
    shared_mount_path: str = "/shared"
    ttl_seconds_after_finished: int = 3600
    pip_extra_args: tuple[str, ...] = ()
    extra_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    """Where the job's pod may go: a node selector for its GPU type and tolerations for their taints."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, str], ...] = ()


def placement_for(
    gpu_type: str, nodes: Sequence[KubeNode], *, satisfies: Callable[[str, str], bool]
) -> Placement:
    """Select nodes of the type by the label that node set uses; tolerate the taints they carry.

    When the matching nodes name their type with different labels or values (an ``a100`` request over
    40 GB and 80 GB nodes), no selector is set and the admission's node name decides instead.
    """
    selector: dict[str, str] = {}
    if gpu_type == "any":
        matching = [n for n in nodes if n.node.devices]
    else:
        matching = [n for n in nodes if any(satisfies(d.gpu_type, gpu_type) for d in n.node.devices)]
        labelled = {(n.type_label, n.labels[n.type_label]) for n in matching if n.type_label}
        if len(labelled) == 1:
            key, value = next(iter(labelled))
            selector[key] = value
    seen: dict[tuple[str, str | None, str], Mapping[str, str]] = {}
    for node in matching:
        for taint in node.taints:
            if taint.effect in ("NoSchedule", "NoExecute"):
                seen[(taint.key, taint.value, taint.effect)] = taint.toleration()
    return Placement(selector, tuple(seen[key] for key in sorted(seen, key=str)))


def labels_for(job: JobRecord, template: JobTemplate) -> dict[str, str]:
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "gpujobs-job",
        "gpujobs.io/job-id": job.job_id,
        "gpujobs.io/user": label_value(job.user),
        **template.extra_labels,
    }


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(spec: JobSpec, gpu_resource: str) -> dict[str, dict[str, str]]:
    amounts: dict[str, str] = {}
    if spec.cpu_limit:
        amounts["cpu"] = spec.cpu_limit
    if spec.memory_limit:
        amounts["memory"] = spec.memory_limit
    if spec.gpus_wanted:
        amounts[gpu_resource] = str(spec.gpus_wanted)
    # Request = limit: the job gets what it asked for (Guaranteed when CPU and memory are set).
    return {"limits": dict(amounts), "requests": dict(amounts)} if amounts else {}


def _environment(job: JobRecord, spec: JobSpec) -> list[dict[str, str]]:
    env = {
        "GPUJOBS_JOB_ID": job.job_id,
        "GPUJOBS_JOB_NAME": job.name,
        "GPUJOBS_USER": job.user,
        "GPUJOBS_GPU_TYPE": job.gpu_type,
        "PYTHONUNBUFFERED": "1",
    }
    if spec.cpu_limit:
        threads = str(max(1, math.ceil(parse_cpu(spec.cpu_limit))))
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    if spec.requirements:
        env["PYTHONPATH"] = DEPS_DIR
    env.update(spec.environment)  # validated: never *_VISIBLE_DEVICES, PATH, PYTHONPATH, LD_*, ...
    return [{"name": name, "value": value} for name, value in env.items()]


def script_configmap(job: JobRecord, template: JobTemplate) -> dict[str, Any] | None:
    """The inline script as a ConfigMap (None for a job that runs a file)."""
    spec = job.job_spec
    if spec.script is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": script_configmap_name(job.job_id),
            "namespace": template.namespace,
            "labels": labels_for(job, template),
        },
        "data": {"script.py": spec.script},
    }


def owned_by(obj: Mapping[str, Any], owner_job: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with an ownerReference to the created Job, so deleting the Job deletes it too."""
    metadata = dict(obj["metadata"])
    metadata["ownerReferences"] = [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": owner_job["metadata"]["name"],
            "uid": owner_job["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return {**obj, "metadata": metadata}


def job_manifest(job: JobRecord, template: JobTemplate, placement: Placement = Placement()) -> dict[str, Any]:
    """The batch/v1 Job for ``job``."""
    spec = job.job_spec
    labels = labels_for(job, template)
    image = spec.image or (template.image_gpu if spec.gpus_wanted else template.image_cpu)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if spec.script is not None:
        script = f"{SCRIPT_DIR}/script.py"
        volumes.append({"name": "script", "configMap": {"name": script_configmap_name(job.job_id)}})
        mounts.append({"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True})
    else:
        assert spec.script_path is not None
        script = spec.script_path
    if template.home_claim_template:
        # Expanded as KubeSpawner expands it, so the job mounts the notebook server's own claim.
        user = kubespawner_slug(job.user, template.user_slug_scheme)
        claim = template.home_claim_template.format(username=user, servername="")
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "home", "mountPath": template.home_mount_path})
    if template.shared_claim:
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": template.shared_claim}})
        mounts.append({"name": "shared", "mountPath": template.shared_mount_path})
    init_containers = []
    if spec.requirements:
        volumes.append({"name": "deps", "emptyDir": {}})
        mounts.append({"name": "deps", "mountPath": DEPS_DIR, "readOnly": True})
        init_containers.append(
            {
                "name": "requirements",
                "image": image,
                "command": [
                    template.python,
                    "-m",
                    "pip",
                    "install",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--target",
                    DEPS_DIR,
                    *template.pip_extra_args,
                    *spec.requirements,
                ],
                "env": [{"name": "HOME", "value": "/tmp"}],
                "volumeMounts": [{"name": "deps", "mountPath": DEPS_DIR}],
                "securityContext": _restricted_container_security(),
            }
        )
    container: dict[str, Any] = {
        "name": "job",
        "image": image,
        "command": [template.python, script, *spec.args],
        "env": _environment(job, spec),
        "volumeMounts": mounts,
        "securityContext": _restricted_container_security(),
    }
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    elif template.home_claim_template:
        container["workingDir"] = template.home_mount_path
    resources = _resources(spec, template.gpu_resource)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": template.run_as_user,
            "runAsGroup": template.run_as_group,
            "fsGroup": template.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if placement.node_selector:
        pod_spec["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in placement.tolerations]
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries,
        "ttlSecondsAfterFinished": template.ttl_seconds_after_finished,
        # Disruptions (preemption, eviction, node drain) do not count against the job's retries.
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    timeout = spec.timeout_seconds or job.timeout_seconds
    if timeout:
        job_spec["activeDeadlineSeconds"] = timeout
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job.job_id),
            "namespace": template.namespace,
            "labels": labels,
            "annotations": {"gpujobs.io/user": job.user, "gpujobs.io/job-name": job.name},
        },
        "spec": job_spec,
    }


def namespace_manifest(name: str, username: str) -> dict[str, Any]:
    """A user's namespace, created by gpujobs when configured to: Pod Security *restricted* enforced."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                **MANAGED_BY,
                "gpujobs.io/user": label_value(username),
                "pod-security.kubernetes.io/enforce": "restricted",
            },
            "annotations": {"gpujobs.io/user": username},
        },
    }
