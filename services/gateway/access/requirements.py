"""Which access each route needs, after the Docker token spec and the reference registry.

Looked up by the matched route's path template (as written in the route modules) and the method,
so the route modules themselves know nothing about auth. A route or method missing here fails
closed: repository routes then need ``*`` on the repository, others need valid credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

from starlette.requests import Request

from services.common import names
from services.gateway.access.model import Access

log = logging.getLogger("berth.gateway.access")

PULL = ("pull",)
PUSH = ("pull", "push")
DELETE = ("delete",)
EVERY = ("*",)

OPEN = None  # no credentials asked, ever
AUTHENTICATED: tuple[Access, ...] = ()  # any valid credentials, no scope
IF_SENT: Literal["if-sent"] = "if-sent"  # credentials checked when the request has any; never asked
Requirement = tuple[Access, ...] | Literal["if-sent"] | None

# Routes under /v2/<name>/..., by template: method -> actions on repository:<name>.
REPOSITORY_ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "/v2/{name:path}/blobs/{digest}": {"GET": PULL, "HEAD": PULL, "DELETE": DELETE},
    "/v2/{name:path}/blobs/uploads/": {"POST": PUSH},
    "/v2/{name:path}/blobs/uploads/{upload_id}": dict.fromkeys(("GET", "HEAD", "PATCH", "PUT", "DELETE"), PUSH),
    "/v2/{name:path}/manifests/{reference}": {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "DELETE": DELETE},
    "/v2/{name:path}/tags/list": {"GET": PULL, "HEAD": PULL},
    "/v2/{name:path}/referrers/{digest}": {"GET": PULL, "HEAD": PULL},
}

# Every other route: the access it needs (None: open).
OTHER_ROUTES: dict[str, Requirement] = {
    "/": OPEN,
    "/_ping": OPEN,
    "/v1/_ping": OPEN,
    "/v2/": AUTHENTICATED,
    "/v2/_catalog": (Access("registry", "catalog", "*"),),
    # Anyone may search; the identity (anonymous without credentials) decides what results show.
    "/v1/search": IF_SENT,
}

_KNOWN = set(REPOSITORY_ROUTES) | set(OTHER_ROUTES)
_MOUNT_TEMPLATE = "/v2/{name:path}/blobs/uploads/"
_warned: set[str] = set()


def needed(request: Request, prefix: str) -> Requirement:
    """The access ``request`` needs (empty: just valid credentials; None: none at all; IF_SENT:
    credentials are checked if the request carries any).

    Repository names are checked first (NAME_INVALID), so nothing unchecked reaches a challenge.
    """
    path = getattr(request.scope.get("route"), "path", None)
    if not isinstance(path, str):
        return AUTHENTICATED
    # Depending on the FastAPI version the matched route is the module's own (path as written) or
    # a copy made by include_router (path with the prefix).
    template = path
    if prefix and path.startswith(prefix) and path not in _KNOWN:
        template = path[len(prefix) :] or "/"
    return for_template(template, request.method, request.path_params, request.query_params)


def for_template(template: str, method: str, path_params: Mapping[str, object], query: Mapping[str, str]) -> Requirement:
    if template in OTHER_ROUTES:
        return OTHER_ROUTES[template]
    name = path_params.get("name")
    if not isinstance(name, str):
        _warn_once(template, "route has no access rule; asking for credentials only")
        return AUTHENTICATED
    names.check_name(name)
    actions = REPOSITORY_ROUTES.get(template, {}).get(method)
    if actions is None:
        _warn_once(f"{method} {template}", "route has no access rule; asking for '*' on the repository")
        actions = EVERY
    result = [Access("repository", name, action) for action in actions]
    if template == _MOUNT_TEMPLATE and method == "POST":
        source = query.get("from") if query.get("mount") else None
        if source:
            names.check_name(source)
            result.append(Access("repository", source, "pull"))
    return tuple(result)


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s: %s", key, message)
