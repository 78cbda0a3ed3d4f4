"""Engine, migrations and the group-commit writer.

Every write goes through one writer thread that commits whatever has queued up in one transaction
(each item in its own savepoint, so one failure spoils nothing else).  That keeps SQLite free of
"database is locked", makes a job durable before its 201 goes out, and lets one fsync serve many
submissions under load.  Reads run on other connections (SQLite in WAL mode lets them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DependencyUnavailable, GpujobsError
from ..models import JobStatus
from . import repository
from .orm import JobRow
from .records import JobRecord

T = TypeVar("T")
_MIGRATIONS = Path(__file__).parent / "migrations"
_BATCH = 512


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (the driver's own handling breaks savepoints).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class _NewJob:
    """A job insert, written together with the other inserts of its batch in one statement."""

    values: dict[str, Any]


_Work: TypeAlias = Callable[[Session], Any] | _NewJob
# Who waits for a write: an asyncio future (the service) or a concurrent one (sync callers).
_Waiter: TypeAlias = "asyncio.Future[Any] | concurrent.futures.Future[Any]"
_Item: TypeAlias = tuple[_Work, _Waiter]
_Outcome: TypeAlias = tuple[_Waiter, Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    """Hand results back: one wake-up per event loop for the whole batch, not one per write."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        waiter = outcome[0]
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append(outcome)
        else:
            _resolve(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list[_Outcome]) -> None:
    for item in items:
        _resolve(item)


def _resolve(outcome: _Outcome) -> None:
    waiter, result, error = outcome
    if waiter.cancelled():
        return
    if error is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(result)


class _Writer:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self.generation = 0  # committed batches so far: a reader that saw the same number saw the same data
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="gpujobs-store-writer", daemon=True)
        self._thread.start()

    def submit(self, work: _Work, waiter: _Waiter) -> None:
        self._queue.put((work, waiter))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        outcomes: list[_Outcome] = []
        try:
            with self._sessions() as session, session.begin():
                new_jobs = [(work, future) for work, future in batch if isinstance(work, _NewJob)]
                if new_jobs:
                    outcomes.extend(self._insert_jobs(session, new_jobs))
                for work, future in batch:
                    if isinstance(work, _NewJob):
                        continue
                    try:
                        with session.begin_nested():
                            outcomes.append((future, work(session), None))
                    except Exception as exc:
                        outcomes.append((future, None, exc))
        except Exception as exc:  # the commit itself failed: nothing in the batch is stored
            failure = DependencyUnavailable(
                f"the job database did not accept the write: {exc.__class__.__name__}"
            )
            _settle([(waiter, None, failure) for _work, waiter in batch])
            return
        self.generation += 1
        _settle(outcomes)

    @staticmethod
    def _insert_jobs(session: Session, new_jobs: list[tuple[_NewJob, _Waiter]]) -> list[_Outcome]:
        """One multi-row INSERT ... RETURNING for the batch; row by row if that fails (a duplicate id)."""
        statement = insert(JobRow).returning(JobRow.seq, sort_by_parameter_order=True)
        try:
            with session.begin_nested():
                seqs = session.execute(statement, [work.values for work, _ in new_jobs]).scalars().all()
            return [(future, seq, None) for (_, future), seq in zip(new_jobs, seqs, strict=True)]
        except Exception:
            outcomes: list[_Outcome] = []
            for work, future in new_jobs:
                try:
                    with session.begin_nested():
                        seq = session.execute(insert(JobRow).values(**work.values).returning(JobRow.seq))
                        outcomes.append((future, seq.scalar_one(), None))
                except Exception as exc:
                    outcomes.append((future, None, exc))
            return outcomes


class Store:
    """The job database: ``await store.write(fn)`` / ``await store.read(fn)`` with ``fn(session)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = _Writer(self._sessions)
        self._active: tuple[int, list[JobRecord]] | None = None

    async def write(self, work: Callable[[Session], T]) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writer.submit(work, waiter)
        return await waiter

    def write_sync(self, work: Callable[[Session], T]) -> T:
        waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._writer.submit(work, waiter)
        return waiter.result()

    async def add_job(self, values: dict[str, Any]) -> JobRecord:
        """Insert a new job (``repository.new_job_values``); batched with concurrent submissions."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._writer.submit(_NewJob(values), waiter)
        return repository.record_of(await waiter, values)

    @property
    def generation(self) -> int:
        """Changes after every write this store commits (it is the only writer of its database)."""
        return self._writer.generation

    async def active_jobs(self) -> list[JobRecord]:
        """Jobs pending or running, oldest first; read again only when a write has been committed since
        the last read (the API, metrics and every scheduling cycle ask often).  Do not change the list."""
        generation = self.generation  # before the read: the answer is at least this new
        if self._active is None or self._active[0] != generation:
            active = await self.read(lambda s: repository.jobs_in(s, JobStatus.active()))
            self._active = (generation, active)
        return self._active[1]

    async def read(self, work: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self.read_sync, work)

    def read_sync(self, work: Callable[[Session], T]) -> T:
        try:
            with self._sessions() as session, session.begin():
                return work(session)
        except GpujobsError:
            raise
        except Exception as exc:
            raise DependencyUnavailable(f"the job database did not answer: {exc.__class__.__name__}") from exc

    def close(self) -> None:
        self._writer.close()
        self.engine.dispose()
