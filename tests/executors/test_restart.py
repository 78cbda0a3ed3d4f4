"""kill -9 the service with jobs queued and running, start it again: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from helpers import Api, pid_alive, script, wait_for

COUNTING_JOB = (
    "import os, time\n"
    "with open({runs!r}, 'a') as f: f.write(os.environ['GPUJOBS_JOB_ID'] + '\\n')\n"
    "while not os.path.exists({release!r}):\n"
    "    time.sleep(0.02)\n"
    "raise SystemExit({code})\n"
)


def counting(runs: Path, release: Path, code: int = 0, **spec) -> dict:
    return script(COUNTING_JOB.format(runs=str(runs), release=str(release), code=code), **spec)


def test_restart_reattaches_running_jobs_and_keeps_the_queue(world, tmp_path: Path) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    service = world.start("--simulate-gpus", "t4:1")
    alice = Api(service.client(world.hub.add_user("alice")))
    running = alice.submit_ok(**counting(runs, release, code=7, gpu_count=1, gpu_type="t4"))
    alice.wait_status(running["job_id"], "running")
    queued = alice.submit_ok(**counting(runs, release, gpu_count=1, gpu_type="t4"))
    wait_for(lambda: alice.status(queued["job_id"])["queue_position"] == 1, what="second job to wait")

    service.kill_hard()
    restarted = world.start("--simulate-gpus", "t4:1", data_dir=service.data_dir)
    alice = Api(restarted.client(world.hub.add_user("alice")))
    assert alice.status(running["job_id"])["status"] == "running"
    assert alice.status(queued["job_id"])["status"] == "queued"

    release.touch()
    done = alice.wait_status(running["job_id"], "failed")
    assert (done["reason"], done["exit_code"]) == ("NonZeroExit", 7)  # its exit status was captured
    assert alice.wait_status(queued["job_id"], "completed")["exit_code"] == 0
    assert sorted(runs.read_text().split()) == sorted([running["job_id"], queued["job_id"]])  # each ran once


def test_a_job_that_vanished_while_the_service_was_down_is_lost(world, tmp_path: Path) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    service = world.start()
    alice = Api(service.client(world.hub.add_user("alice")))
    job = alice.submit_ok(**counting(runs, release))
    alice.wait_status(job["job_id"], "running")
    service.kill_hard()
    job_dir = service.data_dir / "jobs" / job["job_id"]
    runner_pid = json.loads((job_dir / "runner.json").read_text())["pid"]
    child_pid = json.loads((job_dir / "started.json").read_text())["pid"]
    os.kill(runner_pid, signal.SIGKILL)
    os.killpg(child_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(runner_pid), what="runner to die")

    restarted = world.start(data_dir=service.data_dir)
    alice = Api(restarted.client(world.hub.add_user("alice")))
    done = alice.wait_status(job["job_id"], "failed")
    assert done["reason"] == "Lost"
    assert runs.read_text().split() == [job["job_id"]]


def test_a_job_that_finished_while_the_service_was_down_gets_its_result(world, tmp_path: Path) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    service = world.start()
    alice = Api(service.client(world.hub.add_user("alice")))
    job = alice.submit_ok(**counting(runs, release))
    alice.wait_status(job["job_id"], "running")
    service.kill_hard()
    release.touch()
    wait_for((service.data_dir / "jobs" / job["job_id"] / "result.json").exists, what="job to end")
    restarted = world.start(data_dir=service.data_dir)
    alice = Api(restarted.client(world.hub.add_user("alice")))
    assert alice.wait_status(job["job_id"], "completed")["exit_code"] == 0


def test_a_second_service_on_the_same_data_dir_refuses_to_start(world) -> None:
    # Two services on one data dir would both schedule onto the same GPUs.
    service = world.start()
    with pytest.raises(AssertionError, match=r"another gpujobs service \(pid \d+\) is using"):
        world.start(data_dir=service.data_dir)
    alice = Api(service.client(world.hub.add_user("alice")))
    assert alice.wait_status(alice.submit_ok(**script("print(1)"))["job_id"], "completed")["exit_code"] == 0


@pytest.mark.parametrize(
    "handed_over",
    [False, True],
    ids=["admitted-but-never-handed-over", "handed-over-but-no-runner-started"],
)
def test_a_crash_between_admission_and_the_runner_runs_the_job_once(
    world, tmp_path: Path, handed_over: bool
) -> None:
    """The states a kill -9 can leave between the scheduler's admission and the runner's start, made
    in the store while the service is down: the job runs once after the restart, on the GPU it held."""
    runs, release = tmp_path / "runs", tmp_path / "release"
    release.touch()  # the job ends as soon as it has counted its run
    service = world.start("--simulate-gpus", "t4:1", env={"GPUJOBS_ADMISSION_PAUSED": "true"})
    alice = Api(service.client(world.hub.add_user("alice")))
    job = alice.submit_ok(**counting(runs, release, gpu_count=1, gpu_type="t4"))["job_id"]
    node = alice.http.get("api/k8s/gpu-status").json()["data"]["gpu_nodes"][0]["name"]
    service.kill_hard()
    with sqlite3.connect(service.data_dir / "gpujobs.sqlite") as db:
        (created,) = db.execute("SELECT created_at FROM jobs WHERE job_id = ?", (job,)).fetchone()
        db.execute(
            "UPDATE jobs SET status = 'pending', node = ?, gpus = ?, holding = 1, admitted_at = ?,"
            " launched_at = ? WHERE job_id = ?",
            (node, json.dumps(["0"]), created, created if handed_over else None, job),
        )
    assert not (service.data_dir / "jobs" / job / "launch.json").exists()  # nothing was handed to a runner

    restarted = world.start("--simulate-gpus", "t4:1", data_dir=service.data_dir)
    alice = Api(restarted.client(world.hub.add_user("alice")))
    done = alice.wait_status(job, "completed", "failed")
    assert (done["status"], done["gpus"]) == ("completed", ["0"])
    assert runs.read_text().split() == [job]  # once
    second = alice.submit_ok(**counting(runs, release, gpu_count=1, gpu_type="t4"))["job_id"]
    assert alice.wait_status(second, "completed", "failed")["status"] == "completed"  # its GPU was freed
