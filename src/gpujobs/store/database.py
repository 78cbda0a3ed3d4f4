"""Engine, migrations and the group-commit writer.

Every write goes through one writer thread that commits whatever has queued up in one transaction
(each item in its own savepoint, so one failure spoils nothing else).  That keeps SQLite free of
"database is locked", makes a job durable before its 201 goes out, and lets one fsync serve many
submissions under load.  Reads run on other connections (SQLite in WAL mode lets them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from ..errors import DependencyUnavailable, GpujobsError

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


class _Writer:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._queue: queue.SimpleQueue[tuple[Callable[[Session], Any], concurrent.futures.Future[Any]] | None]
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="gpujobs-store-writer", daemon=True)
        self._thread.start()

    def submit(self, work: Callable[[Session], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((work, future))
        return future

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

    def _commit(self, batch: list[tuple[Callable[[Session], Any], concurrent.futures.Future[Any]]]) -> None:
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            with self._sessions() as session, session.begin():
                for work, future in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((future, work(session), None))
                    except Exception as exc:
                        outcomes.append((future, None, exc))
        except Exception as exc:  # the commit itself failed: nothing in the batch is stored
            failure = DependencyUnavailable(
                f"the job database did not accept the write: {exc.__class__.__name__}"
            )
            for _work, future in batch:
                future.set_exception(failure)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class Store:
    """The job database: ``await store.write(fn)`` / ``await store.read(fn)`` with ``fn(session)``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = _Writer(self._sessions)

    async def write(self, work: Callable[[Session], T]) -> T:
        return await asyncio.wrap_future(self._writer.submit(work))

    def write_sync(self, work: Callable[[Session], T]) -> T:
        return self._writer.submit(work).result()

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
