"""email_exceptions against a real SMTP server (aiosmtpd, started here): one mail per interval at
most with the held-back count in the next, one mail per exception however often it is logged,
login and STARTTLS, a mail server that is down or silent never holding up the code that logged,
and a real service process mailing its unhandled exceptions."""

from __future__ import annotations

import datetime
import email
import email.policy
import ipaddress
import logging
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from services.common import logs, request_ids
from services.common.alerts import ExceptionMailer
from services.common.config import EmailExceptionsSettings
from tests.support.processes import Berth, free_port

HOST = socket.gethostname()


class Inbox:
    """aiosmtpd's handler: keeps every message, and whether it came over TLS."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.tls: list[bool] = []
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._changed:
            self.messages.append(message)  # type: ignore[arg-type]
            self.tls.append(session.ssl is not None)
            self._changed.notify_all()
        return "250 OK"

    def wait(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.messages) >= count, timeout), (
                f"{len(self.messages)} mails after {timeout} s, expected {count}"
            )
            return list(self.messages)

    def quiet_for(self, seconds: float) -> int:
        """The number of mails after ``seconds`` without waiting for more."""
        time.sleep(seconds)
        with self._changed:
            return len(self.messages)


@pytest.fixture()
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def settings(port: int, **overrides: Any) -> EmailExceptionsSettings:
    return EmailExceptionsSettings(
        **{"smtp_host": "127.0.0.1", "smtp_port": port, "to_addr": ["ops@example.test"], "from_addr": "berth@example.test", **overrides}
    )


def subject(message: EmailMessage) -> str:
    """The subject unfolded (a long one is folded before its first word, leaving a space)."""
    return str(message["Subject"]).strip()


def mails(result: str) -> float:
    return REGISTRY.get_sample_value("berth_exception_mails_total", {"result": result}) or 0.0


def fail(log: logging.Logger, request_id: str) -> None:
    request_ids.adopt(request_id)
    try:
        _ = {}["missing"]
    except KeyError:
        log.exception("unhandled error on GET /v2/x/manifests/latest")


def test_a_burst_is_one_mail_then_one_with_the_count(inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    logs.setup("gateway", "warning", email=settings(port, interval=2))
    log = logging.getLogger("berth.gateway")
    sent, suppressed = mails("sent"), mails("suppressed")

    for n in range(1, 6):
        fail(log, f"req-{n}")
    (first,) = box.wait(1)
    assert box.quiet_for(0.5) == 1, "more than one mail within the interval"
    assert subject(first) == f"[berth] gateway on {HOST}: KeyError"
    assert first["To"] == "ops@example.test" and first["From"] == "berth@example.test"
    body = first.get_content()
    assert "Request id: req-1" in body
    assert f"Host:       {HOST}" in body
    assert "Message:    unhandled error on GET /v2/x/manifests/latest" in body
    assert "Traceback (most recent call last)" in body and "KeyError: 'missing'" in body
    assert "held back" not in body

    # When the interval is over, the most recent of the held-back exceptions comes with the count.
    second = box.wait(2, timeout=5)[1]
    assert subject(second) == f"[berth] gateway on {HOST}: KeyError (4 held back since the last mail)"
    body = second.get_content()
    assert "Request id: req-5" in body
    assert "Held back:  4 exception(s) since the last mail" in body
    assert "KeyError: 'missing'" in body
    assert box.quiet_for(0.5) == 2
    assert mails("sent") == sent + 2
    assert mails("suppressed") == suppressed + 4


def test_an_exception_logged_twice_is_mailed_once(inbox: tuple[Inbox, int]) -> None:
    """The gateway logs its unhandled error, then uvicorn logs "Exception in ASGI application"."""
    box, port = inbox
    logs.setup("gateway", "warning", email=settings(port, interval=0))
    try:
        raise ValueError("bad state")
    except ValueError as exc:
        logging.getLogger("berth.gateway").exception("unhandled error on PUT /v2/a/manifests/v1")
        logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=exc)
    try:
        raise OSError("disk gone")
    except OSError:
        logging.getLogger("berth.gateway").exception("unhandled error on GET /v2/a/manifests/v1")
    first, second = box.wait(2)
    assert box.quiet_for(0.3) == 2
    assert subject(first).endswith(": ValueError") and subject(second).endswith(": OSError")
    assert "Message:    unhandled error on PUT /v2/a/manifests/v1" in first.get_content()
    # Errors without an exception are no mail.
    logging.getLogger("berth.gateway").error("something without a traceback")
    assert box.quiet_for(0.3) == 2


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login() -> None:
    box = Inbox()
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        seen.append((data.login, data.password))
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=(data.login, data.password) == (b"mailer", b"s3cret"), handled=False)

    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticator, auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        good = ExceptionMailer("auth", settings(port, interval=0, smtp_login="mailer", smtp_password="s3cret"))
        bad = ExceptionMailer("auth", settings(port, interval=0, smtp_login="mailer", smtp_password="wrong"))
        failed = mails("failed")
        for mailer in (good, bad):
            log = logging.getLogger(f"test.alerts.login.{id(mailer)}")
            log.propagate = False
            log.addHandler(mailer)
            try:
                raise RuntimeError("token store down")
            except RuntimeError:
                log.exception("unhandled error on GET /token")
            mailer.close()  # waits for the thread to have tried
        (message,) = box.wait(1)
        assert subject(message) == f"[berth] auth on {HOST}: RuntimeError"
        assert (b"mailer", b"s3cret") in seen and (b"mailer", b"wrong") in seen
        assert mails("failed") == failed + 1
    finally:
        controller.stop()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_starttls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=server_context, require_starttls=True)
    controller.start()
    try:
        mailer = ExceptionMailer(
            "search", settings(port, interval=0, smtp_secure=True), tls_context=ssl.create_default_context(cafile=str(cert))
        )
        log = logging.getLogger("test.alerts.starttls")
        log.propagate = False
        log.addHandler(mailer)
        try:
            raise LookupError("x")
        except LookupError:
            log.exception("failed")
        (message,) = box.wait(1)
        assert box.tls == [True]
        assert subject(message).endswith(": LookupError")
        mailer.close()
    finally:
        controller.stop()


def test_a_silent_or_absent_mail_server_never_holds_up_the_caller() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never greets
    port = silent.getsockname()[1]
    mailer = ExceptionMailer("gateway", settings(port, interval=0))
    log = logging.getLogger("test.alerts.silent")
    log.propagate = False
    log.addHandler(mailer)
    try:
        start = time.perf_counter()
        for _ in range(3):
            try:
                raise RuntimeError("x")
            except RuntimeError:
                log.exception("failed")
        assert time.perf_counter() - start < 0.1
    finally:
        silent.close()  # the waiting conversation ends (and fails) now
        mailer.close()

    failed = mails("failed")
    mailer = ExceptionMailer("gateway", settings(free_port(), interval=0))  # nothing listens there
    log.handlers[:] = [mailer]
    try:
        raise RuntimeError("y")
    except RuntimeError:
        log.exception("failed")
    mailer.close()
    assert mails("failed") == failed + 1


def test_a_service_process_mails_its_unhandled_exceptions(inbox: tuple[Inbox, int], tmp_path: Path) -> None:
    """The search service with its database damaged from outside (a table dropped): every search
    fails with an exception no route handles, which the service logs (then uvicorn, once more) and
    the mailer sends, once."""
    box, port = inbox
    berth = Berth(
        tmp_path,
        env={
            "REGISTRY_EMAIL_EXCEPTIONS_SMTP_HOST": "127.0.0.1",
            "REGISTRY_EMAIL_EXCEPTIONS_SMTP_PORT": str(port),
            "REGISTRY_EMAIL_EXCEPTIONS_TO_ADDR": "ops@example.test, oncall@example.test",
            "REGISTRY_EMAIL_EXCEPTIONS_INTERVAL": "3",
        },
    )
    berth.start("search")
    try:
        with sqlite3.connect(berth.data_dir / "search" / "index.db") as db:
            db.execute("DROP TABLE repositories")
        for n in range(1, 6):
            r = httpx.get(f"{berth.search_url}/v1/search", headers={"X-Request-Id": f"boom-{n}"})
            assert r.status_code == 500
            # The client learns the request id, nothing of the failure.
            assert r.json() == {"errors": [{"code": "UNKNOWN", "message": "internal error", "detail": {"request_id": f"boom-{n}"}}]}
        (first,) = box.wait(1)
        assert box.quiet_for(1) == 1
        assert subject(first) == f"[berth] search on {HOST}: OperationalError"
        assert first["To"] == "ops@example.test, oncall@example.test"
        body = first.get_content()
        assert "Request id: boom-1" in body
        assert "Message:    unhandled error on GET /v1/search" in body
        assert "no such table: repositories" in body
        second = box.wait(2, timeout=6)[1]
        assert subject(second) == f"[berth] search on {HOST}: OperationalError (4 held back since the last mail)"
        assert "Request id: boom-5" in second.get_content()
    finally:
        berth.stop()
    log = berth.log("search")
    assert log.count("unhandled error on GET /v1/search") == 5
    assert log.count("Exception in ASGI application") == 5
    assert "[boom-3]" in log
