"""Engines for the index: SQLite (the default, a file) or PostgreSQL (by URL).

SQLite needs care to be safe with several threads and processes (the service, ``berth search
reindex``): WAL so searches never wait for writes, a busy timeout instead of instant "database is
locked" errors, and ``BEGIN IMMEDIATE`` for write transactions so two writers queue up instead of
deadlocking when both upgrade a read lock. pysqlite's own transaction handling is switched off so
SQLAlchemy's BEGIN is the one that counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool

# Milliseconds a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS = 15_000


def normalise_url(url: str) -> URL:
    """``postgresql://`` and ``postgres://`` use psycopg 3 (the driver Berth ships)."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        # No server-side prepared statements: after a few runs PostgreSQL would switch them to a
        # generic plan, which cannot see that '%a%' is too short for the trigram index and scans
        # all of it (3x slower, measured). Also keeps transaction-mode poolers (pgbouncer) working.
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args={"prepare_threshold": None})
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if in_memory:
        options["poolclass"] = StaticPool
    engine = sa.create_engine(parsed, **options)
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get("berth_write") else "BEGIN")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on error."""
    with engine.connect().execution_options(berth_write=True) as connection, connection.begin():
        yield connection


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection, connection.begin():
        yield connection
