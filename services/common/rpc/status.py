"""Registry errors across gRPC: the blobstore aborts with a status and the code's name, the
gateway turns that back into the same RegistryError. One mapping, used by both sides."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

import grpc

from services.common import errors
from services.common.errors import RegistryError

log = logging.getLogger("berth.rpc")

ERROR_KEY = "berth-error"
DETAIL_KEY = "berth-detail"

_GRPC_CODE_FOR_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    416: grpc.StatusCode.OUT_OF_RANGE,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def abort(context: grpc.ServicerContext, error: RegistryError) -> None:
    """Ends the call with ``error``; never returns."""
    metadata = [(ERROR_KEY, error.code.name)]
    if error.detail is not None:
        metadata.append((DETAIL_KEY, json.dumps(error.detail)))
    context.set_trailing_metadata(tuple(metadata))
    context.abort(_GRPC_CODE_FOR_STATUS.get(error.code.status, grpc.StatusCode.UNKNOWN), error.message)


def from_rpc_error(code: grpc.StatusCode | None, trailing: Iterable[tuple[str, str | bytes]] | None, message: str) -> RegistryError:
    """The RegistryError a failed call carried; UNAVAILABLE when the blobstore could not be reached."""
    meta = dict(trailing or ())
    name = meta.get(ERROR_KEY)
    if isinstance(name, str):
        detail = None
        raw = meta.get(DETAIL_KEY)
        if isinstance(raw, str):
            try:
                detail = json.loads(raw)
            except ValueError:
                detail = raw
        return RegistryError(errors.lookup(name), detail)
    # gRPC's own message names internal addresses: it goes to the log, not to clients.
    log.warning("blobstore call failed: %s %s", code, message)
    # UNAUTHENTICATED without a registry code: the blobstore refused this gateway's credentials (a
    # deployment error the log names); clients see the service as unavailable.
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED):
        return RegistryError(errors.UNAVAILABLE, {"service": "blobstore"})
    return RegistryError(errors.UNKNOWN, {"service": "blobstore"})
