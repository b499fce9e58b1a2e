"""Every key in the classic and registry:2 translation tables does what its table entry says.

The tables (services/common/config/classic.py and registry2.py) also generate docs/migrating.md,
so this is what keeps the documentation and the code saying the same thing.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.common import config
from services.common.config import classic, registry2
from services.common.config.translation import MISSING, Key, lookup, put

# Other keys some examples need to make a whole, valid configuration.
CONTEXT: dict[str, dict[str, Any]] = {
    "http.tls.certificate": {"http": {"tls": {"key": "/certs/domain.key"}}},
    "http.tls.key": {"http": {"tls": {"certificate": "/certs/domain.crt"}}},
    "storage.s3.accesskey": {"storage": {"s3": {"bucket": "b", "secretkey": "s"}}},
    "storage.s3.secretkey": {"storage": {"s3": {"bucket": "b", "accesskey": "a"}}},
    "storage.cache.blobdescriptor": {"redis": {"addr": "localhost:6379"}},
    "storage.cache.layerinfo": {"redis": {"addr": "localhost:6379"}},
    "s3_access_key": {"s3_secret_key": "s"},
    "s3_secret_key": {"s3_access_key": "a"},
    "boto_host": {"storage": "s3", "s3_bucket": "b"},
    "boto_port": {"storage": "s3", "s3_bucket": "b", "boto_host": "127.0.0.1"},
    "boto_calling_format": {"storage": "s3", "s3_bucket": "b"},
    "storage": {"s3_bucket": "b"},
    "smtp_host": {"to_addr": "ops@example.com"},
    "email_exceptions.smtp_host": {"email_exceptions": {"to_addr": "ops@example.com"}},
    "disable_token_auth": {"standalone": False},
    "index_endpoint": {"standalone": False, "disable_token_auth": True},
}
# Examples whose converted value is not their own (the table says how).
EXAMPLE_OVERRIDES: dict[str, Any] = {"storage.cache.blobdescriptor": "redis", "storage.cache.layerinfo": "redis", "storage": "s3"}
# The value the example becomes under Berth's key, where the schema normalizes it.
EXPECTED: dict[str, Any] = {
    "loglevel": "warning",  # the classic example is "warn"
    "log.level": "warning",
    "http.addr": "0.0.0.0:5000",
    "proxy.ttl": 168 * 3600,
    "storage.maintenance.uploadpurging.age": 72 * 3600,
    "storage.maintenance.uploadpurging.interval": 12 * 3600,
    "email_exceptions.to_addr": ["my@myself.com"],
    "to_addr": ["my@myself.com"],
}


def document(key: Key, dialect: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": "0.1"} if dialect == "registry2" else {}
    for path, value in _context(key).items():
        doc = _deep_merge(doc, {path: value})
    if key.source.startswith("storage.s3."):
        doc = _deep_merge(doc, {"storage": {"s3": {"bucket": "b"}}})
    if key.source.startswith("redis.") and dialect == "registry2":
        doc = _deep_merge(doc, {"storage": {"cache": {"blobdescriptor": "redis"}}, "redis": {"addr": "localhost:6379"}})
    example = EXAMPLE_OVERRIDES.get(key.source, key.example)
    put(doc, key.path, example)
    return doc


def _context(key: Key) -> dict[str, Any]:
    return CONTEXT.get(key.source, {})


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_document(tmp_path: Any, doc: dict[str, Any]) -> config.Settings:
    import yaml

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(doc))
    return config.load(path, environ={})


CASES = [pytest.param(k, "classic", id=f"classic:{k.source}") for k in classic.KEYS] + [
    pytest.param(k, "registry2", id=f"registry2:{k.source}") for k in registry2.KEYS
]


@pytest.mark.parametrize(("key", "dialect"), CASES)
def test_table_entry_matches_the_translation(key: Key, dialect: str, tmp_path: Any) -> None:
    doc = document(key, dialect)
    if key.treatment == "refused":
        with pytest.raises(config.ConfigError) as refused:
            load_document(tmp_path, doc)
        assert key.source.removesuffix(".*") in str(refused.value)
        return
    settings = load_document(tmp_path, doc)
    dumped = settings.model_dump()
    if key.treatment == "warned":
        assert any(w.startswith(key.source.removesuffix(".*")) for w in settings.warnings), settings.warnings
        return
    if key.treatment in ("same", "renamed"):
        value = lookup(dumped, key.target.split("."))
        assert value is not MISSING, f"{key.target} missing from the settings"
        expected = EXPECTED.get(key.source, key.example)
        if key.source == "notifications.endpoints":
            assert [e["name"] for e in value] == ["a"] and value[0]["timeout"] == 1.0
        else:
            assert value == expected, f"{key.source} -> {key.target}: {value!r}"
        return
    # converted: accepted here; what each conversion produces is pinned in test_conversions.py.
    assert key.treatment == "converted"


def test_every_table_entry_documents_what_berth_does() -> None:
    for key in (*classic.KEYS, *registry2.KEYS):
        assert key.treatment in ("same", "renamed", "converted", "warned", "refused")
        if key.treatment in ("renamed",):
            assert key.target, key.source
        if key.treatment in ("warned", "refused"):
            assert key.note, f"{key.source}: a warning or refusal must say why"
    sources = [k.source for k in classic.KEYS] + [k.source for k in registry2.KEYS]
    assert len(sources) == len(set(sources)) + len({k.source for k in classic.KEYS} & {k.source for k in registry2.KEYS})


def test_migrating_doc_tables_are_generated_from_these_tables() -> None:
    from services.common.config import reference

    assert reference.main(["--check"]) == 0, "docs/migrating.md is stale: python -m services.common.config.reference"
    text = reference.DOC.read_text()
    for key in (*classic.KEYS, *registry2.KEYS):
        assert f"| `{key.source}` |" in text
