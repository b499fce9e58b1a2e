"""The registry's HTTP routes, one module per resource. Order matters: upload routes come before
the blob route so ``blobs/uploads/...`` is never read as a digest.

``dependencies`` run before every route: the app passes the access check (services.gateway.access),
which reads the matched route and its path parameters."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.gateway.routes import base, blobs, catalog, manifests, referrers, search, uploads

_MODULES = (base, uploads, blobs, manifests, referrers, catalog, search)


def install(app: FastAPI, prefix: str, dependencies: Sequence[Any] = ()) -> None:
    """Adds every route to the app itself, in order.

    Flat on purpose: nested routers cost a match per level on every request (a sixth of a
    manifest GET's CPU in FastAPI 0.16x).
    """
    for module in _MODULES:
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            app.add_api_route(
                prefix + route.path,
                route.endpoint,
                methods=list(route.methods or ()),
                name=route.name,
                dependencies=list(dependencies),
                response_class=route.response_class,
            )


def allowed_methods(path: str, prefix: str) -> set[str]:
    """Every method some route serves at ``path`` (for the ``Allow`` header of a 405)."""
    if not path.startswith(prefix):
        return set()
    rest = path[len(prefix) :]
    methods: set[str] = set()
    for module in _MODULES:
        for route in module.router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(rest):
                methods |= route.methods or set()
    return methods
