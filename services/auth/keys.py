"""The signing key, its certificate, key IDs, and the published JWKS.

- The private key (``token_service.key``, PEM) is generated on first start when absent: P-256 for
  ES256, RSA 2048 for RS256, mode 0600, parent directories created. Creation is race-free (written
  under a temporary name, then hard-linked into place), so two starting replicas end up with one key.
- Next to it, ``<key path>.crt`` is a self-signed certificate of the same key, rewritten when it is
  missing or belongs to another key: the reference Go registry (2.8) only trusts certificates in its
  ``rootcertbundle``.
- ``kid`` is the libtrust key ID, because registry 2.8 looks the verification key up by it: sha256
  of the DER SubjectPublicKeyInfo, first 30 bytes, base32 without padding, 12 groups of 4 joined
  by ':'.
- ``previous_keys`` (PEM files of public keys, private keys or certificates; several blocks per file
  are fine) stay in the JWKS and keep verifying, so tokens signed before a rotation remain valid.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from services.common.config import ConfigError, TokenServiceSettings
from services.common.key_ids import libtrust_key_id

log = logging.getLogger("berth.auth.keys")

PublicKeyType = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyType = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_CERT_YEARS = 10


@dataclass(frozen=True)
class PublicKey:
    """A key tokens may be verified with."""

    kid: str
    alg: str
    key: PublicKeyType

    def jwk(self) -> dict[str, Any]:
        # The key's own type picks the algorithm (alg is algorithm_of(key)): one the type checker follows.
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            fields = jwt.algorithms.ECAlgorithm.to_jwk(self.key, as_dict=True)
        else:
            fields = jwt.algorithms.RSAAlgorithm.to_jwk(self.key, as_dict=True)
        return {"kid": self.kid, "alg": self.alg, "use": "sig", **fields}


@dataclass(frozen=True)
class SigningKey:
    private: PrivateKeyType
    public: PublicKey
    path: Path
    certificate_path: Path


@dataclass(frozen=True)
class KeySet:
    """The current signing key and every key whose signatures are still accepted, by kid."""

    signing: SigningKey
    trusted: dict[str, PublicKey]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.trusted.values()]}


def algorithm_of(key: PublicKeyType) -> str:
    """ES256 for P-256 keys, RS256 for RSA keys of 2048 bits or more; ValueError otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"EC keys must be on P-256 for ES256 (this one is on {key.curve.name})")
        return "ES256"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"RSA keys must have 2048 bits or more (this one has {key.key_size})")
        return "RS256"
    raise ValueError(f"unsupported key type {type(key).__name__} (ES256 or RS256 only)")


def public_key(key: PublicKeyType) -> PublicKey:
    return PublicKey(libtrust_key_id(key), algorithm_of(key), key)


def load(settings: TokenServiceSettings) -> KeySet:
    """The key set the service signs and verifies with; ConfigError names what is wrong."""
    signing = load_or_create(Path(settings.key), settings.algorithm, settings.issuer)
    trusted = {signing.public.kid: signing.public}
    for index, path in enumerate(settings.previous_keys):
        try:
            for key in load_public_keys(Path(path)):
                trusted.setdefault(key.kid, key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"token_service.previous_keys[{index}] ({path}): {exc}") from None
    return KeySet(signing, trusted)


def load_or_create(path: Path, algorithm: str, issuer: str) -> SigningKey:
    try:
        if not path.exists():
            _create_private_key(path, algorithm)
        private = _load_private_key(path)
        public = public_key(private.public_key())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"token_service.key ({path}): {exc}") from None
    if public.alg != algorithm:
        raise ConfigError(
            f"token_service.key ({path}) is a {public.alg} key but token_service.algorithm is "
            f"{algorithm}: change the algorithm, or move the key away to generate a new one"
        )
    if path.stat().st_mode & 0o077:
        log.warning("signing key %s is readable by other users (mode %o); chmod 600 it", path, path.stat().st_mode & 0o777)
    certificate_path = certificate_path_for(path)
    try:
        _ensure_certificate(certificate_path, private, issuer)
    except OSError as exc:
        raise ConfigError(f"token_service.key: cannot write the certificate {certificate_path}: {exc}") from None
    return SigningKey(private, public, path, certificate_path)


def certificate_path_for(key_path: Path) -> Path:
    """``signing-key.pem`` -> ``signing-key.crt`` (never the key's own path)."""
    candidate = key_path.with_suffix(".crt")
    return candidate if candidate != key_path else key_path.with_name(key_path.name + ".crt")


def load_public_keys(path: Path) -> list[PublicKey]:
    """Every key in a PEM file of certificates, public keys and/or (unencrypted) private keys."""
    data = path.read_bytes()
    keys = []
    for block in _PEM_BLOCK.finditer(data):
        label, pem = block.group(1), block.group(0)
        if label == b"CERTIFICATE":
            key: Any = x509.load_pem_x509_certificate(pem).public_key()
        elif label == b"PUBLIC KEY":
            key = serialization.load_pem_public_key(pem)
        elif label.endswith(b"PRIVATE KEY"):
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        else:
            continue
        keys.append(public_key(key))
    if not keys:
        raise ValueError("no certificate, public key or private key in the file")
    return keys


def _load_private_key(path: Path) -> PrivateKeyType:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except TypeError:
        raise ValueError("the key is encrypted; Berth needs an unencrypted PEM key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"unsupported key type {type(key).__name__} (ES256 or RS256 only)")
    return key


def _create_private_key(path: Path, algorithm: str) -> None:
    key: PrivateKeyType = ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else rsa.generate_private_key(65537, 2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process created the key meanwhile: theirs wins
            log.warning("generated a new %s signing key %s (kid %s)", algorithm, path, libtrust_key_id(key.public_key()))
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _ensure_certificate(path: Path, private: PrivateKeyType, issuer: str) -> None:
    """Writes a self-signed certificate of the key unless one of the same key is already there."""
    wanted = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        current = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
        if current.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == wanted:
            return
    except (OSError, ValueError):
        pass
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{issuer} token signing key"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * _CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
        .sign(private, hashes.SHA256())
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    log.info("wrote the signing key's certificate %s (for registry:2's rootcertbundle)", path)
