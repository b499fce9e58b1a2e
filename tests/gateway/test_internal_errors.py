"""An unexpected failure answers the spec's envelope with a generic message and the request id;
what went wrong is in the log under that id, never in the response."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.config import Settings
from services.gateway.app import create_app


def assert_generic_500(r: httpx.Response) -> None:
    assert r.status_code == 500
    request_id = r.headers["x-request-id"]
    assert r.json() == {"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {"request_id": request_id}}]}
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"


def test_an_unhandled_error_in_the_gateway() -> None:
    # Not entered: without its lifespan the app has no blobstore client, so the route fails with an
    # error no handler expects.
    client = TestClient(create_app(Settings.model_validate({"search_backend": ""})), raise_server_exceptions=False)
    assert_generic_500(client.get("/v2/internal/app/tags/list"))


class _Aborted(Exception):
    pass


class _Context:
    """What a gRPC servicer context records of an abort."""

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = dict(metadata)

    def abort(self, code: object, message: str) -> None:
        self.code, self.message = code, message
        raise _Aborted


def test_an_unexpected_blobstore_failure_crosses_grpc_without_its_internals(caplog: pytest.LogCaptureFixture) -> None:
    from services.blobstore.server import _abort_for
    from services.common.rpc.status import from_rpc_error

    context = _Context()
    with pytest.raises(_Aborted):
        try:  # as the servicer wrappers call it: while handling the failure
            raise IsADirectoryError(21, "Is a directory", "/srv/registry/secret/path")
        except IsADirectoryError as exc:
            _abort_for(context, "GetManifest", exc)  # type: ignore[arg-type]
    assert "IsADirectoryError" not in repr(context.metadata) and "/srv/registry" not in repr(context.metadata) + context.message
    error = from_rpc_error(None, tuple(context.metadata.items()), context.message)
    assert error.code.name == "UNKNOWN"
    assert "IsADirectoryError" in caplog.text  # the blobstore's log has it (under the request id)
