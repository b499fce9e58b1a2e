"""Substring matching, and the trigram indexes that keep it fast.

A search must count every match, and a scan of 100,000 rows costs about 20 ms per pass (measured,
SQLite and PostgreSQL alike), so counts come from trigram indexes where the database has them:

- SQLite: ``repository_text``, an FTS5 table with the trigram tokenizer holding the lowered name
  and description of every repository that has tags. Queries of 3 characters or more are phrase
  matches there (column filters give the name-only count); shorter ones fall back to LIKE.
- PostgreSQL: GIN ``gin_trgm_ops`` indexes on ``haystack`` and ``name_lower``, which the planner
  uses for ``LIKE '%q%'`` by itself; without the pg_trgm extension the same LIKE scans.

LIKE patterns are built by SQLAlchemy with ``autoescape`` (``%``, ``_`` and the escape character
are literal) and the text is a bound parameter; FTS5 phrases double their quotes.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from services.search.schema import repositories

log = logging.getLogger("berth.search")

R = repositories.c
FTS_TABLE = "repository_text"
# FTS5's trigram tokenizer cannot match fewer characters than this.
FTS_MIN_QUERY = 3
_fts = sa.table(FTS_TABLE, sa.column("rowid"), sa.column("name"), sa.column("description"))
# Inline 0, not a bound parameter: SQLite uses a partial index only when the query's terms
# visibly imply the index's WHERE.
VISIBLE = R.tag_count > sa.literal_column("0")
# The same test in a form no index serves: a count that reads every row anyway is fastest as a
# plain table scan (through the partial index each row costs a random lookup; 6x slower).
VISIBLE_SCAN = R.tag_count + 0 > sa.literal_column("0")


def name_contains(q: str) -> ColumnElement[bool]:
    return R.name_lower.contains(q, autoescape=True)


def text_contains(q: str) -> ColumnElement[bool]:
    return R.haystack.contains(q, autoescape=True)


class LikeMatch:
    """LIKE over the lowered columns (PostgreSQL; SQLite without FTS5)."""

    def counts(self, conn: Connection, q: str) -> tuple[int, int]:
        """(repositories matching anywhere, those matching in the name), one pass."""
        in_name = sa.func.coalesce(sa.func.sum(sa.case((name_contains(q), 1), else_=0)), 0)
        row = conn.execute(sa.select(sa.func.count(), in_name).where(VISIBLE_SCAN, text_contains(q))).one()
        return int(row[0]), int(row[1])

    def candidates(self, q: str, where: str) -> sa.Select[tuple[int]] | None:
        """Ids matching in ``where`` ("name" or "description only"), when an index can list them."""
        return None

    def sync(self, conn: Connection, repo_id: int) -> None:
        """Brings the index up to date after the repository's row changed."""


class Fts5Match(LikeMatch):
    def _phrase(self, q: str, where: str) -> str:
        phrase = '"' + q.replace('"', '""') + '"'
        if where == "name":
            return f"name : {phrase}"
        if where == "description only":
            return f"description : {phrase} NOT name : {phrase}"
        return phrase

    def _match(self, q: str, where: str) -> ColumnElement[bool]:
        return sa.literal_column(FTS_TABLE).op("MATCH")(sa.bindparam("phrase", self._phrase(q, where)))

    def counts(self, conn: Connection, q: str) -> tuple[int, int]:
        if len(q) < FTS_MIN_QUERY:
            return super().counts(conn, q)
        count = sa.select(sa.func.count()).select_from(_fts)
        anywhere = conn.execute(count.where(self._match(q, "anywhere"))).scalar_one()
        in_name = conn.execute(count.where(self._match(q, "name"))).scalar_one()
        return int(anywhere), int(in_name)

    def candidates(self, q: str, where: str) -> sa.Select[tuple[int]] | None:
        if len(q) < FTS_MIN_QUERY:
            return None
        return sa.select(_fts.c.rowid).where(self._match(q, where))

    def sync(self, conn: Connection, repo_id: int) -> None:
        conn.execute(_fts.delete().where(_fts.c.rowid == repo_id))
        conn.execute(_fts.insert().from_select(["rowid", "name", "description"], _text_rows().where(R.id == repo_id)))


def _text_rows() -> sa.Select[tuple[int, str, str]]:
    """What the FTS table holds: visible repositories' lowered name and description."""
    description = sa.func.substr(R.haystack, sa.func.length(R.name_lower) + 2)
    return sa.select(R.id, R.name_lower, description).where(VISIBLE)


def _fill_fts(conn: Connection) -> None:
    conn.execute(_fts.insert().from_select(["rowid", "name", "description"], _text_rows()))


def rebuild(conn: Connection) -> None:
    """Refills the SQLite text index from the table (after rows were written around ``Index``, as
    bulk loads do); PostgreSQL's indexes need nothing."""
    if conn.dialect.name == "sqlite" and sa.inspect(conn).has_table(FTS_TABLE):
        conn.execute(_fts.delete())
        _fill_fts(conn)


def ensure_indexes(conn: Connection) -> LikeMatch:
    """Creates the trigram index this database supports (if missing) and returns the matcher."""
    if conn.dialect.name == "sqlite":
        if not sa.inspect(conn).has_table(FTS_TABLE):
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(name, description, tokenize='trigram')")
            except sa.exc.OperationalError as exc:
                log.warning("SQLite has no FTS5 trigram tokenizer (%s); searches scan the table", exc)
                return LikeMatch()
            _fill_fts(conn)
        return Fts5Match()
    if conn.dialect.name == "postgresql":
        try:
            with conn.begin_nested():
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
                for column in ("haystack", "name_lower"):
                    conn.exec_driver_sql(
                        f"CREATE INDEX IF NOT EXISTS repositories_{column}_trgm ON repositories USING gin ({column} gin_trgm_ops)"
                    )
        except sa.exc.DBAPIError as exc:
            log.warning("no pg_trgm trigram indexes (%s); searches scan the table", str(exc).splitlines()[0])
    return LikeMatch()
