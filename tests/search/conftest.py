"""Search fixtures: every index test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is a throwaway cluster (tests/support/postgres.py) started once per session
from Debian's ``postgresql`` package; without its binaries the PostgreSQL runs are skipped, saying
so. Each test gets a database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.search.index import Index
from tests.support.postgres import PostgresCluster, find_bin_dir

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (initdb and pg_ctl under /usr/lib/postgresql/*/bin); "
            "install Debian's postgresql package (make tools does) to run the PostgreSQL half"
        )
    cluster = PostgresCluster(bin_dir).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file (in a folder that does not exist yet), or a new
    PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'not-yet' / 'index.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture()
def index(database_url: str) -> Iterator[Index]:
    opened = Index.open(database_url)
    yield opened
    opened.close()
