"""Requests the HTTP parser itself refuses (a negative or non-numeric Content-Length, a broken
header) still get the registry's JSON error envelope rather than uvicorn's plain-text 400."""

from __future__ import annotations

import json

from services.common.errors import UNSUPPORTED, RegistryError

_BODY = json.dumps(
    {"errors": [RegistryError(UNSUPPORTED, {"reason": "malformed HTTP request (a header or Content-Length is invalid)"}).to_json()]}
).encode()


def protocol_class() -> type | str:
    """uvicorn's httptools protocol with a JSON 400; "auto" when httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError:
        return "auto"

    class RegistryHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            head = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                head.extend([name, b": ", value, b"\r\n"])
            head.extend(
                [
                    b"content-type: application/json\r\n",
                    b"docker-distribution-api-version: registry/2.0\r\n",
                    b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
                    b"connection: close\r\n\r\n",
                    _BODY,
                ]
            )
            self.transport.write(b"".join(head))
            self.transport.close()

    return RegistryHttpToolsProtocol
