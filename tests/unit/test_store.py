import asyncio
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from gpujobs.errors import IllegalTransition, JobNotFound
from gpujobs.models import JobStatus
from gpujobs.store import Store
from gpujobs.store import repository as repo


def values(job_id: str, user: str = "alice") -> dict:
    return dict(
        job_id=job_id,
        user=user,
        groups=[],
        name="n",
        priority="normal",
        gpu_required=False,
        gpu_count=0,
        gpu_type="any",
        cpu_request=0.0,
        spec={"script": "x"},
        gpus=[],
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _empty(url)
    db = Store(url)
    yield db
    db.close()


def _empty(url: str) -> None:
    """Each test starts from an empty schema (the server lives for the whole session)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def test_migrations_create_the_schema_and_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    Store(url).close()
    again = Store(url)  # a second start must not fail or recreate anything
    tables = inspect(again.engine).get_table_names()
    assert {"jobs", "alembic_version"} <= set(tables)
    again.close()


def test_the_job_life_follows_the_transition_table(store: Store) -> None:
    store.write_sync(lambda s: repo.add_job(s, **values("j1")))
    pending = store.write_sync(lambda s: repo.transition(s, "j1", JobStatus.PENDING, node="n", gpus=["0"]))
    assert pending.admitted_at is not None and pending.gpus == ("0",)
    running = store.write_sync(lambda s: repo.transition(s, "j1", JobStatus.RUNNING))
    assert running.started_at is not None
    done = store.write_sync(lambda s: repo.transition(s, "j1", JobStatus.COMPLETED, exit_code=0))
    assert done.finished_at is not None and done.exit_code == 0
    with pytest.raises(IllegalTransition, match="is completed; it cannot become cancelled"):
        store.write_sync(lambda s: repo.transition(s, "j1", JobStatus.CANCELLED))
    with pytest.raises(JobNotFound):
        store.write_sync(lambda s: repo.transition(s, "nope", JobStatus.CANCELLED))


def test_queued_cannot_jump_to_running(store: Store) -> None:
    store.write_sync(lambda s: repo.add_job(s, **values("j2")))
    with pytest.raises(IllegalTransition):
        store.write_sync(lambda s: repo.transition(s, "j2", JobStatus.RUNNING))
    assert store.read_sync(lambda s: repo.get_job(s, "j2")).status is JobStatus.QUEUED


def test_one_failing_write_spoils_nothing_else_in_its_batch(store: Store) -> None:
    async def many() -> list:
        writes = [store.write(lambda s, i=i: repo.add_job(s, **values(f"ok{i}"))) for i in range(50)]
        writes.append(store.write(lambda s: repo.add_job(s, **values("ok1"))))  # duplicate id
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(many())
    assert sum(isinstance(r, Exception) for r in results) == 1
    assert len(store.read_sync(lambda s: repo.list_jobs(s, limit=100))) == 50


def test_a_duplicate_among_new_jobs_written_together_fails_alone(store: Store) -> None:
    """New jobs queued while the writer is busy are inserted together in one statement; when one of
    them is a duplicate, the rest are inserted one by one and only the duplicate fails."""
    gate = threading.Event()

    async def many() -> list:
        blocker = asyncio.ensure_future(store.write(lambda _s: gate.wait(30)))
        while store._writer.busy_since is None:  # the writer is inside the blocker's batch
            await asyncio.sleep(0.01)
        adds = [
            asyncio.ensure_future(store.add_job(repo.new_job_values(**values(f"new{i}")))) for i in range(5)
        ]
        adds.append(asyncio.ensure_future(store.add_job(repo.new_job_values(**values("new2")))))  # again
        await asyncio.sleep(0.1)  # all queued behind the blocker: one batch when it is done
        gate.set()
        await blocker
        return await asyncio.gather(*adds, return_exceptions=True)

    results = asyncio.run(many())
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == 1 and results[-1] is failed[0]  # the later of the two new2
    stored = {job.job_id for job in store.read_sync(lambda s: repo.list_jobs(s, limit=100))}
    assert stored == {f"new{i}" for i in range(5)}


def test_listing_is_newest_first_and_pages(store: Store) -> None:
    for i in range(5):
        store.write_sync(lambda s, i=i: repo.add_job(s, **values(f"p{i}", user="bob" if i % 2 else "alice")))
    alice = store.read_sync(lambda s: repo.list_jobs(s, user="alice", limit=2))
    assert [j.job_id for j in alice] == ["p4", "p2"]
    rest = store.read_sync(lambda s: repo.list_jobs(s, user="alice", limit=2, before_seq=alice[-1].seq))
    assert [j.job_id for j in rest] == ["p0"]


def test_a_transition_returns_what_it_replaced_and_holding_follows_the_state(store: Store) -> None:
    store.write_sync(lambda s: repo.add_job(s, **values("h1")))
    admitted = store.write_sync(lambda s: repo.change(s, "h1", JobStatus.PENDING, node="n", gpus=["0"]))
    assert (admitted.before.status, admitted.after.status) == (JobStatus.QUEUED, JobStatus.PENDING)
    assert admitted.after.holding  # admission takes the GPUs
    with pytest.raises(IllegalTransition):  # compare-and-set: only from the states asked for
        store.write_sync(lambda s: repo.change(s, "h1", JobStatus.RUNNING, only_from=(JobStatus.QUEUED,)))
    stopping = store.write_sync(lambda s: repo.change(s, "h1", JobStatus.CANCELLED, holding=True))
    assert stopping.before.status is JobStatus.PENDING and stopping.after.stopping
    released = store.write_sync(lambda s: repo.release(s, "h1"))
    assert released is not None and not released.holding and released.status is JobStatus.CANCELLED
    assert store.write_sync(lambda s: repo.release(s, "h1")) is None  # once


def test_a_launch_is_recorded_only_for_a_pending_job(store: Store) -> None:
    store.write_sync(lambda s: repo.add_job(s, **values("l1")))
    with pytest.raises(IllegalTransition):
        store.write_sync(lambda s: repo.mark_launched(s, "l1"))  # still queued
    store.write_sync(lambda s: repo.transition(s, "l1", JobStatus.PENDING))
    first = store.write_sync(lambda s: repo.mark_launched(s, "l1"))
    assert first.launched_at is not None
    assert store.write_sync(lambda s: repo.mark_launched(s, "l1")).launched_at == first.launched_at
    store.write_sync(lambda s: repo.transition(s, "l1", JobStatus.CANCELLED))
    with pytest.raises(IllegalTransition):  # a cancel that came first makes the launch fail
        store.write_sync(lambda s: repo.mark_launched(s, "l1"))
    requeued = store.write_sync(lambda s: repo.add_job(s, **values("l2")))
    store.write_sync(lambda s: repo.transition(s, "l2", JobStatus.PENDING, node="n", gpus=["1"]))
    store.write_sync(lambda s: repo.mark_launched(s, "l2"))
    back = store.write_sync(lambda s: repo.transition(s, requeued.job_id, JobStatus.QUEUED))
    assert (back.launched_at, back.node, back.gpus, back.holding) == (None, None, (), False)


def test_listeners_hear_every_change_in_commit_order_before_the_writer_returns(store: Store) -> None:
    heard: list[tuple[str, str]] = []

    async def scenario() -> list[tuple[str, str]]:
        store.subscribe(lambda changes: heard.extend((c.job_id, c.status.value) for c in changes))
        await store.add_job(repo.new_job_values(**values("o1")))
        assert heard == [("o1", "queued")]  # already applied when the write returns
        await store.write(lambda s: repo.transition(s, "o1", JobStatus.PENDING))
        failed = store.write(lambda s: repo.transition(s, "o1", JobStatus.QUEUED) and 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await failed  # rolled back: its change is not heard
        await store.write(lambda s: repo.transition(s, "o1", JobStatus.CANCELLED))
        return heard

    assert asyncio.run(scenario()) == [("o1", "queued"), ("o1", "pending"), ("o1", "cancelled")]


def test_one_key_one_job_and_a_different_body_is_refused(store: Store) -> None:
    first, created = store.write_sync(
        lambda s: repo.add_job_once(s, repo.new_job_values(**values("k1")), key="key", body_hash="a")
    )
    again, created_again = store.write_sync(
        lambda s: repo.add_job_once(s, repo.new_job_values(**values("k2")), key="key", body_hash="a")
    )
    assert (created, created_again, again.job_id) == (True, False, first.job_id)
    with pytest.raises(repo.IdempotencyConflict):
        store.write_sync(
            lambda s: repo.add_job_once(s, repo.new_job_values(**values("k3")), key="key", body_hash="b")
        )
    other_user = {**values("k4"), "user": "bob"}
    theirs, created = store.write_sync(
        lambda s: repo.add_job_once(s, repo.new_job_values(**other_user), key="key", body_hash="b")
    )
    assert created and theirs.job_id == "k4"  # keys are per user
    assert len(store.read_sync(lambda s: repo.list_jobs(s, limit=10))) == 2


def test_the_upgrade_keeps_the_gpus_of_jobs_admitted_before_it(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from gpujobs.store.database import _MIGRATIONS

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:  # a database as the previous release left it
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        for job_id, status in (("old-run", "running"), ("old-wait", "queued"), ("old-done", "completed")):
            connection.execute(
                text(
                    "INSERT INTO jobs (job_id, user, groups, name, status, priority, gpu_required, gpu_count,"
                    " gpu_type, cpu_request, spec, gpus, attempts, created_at, node)"
                    " VALUES (:id, 'alice', '[]', 'n', :status, 'normal', 1, 1, 't4', 0, '{}', '[\"0\"]', 0,"
                    " '2026-11-30 00:00:00', 'vm')"
                ),
                {"id": job_id, "status": status},
            )
    engine.dispose()
    upgraded = Store(url)
    holding = upgraded.read_sync(repo.jobs_to_reconcile)
    assert [job.job_id for job in holding] == ["old-run"]  # still holds its GPU until it is seen to end
    assert holding[0].holding and holding[0].launched_at is not None and holding[0].memory_request == 0
    upgraded.close()
