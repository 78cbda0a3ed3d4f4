"""The races of the control loop, each reproduced step by step in-process (fake executors named for
their behaviour, the scheduler and the reconciler driven by hand).  What a user would notice is asserted:
a cancelled job never runs, never two jobs on one GPU, nothing left pending or running with nothing
looking after it, no end lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fakes import (
    EndEventLost,
    FailingLaunch,
    FakeExecutor,
    LaunchRaises,
    NeverStarts,
    ObserveFailsFor,
    SlowLaunch,
    StaleView,
    StopTakesTime,
)

ONE_GPU = {"gpu_count": 1, "gpu_type": "t4"}


async def test_a_job_runs_through_its_life(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        assert (await h.status(job))["status"] == "queued"
        await h.cycle()  # decides and records only: nothing launched yet
        assert (await h.status(job))["status"] == "pending" and executor.launches == []
        await h.reconcile()  # launches
        await h.reconcile()  # sees it run
        assert (await h.status(job))["status"] == "running"
        executor.finish(job, code=3)
        await h.reconcile()
        view = await h.status(job)
        assert (view["status"], view["reason"], view["exit_code"]) == ("failed", "NonZeroExit", 3)
        assert h.rt.live.holding() == []  # its GPU is free


async def test_cancel_during_admission_wins_and_the_job_never_starts(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        async with h.writer_held():
            # The cancel's write is queued before the cycle's admission: the cycle decides from the
            # queue as it was, and its compare-and-set then finds the job cancelled.
            cancel = asyncio.ensure_future(h.alice.post(f"api/k8s/job/{job}/cancel"))
            await asyncio.sleep(0.05)
            cycle = asyncio.ensure_future(h.cycle())
            await asyncio.sleep(0.05)
        assert (await cancel).status_code == 200
        await cycle
        await h.reconcile(3)
        assert (await h.status(job))["status"] == "cancelled"
        assert executor.launches == [] and job not in executor.ran_code
        assert h.rt.live.holding() == []


async def test_cancel_during_admission_that_loses_stops_the_job(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        await h.cycle()  # admitted first
        assert (await h.alice.post(f"api/k8s/job/{job}/cancel")).json()["data"]["status"] == "cancelled"
        await h.reconcile(3)
        # Admitted but never handed over (the cancel came before the launch was recorded): nothing ran.
        assert executor.launches == [] and h.rt.live.holding() == []


async def test_cancel_during_launch_stops_the_job_and_frees_its_gpu_only_then(
    harness, tmp_path: Path
) -> None:
    executor = SlowLaunch(tmp_path / "logs")
    async with harness(executor) as h:
        first = await h.submit(h.alice, **ONE_GPU)
        await h.cycle()
        await h.rt.reconciler.pass_once()  # the launch starts and waits at the executor's gate
        await executor.waiting.wait()
        answer = await h.alice.post(f"api/k8s/job/{first}/cancel")
        assert answer.status_code == 200 and answer.json()["data"]["status"] == "cancelled"
        second = await h.submit(h.bob, **ONE_GPU)
        await h.cycle()
        assert (await h.status(second))["status"] == "queued"  # the GPU is still held by the first
        assert executor.stops == [first]  # told before the cancel was answered
        executor.release()
        await h.rt.reconciler.settle()
        assert first not in executor.ran_code  # the launch landed after the cancel: its code never ran
        await h.reconcile()  # the executor confirms nothing of it runs: released
        await h.step(2)
        assert (await h.status(second))["status"] == "running"
        assert (await h.status(first))["status"] == "cancelled"


async def test_a_cancel_between_launch_retries_stops_the_retries(harness, tmp_path: Path) -> None:
    executor = LaunchRaises(tmp_path / "logs", OSError("disk busy"), times=1)
    async with harness(executor) as h:
        h.rt.reconciler.launch_backoff = (0.2, 0.2)
        job = await h.submit(h.alice, **ONE_GPU)
        await h.cycle()
        await h.rt.reconciler.pass_once()  # the first try raises; the launcher waits to try again
        while executor.raised == 0:
            await asyncio.sleep(0.01)
        assert (await h.alice.post(f"api/k8s/job/{job}/cancel")).status_code == 200
        await h.rt.reconciler.settle()
        await h.reconcile(2)
        assert job not in executor.ran_code and executor.launches == [job]  # never tried again
        assert h.rt.live.holding() == []


async def test_a_failing_step_backs_off_instead_of_spinning(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        h.rt.reconciler.step_backoff = h.rt.reconciler.max_step_backoff = 60.0
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
        executor.finish(job)
        with h.store_refuses_writes():
            await h.reconcile()  # the end's write fails
            calls = executor.observe_calls
            await h.reconcile(5)  # within the backoff: the job is not even looked at again
            assert executor.observe_calls == calls
        assert (await h.status(job))["status"] == "running"


async def test_gpus_stay_held_until_the_executor_confirms_the_processes_are_gone(
    harness, tmp_path: Path
) -> None:
    executor = StopTakesTime(tmp_path / "logs")
    async with harness(executor) as h:
        first = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
        assert (await h.status(first))["status"] == "running"
        await h.alice.post(f"api/k8s/job/{first}/cancel")
        second = await h.submit(h.bob, **ONE_GPU)
        for _ in range(5):  # however many passes: the stop is asked again, the GPU stays held
            await h.step()
        assert (await h.status(second))["status"] == "queued"
        assert executor.stops.count(first) >= 2
        assert "being stopped" in (await h.status(first))["message"]
        executor.processes_gone(first)
        await h.step(3)
        assert (await h.status(second))["status"] == "running"


async def test_cancelling_twice_answers_the_same_and_a_finished_job_is_refused(
    harness, tmp_path: Path
) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice)
        first = await h.alice.post(f"api/k8s/job/{job}/cancel")
        again = await h.alice.post(f"api/k8s/job/{job}/cancel")
        assert (first.status_code, again.status_code) == (200, 200)
        assert again.json()["data"] == {**first.json()["data"], "message": again.json()["data"]["message"]}
        done = await h.submit(h.alice)
        await h.step(3)
        executor.finish(done)
        await h.reconcile()
        refused = await h.alice.post(f"api/k8s/job/{done}/cancel")
        assert refused.status_code == 409 and "completed" in refused.json()["message"]


async def test_an_end_seen_while_the_store_refuses_writes_is_recorded_once_it_takes_them(
    harness, tmp_path: Path
) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        behind = await h.submit(h.bob, **ONE_GPU)
        await h.step(2)
        executor.finish(job)
        with h.store_refuses_writes():
            await h.reconcile(3)  # the end is seen, its write fails: nothing is forgotten
            health = (await h.alice.get("healthz")).json()["data"]
            assert health["status"] == "degraded" and "refuses writes" in health["problems"][0]
        assert (await h.status(job))["status"] == "running"
        await h.reconcile()
        assert (await h.status(job))["status"] == "completed"
        await h.step(2)
        assert (await h.status(behind))["status"] == "running"  # the queue moved on
        assert (await h.alice.get("healthz")).json()["data"]["status"] == "ok"


async def test_a_submission_during_a_rebuild_of_the_live_index_is_not_lost(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        published: list[str] = []
        h.rt.store.subscribe(lambda changes: published.extend(type(c).__name__ for c in changes))
        async with h.writer_held():
            rebuild = asyncio.ensure_future(h.rt.live.refresh(h.rt.store))  # reads before the insert
            await asyncio.sleep(0.05)
            # With a key the insert is ordinary work, done in order after the snapshot's read.
            submit = asyncio.ensure_future(
                h.alice.post(
                    "api/k8s/submit-job",
                    json={"name": "t", "script": "print(1)", **ONE_GPU},
                    headers={"Idempotency-Key": "during-rebuild"},
                )
            )
            await asyncio.sleep(0.05)
        await rebuild
        job = (await submit).json()["data"]["job_id"]
        assert published == ["Snapshot", "JobRecord"]  # the snapshot did not see the job...
        assert job in h.rt.live.queue  # ...and the job is still in the index built from it
        await h.step(2)
        assert (await h.status(job))["status"] == "running"


async def test_a_rebuild_after_a_submission_keeps_it(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        async with h.writer_held():
            submit = asyncio.ensure_future(h.submit(h.alice, **ONE_GPU))
            await asyncio.sleep(0.05)
            rebuild = asyncio.ensure_future(h.rt.live.refresh(h.rt.store))
            await asyncio.sleep(0.05)
        job = await submit
        await rebuild
        assert job in h.rt.live.queue and len(h.rt.live.queue) == 1


async def test_an_unexpected_launch_error_is_retried_then_recorded(harness, tmp_path: Path) -> None:
    executor = LaunchRaises(tmp_path / "logs", OSError("no space left on device"))
    async with harness(executor, launch_retry_seconds=0.5) as h:
        h.rt.reconciler.launch_backoff = (0.05, 0.05)
        job = await h.submit(h.alice, **ONE_GPU)
        await h.cycle()
        await h.rt.reconciler.pass_once()
        while len(executor.launches) < 2:  # while it is tried again, its owner is told why it waits
            await asyncio.sleep(0.01)
        view = await h.status(job)
        assert view["status"] == "pending" and "no space left on device" in view["message"]
        await h.rt.reconciler.settle()
        view = await h.status(job)
        assert (view["status"], view["reason"]) == ("failed", "LaunchFailed")
        assert "OSError: no space left on device" in view["message"]
        assert 3 <= len(executor.launches) <= 11  # tried for the time allowed (0.5 s), not forever
        await h.reconcile()  # the executor has nothing of it: the GPU is free
        assert h.rt.live.holding() == []


async def test_a_passing_launch_error_is_retried_until_the_job_starts(harness, tmp_path: Path) -> None:
    executor = LaunchRaises(tmp_path / "logs", RuntimeError("api server restarting"), times=2)
    async with harness(executor) as h:
        h.rt.reconciler.launch_backoff = (0.0, 0.0)
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
        view = await h.status(job)
        assert view["status"] == "running" and executor.ran_code == {job}
        assert view["message"] is None  # the news of the trouble is gone with it


async def test_a_launch_waits_as_long_as_the_other_side_asks(harness, tmp_path: Path) -> None:
    """A passing error that says when to come back (Retry-After) is tried again no sooner."""
    error = RuntimeError("too many requests")
    error.retry_after = 0.3  # type: ignore[attr-defined]
    executor = LaunchRaises(tmp_path / "logs", error, times=1)
    async with harness(executor) as h:
        h.rt.reconciler.launch_backoff = (0.0, 0.0)
        job = await h.submit(h.alice, **ONE_GPU)
        await h.cycle()
        began = asyncio.get_running_loop().time()
        await h.rt.reconciler.pass_once()
        await h.rt.reconciler.settle()
        assert asyncio.get_running_loop().time() - began >= 0.3
        await h.reconcile()
        assert (await h.status(job))["status"] == "running"


async def test_a_job_that_can_never_launch_fails_with_the_executors_words(harness, tmp_path: Path) -> None:
    executor = FailingLaunch(tmp_path / "logs", "namespace gpujobs-alice does not exist")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
        view = await h.status(job)
        assert (view["status"], view["reason"]) == ("failed", "LaunchFailed")
        assert view["message"] == "namespace gpujobs-alice does not exist"
        assert len(executor.launches) == 1  # not retried: it can never work


async def test_a_launch_interrupted_by_a_restart_is_adopted_not_repeated(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
    async with harness(executor) as h:  # the same executor world, a new service on the same store
        await h.step(2)
        assert (await h.status(job))["status"] == "running"
        assert executor.launches == [job]  # found running: never launched again


async def test_a_job_that_waits_in_the_executor_says_why_and_can_be_cancelled(
    harness, tmp_path: Path
) -> None:
    executor = NeverStarts(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(3)
        view = await h.status(job)
        assert (view["status"], view["message"]) == ("pending", "waiting in the cluster: no node")
        await h.alice.post(f"api/k8s/job/{job}/cancel")
        await h.reconcile(2)
        assert executor.stops == [job] and h.rt.live.holding() == []


async def test_one_job_the_executor_cannot_observe_does_not_hold_up_the_others(
    harness, tmp_path: Path
) -> None:
    executor = ObserveFailsFor(tmp_path / "logs", gpus=3)
    async with harness(executor) as h:
        jobs = [await h.submit(h.alice, **ONE_GPU) for _ in range(3)]
        await h.step(2)
        executor.broken.add(jobs[1])
        for job in jobs:
            executor.finish(job)
        await h.reconcile()
        states = [(await h.status(job))["status"] for job in jobs]
        assert states == ["completed", "running", "completed"]
        executor.broken.clear()
        await h.reconcile()
        assert (await h.status(jobs[1]))["status"] == "completed"


async def test_a_running_job_the_executor_forgot_is_lost_not_running_forever(harness, tmp_path: Path) -> None:
    executor = FakeExecutor(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        await h.step(2)
        del executor.world[job]  # e.g. the machine was rebooted under it
        await h.reconcile()
        view = await h.status(job)
        assert (view["status"], view["reason"]) == ("failed", "Lost")
        assert h.rt.live.holding() == []


async def test_an_end_reported_once_during_a_store_outage_never_leaves_the_job_running(
    harness, tmp_path: Path
) -> None:
    executor = EndEventLost(tmp_path / "logs")
    async with harness(executor) as h:
        job = await h.submit(h.alice, **ONE_GPU)
        waiting = await h.submit(h.bob, **ONE_GPU)
        await h.step(2)
        executor.finish(job)
        with h.store_refuses_writes():
            await h.reconcile()  # the end is seen once; its write fails; the executor forgets it
        await h.reconcile()
        view = await h.status(job)
        # Its outcome is gone with the executor's memory, but the job is not left running, and its GPU
        # goes to the next job.
        assert (view["status"], view["reason"]) == ("failed", "Lost")
        await h.step(2)
        assert (await h.status(waiting))["status"] == "running"


async def test_nothing_is_admitted_onto_a_stale_view_and_everyone_is_told(harness, tmp_path: Path) -> None:
    executor = StaleView(tmp_path / "logs")
    async with harness(executor) as h:
        executor.stale = True
        job = await h.submit(h.alice, **ONE_GPU)  # accepted: the wish is recorded whatever the cluster
        await h.step(2)
        view = await h.status(job)
        assert view["status"] == "queued" and executor.launches == []
        assert (
            "in touch with the cluster again" in view["message"]
            and "watch of Pods is down" in view["message"]
        )
        status = (await h.alice.get("api/k8s/gpu-status")).json()
        assert (status["data"]["stale"], status["data"]["synced_at"]) == (True, "2026-12-01T09:30:00Z")
        assert "as of 09:30:00 UTC" in status["message"]
        health = (await h.alice.get("healthz")).json()["data"]
        assert health["status"] == "degraded" and any("stale" in p for p in health["problems"])
        executor.stale = False  # in touch again: the job goes on, and nothing says stale any more
        await h.step(2)
        assert (await h.status(job))["status"] == "running"
        assert (await h.alice.get("api/k8s/gpu-status")).json()["data"]["stale"] is False
        assert (await h.alice.get("healthz")).json()["data"]["status"] == "ok"


async def test_a_cancel_that_comes_after_the_code_ended_is_kept_and_says_the_code_finished(
    harness, tmp_path: Path
) -> None:
    executor = FakeExecutor(tmp_path / "logs", gpus=2)
    async with harness(executor) as h:
        late, stopped = await h.submit(h.alice, **ONE_GPU), await h.submit(h.bob, **ONE_GPU)
        await h.step(2)
        assert {(await h.status(job))["status"] for job in (late, stopped)} == {"running"}
        executor.finish(late)  # its code ends; the next look would see it
        for client, job in ((h.alice, late), (h.bob, stopped)):
            answer = await client.post(f"api/k8s/job/{job}/cancel")
            assert answer.status_code == 200 and answer.json()["data"]["status"] == "cancelled"
        await h.reconcile(2)
        assert stopped in executor.stops
        late_view, stopped_view = await h.status(late), await h.status(stopped)
        assert late_view["status"] == stopped_view["status"] == "cancelled"  # the wish stands
        assert late_view["message"] == (
            "cancelled by alice; its code had already finished (exit code 0) before the stop reached it"
        )
        assert stopped_view["message"] == "cancelled by bob"  # the stop ended it: nothing to add
        assert h.rt.live.holding() == []
