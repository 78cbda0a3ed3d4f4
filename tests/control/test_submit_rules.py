"""Submissions in-process: idempotency keys, impossible jobs, health."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fakes import FakeExecutor

SPEC = {"name": "k", "script": "print(1)"}


async def test_an_idempotency_key_makes_one_job_however_often_it_is_sent(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        headers = {"Idempotency-Key": "cell-42"}
        answers = await asyncio.gather(
            *(h.alice.post("api/k8s/submit-job", json=SPEC, headers=headers) for _ in range(5))
        )
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
        assert len({a.json()["data"]["job_id"] for a in answers}) == 1
        later = await h.alice.post("api/k8s/submit-job", json=SPEC, headers=headers)
        assert (
            later.status_code == 200 and later.json()["data"]["job_id"] == answers[0].json()["data"]["job_id"]
        )
        listed = (await h.alice.get("api/k8s/jobs")).json()["data"]["jobs"]
        assert len(listed) == 1
        # The same key from another user is another job; the same key with another body is refused.
        theirs = await h.bob.post("api/k8s/submit-job", json=SPEC, headers=headers)
        assert theirs.status_code == 201
        other = await h.alice.post("api/k8s/submit-job", json={**SPEC, "name": "other"}, headers=headers)
        assert other.status_code == 422 and other.json()["data"]["field"] == "Idempotency-Key"


async def test_a_bad_idempotency_key_is_refused_before_anything_is_stored(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        for key in ("x" * 256, ""):
            refused = await h.alice.post("api/k8s/submit-job", json=SPEC, headers={"Idempotency-Key": key})
            assert refused.status_code == 422, refused.text
            assert "Idempotency-Key must be 1 to 255" in refused.json()["message"]
        longest = await h.alice.post("api/k8s/submit-job", json=SPEC, headers={"Idempotency-Key": "x" * 255})
        assert longest.status_code == 201
        assert len((await h.alice.get("api/k8s/jobs")).json()["data"]["jobs"]) == 1


async def test_an_impossible_job_is_refused_and_the_next_one_starts_at_once(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs", gpus=2, cpu_cores=4)
    async with harness(executor) as h:
        for impossible, field in (
            ({"cpu_limit": "1000"}, "cpu_limit"),
            ({"gpu_count": 3, "gpu_type": "t4"}, "gpu_count"),
            ({"memory_limit": "1Ti"}, "memory_limit"),
        ):
            refused = await h.alice.post("api/k8s/submit-job", json={**SPEC, **impossible})
            assert refused.status_code == 422, refused.text
            assert refused.json()["data"]["field"] == field
            assert "more than any node has" in refused.json()["message"]
        # The largest possible job is accepted, and runs.
        largest = await h.submit(h.bob, gpu_count=2, gpu_type="t4", cpu_limit="4", memory_limit="64Gi")
        await h.step(2)
        assert (await h.status(largest))["status"] == "running"


async def test_health_reports_an_executor_that_cannot_observe(harness, tmp_path: Path) -> None:
    class Unreachable(FakeExecutor):
        async def observe(self, jobs):
            raise ConnectionError("connection refused")

    async with harness(Unreachable(tmp_path / "logs")) as h:
        await h.submit(h.alice)
        await h.step(2)
        health = (await h.alice.get("healthz")).json()["data"]
        assert health["status"] == "degraded"
        assert "cannot reach its jobs (ConnectionError: connection refused)" in health["problems"][0]


async def test_health_says_so_while_a_write_hangs(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        async with h.writer_held():  # as if another process held the database locked
            for _ in range(200):
                health = (await h.alice.get("healthz")).json()["data"]
                if health["status"] == "degraded":
                    break
                await asyncio.sleep(0.05)
            assert "has not finished a write" in health["problems"][0]
        assert (await h.alice.get("healthz")).json()["data"]["status"] == "ok"


async def test_odd_queries_are_refused_with_the_field_named(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        for path, params, field in (
            ("api/k8s/jobs", {"cursor": "²"}, "cursor"),
            ("api/k8s/jobs", {"cursor": "9" * 23}, "cursor"),
            ("api/k8s/usage", {"to": "0001-01-01T00:00:00"}, "to"),
            ("api/k8s/gpu-status", {"limit": "0"}, "limit"),
            ("api/k8s/gpu-status", {"free": "-1"}, "free"),
            ("api/k8s/gpu-status", {"cursor": "x" * 254}, "cursor"),
            (
                "api/k8s/usage",
                {"from": "9999-12-31T00:00:00-14:00", "to": "9999-12-31T23:59:59-14:00"},
                "to",
            ),
        ):
            answer = await h.alice.get(path, params=params)
            assert answer.status_code == 422, (params, answer.text)
            assert answer.json()["data"]["field"] == field


async def test_a_key_that_is_not_ascii_is_a_key_like_any_other(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        key = "ключ-🔑".encode()  # sent as its UTF-8 bytes, as clients do
        first = await h.alice.post("api/k8s/submit-job", json=SPEC, headers={"Idempotency-Key": key})
        again = await h.alice.post("api/k8s/submit-job", json=SPEC, headers={"Idempotency-Key": key})
        assert (first.status_code, again.status_code) == (201, 200)
        # A field sent with its default value is the same submission as one that leaves it out.
        same = await h.alice.post(
            "api/k8s/submit-job", json={**SPEC, "args": []}, headers={"Idempotency-Key": key}
        )
        assert same.status_code == 200 and same.json()["data"]["job_id"] == first.json()["data"]["job_id"]


async def test_the_node_list_pages_and_filters_and_the_summary_stays_whole(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs", gpus=2)) as h:

        async def status(**params: object) -> dict:
            return (await h.alice.get("api/k8s/gpu-status", params=params)).json()["data"]

        page = await status(limit=1)
        assert len(page["gpu_nodes"]) == 1 and page["next_cursor"] is None and page["total_gpus"] == 2
        none = await status(gpu_type="a100")
        assert none["gpu_nodes"] == [] and none["total_gpus"] == 2  # no a100 node, but every GPU counted
        assert [n["available"] for n in (await status(gpu_type="t4", free=2))["gpu_nodes"]] == [2]
        assert len((await status(gpu_type="Tesla-T4"))["gpu_nodes"]) == 1  # named as at submit
        assert (await status(free=3))["gpu_nodes"] == []
        both = await h.alice.get("api/k8s/gpu-status", params={"nodes": "false", "limit": 1})
        assert both.status_code == 422 and both.json()["data"]["field"] == "nodes"
        assert "drop nodes=false" in both.json()["message"]


async def test_there_is_no_local_token_to_prove_under_a_hub(harness, tmp_path: Path) -> None:
    async with harness(FakeExecutor(tmp_path / "logs")) as h:
        answer = await h.alice.get("api/local/proof", params={"nonce": "ab" * 16})
        assert answer.status_code == 404 and "under JupyterHub" in answer.json()["message"]
