"""The registry's HTTP routes, one module per resource. Order matters: upload routes come before
the blob route so ``blobs/uploads/...`` is never read as a digest."""
from fastapi import APIRouter
from fastapi.routing import APIRoute

from services.gateway.routes import base, blobs, catalog, manifests, referrers, uploads

_MODULES = (base, uploads, blobs, manifests, referrers, catalog)


def router(prefix: str) -> APIRouter:
    top = APIRouter(prefix=prefix)
    for module in _MODULES:
        top.include_router(module.router)
    return top


def allowed_methods(path: str, prefix: str) -> set[str]:
    """Every method some route serves at ``path`` (for the ``Allow`` header of a 405)."""
    if not path.startswith(prefix):
        return set()
    rest = path[len(prefix) :]
    methods: set[str] = set()
    for module in _MODULES:
        for route in module.router.routes:
            if isinstance(route, APIRoute) and route.path_regex.match(rest):
                methods |= route.methods
    return methods
