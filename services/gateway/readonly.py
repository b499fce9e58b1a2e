"""Read-only mode (``storage.maintenance.readonly.enabled``, registry:2's option): while storage is
migrated or checked, every write answers 405 UNSUPPORTED and reads go on as usual.

Enforced by method, as one router-level dependency ahead of the access check (``create_app``), so
a write is refused before anything else happens: no upload session started, no body read, and no
credentials asked for what could not be done anyway. Pulls, listings, referrers and /v1/search are
GET and HEAD only.
"""

from __future__ import annotations

from starlette.requests import Request

from services.common.errors import UNSUPPORTED, RegistryError

READS = frozenset({"GET", "HEAD"})
MESSAGE = "the registry is in read-only mode"


async def refuse_writes(request: Request) -> None:
    """The dependency: UNSUPPORTED (405) for every method that is no read."""
    if request.method not in READS:
        raise RegistryError(UNSUPPORTED, {"reason": "storage.maintenance.readonly.enabled"}, message=MESSAGE)
