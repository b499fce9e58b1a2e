"""One page of search results, best first, without sorting every match.

Results rank in tiers — name starts with the query (the exact name sorts first in it, being the
shortest such name), name contains it, only the description does — and by name within a tier.
The counts say which tiers a page falls in; each needed tier is then read in name order, either
by walking the index of visible names and testing each row (cheap when the tier is dense: few rows
are skipped) or by sorting the tier's candidates from the trigram index (cheap when it is sparse).
So a broad query never sorts its tens of thousands of matches just to show 25 of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from services.common.search_query import SearchQuery
from services.search import textmatch
from services.search.schema import repositories
from services.search.textmatch import LikeMatch, name_contains, text_contains

R = repositories.c
VISIBLE = textmatch.VISIBLE
# Above any character: [q, q + TOP) is every string that starts with q, compared bytewise.
TOP = "\U0010ffff"


@dataclass(frozen=True)
class Tier:
    count: int
    where: ColumnElement[bool]
    # Ids of the tier's candidates from a trigram index, when there is one.
    candidates: sa.Select[tuple[int]] | None = None


def _count(conn: Connection, *where: ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(repositories).where(VISIBLE, *where)).scalar_one())


def _read(conn: Connection, tier: Tier, offset: int, limit: int, population: int) -> list[tuple[str, str]]:
    """``limit`` rows of the tier from ``offset``, in name order, by the cheaper of two plans."""
    stmt = sa.select(R.name, R.description).where(VISIBLE, tier.where)
    # Walking names in order visits about (offset + limit) * population / count rows; sorting the
    # candidates handles count rows.
    order: ColumnElement[str] = R.name_lower
    if tier.count < (offset + limit) * population / max(tier.count, 1):
        if tier.candidates is not None:
            stmt = stmt.where(R.id.in_(tier.candidates))
        # Sort the tier's rows: an expression no index provides keeps the planner from walking the
        # name index instead (PostgreSQL estimates LIKE matches poorly and would, 10x slower).
        order = R.name_lower.concat("")
    rows = conn.execute(stmt.order_by(order).limit(limit).offset(offset)).all()
    return [(name, description) for name, description in rows]


def search(conn: Connection, text: LikeMatch, query: SearchQuery, q: str) -> tuple[int, list[tuple[str, str]]]:
    """(number of matches, this page's (name, description) pairs) for the lowered query ``q``."""
    if not q:
        total = _count(conn)
        page = conn.execute(
            sa.select(R.name, R.description).where(VISIBLE).order_by(R.name_lower).limit(query.n).offset(query.offset)
        ).all()
        return total, [(name, description) for name, description in page]

    anywhere, in_name = text.counts(conn, q)
    if anywhere <= query.offset:
        return anywhere, []
    starts = sa.and_(R.name_lower >= q, R.name_lower < q + TOP)
    prefixed = _count(conn, starts)
    tiers = [
        Tier(prefixed, starts),
        Tier(in_name - prefixed, sa.and_(name_contains(q), sa.not_(starts)), text.candidates(q, "name")),
        Tier(anywhere - in_name, sa.and_(text_contains(q), sa.not_(name_contains(q))), text.candidates(q, "description only")),
    ]
    # An upper bound of the visible repositories, read from the primary key alone.
    population = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(R.id), 0))).scalar_one())
    rows: list[tuple[str, str]] = []
    offset, wanted = query.offset, query.n
    for tier in tiers:
        if wanted <= 0:
            break
        if offset >= tier.count:
            offset -= tier.count
            continue
        found = _read(conn, tier, offset, min(wanted, tier.count - offset), population)
        rows += found
        wanted -= len(found)
        offset = 0
    return anywhere, rows
