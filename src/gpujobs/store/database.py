"""Engine, migrations and the group-commit writer.

Every write goes through one writer thread that commits whatever has queued up in one transaction
(each item in its own savepoint, so one failure spoils nothing else).  That keeps SQLite free of
"database is locked", makes a job durable before its 201 goes out, and lets one fsync serve many
submissions under load.  Reads run on other connections (SQLite in WAL mode lets them).

In-memory caches (the queue index, job watchers) are *derived* from these writes: after each commit
the writer hands its listeners, on their event loop and in commit order, every job record the batch
changed (``repository.changed``) and every snapshot a work item read inside the writer's transaction
(``publish``), before it wakes the writers' callers.  A cache that applies them in that order can never
be overwritten by an older read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DependencyUnavailable, GpujobsError
from . import repository
from .orm import JobRow
from .records import JobRecord

T = TypeVar("T")
# Errors that say the database cannot take writes (a full disk, I/O errors, a lost server), as against
# a request's own fault (a duplicate key).
_REFUSALS = (OperationalError, InternalError, InterfaceError)
log = logging.getLogger(__name__)
_MIGRATIONS = Path(__file__).parent / "migrations"
_BATCH = 512
BUSY_SECONDS = 5.0


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A write waits at most BUSY_SECONDS for a lock someone else holds, then fails (503, retried by
        # clients and by the reconciler) rather than hold every submission for half a minute.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": BUSY_SECONDS}, pool_size=8
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (the driver's own handling breaks savepoints).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
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
class Snapshot:
    """A read made inside the writer's transaction (so ordered with every write), for the listeners:
    ``kind`` says what it is (``"queue"``: ``repository.queue_entries``)."""

    kind: str
    value: Any


Published: TypeAlias = "JobRecord | Snapshot"
Listener = Callable[[list[Published]], None]


def publish(session: Session, snapshot: Snapshot) -> None:
    """Hand a snapshot read in the writer's transaction to the listeners, in commit order."""
    session.info.setdefault("changed", []).append(snapshot)


@dataclass(frozen=True)
class _NewJob:
    """A job insert, written together with the other inserts of its batch in one statement."""

    values: dict[str, Any]


_Work: TypeAlias = Callable[[Session], Any] | _NewJob
# Who waits for a write: an asyncio future (the service) or a concurrent one (sync callers).
_Waiter: TypeAlias = "asyncio.Future[Any] | concurrent.futures.Future[Any]"
_Item: TypeAlias = tuple[_Work, _Waiter]
_Outcome: TypeAlias = tuple[_Waiter, Any, BaseException | None]


def _settle(
    outcomes: list[_Outcome],
    changes: list[Published] | None = None,
    listeners: list[tuple[asyncio.AbstractEventLoop, Listener]] | None = None,
) -> None:
    """Hand results back: one wake-up per event loop for the whole batch, not one per write.  Listeners
    hear of the batch's changes first, in the same wake-up: a caller that awaited its write finds the
    caches already up to date."""
    by_loop: dict[asyncio.AbstractEventLoop, tuple[list[Listener], list[_Outcome]]] = {}
    if changes:
        for loop, listener in listeners or ():
            by_loop.setdefault(loop, ([], []))[0].append(listener)
    for outcome in outcomes:
        waiter = outcome[0]
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), ([], []))[1].append(outcome)
        else:
            _resolve(outcome)
    for loop, (loop_listeners, items) in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve_all, items, loop_listeners, changes or [])


def _resolve_all(items: list[_Outcome], listeners: list[Listener], changes: list[Published]) -> None:
    for listener in listeners:
        try:
            listener(changes)
        except Exception:  # a cache's bug must not keep the writers' callers waiting
            log.exception("a store listener failed")
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
        self.listeners: list[tuple[asyncio.AbstractEventLoop, Listener]] = []
        # Why the last batch could not be committed (None once one has been): health reports it.
        self.failure: str | None = None
        self.busy_since: float | None = None  # when the batch being written began (monotonic)
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
        """Write the batch, then hand back the results (the writer's state is settled first: a caller
        woken by its result sees it)."""
        self.busy_since = time.monotonic()
        try:
            settle = self._commit_batch(batch)
        finally:
            self.busy_since = None
        settle()

    def _commit_batch(self, batch: list[_Item]) -> Callable[[], None]:
        outcomes: list[_Outcome] = []
        try:
            with self._sessions() as session, session.begin():
                changes: list[Published] = session.info.setdefault("changed", [])
                new_jobs = [(work, future) for work, future in batch if isinstance(work, _NewJob)]
                if new_jobs:
                    outcomes.extend(self._insert_jobs(session, new_jobs))
                for work, future in batch:
                    if isinstance(work, _NewJob):
                        continue
                    noted = len(changes)
                    try:
                        with session.begin_nested():
                            outcomes.append((future, work(session), None))
                    except _REFUSALS:
                        # The database's fault, not the request's (full, locked, gone): the rest of the
                        # batch would only wait for the same lock again.  Give up on all of it.
                        raise
                    except Exception as exc:
                        del changes[noted:]  # rolled back: what it noted did not happen
                        outcomes.append((future, None, exc))
        except Exception as exc:  # nothing in the batch is stored
            failure = f"{exc.__class__.__name__}: {_first_line(getattr(exc, 'orig', None) or exc)}"
            if failure != self.failure:  # once per outage, not once per batch
                log.warning("the job database refuses writes: %s", failure)
            self.failure = failure
            failed: list[_Outcome] = [(waiter, None, _unavailable(exc)) for _work, waiter in batch]
            return lambda: _settle(failed)
        if self.failure:
            log.warning("the job database takes writes again")
        self.failure = None
        listeners = list(self.listeners)
        return lambda: _settle(outcomes, changes, listeners)

    @staticmethod
    def _insert_jobs(session: Session, new_jobs: list[tuple[_NewJob, _Waiter]]) -> list[_Outcome]:
        """One multi-row INSERT ... RETURNING for the batch; row by row if that fails (a duplicate id)."""
        statement = insert(JobRow).returning(JobRow.seq, sort_by_parameter_order=True)
        try:
            with session.begin_nested():
                seqs = session.execute(statement, [work.values for work, _ in new_jobs]).scalars().all()
            for (work, _), seq in zip(new_jobs, seqs, strict=True):
                repository.changed(session, repository.record_of(seq, work.values))
            return [(future, seq, None) for (_, future), seq in zip(new_jobs, seqs, strict=True)]
        except _REFUSALS:
            raise  # not a row's fault: trying row by row would only wait for the lock again
        except Exception:
            outcomes: list[_Outcome] = []
            for work, future in new_jobs:
                try:
                    with session.begin_nested():
                        result = session.execute(insert(JobRow).values(**work.values).returning(JobRow.seq))
                        seq = result.scalar_one()
                    repository.changed(session, repository.record_of(seq, work.values))
                    outcomes.append((future, seq, None))
                except Exception as exc:
                    outcomes.append((future, None, exc))
            return outcomes


def _unavailable(exc: BaseException) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"the job database did not take the write ({exc.__class__.__name__}); nothing was changed: try again"
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


class Store:
    """The job database: ``await store.write(fn)`` / ``await store.read(fn)`` with ``fn(session)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = _Writer(self._sessions)

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

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` on the running event loop with what each committed batch changed, in commit
        order (see the module's docstring)."""
        self._writer.listeners.append((asyncio.get_running_loop(), listener))

    @property
    def write_failure(self) -> str | None:
        """Why the last write batch failed, or None when the last one was committed."""
        return self._writer.failure

    def write_stalled(self) -> float:
        """How long the write in progress has taken so far (0 when none is)."""
        began = self._writer.busy_since
        return 0.0 if began is None else time.monotonic() - began

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
