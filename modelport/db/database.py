"""The database handle: one engine, migrated with Alembic on open, SQLite tuned for a single machine.

Nothing waits on the database for long: a SQLite write waits `lock_wait` seconds for another writer's lock, a
PostgreSQL connection `connect_timeout` seconds and a statement `statement_timeout` seconds, and a request
`lock_wait` seconds for a pooled connection. Past those the error is one `unavailable` recognises, which the
gateway answers 503 with `Retry-After`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

from modelport.core.names import database_url

__all__ = ["Database", "failure", "unavailable", "unstorable"]

_MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """A SQLAlchemy engine for `url` (SQLite or PostgreSQL) and the sessions that use it."""

    def __init__(
        self,
        url: str,
        *,
        lock_wait: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float = 10.0,
    ) -> None:
        self.url = database_url(url)
        self.engine: Engine = create_engine(
            self.url,
            pool_pre_ping=True,
            pool_timeout=lock_wait,  # a request waits no longer for a pooled connection than for a lock
            **_engine_options(self.url, lock_wait, connect_timeout, statement_timeout),
        )
        if self.engine.dialect.name == "sqlite":
            busy_ms = round(lock_wait * 1000)
            event.listen(self.engine, "connect", lambda dbapi, record: _sqlite_pragmas(dbapi, busy_ms))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":  # a migration may rewrite a large table: no time limit
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head() -> str | None:
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session for read-modify-writes. SQLite takes its write lock before the first read
        (`BEGIN IMMEDIATE`), so no other writer commits between what is read and what is written;
        PostgreSQL callers lock the rows they read (`FOR UPDATE`)."""
        with self.session() as session:
            if self.dialect == "sqlite":
                session.execute(text("BEGIN IMMEDIATE"))
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot answer now: down or unreachable, a lock or a connection not
    had in time, a statement past its time limit. Not a broken constraint or a bug, which stay errors."""
    if isinstance(error, exc.DBAPIError):
        return error.connection_invalidated or isinstance(error, (exc.OperationalError, exc.InterfaceError))
    return isinstance(error, exc.TimeoutError)  # no pooled connection came free in time


def unstorable(error: BaseException) -> bool:
    """Whether `error` says a value cannot be stored as it is: a NUL character in text (PostgreSQL refuses
    them), a number out of its column's range. The request is at fault, and nothing was written."""
    return isinstance(error, exc.DataError)


def failure(error: BaseException) -> str:
    """The driver's own words for a database error, for the log: without the statement and its parameters."""
    driver = getattr(error, "orig", None) or error
    first_line = str(driver).strip().split("\n", 1)[0]
    return f"{type(driver).__name__}: {first_line}"


def _engine_options(
    url: str, lock_wait: float, connect_timeout: float, statement_timeout: float
) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": lock_wait}}
    limits = {
        "connect_timeout": max(1, round(connect_timeout)),  # libpq counts whole seconds
        "options": f"-c statement_timeout={round(statement_timeout * 1000)}",
    }
    return {"pool_size": 5, "max_overflow": 10, "connect_args": limits}


def _sqlite_pragmas(connection: Any, busy_timeout_ms: int) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cursor.close()
