"""Run as JupyterHub runs a managed service: bind to JUPYTERHUB_SERVICE_URL, serve under the prefix."""

from __future__ import annotations

import httpx

from helpers import ServiceProcess, free_port


def test_binds_to_the_service_url_and_serves_everything_under_the_prefix(world) -> None:
    port = free_port()
    env = {
        **world.env,
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        "JUPYTERHUB_SERVICE_PREFIX": "/services/gpujobs/",
    }
    service = ServiceProcess(world.root / "data", env)
    service.port = port  # it must listen where JupyterHub said, whatever --port says
    service.args = []
    world.services.append(service.start())
    token = world.hub.add_user("alice")
    http = service.client(token)
    assert service.url == f"http://127.0.0.1:{port}/services/gpujobs/"
    assert http.get("api/k8s/jobs").status_code == 200
    bare = httpx.get(f"http://127.0.0.1:{port}/api/k8s/jobs", headers={"Authorization": f"token {token}"})
    assert bare.status_code == 404  # the proxy does not strip the prefix, so neither do we

    spec = http.get("openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "gpu-status",
        "submit-job",
        "job/{job_id}/status",
        "job/{job_id}/logs",
        "jobs",
        "job/{job_id}/cancel",
    ):
        assert f"/services/gpujobs/api/k8s/{path}" in paths
    submit = spec["paths"]["/services/gpujobs/api/k8s/submit-job"]["post"]
    assert "201" in submit["responses"] and "422" in submit["responses"]
    job_spec = spec["components"]["schemas"]["JobSpec"]
    assert job_spec["additionalProperties"] is False and "gpu_type" in job_spec["properties"]
    assert http.get("docs").status_code == 200


def test_healthz_needs_no_token_and_wears_the_envelope(world) -> None:
    service = world.start("--simulate-gpus", "t4:2")
    body = httpx.get(service.url + "healthz").json()
    assert body["success"] is True and body["data"]["status"] == "ok"
    assert body["data"]["gpu_source"] == "simulated"
    assert set(body) == {"success", "data", "message", "timestamp"}


def test_gpu_status_reports_nodes_devices_and_source(world) -> None:
    service = world.start("--simulate-gpus", "a100-80gb:2,t4:1")
    status = service.client(world.hub.add_user("alice")).get("api/k8s/gpu-status").json()["data"]
    assert (status["total_gpus"], status["available_gpus"], status["used_gpus"]) == (3, 3, 0)
    assert status["source"] == "simulated" and status["last_updated"]
    assert [(t["gpu_type"], t["total"]) for t in status["gpu_types"]] == [("a100-80gb", 2), ("t4", 1)]
    (node,) = status["gpu_nodes"]
    assert node["total"] == 3 and node["gpu_type"] == "mixed"
    assert all(device["simulated"] for device in node["devices"])


def test_config_file_and_environment_precedence(world, tmp_path) -> None:
    config = tmp_path / "gpujobs.yaml"
    config.write_text("simulate_gpus: 'v100:4'\nadmin_users: [boss]\n")
    service = world.start("--config", str(config), env={"GPUJOBS_SIMULATE_GPUS": "t4:1"})
    token = world.hub.add_user("boss")
    status = service.client(token).get("api/k8s/gpu-status").json()["data"]
    assert [t["gpu_type"] for t in status["gpu_types"]] == ["t4"]  # environment beats the file
    assert service.client(token).get("api/k8s/jobs", params={"user": "*"}).status_code == 200  # file applied
