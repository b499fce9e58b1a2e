"""The token service's SQL tables: users, their groups, and refresh tokens.

One database (``token_service.database``, any SQLAlchemy URL; SQLite by default) is shared by the
service and ``berth users ...``, so accounts changed on the command line take effect at the next
login without a restart. Tables are created when missing; SQLite runs in WAL mode so the command
line can write while the service reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from services.common.config import ConfigError

metadata = MetaData()

users = Table(
    "berth_users",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("password_hash", String(128), nullable=False),
    Column("created_at", Integer, nullable=False),
)

user_groups = Table(
    "berth_user_groups",
    metadata,
    Column("user_name", String(128), ForeignKey("berth_users.name", ondelete="CASCADE"), primary_key=True),
    Column("group_name", String(64), primary_key=True),
)

refresh_tokens = Table(
    "berth_refresh_tokens",
    metadata,
    # sha256 of the token: the token itself is never stored.
    Column("token_hash", String(64), primary_key=True),
    Column("account", String(128), nullable=False, index=True),
    Column("service", String(255), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("created_at", Integer, nullable=False),
    Column("expires_at", Integer, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)


def connect(url: str) -> Engine:
    """An engine on ``url`` with the tables in place; ConfigError for an unusable URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"token_service.database: not a database URL: {url!r}") from None
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            path = Path(parsed.database)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # Password and token hashes: readable by the service's user only.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as exc:
                raise ConfigError(f"token_service.database: cannot create {path}: {exc.strerror or exc}") from None
        connect_args = {"timeout": 15, "check_same_thread": False}
    try:
        engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    except Exception as exc:  # noqa: BLE001 - an unknown dialect or a missing driver
        raise ConfigError(f"token_service.database: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise ConfigError(f"token_service.database: cannot open it: {exc.__class__.__name__}: {reason}") from None
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
