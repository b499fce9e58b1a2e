"""What `berth config check` hides (services/common/redact.py)."""

from __future__ import annotations

import pytest

from services.common.redact import MASK, redact, url_without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://berth:secret@postgres:5432/berth", f"postgresql+psycopg://berth:{MASK}@postgres:5432/berth"),
        # SQLAlchemy takes these unescaped; urlsplit would find no password and print it whole.
        ("postgresql://u:pa/ss?x#y@db/x", f"postgresql://u:{MASK}@db/x"),
        ("sqlite:///./data/users.db", "sqlite:///./data/users.db"),
        ("http://user@host/path", "http://user@host/path"),
        ("http://example.com/a@b", "http://example.com/a@b"),
    ],
)
def test_passwords_in_urls_are_masked(url: str, shown: str) -> None:
    assert url_without_password(url) == shown


def test_secrets_by_key_name_and_empty_values_stay_visible() -> None:
    shown = redact(
        {
            "blobstore": {"token": "t" * 20, "addr": "0.0.0.0:5001"},
            "cache": {"password": ""},
            "email_exceptions": {"smtp_password": "x"},
            "storage": {"s3": {"secretkey": "k", "accesskey": "a"}},
        }
    )
    assert shown == {
        "blobstore": {"token": MASK, "addr": "0.0.0.0:5001"},
        "cache": {"password": ""},
        "email_exceptions": {"smtp_password": MASK},
        "storage": {"s3": {"secretkey": MASK, "accesskey": MASK}},
    }
