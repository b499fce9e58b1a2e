"""Custom search backends: ``search_backend: my.search.module`` serves that module's ``Index``.

This follows the classic docker-registry: "If search_backend is neither empty nor one of the
supported backends, it should point to a module. The module is imported, and an instance of its
Index class is used as the search backend." The module is imported and ``Index()`` made once, when
the search service starts. A backend that cannot be loaded stops the service then, with a ConfigError naming
``search_backend`` and the module, instead of failing every search later. ``berth config check``
runs the same import (without making an ``Index``).

The interface is as small as the classic one, so that an index is a few lines to write. It needs
``results`` and nothing else, and the service does the rest: pages, Docker Hub's v1 fields, and
reading the registry's events (their shape, and repeated deliveries).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from services.common import search_query
from services.common.config import ConfigError
from services.common.errors import UNAVAILABLE, RegistryError
from services.common.search_query import SearchQuery
from services.search.events import DescribeJob, RecentIds, envelope_events, logged_as, read

log = logging.getLogger("berth.search")

# The search_backend values that are no module: no search at all, and Berth's SQL index.
BUILTIN = ("", "sqlalchemy")

Hook = Callable[[str, dict[str, Any]], None]


class CustomIndex(Protocol):
    """What a module's ``Index`` class provides. ``Index()`` is called with no arguments, so the
    index reads its own settings (environment, files).

    ``results(search_term)`` is the classic registry's ``Index.results``. It returns every matching
    repository, best first, as dicts with at least "name" and "description". "star_count",
    "is_official" and "is_automated" are used when present with the right type; any other key
    is dropped. A dict without a name is skipped. ``search_term`` is the query text, already
    cleaned (no control characters, at most 255 characters). It may be "", meaning every
    repository. The service pages the list (``n``, ``page``) itself.

    These optional hooks are called when the class has them, each with the repository name and the
    reference registry's event (a dict: ``event["target"]`` has tag, digest, url and mediaType):

        repository_updated(name, event)   a manifest was pushed with a tag
        repository_deleted(name, event)   a tag (target.tag) or a manifest and every tag pointing
                                          at it (target.digest) was deleted. A registry never says
                                          "the last tag went": an index that hides repositories
                                          without tags keeps track of the tags itself.

    Pulls and blob events are not passed on. Events that do not fit (a malformed name) are skipped,
    and repeated deliveries of an envelope are skipped too. Hooks are called one at a time, in the
    order of each envelope's events. A hook that raises is logged and the rest of the envelope is applied:
    an error answer would make the registry resend the envelope forever. ``results`` runs in
    worker threads, possibly several at once and while a hook runs.
    """

    def results(self, search_term: str) -> list[dict[str, Any]]: ...


def is_custom(backend: str) -> bool:
    return backend not in BUILTIN


def _unusable(backend: str, why: str) -> ConfigError:
    return ConfigError(f"config key 'search_backend': cannot use module {backend!r}: {why}")


def index_class(backend: str) -> type[CustomIndex]:
    """The module's ``Index`` class, checked as far as can be without making one. ConfigError
    naming search_backend and the module when it cannot be imported, or has no such class."""
    try:
        module = importlib.import_module(backend)
    except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raised while it ran
        raise _unusable(backend, f"import failed ({type(exc).__name__}: {exc})") from None
    cls = getattr(module, "Index", None)
    if not isinstance(cls, type):
        raise _unusable(backend, "it has no Index class")
    if not callable(getattr(cls, "results", None)):
        raise _unusable(backend, "its Index class has no results(search_term) method")
    return cls


def check(backend: str) -> None:
    """What ``berth config check`` verifies of search_backend: a module path imports and has a
    usable Index class. The class is not instantiated; only the service does that when it starts."""
    if is_custom(backend):
        index_class(backend)


def load(backend: str) -> CustomIndex:
    """``Index()`` of the module; ConfigError naming search_backend when it cannot be made."""
    cls = index_class(backend)
    try:
        return cls()
    except Exception as exc:  # noqa: BLE001 - any failure of third-party code stops the start the same way
        raise _unusable(backend, f"Index() failed ({type(exc).__name__}: {exc})") from None


def _result(item: Any) -> dict[str, Any] | None:
    """One v1 result, with exactly the SQL index's fields: the backend's values where their type is
    right, the defaults elsewhere. Anything else could break the JSON answer, or clients that
    parse it."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        return None
    shape = search_query.result("", "")
    return {key: item[key] if type(item.get(key)) is type(default) else default for key, default in shape.items()}


class CustomBackend:
    """The service's side of a custom index: pages of v1 results, and events passed to its hooks.
    Its ``search`` and ``apply`` match what the app does with the SQL index."""

    def __init__(self, index: CustomIndex, module: str) -> None:
        self.index = index
        self.module = module
        self.hooks: dict[str, Hook | None] = {
            "push": getattr(index, "repository_updated", None),
            "delete": getattr(index, "repository_deleted", None),
        }
        self.seen = RecentIds()
        self._order = threading.Lock()

    def search(self, query: SearchQuery) -> tuple[int, list[dict[str, Any]]]:
        """(number of matches, this page's results); UNAVAILABLE (503) when the backend fails."""
        try:
            found = [r for r in map(_result, self.index.results(query.q)) if r is not None]
        except Exception:  # third-party code: log it, answer as for any index that is down
            log.exception("search backend %s failed to answer %r", self.module, query.q)
            raise RegistryError(UNAVAILABLE, {"reason": "the search backend failed"}) from None
        return len(found), found[query.offset : query.offset + query.n]

    def apply(self, envelope: Any) -> tuple[int, list[DescribeJob]]:
        """Passes the envelope's events to the hooks; returns how many were taken. There are no
        descriptions to read (``DescribeJob``): a backend that wants them reads target.url itself.
        ValueError when it is not an envelope at all."""
        fresh = envelope_events(envelope, self.seen)
        applied = 0
        with self._order:
            for event in fresh:
                change = read(event)
                hook = self.hooks.get(change.action) if change is not None else None
                if change is None or hook is None:
                    continue
                try:
                    hook(change.repository, event)
                except Exception:  # one failing event must not fail the envelope
                    log.exception(
                        "search backend %s failed on the %s of %s", self.module, change.action, change.repository, extra=logged_as(event)
                    )
                    continue
                applied += 1
        self.seen.remember(fresh)
        return applied, []
