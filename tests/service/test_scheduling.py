"""Priorities, quotas, backfill and usage, end to end through the API with the local executor."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from helpers import Api, script, wait_for

CONFIG = """
priorities: {low: 0, normal: 1, high: 2}
group_shares: {staff: 2}
gpu_hour_costs: {a100: 3.6, default: 0.36}
quotas:
  default: {max_gpus: 2, max_queued_jobs: 10, max_timeout_seconds: 600,
            allowed_priorities: [low, normal, high]}
  groups:
    students: {max_gpus: 1, allowed_priorities: [low, normal], allowed_gpu_types: [t4]}
  users:
    dave: {max_running_jobs: 0, max_queued_jobs: 1}
"""

HOLD = "import os, time\nwhile not os.path.exists({path!r}):\n    time.sleep(0.02)\n"


@pytest.fixture(scope="module")
def world(module_world, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "gpujobs.yaml"
    config.write_text(CONFIG)
    service = module_world.start_in_process("--config", str(config), "--simulate-gpus", "a100-80gb:2,t4:2")
    hub = module_world.hub

    def api(name: str, **kwargs) -> Api:
        return Api(service.client(hub.add_user(name, **kwargs)))

    return api


def hold(tmp_path: Path, name: str) -> tuple[Path, str]:
    path = tmp_path / name
    return path, HOLD.format(path=str(path))


def test_a_student_waits_on_their_gpu_quota_though_a_gpu_is_free(world, tmp_path) -> None:
    alice = world("alice", groups=("students",))
    release, code = hold(tmp_path, "release")
    first = alice.submit_ok(**script(code, gpu_count=1, gpu_type="t4"))
    alice.wait_status(first["job_id"], "running")
    second = alice.submit_ok(**script("print(2)", gpu_count=1, gpu_type="t4"))
    waiting = wait_for(lambda: (v := alice.status(second["job_id"]))["queue_position"] and v, what="a cycle")
    assert waiting["message"] == "quota: alice uses 1 of 1 GPUs"
    release.touch()
    alice.wait_status(second["job_id"], "completed")


def test_limits_checked_at_submit(world) -> None:
    alice = world("alice", groups=("students",))
    high = alice.submit(**script("x", priority="high"))
    assert high.status_code == 403 and "priority 'high' is not allowed for you" in high.json()["message"]
    a100 = alice.submit(**script("x", gpu_count=1, gpu_type="a100"))
    assert a100.status_code == 422 and "not allowed for you; allowed types: t4" in a100.json()["message"]
    unknown = alice.submit(**script("x", priority="urgent"))
    assert unknown.status_code == 422 and unknown.json()["data"]["field"] == "priority"
    too_long = alice.submit(**script("x", timeout_seconds=601))
    assert too_long.status_code == 422 and "over your limit of 600 s" in too_long.json()["message"]
    defaulted = alice.submit_ok(**script("print(1)"))
    assert defaulted["timeout_seconds"] == 600  # jobs without a timeout get the quota's maximum


def test_too_many_queued_jobs_is_429(world) -> None:
    dave = world("dave")
    first = dave.submit_ok(**script("print(1)"))
    waiting = wait_for(lambda: (v := dave.status(first["job_id"]))["queue_position"] and v, what="a cycle")
    assert waiting["message"] == "quota: dave runs 0 of 0 jobs"
    refused = dave.submit(**script("print(2)"))
    assert refused.status_code == 429
    assert refused.json()["message"].startswith("quota: dave has 1 of 1 jobs queued")
    assert len(dave.jobs()) == 1
    dave.http.post(f"api/k8s/job/{first['job_id']}/cancel")


def test_priority_order_and_backfill_around_a_reservation(world, tmp_path) -> None:
    bob, carol, erin = world("bob"), world("carol"), world("erin")
    release, code = hold(tmp_path, "blocker")
    blocker = bob.submit_ok(**script(code, gpu_count=1, gpu_type="a100", timeout_seconds=300))
    bob.wait_status(blocker["job_id"], "running")
    # The second a100 is free, but a 2-GPU job needs both: it waits and reserves the node.
    big = carol.submit_ok(
        **script("print('big')", gpu_count=2, gpu_type="a100", priority="high", timeout_seconds=60)
    )
    big_view = wait_for(lambda: (v := carol.status(big["job_id"]))["queue_position"] and v, what="a cycle")
    assert big_view["message"] == "no free a100: 1 of 2 free, 2 needed"
    # A long job would still be running when the blocker ends at the latest: it must not take the free a100.
    long = erin.submit_ok(**script("print('long')", gpu_count=1, gpu_type="a100", timeout_seconds=600))
    long_view = wait_for(lambda: (v := erin.status(long["job_id"]))["queue_position"] and v, what="a cycle")
    # Another user's job, not named by its id (tenancy).
    assert long_view["message"].startswith("waiting behind another user's job, which has a reservation on")
    # A short one ends before that: it backfills at once.
    short = erin.submit_ok(**script("print('short')", gpu_count=1, gpu_type="a100", timeout_seconds=30))
    erin.wait_status(short["job_id"], "completed")
    assert carol.status(big["job_id"])["status"] == "queued"
    # Higher priority first: a normal, then a high job, both too long to backfill, queue behind the big one.
    normal = erin.submit_ok(
        **script("print('n')", gpu_count=1, gpu_type="a100", priority="normal", timeout_seconds=600)
    )
    high = bob.submit_ok(
        **script("print('h')", gpu_count=1, gpu_type="a100", priority="high", timeout_seconds=600)
    )
    wait_for(lambda: bob.status(high["job_id"])["queue_position"] is not None, what="a cycle")
    positions = {
        name: view["queue_position"]
        for name, view in (
            ("big", carol.status(big["job_id"])),
            ("high", bob.status(high["job_id"])),
            ("normal", erin.status(normal["job_id"])),
            ("long", erin.status(long["job_id"])),
        )
    }
    assert positions["big"] < positions["high"] < positions["normal"]
    status = bob.http.get("api/k8s/gpu-status").json()["data"]
    assert next(t for t in status["gpu_types"] if t["gpu_type"] == "a100")["queued_demand"] >= 2
    release.touch()
    done = {
        name: api.wait_status(job["job_id"], "completed")
        for name, api, job in (("big", carol, big), ("high", bob, high), ("normal", erin, normal))
    }
    # The scheduler's order is the order of admission; when each one's code starts also depends on
    # how soon a runner process takes it (a spare, or a fresh one).
    assert done["big"]["admitted_at"] <= done["high"]["admitted_at"] <= done["normal"]["admitted_at"]
    assert done["big"]["finished_at"] <= done["high"]["started_at"]  # they share the GPUs
    erin.wait_status(long["job_id"], "completed")


def test_usage_report_by_user_group_and_type(world) -> None:
    frank = world("frank", groups=("staff",))
    grace = world("grace", groups=("students",))
    admin = world("root-admin", admin=True)
    job = frank.submit_ok(**script("import time; time.sleep(0.5)", gpu_count=2, gpu_type="a100"))
    other = grace.submit_ok(**script("print('t4')", gpu_count=1, gpu_type="t4"))
    frank.wait_status(job["job_id"], "completed")
    grace.wait_status(other["job_id"], "completed")
    mine = frank.http.get("api/k8s/usage", params={"group_by": "user"}).json()["data"]
    assert [row["key"] for row in mine["rows"]] == ["frank"]
    row = mine["rows"][0]
    assert row["jobs"] >= 1 and row["gpu_seconds"] >= 1.0  # 2 GPUs for at least half a second
    assert row["cost"] == pytest.approx(row["gpu_seconds"] / 3600 * 3.6, abs=1e-5)
    by_group = frank.http.get("api/k8s/usage", params={"group_by": "group"}).json()["data"]["rows"]
    assert [r["key"] for r in by_group] == ["staff"]
    everyone = admin.http.get("api/k8s/usage", params={"group_by": "user"}).json()["data"]["rows"]
    assert {"frank", "grace"} <= {r["key"] for r in everyone}
    by_type = admin.http.get("api/k8s/usage", params={"group_by": "gpu_type"}).json()["data"]["rows"]
    assert "a100-80gb" in {r["key"] for r in by_type}
    report = admin.http.get("api/k8s/usage", params={"group_by": "user", "format": "csv"})
    assert report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.text)))
    assert rows[0] == ["user", "jobs", "gpu_seconds", "gpu_hours", "cpu_seconds", "cost"]
    assert frank.http.get("api/k8s/usage", params={"user": "grace"}).status_code == 403
    bad = frank.http.get("api/k8s/usage", params={"from": "2030-01-01T00:00:00", "to": "2020-01-01T00:00:00"})
    assert bad.status_code == 422
    assert frank.http.get("api/k8s/usage", params={"group_by": "planet"}).status_code == 422
