"""The index's schema is created on first open, kept on later ones, migrated forward exactly once,
and refused when a newer Berth wrote it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.search import database
from services.search.index import Index
from services.search.schema import MIGRATIONS, SchemaError, current_version, migrate, version
from tests.search.helpers import names, push
from tests.support.processes import ROOT


def _version(url: str) -> int:
    engine = database.create_engine(url)
    try:
        with engine.connect() as conn:
            return current_version(conn)
    finally:
        engine.dispose()


def test_first_open_creates_the_schema_and_the_folder(database_url: str) -> None:
    index = Index.open(database_url)
    try:
        assert _version(database_url) == len(MIGRATIONS) == 1
        with index.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(version)).scalar() == 1
        if database_url.startswith("sqlite"):
            assert Path(sa.make_url(database_url).database or "").is_file()
    finally:
        index.close()


def test_reopening_keeps_the_data_and_the_version(database_url: str) -> None:
    index = Index.open(database_url)
    push(index, "kept/repo", "still here")
    index.close()
    again = Index.open(database_url)
    try:
        assert names(again, "still here") == ["kept/repo"]
        assert _version(database_url) == 1
    finally:
        again.close()


def test_a_new_migration_runs_once_and_in_order(database_url: str) -> None:
    Index.open(database_url).close()
    ran: list[str] = []

    def add_column(conn: Connection) -> None:
        ran.append("v2")
        conn.exec_driver_sql("ALTER TABLE repositories ADD COLUMN stars INTEGER NOT NULL DEFAULT 0")

    engine = database.create_engine(database_url)
    try:
        assert migrate(engine, [*MIGRATIONS, add_column]) == 2
        assert migrate(engine, [*MIGRATIONS, add_column]) == 2
        assert ran == ["v2"]
        assert "stars" in {c["name"] for c in sa.inspect(engine).get_columns("repositories")}
        with engine.connect() as conn:
            assert current_version(conn) == 2
    finally:
        engine.dispose()


def test_a_failed_migration_leaves_the_old_version(database_url: str) -> None:
    Index.open(database_url).close()

    def broken(conn: Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE repositories ADD COLUMN half INTEGER")
        raise RuntimeError("boom")

    engine = database.create_engine(database_url)
    try:
        with pytest.raises(RuntimeError):
            migrate(engine, [*MIGRATIONS, broken])
        with engine.connect() as conn:
            assert current_version(conn) == 1
        if engine.dialect.name == "postgresql":  # DDL is transactional there: no half-migrated table
            assert "half" not in {c["name"] for c in sa.inspect(engine).get_columns("repositories")}
    finally:
        engine.dispose()


def test_a_database_from_a_newer_berth_is_refused(database_url: str, tmp_path: Path) -> None:
    Index.open(database_url).close()
    engine = database.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(version.update().values(version=99))
    engine.dispose()
    with pytest.raises(SchemaError, match="99"):
        Index.open(database_url)
    # The service refuses to start, saying why, with exit code 2.
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "search"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REGISTRY_SEARCH_DATABASE": database_url, "REGISTRY_SEARCH_ADDR": "127.0.0.1:1"},
    )
    assert result.returncode == 2, result.stderr
    assert "schema version 99" in result.stderr
