"""Chaos with the real local executor: real services, real job processes, cancels and faults at random
moments.  What is asserted is what a user would see: a cancelled job never finishes (or, when the
cancel came after its code had ended, says so), two jobs never share a GPU, nothing is left running,
nobody waits behind an impossible job, the API stays responsive, a retried submission makes one job, an
end is never lost to a store that refused a write."""

from __future__ import annotations

import concurrent.futures
import contextlib
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.executors.runner import job_processes
from helpers import Api, pid_alive, script, wait_for

pytestmark = pytest.mark.slow

MARKED_JOB = (
    "import os, time\n"
    "job = os.environ['GPUJOBS_JOB_ID']\n"
    "temporary = os.path.join({folder!r}, job + '.tmp')\n"
    "open(temporary, 'w').write(str(os.getpid()))\n"
    "os.replace(temporary, os.path.join({folder!r}, job + '.started'))  # whole, or not at all\n"
    "time.sleep({seconds})\n"
    "open(os.path.join({folder!r}, job + '.finished'), 'w').write('finished')\n"
    "os._exit(0)  # ended the moment it is marked finished (no interpreter teardown to be stopped in)\n"
)


def settled(api: Api, job_id: str) -> bool:
    """Ended, and the executor has confirmed its processes are gone."""
    view = api.status(job_id)
    return view["status"] in ("completed", "failed", "cancelled") and "being stopped" not in (
        view["message"] or ""
    )


def test_200_cancels_at_random_moments_never_let_a_cancelled_job_finish(world, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    service = world.start()
    token = world.hub.add_user("alice")
    alice = Api(service.client(token))
    rng = random.Random(20261130)
    delays = [rng.uniform(0.0, 0.8) for _ in range(200)]
    spec = script(MARKED_JOB.format(folder=str(markers), seconds=1.5))
    lock = threading.Lock()

    def submit_then_cancel(delay: float) -> tuple[str, int]:
        with service.client(token) as http:
            job_id = http.post("api/k8s/submit-job", json=spec).json()["data"]["job_id"]
            time.sleep(delay)
            answer = http.post(f"api/k8s/job/{job_id}/cancel")
            with lock:
                return job_id, answer.status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(submit_then_cancel, delays))
    for job_id, _code in outcomes:
        wait_for(lambda job_id=job_id: settled(alice, job_id), timeout=120, what=f"job {job_id} to settle")
    cancelled = [job_id for job_id, code in outcomes if code == 200]
    assert len(cancelled) > 100  # most: each job runs 1.5 s, cancels come within 0.8 s
    for job_id, code in outcomes:
        view = alice.status(job_id)
        if code == 200:
            assert view["status"] == "cancelled", view
            # A cancel that reached the service after the code had ended (the end not yet seen: a busy
            # machine) cannot undo it; the record must then say so, never pass it off as stopped.
            finished = (markers / f"{job_id}.finished").exists()
            says_finished = "had already finished (exit code 0) before the stop reached it" in view["message"]
            assert finished == says_finished, view
        else:
            assert code == 409 and view["status"] == "completed"
    for started in markers.glob("*.started"):  # no process left behind
        pid = int(started.read_text())
        assert not pid_alive(pid), f"{started.stem} left process {pid}"
    for job_id, _code in outcomes:  # nor any other process of any of the jobs
        assert job_processes(job_id) == [], f"job {job_id} left processes behind"
    listed = alice.jobs(limit=500)
    assert sorted(job["job_id"] for job in listed) == sorted(job_id for job_id, _ in outcomes)


def test_submit_cancel_submit_on_one_gpu_never_overlaps(world, tmp_path: Path) -> None:
    service = world.start("--simulate-gpus", "t4:1")
    alice = Api(service.client(world.hub.add_user("alice")))
    rng = random.Random(7)
    holder = "import os, time\nopen({pid!r}, 'w').write(str(os.getpid()))\ntime.sleep(30)\n"
    checker = (
        "import os\n"
        "pid = int(open({pid!r}).read() or 0) if os.path.exists({pid!r}) else 0\n"
        "alive = pid and os.path.exists(f'/proc/{{pid}}') and "
        "open(f'/proc/{{pid}}/stat').read().split(') ')[1][0] != 'Z'\n"
        "if alive:\n    open({overlap!r}, 'a').write(str(pid) + '\\n')\n"
    )
    overlap = tmp_path / "overlap"
    for round_ in range(30):
        pid_file = tmp_path / f"a{round_}.pid"
        first = alice.submit_ok(**script(holder.format(pid=str(pid_file)), gpu_count=1, gpu_type="t4"))
        time.sleep(rng.uniform(0.0, 0.2))
        assert alice.http.post(f"api/k8s/job/{first['job_id']}/cancel").status_code == 200
        second = alice.submit_ok(
            **script(checker.format(pid=str(pid_file), overlap=str(overlap)), gpu_count=1, gpu_type="t4")
        )
        assert alice.wait_status(second["job_id"], "completed", "failed")["status"] == "completed"
    assert not overlap.exists(), f"a cancelled job still ran beside the next one: {overlap.read_text()}"


def test_an_impossible_job_is_refused_and_blocks_nobody(world) -> None:
    service = world.start("--simulate-gpus", "t4:1")
    alice = Api(service.client(world.hub.add_user("alice")))
    bob = Api(service.client(world.hub.add_user("bob")))
    for impossible in ({"cpu_limit": "1000"}, {"gpu_count": 2, "gpu_type": "t4"}, {"memory_limit": "100Ti"}):
        refused = alice.submit(**script("print(1)", **impossible))
        assert refused.status_code == 422, refused.text
        assert "more than any node has" in refused.json()["message"]
    job = bob.submit_ok(**script("print('bob ran')", gpu_count=1, gpu_type="t4"))
    assert bob.wait_status(job["job_id"], "completed", timeout=30)["exit_code"] == 0


def test_three_parallel_tails_of_a_200_mb_log_leave_the_api_responsive(world) -> None:
    service = world.start()
    token = world.hub.add_user("alice")
    alice = Api(service.client(token))
    job = alice.submit_ok(**script("print('start')"))
    alice.wait_status(job["job_id"], "completed")
    log = service.data_dir / "jobs" / job["job_id"] / "output.log"
    line = b"x" * 99 + b"\n"
    with open(log, "ab") as handle:
        for _ in range(200):
            handle.write(line * 10_000)  # 1 MB at a time: 200 MB in all
    stop = threading.Event()

    def tail_forever() -> int:
        count = 0
        with service.client(token) as http:
            while not stop.is_set():
                answer = http.get(f"api/k8s/job/{job['job_id']}/logs", params={"tail": 1_000_000})
                assert answer.status_code == 200
                count += 1
        return count

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        tails = [pool.submit(tail_forever) for _ in range(3)]
        latencies = []
        with service.client(None) as http:
            for _ in range(60):
                began = time.perf_counter()
                assert http.get("healthz").status_code == 200
                latencies.append(time.perf_counter() - began)
                time.sleep(0.05)
        stop.set()
        assert all(tail.result() > 0 for tail in tails)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < 0.2, f"healthz p99 {p99 * 1000:.0f} ms while three tails of 200 MB ran"


def test_five_concurrent_retries_of_one_submission_make_one_job(world) -> None:
    service = world.start()
    token = world.hub.add_user("alice")
    alice = Api(service.client(token))
    spec = script("print('once')", name="once")
    barrier = threading.Barrier(5)

    def submit() -> tuple[int, str]:
        with service.client(token) as http:
            barrier.wait()
            answer = http.post("api/k8s/submit-job", json=spec, headers={"Idempotency-Key": "retry-me"})
            return answer.status_code, answer.json()["data"]["job_id"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: submit(), range(5)))
    assert sorted(code for code, _ in answers) == [200, 200, 200, 200, 201]
    assert len({job_id for _, job_id in answers}) == 1
    assert [job["job_id"] for job in alice.jobs()] == [answers[0][1]]
    different = alice.http.post(
        "api/k8s/submit-job", json=script("print('other')"), headers={"Idempotency-Key": "retry-me"}
    )
    assert different.status_code == 422 and "Idempotency-Key" in different.json()["message"]


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files refuse every write, even root's (as a read-only or failing disk would)."""
    subprocess.run(["chattr", "+i", *map(str, paths)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def chattr_works(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    try:
        ok = (
            shutil.which("chattr")
            and subprocess.run(["chattr", "+i", str(probe)], check=False).returncode == 0
        )
        if ok:
            subprocess.run(["chattr", "-i", str(probe)], check=True)
        return bool(ok)
    finally:
        probe.unlink()


def test_an_end_while_the_database_refuses_writes_is_recorded_once_it_takes_them(
    world, tmp_path: Path
) -> None:
    if not chattr_works(tmp_path):
        pytest.skip("chattr +i is not possible here (needs root on ext4 or similar)")
    release = tmp_path / "release"
    service = world.start("--simulate-gpus", "t4:1")
    alice = Api(service.client(world.hub.add_user("alice")))
    wait_code = f"import os, time\nwhile not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
    job = alice.submit_ok(**script(wait_code, gpu_count=1, gpu_type="t4"))
    behind = alice.submit_ok(**script("print('next')", gpu_count=1, gpu_type="t4"))
    alice.wait_status(job["job_id"], "running")
    database = service.data_dir / "gpujobs.sqlite"
    with immutable(database, database.with_name("gpujobs.sqlite-wal")):
        release.touch()
        result = service.data_dir / "jobs" / job["job_id"] / "result.json"
        wait_for(result.exists, what="the job to end")
        health = wait_for(
            lambda: (h := alice.http.get("healthz").json()["data"])["status"] == "degraded" and h,
            what="healthz to say degraded",
        )
        assert "refuses writes" in health["problems"][0]
        assert alice.status(job["job_id"])["status"] == "running"  # the end waits; it is not lost
    assert alice.wait_status(job["job_id"], "completed", timeout=5)["exit_code"] == 0
    assert alice.wait_status(behind["job_id"], "completed", timeout=30)["exit_code"] == 0
    wait_for(lambda: alice.http.get("healthz").json()["data"]["status"] == "ok", what="healthz ok again")
