"""Every refused request: a clear 4xx naming the field, and nothing stored or run."""

import os

import pytest

from helpers import Api


@pytest.fixture(scope="module")
def setup(module_world):
    homes, shared = module_world.homes, module_world.shared
    (homes / "alice" / "train.py").write_text("print('trained')\n")
    (homes / "bob" / "secret.py").write_text("print('secret')\n")
    os.symlink(homes / "bob" / "secret.py", homes / "alice" / "escape.py")
    (shared / "examples" / "ml_training_example.py").write_text("print('ml')\n")
    # The brief's examples ask for up to 8 cores: offered here whatever this machine has.
    service = module_world.start_in_process(
        "--simulate-gpus", "a100-80gb:2,t4:1", env={"GPUJOBS_LOCAL_CPU_CORES": "16"}
    )
    return service, Api(service.client(module_world.hub.add_user("alice")))


CASES = [
    ({"script": "x", "bogus": 1}, "bogus", "unknown field"),
    ({"script": "x", "cpu_limit": "lots"}, "cpu_limit", "not a CPU quantity"),
    ({"script": "x", "memory_limit": "8 gigs"}, "memory_limit", "not a memory quantity"),
    ({"script": "x", "memory_limit": "9" * 400}, "memory_limit", "at most 1Pi"),
    ({"script": "x", "environment": {"PIP_INDEX_URL": "http://x"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"BASH_ENV": "/tmp/x"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"PYTHONBREAKPOINT": "os.system"}}, "environment", "reserved"),
    ({"script": "x", "cpu_limit": "9" * 400}, "cpu_limit", "at most 1000000 cores"),
    ({"script": "x", "cpu_limit": "64"}, "cpu_limit", "more than any node has: at most 16 cores"),
    ({"script": "x", "gpu_count": 99}, "gpu_count", "gpu_count 99 is more than any node has: at most 2 "),
    ({"script": "x", "gpu_count": 3, "gpu_type": "a100"}, "gpu_count", "at most 2 a100"),
    (
        {"script": "x", "gpu_count": 1, "gpu_type": "h100"},
        "gpu_type",
        "known types: a100, a100-80gb, any, t4",
    ),
    ({"script_path": "../bob/secret.py"}, "script_path", "'..'"),
    ({"script_path": "/etc/passwd"}, "script_path", "outside your allowed folders"),
    ({"script_path": "escape.py"}, "script_path", "outside your allowed folders"),
    ({"script_path": "missing.py"}, "script_path", "no such file"),
    ({"script_path": "a" * 300}, "script_path", "at most 255 bytes per name"),
    ({"script": "x", "working_dir": "/" + "b" * 300}, "working_dir", "at most 255 bytes per name"),
    ({"script_path": "train.py", "script": "x"}, None, "exactly one of script_path"),
    ({"name": "nothing"}, None, "exactly one of script_path"),
    ({"script": "x", "requirements": ["numpy; touch x"]}, "requirements", "PEP 508"),
    (
        {"script": "x", "requirements": ["--index-url https://evil.example/simple"]},
        "requirements",
        "pip option",
    ),
    ({"script": "x", "requirements": ["-e ."]}, "requirements", "pip option"),
    ({"script": "x", "environment": {"LD_PRELOAD": "/tmp/x.so"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"CUDA_VISIBLE_DEVICES": "0,1"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"PATH": "/tmp"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"PYTHONPATH": "/tmp"}}, "environment", "reserved"),
    ({"script": "x", "environment": {"1BAD": "x"}}, "environment", "not a valid variable name"),
    ({"script": "x", "image": "evil:latest"}, "image", "not allowed"),
    ({"script": "x", "priority": "urgent"}, "priority", "priority"),
    ({"script": "x", "timeout_seconds": 0}, "timeout_seconds", "greater than or equal to 1"),
]


@pytest.mark.parametrize(("body", "field", "words"), CASES, ids=[c[2] + f"-{i}" for i, c in enumerate(CASES)])
def test_bad_specs_are_422_naming_the_field_and_nothing_runs(setup, module_world, body, field, words) -> None:
    service, alice = setup
    admin = Api(service.client(module_world.hub.add_user("root-admin", admin=True)))
    known = {job["job_id"] for job in admin.jobs(user="*", limit=500)}  # other tests' jobs
    response = alice.submit(**body)
    assert response.status_code == 422, response.text
    envelope = response.json()
    assert envelope["success"] is False
    assert words in envelope["message"]
    if field:
        assert envelope["data"]["field"] == field
    assert alice.jobs() == [] and {job["job_id"] for job in admin.jobs(user="*", limit=500)} == known
    jobs_dir = service.data_dir / "jobs"
    assert {path.name for path in jobs_dir.iterdir()} <= known if jobs_dir.exists() else True  # ...or run


def test_malformed_bodies(setup) -> None:
    _service, alice = setup
    not_json = alice.http.post(
        "api/k8s/submit-job", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["message"]
    a_list = alice.http.post("api/k8s/submit-job", json=["script"])
    assert a_list.status_code == 422
    assert alice.jobs() == []


def test_oversized_inline_script_is_413(setup) -> None:
    _service, alice = setup
    huge = "#" * (1024 * 1024 + 10)
    response = alice.submit(script=huge)
    assert response.status_code == 413
    assert "larger than" in response.json()["message"]
    very_huge = alice.submit(script=huge * 3)  # over the body limit itself
    assert very_huge.status_code == 413
    assert alice.jobs() == []


def test_bad_queries(setup) -> None:
    _service, alice = setup
    assert alice.http.get("api/k8s/jobs", params={"status": "sleeping"}).json()["data"]["field"] == "status"
    assert alice.http.get("api/k8s/jobs", params={"limit": 0}).status_code == 422
    assert alice.http.get("api/k8s/jobs", params={"cursor": "abc"}).status_code == 422
    assert alice.http.get("api/k8s/jobs", params={"cursor": "²"}).status_code == 422
    assert alice.http.get("api/k8s/jobs", params={"cursor": "1" * 23}).status_code == 422
    # Moments are ISO 8601 dates, never numbers of seconds; and within what arithmetic can follow.
    for moment in ("0.5", "1700000000", "0001-01-01T00:00:00"):
        answer = alice.http.get("api/k8s/usage", params={"to": moment})
        assert answer.status_code == 422 and answer.json()["data"]["field"] == "to", moment
    assert alice.http.get("api/k8s/usage", params={"to": "2026-11-30"}).status_code == 200
    assert alice.http.get("api/k8s/job/../status").status_code == 404
    unknown = alice.http.get("api/k8s/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["success"] is False


def test_the_briefs_example_requests_are_accepted_verbatim(setup, module_world) -> None:
    service, _alice = setup
    alice = Api(service.client(module_world.hub.add_user("brief-user")))
    shared = module_world.shared
    body = {
        "name": "cnn-training",
        "script_path": str(shared / "examples" / "ml_training_example.py"),
        "gpu_required": True,
        "gpu_type": "any",
        "cpu_limit": "4",
        "memory_limit": "8Gi",
    }
    single = alice.submit_ok(**body)
    assert single["gpu_count"] == 1 and single["gpu_type"] == "any"
    distributed = alice.submit_ok(
        **{**body, "name": "distributed-training", "gpu_count": 2, "cpu_limit": "8", "memory_limit": "16Gi"}
    )
    assert distributed["gpu_count"] == 2
    assert {j["name"] for j in alice.jobs()} == {"cnn-training", "distributed-training"}
