import asyncio
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


def test_listing_is_newest_first_and_pages(store: Store) -> None:
    for i in range(5):
        store.write_sync(lambda s, i=i: repo.add_job(s, **values(f"p{i}", user="bob" if i % 2 else "alice")))
    alice = store.read_sync(lambda s: repo.list_jobs(s, user="alice", limit=2))
    assert [j.job_id for j in alice] == ["p4", "p2"]
    rest = store.read_sync(lambda s: repo.list_jobs(s, user="alice", limit=2, before_seq=alice[-1].seq))
    assert [j.job_id for j in rest] == ["p0"]
