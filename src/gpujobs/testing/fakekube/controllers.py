"""The cluster's behaviour: a scheduler, a Job controller and a kubelet that really runs commands.

Everything runs on one asyncio loop, one small step every ``tick`` seconds: easy to reason about, and
what tests observe is exactly what a watch would have shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import signal
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...executors.jobgroup import descendants, rss_bytes
from ...quantities import QuantityError, parse_cpu, parse_memory
from .store import Store, now_iso

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
TERMINAL = ("Succeeded", "Failed")


def _parse(kind: str, value: str) -> float:
    try:
        return (
            parse_cpu(value)
            if kind == "cpu"
            else float(parse_memory(value))
            if kind == "memory"
            else float(value)
        )
    except (QuantityError, ValueError):
        return 0.0


def pod_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """What a pod asks of a node (requests, else limits), counting init containers as kube-scheduler does."""

    def of(container: Mapping[str, Any]) -> dict[str, float]:
        resources = container.get("resources", {})
        merged = {**resources.get("limits", {}), **resources.get("requests", {})}
        return {kind: _parse(kind, str(value)) for kind, value in merged.items()}

    spec = pod.get("spec", {})
    total: dict[str, float] = {}
    for container in spec.get("containers", []):
        for kind, amount in of(container).items():
            total[kind] = total.get(kind, 0.0) + amount
    for container in spec.get("initContainers", []):
        for kind, amount in of(container).items():
            total[kind] = max(total.get(kind, 0.0), amount)
    return total


def _tolerates(tolerations: list[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", taint.get("effect")):
            continue
        if toleration.get("operator") == "Exists" and toleration.get("key") in (None, "", taint["key"]):
            return True
        if toleration.get("key") == taint["key"] and toleration.get("value") == taint.get("value"):
            return True
    return False


def _ready(node: Mapping[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


class Simulator:
    def __init__(
        self,
        store: Store,
        *,
        work_dir: Path,
        claims: Mapping[str, str] | None = None,
        tick: float = 0.05,
        grace_seconds: float = 2.0,
        mount_retry_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.work_dir = work_dir
        self.claims = dict(claims or {})  # PVC name → host folder ("{claim}" is replaced by the name)
        self.tick = tick
        self.grace = grace_seconds
        self.processes: dict[str, asyncio.subprocess.Process] = {}  # pod uid → its running container
        self.killed: set[str] = set()  # pods being terminated: no container of theirs starts any more
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.mount_retry_seconds = mount_retry_seconds
        self.unmountable_claims: set[str] = set()  # claims whose volumes never mount (tests set them)
        # (pod uid, volume) → (namespace, pod, Event, when it was last counted): FailedMount warnings
        self._failed_mounts: dict[tuple[str, str], tuple[str, str, str, float]] = {}
        self._seen_rv = -1

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as exc:  # a simulator bug must not silently stop the cluster
                print(f"fake cluster: step failed: {exc!r}", file=sys.stderr)
            await asyncio.sleep(self.tick)

    async def step(self) -> None:
        await self._jobs()
        if self._failed_mounts:
            await self._retry_mounts()
        # Scheduling and starting pods only have work when something changed: with 100,000 pods in
        # the store (bench/gpu_status.py), scanning them every tick would starve everything else.
        if self.store.rv != self._seen_rv:
            self._seen_rv = self.store.rv
            await self._schedule()
            await self._kubelet()

    # --- Job controller ------------------------------------------------------------------------------

    def _pods_of(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        uid = job["metadata"]["uid"]
        return self.store.list(
            "Pod",
            job["metadata"]["namespace"],
            lambda p: p["metadata"].get("labels", {}).get("controller-uid") == uid,
        )

    async def _jobs(self) -> None:
        now = time.time()
        for job in self.store.list("Job"):
            status = job.setdefault("status", {})
            conditions = status.setdefault("conditions", [])
            finished = next(
                (c for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None
            )
            if finished is not None:
                ttl = job["spec"].get("ttlSecondsAfterFinished")
                if ttl is not None and now - _epoch(finished["lastTransitionTime"]) >= ttl:
                    await self.delete_cascading("Job", job["metadata"]["namespace"], job["metadata"]["name"])
                continue
            pods = self._pods_of(job)
            active = [p for p in pods if p.get("status", {}).get("phase") not in TERMINAL]
            succeeded = [p for p in pods if p.get("status", {}).get("phase") == "Succeeded"]
            failed = [
                p for p in pods if p.get("status", {}).get("phase") == "Failed" and not _ignored(job, p)
            ]
            changed = False
            if "startTime" not in status:
                status["startTime"] = now_iso()
                changed = True
            deadline = job["spec"].get("activeDeadlineSeconds")
            if succeeded:
                await self._finish(job, "Complete", None, "")
                continue
            if deadline is not None and now - _epoch(status["startTime"]) >= deadline:
                for pod in active:
                    await self.kill_pod(pod)
                await self._finish(
                    job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
                )
                continue
            if len(failed) > job["spec"].get("backoffLimit", 6):
                await self._finish(
                    job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
                continue
            if not active:
                await self._create_pod(job, attempt=len(pods))
                changed = True
            counts = {"active": len(active) or 1, "failed": len(failed), "succeeded": 0}
            if any(status.get(k) != v for k, v in counts.items()):
                status.update(counts)
                changed = True
            if changed:
                await self.store.update("Job", job["metadata"]["namespace"], job)

    async def _finish(self, job: dict[str, Any], kind: str, reason: str | None, message: str) -> None:
        status = job["status"]
        condition = {"type": kind, "status": "True", "lastTransitionTime": now_iso(), "message": message}
        if reason:
            condition["reason"] = reason
        status["conditions"].append(condition)
        status["active"] = 0
        if kind == "Complete":
            status["succeeded"] = 1
            status["completionTime"] = now_iso()
        await self.store.update("Job", job["metadata"]["namespace"], job)

    async def _create_pod(self, job: Mapping[str, Any], attempt: int) -> None:
        template = copy.deepcopy(job["spec"]["template"])
        metadata = template.setdefault("metadata", {})
        labels = metadata.setdefault("labels", {})
        labels.update({"controller-uid": job["metadata"]["uid"], "job-name": job["metadata"]["name"]})
        metadata["name"] = f"{job['metadata']['name']}-{attempt}"
        metadata["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job["metadata"]["name"],
                "uid": job["metadata"]["uid"],
                "controller": True,
            }
        ]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": template["spec"],
            "status": {"phase": "Pending", "conditions": []},
        }
        await self.store.create("Pod", job["metadata"]["namespace"], pod)

    async def delete_cascading(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete an object and everything it owns (pods are killed first)."""
        obj = self.store.get(kind, namespace, name)
        if obj is None:
            return None
        uid = obj["metadata"]["uid"]
        for child_kind in ("Pod", "ConfigMap"):
            for child in self.store.list(
                child_kind,
                namespace,
                lambda o: any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences", [])),
            ):
                if child_kind == "Pod":
                    await self.kill_pod(child)
                await self.store.delete(child_kind, namespace, child["metadata"]["name"])
        return await self.store.delete(kind, namespace, name)

    # --- scheduler --------------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        pending = [
            copy.deepcopy(p)
            for p in self.store.scan("Pod")
            if not p["spec"].get("nodeName") and p.get("status", {}).get("phase") == "Pending"
        ]
        if not pending:
            return
        nodes = self.store.list("Node")
        used: dict[str, dict[str, float]] = {n["metadata"]["name"]: {} for n in nodes}
        for pod in self.store.scan("Pod"):
            if not pod["spec"].get("nodeName") or pod.get("status", {}).get("phase") in TERMINAL:
                continue
            for kind, amount in pod_requests(pod).items():
                bucket = used.setdefault(pod["spec"]["nodeName"], {})
                bucket[kind] = bucket.get(kind, 0.0) + amount
        for pod in pending:
            wanted = pod_requests(pod)
            reasons: dict[str, int] = {}
            chosen = None
            for node in nodes:
                problem = self._misfit(node, pod, wanted, used[node["metadata"]["name"]])
                if problem is None:
                    chosen = node
                    break
                reasons[problem] = reasons.get(problem, 0) + 1
            if chosen is None:
                message = (
                    f"0/{len(nodes)} nodes are available: "
                    + ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
                    + "."
                )
                await self._set_condition(pod, "PodScheduled", "False", "Unschedulable", message)
                continue
            name = chosen["metadata"]["name"]
            for kind, amount in wanted.items():
                used[name][kind] = used[name].get(kind, 0.0) + amount
            pod["spec"]["nodeName"] = name
            _put_condition(pod, "PodScheduled", "True", None, "")
            await self.store.update("Pod", pod["metadata"]["namespace"], pod)

    @staticmethod
    def _misfit(
        node: Mapping[str, Any],
        pod: Mapping[str, Any],
        wanted: Mapping[str, float],
        used: Mapping[str, float],
    ) -> str | None:
        if not _ready(node):
            return "node(s) were not ready"
        if node["spec"].get("unschedulable"):
            return "node(s) were unschedulable"
        labels = node["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in pod["spec"].get("nodeSelector", {}).items()):
            return "node(s) didn't match Pod's node affinity/selector"
        tolerations = pod["spec"].get("tolerations", [])
        for taint in node["spec"].get("taints", []):
            if taint["effect"] in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, taint):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        allocatable = node["status"].get("allocatable", {})
        for kind, amount in wanted.items():
            if amount and used.get(kind, 0.0) + amount > _parse(kind, str(allocatable.get(kind, "0"))) + 1e-9:
                return f"Insufficient {kind}"
        return None

    async def _set_condition(
        self, pod: dict[str, Any], kind: str, status: str, reason: str | None, message: str
    ) -> None:
        if _put_condition(pod, kind, status, reason, message):
            await self.store.update("Pod", pod["metadata"]["namespace"], pod)

    # --- kubelet ----------------------------------------------------------------------------------------

    async def _kubelet(self) -> None:
        for pod in list(self.store.scan("Pod")):
            if not pod["spec"].get("nodeName") or pod.get("status", {}).get("phase") != "Pending":
                continue
            uid = pod["metadata"]["uid"]
            if uid in self.tasks:
                continue
            missing = self._missing_configmaps(pod)
            if not missing:
                self.tasks[uid] = asyncio.create_task(self._run_pod(copy.deepcopy(pod)))
            else:
                await self._container_creating(pod["metadata"]["namespace"], pod["metadata"]["name"], missing)

    def _volumes_ready(self, pod: Mapping[str, Any]) -> bool:
        """Like a kubelet, wait (ContainerCreating) until every ConfigMap the pod mounts exists."""
        return not self._missing_configmaps(pod)

    def _missing_configmaps(self, pod: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(volume, why it cannot be mounted) of each volume the pod cannot have yet: a ConfigMap that
        does not exist (yet), a claim in ``unmountable_claims`` (a storage driver that times out)."""
        namespace = pod["metadata"]["namespace"]
        missing = []
        for volume in pod["spec"].get("volumes", []):
            if (
                "configMap" in volume
                and not volume["configMap"].get("optional")
                and self.store.get("ConfigMap", namespace, volume["configMap"]["name"]) is None
            ):
                missing.append((volume["name"], f'configmap "{volume["configMap"]["name"]}" not found'))
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim in self.unmountable_claims:
                why = "rpc error: code = DeadlineExceeded desc = context deadline exceeded"
                missing.append((volume["name"], why))
        return missing

    async def _container_creating(self, namespace: str, name: str, missing: list[tuple[str, str]]) -> None:
        """A pod waiting for its volumes, as a kubelet shows it: containers waiting in ContainerCreating,
        and a FailedMount warning Event for each missing ConfigMap."""
        pod = self.store.get("Pod", namespace, name)
        if pod is None:
            return
        uid = pod["metadata"]["uid"]
        waiting = [
            {
                "name": container["name"],
                "ready": False,
                "started": False,
                "restartCount": 0,
                "image": container.get("image", ""),
                "imageID": "",
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }
            for container in pod["spec"]["containers"]
        ]
        if pod["status"].get("containerStatuses") != waiting:
            pod["status"]["containerStatuses"] = waiting
            await self.store.update("Pod", namespace, pod)
        for volume, why in missing:
            if (uid, volume) in self._failed_mounts:
                continue
            stamp = now_iso()
            event = await self.store.create(
                "Event",
                namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{pod['metadata']['name']}.{time.time_ns():x}"},
                    "involvedObject": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod["metadata"]["name"],
                        "namespace": namespace,
                        "uid": uid,
                        "resourceVersion": pod["metadata"]["resourceVersion"],
                    },
                    "reason": "FailedMount",
                    "message": f'MountVolume.SetUp failed for volume "{volume}" : {why}',
                    "type": "Warning",
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": "kubelet", "host": pod["spec"]["nodeName"]},
                    "reportingComponent": "kubelet",
                    "reportingInstance": pod["spec"]["nodeName"],
                },
            )
            counted = time.monotonic()
            self._failed_mounts[(uid, volume)] = (namespace, name, event["metadata"]["name"], counted)

    async def _retry_mounts(self) -> None:
        """Each ``mount_retry_seconds`` a kubelet tries the mount again: the warning's count goes up.
        Pods that got their volumes (or went away) are forgotten."""
        now = time.monotonic()
        for (uid, volume), (namespace, pod_name, name, counted) in list(self._failed_mounts.items()):
            pod = self.store.objects.get("Pod", {}).get((namespace, pod_name))
            if (
                pod is None
                or pod["metadata"]["uid"] != uid
                or uid in self.tasks
                or pod.get("status", {}).get("phase") != "Pending"
            ):
                del self._failed_mounts[(uid, volume)]
                continue
            if now - counted < self.mount_retry_seconds:
                continue
            self._failed_mounts[(uid, volume)] = (namespace, pod_name, name, now)
            event = self.store.get("Event", namespace, name)
            if event is not None:
                event["count"] = int(event.get("count", 1)) + 1
                event["lastTimestamp"] = now_iso()
                await self.store.update("Event", namespace, event)

    def sandbox(self, pod: Mapping[str, Any]) -> Path:
        return self.work_dir / "pods" / pod["metadata"]["uid"]

    def _mounts(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[tuple[str, Path]]:
        """(mount path in the container, folder on this machine), longest first for prefix rewriting."""
        sandbox = self.sandbox(pod)
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        mounts = []
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                folder = sandbox / "volumes" / mount["name"]
                folder.mkdir(parents=True, exist_ok=True)
                config = self.store.get(
                    "ConfigMap", pod["metadata"]["namespace"], volume["configMap"]["name"]
                )
                for filename, content in (config or {}).get("data", {}).items():
                    (folder / filename).write_text(content)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                template = (
                    self.claims.get(claim) or self.claims.get("*") or str(sandbox / "claims" / "{claim}")
                )
                folder = Path(template.format(claim=claim))
                folder.mkdir(parents=True, exist_ok=True)
            else:  # emptyDir: shared by the pod's containers
                folder = sandbox / "volumes" / mount["name"]
                folder.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"].rstrip("/"), folder))
        return sorted(mounts, key=lambda item: len(item[0]), reverse=True)

    @staticmethod
    def _translate(text: str, mounts: list[tuple[str, Path]]) -> str:
        for mount_path, folder in mounts:
            if text == mount_path or text.startswith(mount_path + "/"):
                return str(folder) + text[len(mount_path) :]
        return text

    async def _run_container(self, pod: dict[str, Any], container: Mapping[str, Any]) -> tuple[int, str]:
        mounts = self._mounts(pod, container)
        argv = [
            self._translate(word, mounts)
            for word in [*container.get("command", []), *container.get("args", [])]
        ]
        if argv and os.path.basename(argv[0]) in ("python", "python3"):
            argv[0] = sys.executable  # the image is ignored: its python is ours
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.sandbox(pod)),
            "LANG": "C.UTF-8",
        }
        for item in container.get("env", []):
            env[item["name"]] = self._translate(item.get("value", ""), mounts)
        cwd = self._translate(container.get("workingDir", ""), mounts) or str(self.sandbox(pod))
        Path(cwd).mkdir(parents=True, exist_ok=True)
        log_path = self.sandbox(pod) / f"{container['name']}.log"
        uid = pod["metadata"]["uid"]
        if uid in self.killed:  # terminated before this container started (a deadline, a delete)
            return 137, "Error"
        with open(log_path, "ab") as log:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as exc:
                log.write(f"failed to start: {exc}\n".encode())
                return 128, "StartError"
        self.processes[uid] = process
        if uid in self.killed:  # terminated while it was being started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        limit = container.get("resources", {}).get("limits", {}).get("memory")
        limit_bytes = parse_memory(str(limit)) if limit else None
        oom = False
        while True:
            try:
                await asyncio.wait_for(process.wait(), timeout=0.1)
                break
            except asyncio.TimeoutError:
                if limit_bytes and rss_bytes([process.pid, *descendants(process.pid)]) > limit_bytes:
                    oom = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
        self.processes.pop(pod["metadata"]["uid"], None)
        returned = process.returncode if process.returncode is not None else -signal.SIGKILL
        code = returned if returned >= 0 else 128 - returned
        if oom:
            return 137, "OOMKilled"
        return code, "Completed" if code == 0 else "Error"

    async def _run_pod(self, pod: dict[str, Any]) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self.sandbox(pod).mkdir(parents=True, exist_ok=True)
        main = pod["spec"]["containers"][0]
        image = main.get("image", "")
        if "does-not-exist" in image:
            pod["status"]["containerStatuses"] = [
                {
                    "name": main["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": image,
                    "imageID": "",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": f'Back-off pulling image "{main["image"]}"',
                        }
                    },
                }
            ]
            await self.store.update("Pod", namespace, pod)
            return
        init_statuses: list[dict[str, Any]] = []
        for init in pod["spec"].get("initContainers", []):
            started = now_iso()
            # As a kubelet shows it: this init container running, the main one waiting for it.
            running = {
                "name": init["name"],
                "ready": False,
                "restartCount": 0,
                "image": init.get("image", ""),
                "imageID": "",
                "state": {"running": {"startedAt": started}},
            }
            waiting = {
                "name": main["name"],
                "ready": False,
                "restartCount": 0,
                "image": image,
                "imageID": "",
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
            current = self.store.get("Pod", namespace, name)
            if current is None:
                return
            current["status"].update(
                initContainerStatuses=[*init_statuses, running], containerStatuses=[waiting]
            )
            await self.store.update("Pod", namespace, current)
            code, reason = await self._run_container(pod, init)
            init_statuses.append(
                {
                    "name": init["name"],
                    "ready": code == 0,
                    "restartCount": 0,
                    "image": init.get("image", ""),
                    "imageID": "",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "startedAt": started,
                            "finishedAt": now_iso(),
                        }
                    },
                }
            )
            if code != 0:
                current = self.store.get("Pod", namespace, name)
                if current is not None and current["status"].get("phase") not in TERMINAL:
                    current["status"]["initContainerStatuses"] = init_statuses
                    await self.store.update("Pod", namespace, current)
                await self._terminate(namespace, name, "Failed", main["name"], 0, "Init:Error", code)
                return
        current = self.store.get("Pod", namespace, name)
        if current is None:
            return
        started = now_iso()
        current["status"].update(
            phase="Running",
            startTime=started,
            initContainerStatuses=init_statuses,
            containerStatuses=[
                {
                    "name": main["name"],
                    "ready": True,
                    "restartCount": 0,
                    "image": image,
                    "imageID": "",
                    "state": {"running": {"startedAt": started}},
                }
            ],
        )
        await self.store.update("Pod", namespace, current)
        code, reason = await self._run_container(pod, main)
        await self._terminate(
            namespace, name, "Succeeded" if code == 0 else "Failed", main["name"], code, reason, code, started
        )

    async def _terminate(
        self,
        namespace: str,
        name: str,
        phase: str,
        container: str,
        exit_code: int,
        reason: str,
        _code: int,
        started: str | None = None,
    ) -> None:
        pod = self.store.get("Pod", namespace, name)
        if pod is None or pod["status"].get("phase") in TERMINAL:
            return
        image = next((c.get("image", "") for c in pod["spec"]["containers"] if c["name"] == container), "")
        pod["status"]["phase"] = phase
        pod["status"]["containerStatuses"] = [
            {
                "name": container,
                "ready": False,
                "restartCount": 0,
                "image": image,
                "imageID": "",
                "state": {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": reason,
                        "startedAt": started or now_iso(),
                        "finishedAt": now_iso(),
                    }
                },
            }
        ]
        await self.store.update("Pod", namespace, pod)

    async def kill_pod(self, pod: Mapping[str, Any]) -> None:
        """SIGTERM the pod's process group, SIGKILL after the grace period, and mark the pod failed."""
        self.killed.add(pod["metadata"]["uid"])
        process = self.processes.get(pod["metadata"]["uid"])
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=self.grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    # --- faults tests inject ------------------------------------------------------------------------------

    async def evict(
        self, namespace: str, name: str, message: str = "The node was low on resource: memory."
    ) -> bool:
        """Evict a running pod as a kubelet under node pressure does: Failed, reason Evicted, with the
        DisruptionTarget condition a Job's podFailurePolicy can ignore."""
        pod = self.store.get("Pod", namespace, name)
        if pod is None or pod["status"].get("phase") in TERMINAL:
            return False
        pod["status"].update(phase="Failed", reason="Evicted", message=message)
        _put_condition(pod, "DisruptionTarget", "True", "TerminationByKubelet", message)
        await self.store.update("Pod", namespace, pod)
        await self.kill_pod(pod)
        return True

    async def set_node(self, name: str, *, ready: bool | None = None, cordoned: bool | None = None) -> None:
        """Make a node NotReady (or Ready again), cordon or uncordon it."""
        node = self.store.get("Node", "", name)
        if node is None:
            raise KeyError(name)
        if ready is not None:
            _put_condition(
                node,
                "Ready",
                "True" if ready else "False",
                "KubeletReady" if ready else "NodeStatusUnknown",
                "",
            )
        if cordoned is not None:
            node["spec"]["unschedulable"] = cordoned
        await self.store.update("Node", "", node)

    async def stop(self) -> None:
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def _put_condition(obj: dict[str, Any], kind: str, status: str, reason: str | None, message: str) -> bool:
    """Set a condition; True when it changed."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    current = next((c for c in conditions if c["type"] == kind), None)
    wanted = {"type": kind, "status": status, "message": message, "lastTransitionTime": now_iso()}
    if reason:
        wanted["reason"] = reason
    if current and all(current.get(k) == wanted.get(k) for k in ("status", "reason", "message")):
        return False
    if current:
        conditions.remove(current)
    conditions.append(wanted)
    return True


def _ignored(job: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Whether the Job's podFailurePolicy says this failure does not count (a disruption, say)."""
    for rule in job["spec"].get("podFailurePolicy", {}).get("rules", []):
        if rule.get("action") != "Ignore":
            continue
        for wanted in rule.get("onPodConditions", []):
            if any(
                c["type"] == wanted["type"] and c["status"] == wanted.get("status", "True")
                for c in pod.get("status", {}).get("conditions", [])
            ):
                return True
    return False


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
