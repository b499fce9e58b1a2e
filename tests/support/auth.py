"""Test-side auth: signing keys, tokens minted as a token service would, a JWKS server, htpasswd.

Written apart from services.gateway.access on purpose (the libtrust key ID included), so a bug
there cannot hide by agreeing with itself here.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

ISSUER = "test-issuer"
SERVICE = "test-registry"
REALM = "https://auth.example.test/token"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_kid(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().replace("=", "")
    groups = [b32[i * 4 : i * 4 + 4] for i in range(len(b32) // 4)]
    return ":".join(groups)


@dataclass
class SigningKey:
    alg: str  # ES256 or RS256
    kid: str = ""
    private: Any = None

    def __post_init__(self) -> None:
        if self.private is None:
            self.private = ec.generate_private_key(ec.SECP256R1()) if self.alg == "ES256" else rsa.generate_private_key(65537, 2048)
        if not self.kid:
            self.kid = libtrust_kid(self.private.public_key())

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def certificate_pem(self) -> bytes:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(self.private, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.ECAlgorithm if self.alg == "ES256" else jwt.algorithms.RSAAlgorithm
        return {**json.loads(algo.to_jwk(self.private.public_key())), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def mint(self, access: list[dict[str, Any]] | None = None, *, kid: str | bool | None = True, **claims: Any) -> str:
        """A token; ``kid=False`` leaves the header without kid, a string overrides it."""
        headers = {} if kid is False else {"kid": self.kid if kid is True else kid}
        return jwt.encode(payload(access, **claims), self.private, algorithm=self.alg, headers=headers)


def payload(access: list[dict[str, Any]] | None = None, **claims: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 5,
        "iat": now - 5,
        "jti": f"t{time.monotonic_ns()}",
        "access": access or [],
    }
    body.update(claims)
    return {k: v for k, v in body.items() if v is not None}


def repo_access(name: str, *actions: str) -> dict[str, Any]:
    return {"type": "repository", "name": name, "actions": list(actions)}


def hs256_token(secret: bytes, kid: str, access: list[dict[str, Any]] | None = None) -> str:
    """The algorithm-confusion attack: HMAC keyed with the (public) verification key."""
    signing_input = (
        f"{b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{b64url(json.dumps(payload(access)).encode())}"
    )
    return f"{signing_input}.{b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def unsigned_token(kid: str, access: list[dict[str, Any]] | None = None) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{b64url(json.dumps(payload(access)).encode())}."


@dataclass
class JWKSServer:
    """Serves ``document`` as JSON at /jwks.json from a thread; counts the fetches."""

    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    hits: int = 0

    def start(self) -> JWKSServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's naming
                server.hits += 1
                body = json.dumps(server.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"

    def publish(self, *keys: SigningKey) -> None:
        self.document = {"keys": [k.jwk() for k in keys]}

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def write_htpasswd(path: Path, users: dict[str, str], rounds: int = 4) -> None:
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds)).decode()}" for user, pw in users.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
