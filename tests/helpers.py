"""Test helpers: the gpujobs service in a subprocess or in-process, waiting on conditions, builders."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import zipfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from gpujobs.testing.fakehub import FakeHub
from gpujobs.testing.processes import ServiceProcess, free_port, wait_for
from inprocess import InProcessService

__all__ = ["Api", "ServiceProcess", "World", "free_port", "pid_alive", "script", "wait_for"]


class Api:
    """A user's view of the API: thin helpers that return the envelope's data and check success."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def submit(self, **spec: Any) -> httpx.Response:
        return self.http.post("api/k8s/submit-job", json=spec)

    def submit_ok(self, **spec: Any) -> dict[str, Any]:
        response = self.submit(**spec)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"api/k8s/job/{job_id}/status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def logs(self, job_id: str, **params: Any) -> str:
        response = self.http.get(f"api/k8s/job/{job_id}/logs", params=params)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["logs"])

    def wait_status(self, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(
            lambda: (view := self.status(job_id))["status"] in states and view,
            timeout=timeout,
            what=f"job {job_id} to be {'/'.join(states)}",
        )

    def jobs(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("api/k8s/jobs", params=params)
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["data"]["jobs"]
        return jobs


def script(code: str, **spec: Any) -> dict[str, Any]:
    """A job spec with inline source."""
    return {"name": spec.pop("name", "test"), "script": code, **spec}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split(") ")[1][0] != "Z"


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = FakeHub()
        self.homes = root / "home"
        self.shared = root / "shared"
        for name in ("alice", "bob", "root-admin"):
            (self.homes / name).mkdir(parents=True, exist_ok=True)
        (self.shared / "examples").mkdir(parents=True, exist_ok=True)
        self.services: list[ServiceProcess | InProcessService] = []

    @property
    def env(self) -> dict[str, str]:
        return {
            "JUPYTERHUB_API_URL": self.hub.api_url,
            "JUPYTERHUB_API_TOKEN": self.hub.service_token,
            "JUPYTERHUB_SERVICE_NAME": "gpujobs",
            "GPUJOBS_HOME_TEMPLATE": str(self.homes / "{username}"),
            "GPUJOBS_SHARED_ROOTS": str(self.shared),
            "GPUJOBS_KILL_GRACE_SECONDS": "1",
            "GPUJOBS_SCHEDULE_INTERVAL_SECONDS": "0.5",
            "GPUJOBS_NVML": "false",
            # The test users have no system accounts: their jobs run as the test's own (root here).
            # The isolation tests (tests/executors/test_isolation.py) run jobs under real accounts.
            "GPUJOBS_JOBS_AS_SERVICE_ACCOUNT": "true",
        }

    def start(
        self, *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> ServiceProcess:
        service = ServiceProcess(data_dir or self.root / "data", {**self.env, **(env or {})}, list(args))
        self.services.append(service.start())
        return service

    def start_in_process(
        self, *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
    ) -> InProcessService:
        """The same service as ``start``, in this process (see ``inprocess``): no process start."""
        service = InProcessService(data_dir or self.root / "data", {**self.env, **(env or {})}, list(args))
        self.services.append(service.start())
        return service

    def close(self) -> None:
        for service in self.services:
            service.stop()
            kill_leftover_jobs(service.data_dir)
        self.hub.close()


def kill_leftover_jobs(data_dir: Path) -> None:
    """Runners are detached on purpose (they outlive the service); tests must not leave them behind."""
    jobs = data_dir / "jobs"
    if not jobs.exists():
        return
    for job_dir in jobs.iterdir():
        for name in ("started.json", "runner.json"):
            path = job_dir / name
            if path.exists():
                pid = json.loads(path.read_text())["pid"]
                for kill in (os.killpg, os.kill):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        kill(pid, signal.SIGKILL)


def tiny_wheel_folder(folder: Path) -> Path:
    """A folder with one tiny pure-Python wheel, 'gpujobs-tiny-pkg' (module ``gpujobs_tiny_pkg``), so
    requirement tests need no package index (pip runs with ``--no-index --find-links FOLDER``)."""
    name, version = "gpujobs_tiny_pkg", "1.0"
    files = {
        f"{name}/__init__.py": "GREETING = 'hello from tiny-pkg'\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: gpujobs-tiny-pkg\nVersion: {version}\n"
        ),
        f"{name}-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return folder


REPO = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "fake-cluster-token"  # what the kubeconfig of the simulated cluster gives the service


def kubernetes_service_args(cluster: Any, folder: Path, namespace: str = "gpujobs") -> list[str]:
    """``gpujobs serve`` arguments for the Kubernetes executor against a simulated cluster."""
    kubeconfig = cluster.write_kubeconfig(folder / "kubeconfig", namespace=namespace)
    return ["--executor", "kubernetes", "--kubeconfig", str(kubeconfig)]


def rbac_grants(path: Path) -> set[tuple[str, str, str | None]]:
    """(resource, verb, namespace) the Roles and ClusterRoles in a manifest grant; namespace None for a
    ClusterRole (every namespace, and cluster-scoped resources)."""
    grants = set()
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] in ("ClusterRole", "Role"):
            namespace = document["metadata"].get("namespace") if document["kind"] == "Role" else None
            for rule in document["rules"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((resource, verb, namespace))
    return grants


def service_calls(requests: list[tuple[str, str, str, str]]) -> set[tuple[str, str, str | None]]:
    """(resource, verb, namespace) of every call the service made (known by its token) to the simulated
    cluster; namespace None for a call across namespaces or on a cluster-scoped resource."""
    calls = set()
    for method, path, query, token in requests:
        parts = [p for p in path.split("/") if p]
        if token != SERVICE_TOKEN or not parts or parts[0] not in ("api", "apis"):
            continue
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
        verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(method) or (
            "watch" if "watch=" in query else "get" if len(rest) > 1 else "list"
        )
        calls.add((resource, verb, namespace))
    return calls


def assert_rbac_is_exact(path: Path, requests: list[tuple[str, str, str, str]]) -> None:
    """Every call the service made is granted by the manifest, and every rule there was used."""
    grants = rbac_grants(path)
    calls = service_calls(requests)
    for resource, verb, namespace in calls:
        assert (resource, verb, None) in grants or (namespace and (resource, verb, namespace) in grants), (
            f"{verb} {resource} in {namespace or 'the whole cluster'} is not granted by {path.name}"
        )
    assert {(r, v) for r, v, _ in grants} == {(r, v) for r, v, _ in calls}, "a rule is never used"
