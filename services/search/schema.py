"""The index's tables and their schema version, migrated when the index is opened.

As the classic registry's search index did, a one-row ``version`` table says which schema the
database holds; ``MIGRATIONS[i]`` takes it from version ``i`` to ``i + 1`` inside one transaction,
so a database is never left half-migrated. A database newer than this code is refused rather than
guessed at. (Version 1 creates the tables as defined below; a later change to them must freeze
version 1's definition and add a migration.)

Why these columns: ``name_lower`` (bytewise ordered, "C" collation on PostgreSQL) serves exact and
prefix matches and name order through a partial index over repositories that have tags (the only
ones search shows); ``haystack`` is the lowered "name\ndescription" a text match reads;
``tag_count`` makes "has tags" a column test rather than a join. Substring matching is indexed by
trigrams: an FTS5 table on SQLite, pg_trgm GIN indexes on PostgreSQL, made by
``textmatch.ensure_indexes`` on every open rather than by a migration, because whether they can
exist depends on the server (its SQLite build, the pg_trgm extension), not on this schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from services.search.database import writing

metadata = sa.MetaData()

# Compared byte by byte everywhere, so prefix ranges and name order agree between databases.
_NAME = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("name_lower", _NAME, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("haystack", sa.Text, nullable=False),
    # Push time (epoch seconds) of the image the description was read from: an older image's
    # description, fetched late, never replaces a newer one's.
    sa.Column("description_at", sa.Float, nullable=True),
    sa.Column("last_push", sa.Float, nullable=True),
    sa.Column("pull_count", sa.Integer, nullable=False, default=0),
    sa.Column("tag_count", sa.Integer, nullable=False, default=0),
)
sa.Index(
    "repositories_visible_names",
    repositories.c.name_lower,
    sqlite_where=repositories.c.tag_count > 0,
    postgresql_where=repositories.c.tag_count > 0,
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(128), primary_key=True),
    sa.Column("digest", sa.String(200), nullable=False),
    sa.Column("pushed_at", sa.Float, nullable=True),
    sa.Index("tags_by_digest", "repository_id", "digest"),
)

version = sa.Table("version", metadata, sa.Column("version", sa.Integer, nullable=False))


class SchemaError(Exception):
    """The database holds a schema this code cannot use."""


def _create_v1(connection: Connection) -> None:
    metadata.create_all(connection, tables=[repositories, tags])


Migration = Callable[[Connection], None]
MIGRATIONS: Sequence[Migration] = (_create_v1,)

# Any constant: serialises migrations of concurrent starters on PostgreSQL.
_PG_LOCK_KEY = 0x62657274


def current_version(connection: Connection) -> int:
    if not sa.inspect(connection).has_table("version"):
        return 0
    return connection.execute(sa.select(version.c.version)).scalar() or 0


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Brings the database to the latest version; returns it. SchemaError if it is newer."""
    with writing(engine) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        found = current_version(connection)
        latest = len(migrations)
        if found > latest:
            raise SchemaError(f"the search index is at schema version {found}, newer than this Berth knows ({latest})")
        for number in range(found, latest):
            migrations[number](connection)
        if found == 0:
            version.create(connection, checkfirst=True)
            connection.execute(version.insert().values(version=latest))
        elif found != latest:
            connection.execute(version.update().values(version=latest))
        return latest
