"""The registry's HTTP routes, one module per resource. Order matters: upload routes come before
the blob route so ``blobs/uploads/...`` is never read as a digest."""
from fastapi import APIRouter

from services.gateway.routes import base, blobs, catalog, manifests, referrers, uploads


def router(prefix: str) -> APIRouter:
    top = APIRouter(prefix=prefix)
    for module in (base, uploads, blobs, manifests, referrers, catalog):
        top.include_router(module.router)
    return top
