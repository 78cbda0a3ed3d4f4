"""The local executor with real processes, driven through the real service API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import Api, pid_alive, script, tiny_wheel_folder, wait_for

WAIT_FOR_FILE = "import os, time\nwhile not os.path.exists({path!r}):\n    time.sleep(0.02)\n"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_wheel_folder(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def service(module_world, wheels: Path):
    return module_world.start_in_process(
        "--simulate-gpus",
        "a100-80gb:2,t4:1",
        env={"GPUJOBS_PIP_EXTRA_ARGS": f"--no-index,--find-links={wheels}"},
    )


@pytest.fixture(scope="module")
def alice(service, module_world) -> Api:
    return Api(service.client(module_world.hub.add_user("alice")))


def test_a_job_runs_pinned_to_exactly_its_gpus_with_a_clean_environment(alice: Api, module_world) -> None:
    code = (
        "import json, os\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'GPUJOBS_SIMULATED_GPUS',"
        " 'JUPYTERHUB_API_TOKEN', 'GPUJOBS_JOB_ID', 'MY_SETTING', 'OMP_NUM_THREADS', 'HOME')}))\n"
        "print('cwd', os.getcwd())\n"
    )
    job = alice.submit_ok(
        **script(code, gpu_count=2, gpu_type="a100", cpu_limit="1500m", environment={"MY_SETTING": "on"})
    )
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert done["status"] == "completed" and done["exit_code"] == 0
    assert len(done["gpus"]) == 2 and done["node"]
    lines = alice.logs(job["job_id"]).splitlines()
    seen = json.loads(lines[0])
    assert seen["CUDA_VISIBLE_DEVICES"] == ",".join(done["gpus"])
    assert seen["GPUJOBS_SIMULATED_GPUS"] == ",".join(done["gpus"])
    assert seen["JUPYTERHUB_API_TOKEN"] is None  # the service's secrets never reach jobs
    assert seen["GPUJOBS_JOB_ID"] == job["job_id"]
    assert seen["MY_SETTING"] == "on" and seen["OMP_NUM_THREADS"] == "2"
    assert lines[1] == f"cwd {module_world.homes / 'alice'}"


def test_cpu_jobs_see_no_gpu(alice: Api) -> None:
    job = alice.submit_ok(**script("import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))"))
    assert alice.wait_status(job["job_id"], "completed")["gpus"] == []
    assert alice.logs(job["job_id"]).strip() == "''"


def test_no_gpu_is_held_by_two_live_jobs(alice: Api, tmp_path: Path) -> None:
    release = tmp_path / "release"
    first = alice.submit_ok(**script(WAIT_FOR_FILE.format(path=str(release)), gpu_count=1, gpu_type="t4"))
    alice.wait_status(first["job_id"], "running")
    second = alice.submit_ok(**script("print('second')", gpu_count=1, gpu_type="t4"))
    waiting = wait_for(
        lambda: (v := alice.status(second["job_id"]))["queue_position"] and v, what="queue position"
    )
    assert waiting["status"] == "queued"
    assert waiting["message"] == "no free t4: 0 of 1 free, 1 needed"
    assert waiting["queue_position"] == 1
    status = alice.http.get("api/k8s/gpu-status").json()["data"]
    t4 = next(t for t in status["gpu_types"] if t["gpu_type"] == "t4")
    assert (t4["total"], t4["available"], t4["used"], t4["queued_demand"]) == (1, 0, 1, 1)
    release.touch()
    done_first = alice.wait_status(first["job_id"], "completed")
    done_second = alice.wait_status(second["job_id"], "completed")
    assert done_second["gpus"] == done_first["gpus"]
    assert done_second["started_at"] >= done_first["finished_at"]


def test_non_zero_exit_fails_with_the_code_and_the_output(alice: Api) -> None:
    job = alice.submit_ok(**script("import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    done = alice.wait_status(job["job_id"], "failed")
    assert (done["reason"], done["exit_code"]) == ("NonZeroExit", 3)
    assert "oops" in alice.logs(job["job_id"])


def test_timeout_kills_the_job(alice: Api) -> None:
    job = alice.submit_ok(
        **script("import time; print('start', flush=True); time.sleep(120)", timeout_seconds=1)
    )
    done = alice.wait_status(job["job_id"], "failed")
    assert done["reason"] == "Timeout" and "timeout of 1 s" in done["message"]


def test_memory_limit_kills_the_job(alice: Api) -> None:
    code = (
        "import time\nblocks = []\n"
        "for _ in range(100):\n    blocks.append(bytearray(16 * 2**20))\n    time.sleep(0.02)\n"
    )
    job = alice.submit_ok(**script(code, memory_limit="64Mi"))
    done = alice.wait_status(job["job_id"], "failed")
    assert done["reason"] == "OOMKilled" and "64Mi" in done["message"]


def test_cancel_stops_the_job_and_everything_it_started(alice: Api, tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    code = (
        "import json, os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pids)!r}, 'w').write(json.dumps([os.getpid(), child.pid]))\n"
        "time.sleep(300)\n"
    )
    job = alice.submit_ok(**script(code, gpu_count=1, gpu_type="any"))
    wait_for(pids.exists, what="the job to start its child")
    wait_for(lambda: pids.read_text().endswith("]"), what="pids written")
    response = alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    assert response.status_code == 200 and response.json()["data"]["status"] == "cancelled"
    for pid in json.loads(pids.read_text()):
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=30, what=f"process {pid} to end")
    again = alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")  # a retried cancel: same answer
    assert again.status_code == 200 and again.json()["data"]["job_id"] == job["job_id"]
    assert again.json()["data"]["status"] == "cancelled"
    wait_for(  # the executor confirmed its processes are gone: its GPU is free again
        lambda: "being stopped" not in alice.status(job["job_id"])["message"], what="the GPU to be freed"
    )


def test_cancelling_a_job_that_completed_is_refused(alice: Api) -> None:
    job = alice.submit_ok(**script("print('done')"))
    alice.wait_status(job["job_id"], "completed")
    refused = alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    assert refused.status_code == 409 and "already ended (completed)" in refused.json()["message"]
    assert alice.status(job["job_id"])["status"] == "completed"


def test_cancel_a_queued_job_means_it_never_runs(alice: Api, tmp_path: Path) -> None:
    release = tmp_path / "release"
    marker = tmp_path / "ran"
    blocker = alice.submit_ok(**script(WAIT_FOR_FILE.format(path=str(release)), gpu_count=1, gpu_type="t4"))
    alice.wait_status(blocker["job_id"], "running")
    queued = alice.submit_ok(**script(f"open({str(marker)!r}, 'w').write('ran')", gpu_count=1, gpu_type="t4"))
    assert alice.http.post(f"api/k8s/job/{queued['job_id']}/cancel").status_code == 200
    release.touch()
    alice.wait_status(blocker["job_id"], "completed")
    assert alice.status(queued["job_id"])["status"] == "cancelled"
    assert not marker.exists()


def test_requirements_are_installed_for_the_job(alice: Api) -> None:
    job = alice.submit_ok(
        **script(
            "import gpujobs_tiny_pkg; print(gpujobs_tiny_pkg.GREETING)",
            requirements=["gpujobs-tiny-pkg>=1.0"],
        )
    )
    done = alice.wait_status(job["job_id"], "completed", "failed", timeout=120)
    logs = alice.logs(job["job_id"])
    assert done["status"] == "completed", logs
    assert "hello from tiny-pkg" in logs


def test_a_failed_install_fails_the_job_with_pips_output(alice: Api) -> None:
    job = alice.submit_ok(**script("print('never')", requirements=["gpujobs-no-such-package==9.9"]))
    done = alice.wait_status(job["job_id"], "failed", timeout=120)
    assert done["reason"] == "RequirementsFailed"
    logs = alice.logs(job["job_id"])
    assert "gpujobs-no-such-package" in logs and "never" not in logs


def test_logs_follow_streams_lines_while_the_job_runs(alice: Api, tmp_path: Path) -> None:
    release = tmp_path / "release"
    code = (
        "print('first line', flush=True)\n" + WAIT_FOR_FILE.format(path=str(release)) + "print('last line')\n"
    )
    job = alice.submit_ok(**script(code))
    received = []
    with alice.http.stream("GET", f"api/k8s/job/{job['job_id']}/logs", params={"follow": "true"}) as stream:
        assert stream.headers["content-type"].startswith("text/plain")
        for line in stream.iter_lines():
            received.append(line)
            if line == "first line":
                assert alice.status(job["job_id"])["status"] == "running"  # streamed before the end
                release.touch()
    assert received == ["first line", "last line"]
    assert alice.status(job["job_id"])["status"] == "completed"


def test_tail_returns_the_last_lines(alice: Api) -> None:
    job = alice.submit_ok(**script("for i in range(100): print(i)"))
    alice.wait_status(job["job_id"], "completed")
    assert alice.logs(job["job_id"], tail=3) == "97\n98\n99\n"


def test_retries_run_a_failed_job_again(alice: Api, tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    code = (
        f"import os, sys\nif not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); sys.exit(1)\nprint('second time lucky')\n"
    )
    job = alice.submit_ok(**script(code, retries=2))
    done = alice.wait_status(job["job_id"], "completed", "failed")
    assert (done["status"], done["attempts"]) == ("completed", 2)
    assert "attempt 2 of 3" in alice.logs(job["job_id"])


def test_script_files_and_arguments(alice: Api, module_world) -> None:
    (module_world.homes / "alice" / "echo_args.py").write_text("import sys; print(sys.argv[1:])\n")
    job = alice.submit_ok(script_path="echo_args.py", args=["--lr", "0.1", "; rm -rf /", "$HOME"])
    alice.wait_status(job["job_id"], "completed")
    assert alice.logs(job["job_id"]).strip() == "['--lr', '0.1', '; rm -rf /', '$HOME']"


def test_metrics_count_jobs_and_gpus(alice: Api, service) -> None:
    text = alice.http.get("metrics").text
    assert 'gpujobs_gpus_total{gpu_type="a100-80gb"} 2.0' in text
    assert 'gpujobs_jobs{state="completed"}' in text
    assert "gpujobs_submit_seconds_count" in text


def test_a_job_cannot_make_the_service_signal_a_process_that_is_not_its_own(
    alice: Api, service, tmp_path: Path
) -> None:
    # The job folder is the job's to write: a job that names another process group in started.json
    # must not get it killed when gpujobs cleans up after the job.
    innocent = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        jobs_dir = service.data_dir / "jobs"
        code = (
            "import json, os, time\n"
            f"path = os.path.join({str(jobs_dir)!r}, os.environ['GPUJOBS_JOB_ID'], 'started.json')\n"
            "while not (os.path.exists(path) and json.load(open(path))['pid'] == os.getpid()):\n"
            "    time.sleep(0.01)\n"
            f"json.dump({{'pid': {innocent.pid}, 'attempt': 1, 'at': time.time()}}, open(path, 'w'))\n"
        )
        job = alice.submit_ok(**script(code))
        assert alice.wait_status(job["job_id"], "completed", "failed")["status"] == "completed"
        wait_for(lambda: alice.status(job["job_id"])["status"] == "completed", what="the end recorded")
        assert innocent.poll() is None, "gpujobs killed a process that was not the job's"
    finally:
        innocent.kill()
        innocent.wait()


ESCAPE = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen(\n"
    "    [sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True\n"
    ")\n"
    "open({pid!r}, 'w').write(str(child.pid))\n"
    "time.sleep({then})\n"
)


def test_a_process_that_left_the_jobs_session_ends_with_the_job(alice: Api, tmp_path: Path) -> None:
    # A child in a session of its own is out of the job's process group, not out of the job.
    finished, cancelled = tmp_path / "finished.pid", tmp_path / "cancelled.pid"
    done = alice.submit_ok(**script(ESCAPE.format(pid=str(finished), then=0), gpu_count=1, gpu_type="t4"))
    assert alice.wait_status(done["job_id"], "completed", "failed")["status"] == "completed"
    assert not pid_alive(int(finished.read_text()))  # gone by the time the end is recorded
    job = alice.submit_ok(**script(ESCAPE.format(pid=str(cancelled), then=300), gpu_count=1, gpu_type="t4"))
    wait_for(lambda: cancelled.exists() and cancelled.read_text(), what="the job to start its child")
    alice.http.post(f"api/k8s/job/{job['job_id']}/cancel")
    wait_for(  # the GPU is released only once every process of the job is gone
        lambda: "being stopped" not in alice.status(job["job_id"])["message"], what="the release"
    )
    assert not pid_alive(int(cancelled.read_text()))


def test_following_a_cancelled_job_shows_what_it_says_while_it_stops(alice: Api) -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('saving checkpoint', flush=True)\n"
        "    time.sleep(0.3)\n"
        "    print('saved', flush=True)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('working', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    job = alice.submit_ok(**script(code))
    lines = []
    path = f"api/k8s/job/{job['job_id']}/logs"
    with alice.http.stream("GET", path, params={"follow": "true"}) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line == "working":
                assert alice.http.post(f"api/k8s/job/{job['job_id']}/cancel").status_code == 200
    # The stream ends once the job's processes are gone, not when the cancel is recorded.
    assert lines == ["working", "saving checkpoint", "saved"]


def test_a_job_that_writes_its_own_result_does_not_run_on_unseen(alice: Api, service, tmp_path: Path) -> None:
    # result.json sits in the job's folder, which the job may write: a job that writes one and runs on
    # is ended when its end is recorded, so its GPU is never free while it runs.
    pid_file = tmp_path / "forger.pid"
    code = (
        "import json, os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        f"folder = os.path.join({str(service.data_dir / 'jobs')!r}, os.environ['GPUJOBS_JOB_ID'])\n"
        "json.dump({'reason': 'Completed', 'exit_code': 0, 'at': time.time()},"
        " open(os.path.join(folder, 'result.json'), 'w'))\n"
        "time.sleep(300)\n"
    )
    job = alice.submit_ok(**script(code, gpu_count=1, gpu_type="t4"))
    alice.wait_status(job["job_id"], "completed", "failed")
    assert not pid_alive(int(pid_file.read_text()))
