"""The search service's readiness checks (``/_ready``; see ``services.common.health``).

- ``database``: ``SELECT 1`` on the index's database; without it no event is stored and no search
  answered. Only Berth's SQL index has one: a custom ``search_backend`` brings no check.
"""

from __future__ import annotations

from services.common import health
from services.search.index import Index


def checks(index: Index) -> list[health.Check]:
    """The checks for the SQL index; kept beside the other services' so every service's readiness
    is found under the same name."""
    return [health.Check("database", health.sql_check(index.engine))]
