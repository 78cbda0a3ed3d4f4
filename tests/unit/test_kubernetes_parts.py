"""The Kubernetes executor's pure parts: slugs, node inventory, placement, manifests (validated against
the official schemas with kubernetes-validate, strict, for 1.31 and the newest version it ships)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from builders import stored_job
from gpujobs.executors.kubernetes.cache import ClusterCache, is_ours, pod_usage
from gpujobs.executors.kubernetes.executor import job_failure
from gpujobs.executors.kubernetes.manifests import (
    JobTemplate,
    job_manifest,
    namespace_manifest,
    owned_by,
    placement_for,
    script_configmap,
)
from gpujobs.executors.kubernetes.nodes import kube_node, pod_gpu_request
from gpujobs.executors.kubernetes.slugs import job_name, kubespawner_slug, namespace_for, safe_slug
from gpujobs.gputypes import satisfies
from gpujobs.inventory import slots_held_by_others

VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
REPO = Path(__file__).resolve().parents[2]


def validate(obj: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def job(**spec: Any):
    return stored_job("0123456789abcdef", user="Alice@Example.org", spec_fields=spec)


def gfd_node(
    name: str = "gpu-1", *, gpus: int = 8, product: str = "NVIDIA-A100-SXM4-80GB", **extra: Any
) -> dict:
    node = {
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": "81920"},
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"nvidia.com/gpu": str(gpus + 1), "cpu": "96"},
            "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "95500m", "memory": "1056276Mi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    for key, value in extra.items():
        node["spec" if key == "unschedulable" else "status"][key] = value
    return node


def pod(gpus: int, *, phase: str = "Running", init: int = 0, ours: bool = False, node: str = "gpu-1") -> dict:
    labels = {"app.kubernetes.io/managed-by": "gpujobs", "gpujobs.io/job-id": "j1"} if ours else {}
    spec: dict[str, Any] = {
        "nodeName": node,
        "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}],
    }
    if init:
        spec["initContainers"] = [{"resources": {"limits": {"nvidia.com/gpu": str(init)}}}]
    return {"metadata": {"labels": labels}, "spec": spec, "status": {"phase": phase}}


def cache_with(nodes: list[dict], pods: list[dict]) -> ClusterCache:
    cache = ClusterCache()
    cache.replace_nodes(nodes)
    cache.replace_pods(
        (f"uid-{i}", pod_usage(p), p if is_ours(p["metadata"]["labels"]) else None)
        for i, p in enumerate(pods)
    )
    return cache


# --- slugs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "slug"),
    [
        ("alice", "alice"),
        ("bob-2", "bob-2"),
        ("Alice@Example.org", "alice-example-org-cfd44c4f"),
        ("---", "x-cb3f91d5"),
    ],
)
def test_slugs(raw: str, slug: str) -> None:
    assert safe_slug(raw) == slug


@pytest.mark.parametrize(
    ("name", "safe", "escaped"),
    [  # KubeSpawner's documented examples: a job must mount the claim the notebook server has
        ("username", "username", "username"),
        ("has-hyphen", "has-hyphen", "has-2dhyphen"),
        ("Capital", "capital---1a1cf792", "-43apital"),
        ("user@email.com", "user-email-com---0925f997", "user-40email-2ecom"),
        (
            "a-very-long-name-that-is-too-long-for-sixty-four-character-labels",
            "a-very-long-name-that-is-too-long-for---29ac5fd2",
            "a-2dvery-2dlong-2dname-2dthat-2dis-2dtoo-2dlong-2dfor-2dsixty-2dfour-2dcharacter-2dlabels",
        ),
        ("ALLCAPS", "allcaps---27c6794c", "-41-4c-4c-43-41-50-53"),
        ("9z9", "x-9z9---224de202", "9z9"),
        ("user-_@_emailß.com", "user-email-com---7e3a7efd", "user-2d-5f-40-5femail-c3-9f-2ecom"),
    ],
)
def test_home_claims_are_named_as_kubespawner_names_them(name: str, safe: str, escaped: str) -> None:
    assert kubespawner_slug(name) == safe
    assert kubespawner_slug(name, "escape") == escaped
    manifest = job_manifest(
        job(name="x"), JobTemplate(namespace="ns"), placement_for("any", [], satisfies=satisfies)
    )
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in manifest["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["claim-alice-example-org---cfd44c4f"]


def test_per_user_namespaces_are_dns_labels() -> None:
    assert namespace_for("gpujobs-{username}", "alice") == "gpujobs-alice"
    long = namespace_for("gpujobs-{username}", "A.Very.Long.Name@Example.org" * 3)
    assert len(long) <= 63 and long.startswith("gpujobs-a-very-long-name")
    manifest = namespace_manifest("gpujobs-alice", "Alice@Example.org")
    assert manifest["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    validate(manifest)


def test_slugs_are_short_and_distinct() -> None:
    assert len(safe_slug("a" * 200)) <= 63
    assert safe_slug("Bob") != safe_slug("bob")
    assert job_name("0123456789abcdef") == "gpujob-0123456789abcdef"


# --- inventory -------------------------------------------------------------------------------------------


def test_gpus_come_from_allocatable_and_the_type_from_labels() -> None:
    cache = cache_with([gfd_node()], [pod(2), pod(1, ours=True), pod(4, phase="Succeeded")])
    (inventory,) = cache.kube_nodes()
    assert len(inventory.node.devices) == 8  # allocatable, not capacity (9)
    assert {d.gpu_type for d in inventory.node.devices} == {"a100-80gb"}
    # The notebook's 2; ours are in the store; finished pods hold none.
    assert cache.held_by_others() == {"gpu-1": {"a100-80gb": 2}}
    assert [p["spec"]["containers"] for p in cache.pods_of("j1")] == [pod(1)["spec"]["containers"]]
    assert inventory.type_label == "nvidia.com/gpu.product"
    assert inventory.node.cpu_cores == 95.5
    assert inventory.node.memory_bytes == 1056276 * 2**20
    assert inventory.node.taints == ("nvidia.com/gpu:NoSchedule",)


@pytest.mark.parametrize("memory", ["lots", None])
def test_memory_that_cannot_be_read_is_unknown_not_zero_room(memory: str | None) -> None:
    node = gfd_node()
    node["status"]["allocatable"]["memory"] = memory
    assert kube_node(node).node.memory_bytes == 0.0  # 0: unknown, so memory limits nothing there


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}, "t4"),
        ({"k8s.amazonaws.com/accelerator": "nvidia-tesla-v100"}, "v100"),
        ({"accelerator": "tesla-v100"}, "v100"),
        ({"nvidia.com/gpu.product": "Tesla-V100-SXM2-16GB"}, "v100-16gb"),
    ],
)
def test_the_labels_clusters_really_carry(labels: dict[str, str], expected: str) -> None:
    node = gfd_node()
    node["metadata"]["labels"] = labels
    assert {d.gpu_type for d in kube_node(node).node.devices} == {expected}


def test_the_cache_follows_events_node_by_node() -> None:
    cache = cache_with([gfd_node("gpu-1"), gfd_node("gpu-2")], [pod(2)])
    first = cache.inventory()
    assert cache.inventory() is first  # nothing changed: the same answer, not rebuilt
    notebook = pod(3, node="gpu-2")
    cache.pod_event("ADDED", "nb", pod_usage(notebook), None)
    assert cache.held_by_others() == {"gpu-1": {"a100-80gb": 2}, "gpu-2": {"a100-80gb": 3}}
    cache.pod_event("MODIFIED", "nb", pod_usage(pod(3, node="gpu-2", phase="Succeeded")), None)
    assert cache.held_by_others() == {"gpu-1": {"a100-80gb": 2}}
    cache.pod_event("DELETED", "uid-0", pod_usage(pod(2)), None)
    assert cache.held_by_others() == {}
    cache.pod_event("ADDED", "idle", pod_usage(pod(0, node="gpu-1")), None)  # holds no GPU
    unchanged = cache.inventory()
    cache.pod_event("DELETED", "idle", pod_usage(pod(0, node="gpu-1")), None)
    assert cache.inventory() is unchanged
    cache.node_event("MODIFIED", gfd_node("gpu-2", unschedulable=True))
    assert [n.name for n in cache.inventory().nodes if n.offers] == ["gpu-1"]
    cache.node_event("DELETED", gfd_node("gpu-1"))
    assert [n.name for n in cache.inventory().nodes] == ["gpu-2"]


def test_mig_slices_held_by_other_pods_count_as_their_own_type() -> None:
    node = gfd_node(gpus=1)
    node["status"]["allocatable"].update({"nvidia.com/mig-1g.10gb": "7"})
    notebook = pod(0)
    notebook["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-1g.10gb": "2"}}
    cache = cache_with([node], [notebook, pod(1)])
    assert cache.held_by_others() == {"gpu-1": {"a100-mig-1g.10gb": 2, "a100-80gb": 1}}
    (kube,) = cache.kube_nodes()
    held = slots_held_by_others(kube.node, set(), kube.held_by_others)
    assert sorted(kube.node.devices[int(i)].gpu_type for i in held) == [
        "a100-80gb",
        "a100-mig-1g.10gb",
        "a100-mig-1g.10gb",
    ]


def test_init_containers_count_as_kube_scheduler_counts_them() -> None:
    assert pod_gpu_request(pod(1, init=3), "nvidia.com/gpu") == 3
    assert pod_gpu_request(pod(2, init=1), "nvidia.com/gpu") == 2


def test_mig_slices_amd_and_unusable_nodes() -> None:
    node = gfd_node(gpus=0)
    node["status"]["allocatable"].update({"nvidia.com/mig-1g.10gb": "7"})
    assert {d.gpu_type for d in kube_node(node).node.devices} == {"a100-mig-1g.10gb"}
    amd = {
        "metadata": {"name": "mi", "labels": {"accelerator": "AMD-Instinct-MI300X"}},
        "status": {"allocatable": {"amd.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert {d.gpu_type for d in kube_node(amd).node.devices} == {"mi300x"}
    cordoned = kube_node(gfd_node(unschedulable=True))
    not_ready = kube_node(gfd_node(conditions=[{"type": "Ready", "status": "False"}]))
    assert not cordoned.node.offers and not not_ready.node.offers


# --- placement and manifests -----------------------------------------------------------------------------


def test_placement_selects_by_the_label_the_node_set_uses_and_tolerates_its_taints() -> None:
    nodes = [
        kube_node(gfd_node("a1")),
        kube_node(gfd_node("a2")),
        kube_node(gfd_node("t1", gpus=4, product="Tesla-T4")),
    ]
    placement = placement_for("a100", nodes, satisfies=satisfies)
    assert placement.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert placement.tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert placement_for("any", nodes, satisfies=satisfies).node_selector == {}


def test_the_job_manifest() -> None:
    template = JobTemplate(namespace="gpujobs", shared_claim="shared-data")
    record = job(
        gpu_count=2,
        gpu_type="a100",
        cpu_limit="4",
        memory_limit="8Gi",
        retries=2,
        timeout_seconds=3600,
        requirements=["numpy>=1.26"],
        environment={"MY_VAR": "1"},
        args=["--lr", "0.1"],
    )
    nodes = [kube_node(gfd_node())]
    manifest = job_manifest(record, template, placement_for("a100", nodes, satisfies=satisfies))
    validate(manifest)
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["name"] == "gpujob-0123456789abcdef"
    assert meta["labels"]["gpujobs.io/user"] == "alice-example-org-cfd44c4f"
    assert meta["annotations"]["gpujobs.io/user"] == "Alice@Example.org"
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (2, 3600)
    assert spec["podFailurePolicy"]["rules"][0]["onPodConditions"] == [
        {"type": "DisruptionTarget", "status": "True"}
    ]
    pod_spec = spec["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    (container,) = pod_spec["containers"]
    assert container["command"] == ["python", "/gpujobs/script/script.py", "--lr", "0.1"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MY_VAR"] == "1" and env["PYTHONPATH"] == "/gpujobs/deps" and env["OMP_NUM_THREADS"] == "4"
    assert not any(name.endswith("_VISIBLE_DEVICES") for name in env)
    (init,) = pod_spec["initContainers"]
    assert init["command"][-1] == "numpy>=1.26" and "--target" in init["command"]
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod_spec["volumes"]}
    assert claims["home"] == "claim-alice-example-org---cfd44c4f" and claims["shared"] == "shared-data"


def test_a_script_file_job_and_a_cpu_job() -> None:
    template = JobTemplate(namespace="gpujobs", home_claim_template=None)
    record = job(script=None, script_path="/shared/examples/ml_training_example.py")
    manifest = job_manifest(record, template)
    validate(manifest)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "/shared/examples/ml_training_example.py"]
    assert container["image"] == "gpujobs-runtime:cpu" and "resources" not in container
    assert script_configmap(record, template) is None


def test_the_working_dir_is_the_specs_else_the_home() -> None:
    def working_dir(template: JobTemplate, **spec: Any) -> str | None:
        container = job_manifest(job(**spec), template)["spec"]["template"]["spec"]["containers"][0]
        return container.get("workingDir")

    with_home = JobTemplate(namespace="gpujobs")
    assert working_dir(with_home, working_dir="/home/jovyan/project") == "/home/jovyan/project"
    assert working_dir(with_home) == with_home.home_mount_path
    assert working_dir(JobTemplate(namespace="gpujobs", home_claim_template=None)) is None  # the image's


def test_the_deadline_is_the_specs_timeout_else_the_jobs_default() -> None:
    template = JobTemplate(namespace="gpujobs")

    def deadline(record: Any) -> int | None:
        return job_manifest(record, template)["spec"].get("activeDeadlineSeconds")

    # The user's own timeout wins over the default the job was given (the quota's limit).
    assert deadline(stored_job(spec_fields={"timeout_seconds": 120}, timeout_seconds=900)) == 120
    assert deadline(stored_job(timeout_seconds=900)) == 900
    assert deadline(stored_job()) is None


def test_the_script_configmap_is_owned_by_the_job() -> None:
    template = JobTemplate(namespace="gpujobs")
    configmap = script_configmap(job(script="print('hi')"), template)
    assert configmap is not None and configmap["data"] == {"script.py": "print('hi')"}
    validate(configmap)
    owned = owned_by(configmap, {"metadata": {"name": "gpujob-0123456789abcdef", "uid": "u-1"}})
    validate(owned)
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "Job"


@pytest.mark.parametrize(
    "path", sorted((REPO / "deploy" / "kubernetes").glob("*.yaml")), ids=lambda p: p.name
)
def test_the_deployment_manifests_are_valid(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        validate(document)


# --- reading a failed Job ------------------------------------------------------------------------------


def terminated(code: int, reason: str = "Error") -> dict:
    return {"state": {"terminated": {"exitCode": code, "reason": reason}}}


@pytest.mark.parametrize(
    ("condition", "status", "expected"),
    [
        ({"reason": "DeadlineExceeded"}, {}, ("Timeout", None)),
        ({"reason": "BackoffLimitExceeded"}, {"containerStatuses": [terminated(3)]}, ("NonZeroExit", 3)),
        (
            {"reason": "BackoffLimitExceeded"},
            {"containerStatuses": [terminated(137, "OOMKilled")]},
            ("OOMKilled", 137),
        ),
        (
            {"reason": "BackoffLimitExceeded"},
            {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
            ("Evicted", None),
        ),
        (
            {"reason": "BackoffLimitExceeded"},
            {"initContainerStatuses": [terminated(1)]},
            ("RequirementsFailed", None),
        ),
        (
            {"reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"},
            {},
            ("BackoffLimitExceeded", None),
        ),
    ],
)
def test_a_failed_job_says_why_in_words_a_person_can_act_on(
    condition: dict, status: dict, expected: tuple
) -> None:
    reason, message, code = job_failure(condition, [{"status": status}])
    assert (reason, code) == expected and message


# --- snapshots -----------------------------------------------------------------------------------------

SNAPSHOT = Path(__file__).with_name("snapshots") / "kubernetes-objects.yaml"


def test_the_objects_a_job_becomes_match_the_reviewed_snapshot() -> None:
    """Any change to what gpujobs sends the cluster shows as a diff of this file in review.  After a
    deliberate change: GPUJOBS_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_kubernetes_parts.py"""
    template = JobTemplate(namespace="gpujobs-alice", shared_claim="shared-data")
    record = job(
        gpu_count=1,
        gpu_type="t4",
        memory_limit="8Gi",
        retries=1,
        timeout_seconds=600,
        requirements=["numpy>=1.26"],
        environment={"MY_VAR": "1"},
    )
    nodes = [kube_node(gfd_node("t1", gpus=4, product="Tesla-T4"))]
    created = {"metadata": {"name": "gpujob-0123456789abcdef", "uid": "11111111-2222-3333-4444-555555555555"}}
    objects = [
        namespace_manifest("gpujobs-alice", record.user),
        job_manifest(record, template, placement_for("t4", nodes, satisfies=satisfies)),
        owned_by(script_configmap(record, template) or {}, created),
    ]
    text = yaml.safe_dump_all(objects, sort_keys=True)
    if os.environ.get("GPUJOBS_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert text == SNAPSHOT.read_text()
    for obj in objects:
        validate(obj)
