"""What the index stores per repository (name, tags, last push, pulls, description), and the
entry point of searches.

Writers take a connection from ``writing()`` so one envelope of events is one transaction; every
write that changes what a search could see (tags, description) refreshes the text index
(``textmatch``). Searches are answered by ``ranking``: case-insensitive substring matches over
name and description, ranked exact name, name prefix, name contains, description; only
repositories with at least one tag are found. Query text only ever travels as a bound parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from services.common.search_query import SearchQuery, clean_text
from services.search import database, ranking, textmatch
from services.search.schema import migrate, repositories, tags

R = repositories.c
# Longest description kept; Docker Hub's short descriptions are far shorter.
MAX_DESCRIPTION = 1000


def fold(text: str) -> str:
    """The case-insensitive form of names, descriptions and queries alike."""
    return text.casefold()


@dataclass(frozen=True)
class Repository:
    name: str
    description: str
    tags: dict[str, str]
    last_push: float | None
    pull_count: int


class Index:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        with database.writing(engine) as conn:
            self.text = textmatch.ensure_indexes(conn)

    @classmethod
    def open(cls, url: str) -> Index:
        """Connects and migrates the schema (creating it in an empty database)."""
        engine = database.create_engine(url)
        migrate(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def writing(self) -> Any:
        return database.writing(self.engine)

    # Writes (each takes the transaction's connection)

    def _id(self, conn: Connection, name: str) -> int:
        """The repository's row id, creating the row when it is new."""
        conn.execute(
            self._insert(repositories)
            .values(name=name, name_lower=fold(name), description="", haystack=fold(name), pull_count=0, tag_count=0)
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return int(conn.execute(sa.select(R.id).where(R.name == name)).scalar_one())

    def _recount(self, conn: Connection, repo_id: int) -> None:
        count = sa.select(sa.func.count()).select_from(tags).where(tags.c.repository_id == repo_id).scalar_subquery()
        conn.execute(repositories.update().where(R.id == repo_id).values(tag_count=count))
        self.text.sync(conn, repo_id)

    def tag_pushed(self, conn: Connection, name: str, tag: str, digest: str, at: float | None) -> None:
        repo_id = self._id(conn, name)
        conn.execute(
            self._insert(tags)
            .values(repository_id=repo_id, tag=tag, digest=digest, pushed_at=at)
            .on_conflict_do_update(index_elements=["repository_id", "tag"], set_={"digest": digest, "pushed_at": at})
        )
        if at is not None:
            conn.execute(repositories.update().where(R.id == repo_id, sa.or_(R.last_push.is_(None), R.last_push < at)).values(last_push=at))
        self._recount(conn, repo_id)

    def tag_deleted(self, conn: Connection, name: str, tag: str) -> None:
        repo_id = conn.execute(sa.select(R.id).where(R.name == name)).scalar()
        if repo_id is not None:
            conn.execute(tags.delete().where(tags.c.repository_id == repo_id, tags.c.tag == tag))
            self._recount(conn, repo_id)

    def manifest_deleted(self, conn: Connection, name: str, digest: str) -> None:
        """Every tag of the repository that points at ``digest`` goes."""
        repo_id = conn.execute(sa.select(R.id).where(R.name == name)).scalar()
        if repo_id is not None:
            conn.execute(tags.delete().where(tags.c.repository_id == repo_id, tags.c.digest == digest))
            self._recount(conn, repo_id)

    def pulled(self, conn: Connection, name: str, count: int = 1) -> None:
        repo_id = self._id(conn, name)
        conn.execute(repositories.update().where(R.id == repo_id).values(pull_count=R.pull_count + count))

    def set_description(self, conn: Connection, name: str, description: str, at: float | None) -> bool:
        """Stores the description unless one from a later push is there; True if stored."""
        description = clean_text(description)[:MAX_DESCRIPTION]
        repo_id = self._id(conn, name)
        newer = sa.true() if at is None else sa.or_(R.description_at.is_(None), R.description_at <= at)
        result = conn.execute(
            repositories.update()
            .where(R.id == repo_id, newer)
            .values(description=description, description_at=at, haystack=fold(f"{name}\n{description}"))
        )
        self.text.sync(conn, repo_id)
        return bool(result.rowcount)

    def replace_tags(self, conn: Connection, name: str, found: Mapping[str, str]) -> None:
        """Makes the repository's tags exactly ``found`` (tag -> digest), as a reindex saw them."""
        repo_id = self._id(conn, name)
        conn.execute(tags.delete().where(tags.c.repository_id == repo_id, tags.c.tag.not_in(list(found)) if found else sa.true()))
        for tag, digest in found.items():
            conn.execute(
                self._insert(tags)
                .values(repository_id=repo_id, tag=tag, digest=digest, pushed_at=None)
                .on_conflict_do_update(index_elements=["repository_id", "tag"], set_={"digest": digest})
            )
        self._recount(conn, repo_id)

    def forget_others(self, conn: Connection, present: Iterable[str]) -> int:
        """Drops the tags of every repository not in ``present``; returns how many were hidden."""
        keep = set(present)
        gone = [(rid, name) for rid, name in conn.execute(sa.select(R.id, R.name).where(R.tag_count > 0)) if name not in keep]
        for repo_id, _ in gone:
            conn.execute(tags.delete().where(tags.c.repository_id == repo_id))
            self._recount(conn, repo_id)
        return len(gone)

    # Reads

    def search(self, query: SearchQuery) -> tuple[int, list[tuple[str, str]]]:
        """(number of matches, this page's (name, description) pairs), best first."""
        with database.reading(self.engine) as conn:
            return ranking.search(conn, self.text, query, fold(query.q))

    def repository(self, name: str) -> Repository | None:
        with database.reading(self.engine) as conn:
            row = conn.execute(sa.select(R.id, R.description, R.last_push, R.pull_count).where(R.name == name)).first()
            if row is None:
                return None
            found = conn.execute(sa.select(tags.c.tag, tags.c.digest).where(tags.c.repository_id == row.id))
            # Not dict(found): a Result has keys(), so dict() would take it for a mapping.
            return Repository(
                name,
                row.description,
                {tag: digest for tag, digest in found},  # noqa: C416
                row.last_push,
                row.pull_count,
            )
