"""Mails unhandled exceptions (the classic registry's ``email_exceptions``), without ever making a
request wait for a mail server or flooding an inbox.

``ExceptionMailer`` is a logging handler for ERROR records that carry an exception: a service's own
"unhandled error" line, uvicorn's "Exception in ASGI application", a background task's failure.
``emit`` only renders the mail (the traceback and the request id are at hand then) and queues it; a
daemon thread does the SMTP work. At most one mail leaves per ``interval`` seconds: exceptions in
between are counted, and when the interval is over the most recent of them is mailed with that
count, so a burst costs two mails and nothing is silently lost. An exception logged twice (by the
service, then by uvicorn) is mailed once.

A mail that cannot be sent is logged as a warning (without an exception, so the mailer never mails
about itself) and dropped: mail is the last way to hear about a fault, never a reason for another.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from services.common.config import EmailExceptionsSettings
from services.common.metrics import EXCEPTION_MAILS

log = logging.getLogger("berth.alerts")

# Rendered mails waiting for the thread; beyond it they are counted as suppressed.
QUEUE_SIZE = 100
# Seconds one SMTP conversation may take.
SMTP_TIMEOUT = 10.0
# Seconds a closing handler (process exit) waits for the thread to send what is queued.
CLOSE_WAIT = 5.0

_STOP = object()


def first_report(exc: BaseException, mark: str) -> bool:
    """True the first time ``exc`` is seen under ``mark``. The mark lives on the exception itself,
    so nothing here keeps exceptions (and their frames) alive."""
    if getattr(exc, mark, False):
        return False
    try:
        setattr(exc, mark, True)
    except (AttributeError, TypeError):  # an exception type with __slots__: reported every time
        pass
    return True


@dataclass(frozen=True)
class Alert:
    """What one exception's mail says, captured when it was logged."""

    exc_type: str
    message: str
    logger: str
    request_id: str
    at: datetime
    traceback: str


class ExceptionMailer(logging.Handler):
    def __init__(
        self,
        service: str,
        settings: EmailExceptionsSettings,
        *,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(logging.ERROR)
        self.service = service
        self.settings = settings
        self.hostname = socket.gethostname()
        # STARTTLS verifies the server against the system's CAs unless told otherwise (tests).
        self.tls_context = tls_context
        self.clock = clock
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self._overflow = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or record.name == log.name or not first_report(exc, "_berth_mailed"):
            return
        try:
            alert = self._render(record, exc)
            self._start()
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._lock:
                self._overflow += 1
            EXCEPTION_MAILS.labels("suppressed").inc()
        except Exception:  # noqa: BLE001 - logging's own convention for a handler that failed
            self.handleError(record)

    def _render(self, record: logging.LogRecord, exc: BaseException) -> Alert:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not cost the traceback
            message = str(record.msg)
        assert record.exc_info is not None
        text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
        return Alert(
            exc_type=type(exc).__name__,
            message=message,
            logger=record.name,
            request_id=str(getattr(record, "request_id", "") or ""),
            at=datetime.fromtimestamp(record.created, UTC),
            traceback=text,
        )

    def _start(self) -> None:
        """The thread starts with the first exception: most processes never need it."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=f"exception-mailer:{self.service}", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        interval = self.settings.interval
        last_sent = float("-inf")
        # Exceptions since the last mail that got none, and the most recent of them.
        held, latest = 0, None
        while True:
            wait = max(0.0, last_sent + interval - self.clock()) if latest is not None else None
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None  # the interval is over, with exceptions held back
            with self._lock:
                held, self._overflow = held + self._overflow, 0
            if item is _STOP:
                if held:
                    log.warning("%d exceptions were not mailed (at most one mail per %d s)", held, interval)
                return
            if isinstance(item, Alert):
                if self.clock() - last_sent < interval:
                    held, latest = held + 1, item
                    EXCEPTION_MAILS.labels("suppressed").inc()
                    continue
                shown = item
            elif latest is not None and self.clock() - last_sent >= interval:
                shown = latest
            else:
                continue
            last_sent = self.clock()
            self._send(shown, held)
            held, latest = 0, None

    def _send(self, alert: Alert, held: int) -> None:
        """Mails ``alert``, with the count of exceptions held back since the last mail."""
        s = self.settings
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
                if s.smtp_secure:
                    smtp.starttls(context=self.tls_context or ssl.create_default_context())
                if s.smtp_login:
                    smtp.login(s.smtp_login, s.smtp_password)
                smtp.send_message(self.message(alert, held))
        except (OSError, smtplib.SMTPException) as exc:
            EXCEPTION_MAILS.labels("failed").inc()
            log.warning(
                "could not mail a %s to %s at %s:%d: %s: %s",
                alert.exc_type,
                ", ".join(s.to_addr),
                s.smtp_host,
                s.smtp_port,
                type(exc).__name__,
                exc,
            )
            return
        EXCEPTION_MAILS.labels("sent").inc()

    def message(self, alert: Alert, held: int) -> EmailMessage:
        """The mail for ``alert``; ``held`` exceptions since the last mail got none of their own."""
        s = self.settings
        subject = f"[berth] {self.service} on {self.hostname}: {alert.exc_type}"
        if held:
            subject += f" ({held} held back since the last mail)"
        lines = [
            f"{self.service} on {self.hostname} logged an unhandled exception.",
            "",
            f"Time:       {alert.at.isoformat(timespec='seconds').replace('+00:00', 'Z')}",
            f"Service:    {self.service}",
            f"Host:       {self.hostname}",
            f"Request id: {alert.request_id or '(none)'}",
            f"Logger:     {alert.logger}",
            f"Message:    {alert.message}",
        ]
        if held:
            lines.append(
                f"Held back:  {held} exception(s) since the last mail got none of their own (at most one "
                f"mail per {s.interval} s); this one is the most recent"
            )
        lines += ["", alert.traceback]
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = s.from_addr
        msg["To"] = ", ".join(s.to_addr)
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self.hostname or None)
        msg.set_content("\n".join(lines))
        return msg

    def close(self) -> None:
        """Lets the thread send what is queued (bounded by ``CLOSE_WAIT``), then stops it."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=CLOSE_WAIT)
            except queue.Full:
                pass
            thread.join(CLOSE_WAIT)
        super().close()
