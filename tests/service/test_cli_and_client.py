"""The CLI and the Python client, as a user in a JupyterHub server would use them."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from gpujobs import ApiError, Client


@pytest.fixture(scope="module")
def setup(module_world):
    service = module_world.start("--simulate-gpus", "a100:2")
    token = module_world.hub.add_user("alice")
    env = {**os.environ, "GPUJOBS_URL": service.url, "JUPYTERHUB_API_TOKEN": token}
    return service, env


def gpujobs(env: dict[str, str], *args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpujobs.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_submit_follow_streams_logs_and_exits_zero(setup, module_world) -> None:
    _service, env = setup
    home = module_world.homes / "alice"
    (home / "hello.py").write_text("import sys\nprint('hello', sys.argv[1:])\n")
    result = gpujobs(
        env, "submit", "hello.py", "--gpus", "1", "--gpu-type", "a100", "--follow", "--", "x", "y", cwd=home
    )
    assert result.returncode == 0, result.stderr
    assert "hello ['x', 'y']" in result.stdout
    assert "completed" in result.stderr


def test_a_followed_job_that_fails_exits_non_zero(setup, module_world) -> None:
    _service, env = setup
    home = module_world.homes / "alice"
    (home / "bad.py").write_text("raise SystemExit(4)\n")
    result = gpujobs(env, "submit", "bad.py", "--follow", cwd=home)
    assert result.returncode == 1
    assert "failed [NonZeroExit]" in result.stderr


def test_api_errors_are_messages_not_tracebacks(setup, module_world) -> None:
    _service, env = setup
    home = module_world.homes / "alice"
    (home / "ok.py").write_text("print(1)\n")
    result = gpujobs(env, "submit", "ok.py", "--memory", "lots", cwd=home)
    assert result.returncode == 2
    assert "not a memory quantity" in result.stderr and "Traceback" not in result.stderr
    missing = gpujobs(env, "status", "0000000000000000")
    assert missing.returncode == 2 and "no job" in missing.stderr
    no_service = gpujobs({**env, "GPUJOBS_URL": "http://127.0.0.1:9/"}, "list")
    assert no_service.returncode == 2 and "cannot reach gpujobs" in no_service.stderr


def test_list_status_gpus_and_logs_print_readable_output(setup, module_world) -> None:
    _service, env = setup
    home = module_world.homes / "alice"
    (home / "quiet.py").write_text("print('quiet output')\n")
    submitted = gpujobs(env, "submit", "quiet.py", "--name", "quiet-one", cwd=home)
    job_id = submitted.stdout.strip()
    Client(env=env).job(job_id).wait(show=False, poll=0.1, timeout=60)
    listing = gpujobs(env, "list").stdout
    assert listing.splitlines()[0].split() == ["JOB", "NAME", "USER", "STATUS", "GPUS", "CREATED", "WHY"]
    assert any(
        job_id in line and "quiet-one" in line and "completed" in line for line in listing.splitlines()
    )
    status_lines = gpujobs(env, "status", job_id).stdout.splitlines()
    assert ["exit", "code", "0"] in [line.split() for line in status_lines]
    assert gpujobs(env, "logs", job_id).stdout == "quiet output\n"
    gpus = gpujobs(env, "gpus").stdout
    assert "2 of 2 GPUs free (simulated)" in gpus and "a100" in gpus


def test_the_client_finds_service_and_token_in_the_environment(setup) -> None:
    _service, env = setup
    client = Client(env=env)
    job = client.submit(code="print('from the client')", gpus=1, name="client-job")
    out = io.StringIO()
    final = job.wait(poll=0.1, out=out, timeout=60)
    assert final["status"] == "completed"
    assert "completed" in out.getvalue()
    assert job.logs() == "from the client\n"
    assert "".join(client.job(job.id).logs(follow=True)) == "from the client\n"
    assert client.gpu_status()["total_gpus"] == 2
    assert any(j.id == job.id for j in client.jobs(status="completed"))
    with pytest.raises(ApiError) as refused:
        client.submit(code="x", gpus=1, gpu_type="h100")
    assert refused.value.status == 422 and refused.value.field == "gpu_type"


def test_the_client_explains_a_missing_configuration() -> None:
    with pytest.raises(ApiError, match="GPUJOBS_URL"):
        Client(env={})
    with pytest.raises(ApiError, match="JUPYTERHUB_API_TOKEN"):
        Client(env={"GPUJOBS_URL": "http://x/"})
    assert (
        Client(env={"JUPYTERHUB_PUBLIC_URL": "https://hub.example.org/", "JUPYTERHUB_API_TOKEN": "t"}).url
        == "https://hub.example.org/services/gpujobs/"
    )


def test_a_followed_job_that_waits_says_where_it_stands_and_why(setup, module_world, tmp_path) -> None:
    service, env = setup
    home = module_world.homes / "alice"
    release = tmp_path / "release"
    (home / "hold.py").write_text(
        f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
    )
    (home / "after.py").write_text("print('my turn')\n")
    holder = Client(service.url, env["JUPYTERHUB_API_TOKEN"]).submit("hold.py", gpus=2, gpu_type="a100")
    try:
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gpujobs.cli",
                "submit",
                "after.py",
                "--gpus",
                "1",
                "--gpu-type",
                "a100",
                "--follow",
            ],
            env=env,
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follower.stderr is not None
        first = follower.stderr.readline()  # "submitted job …"
        waiting = follower.stderr.readline()
        assert "queued #1" in waiting and "no free a100" in waiting, first + waiting
    finally:
        release.touch()
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err
    assert out == "my turn\n"  # the waiting lines never mix with the job's output
    holder.wait(show=False, poll=0.1, timeout=60)
