"""``n``/``last`` pagination with RFC 5988 ``Link`` headers, for tags and the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request

from services.common.errors import PAGINATION_NUMBER_INVALID, RegistryError

# Never answer with more than this many names at once; a Link header leads on.
MAX_PAGE = 10_000


@dataclass(frozen=True)
class PageRequest:
    n: int | None
    last: str

    @property
    def limit(self) -> int:
        """What to ask the blobstore for (0 = everything)."""
        return MAX_PAGE if self.n is None or self.n > MAX_PAGE else self.n


def page_request(request: Request, default: int | None) -> PageRequest:
    raw = request.query_params.get("n")
    n = default
    if raw is not None and raw != "":
        if not raw.isdigit() or len(raw) > 9:
            raise RegistryError(PAGINATION_NUMBER_INVALID, {"n": raw[:20]})
        n = int(raw)
    return PageRequest(n, request.query_params.get("last", ""))


def link_header(path: str, names: list[str], page: PageRequest) -> dict[str, str]:
    """The ``rel="next"`` link to the page after ``names``."""
    return {"Link": f'<{path}?{urlencode({"n": page.limit, "last": names[-1]})}>; rel="next"'}
