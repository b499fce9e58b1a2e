"""Log setup shared by every service: one line per event, tagged with the service and the request id.

``text`` is the readable line people tail; ``json`` is one object per line for log shippers, with
the same facts as fields (and whatever a call passed in ``extra``). uvicorn's loggers, the access
log included, go through the same handler, so a service writes one format only. ``log.fields``
(registry:2's option: environment, cluster ...) go on every line of either: keys of the JSON
object, `` key=value`` pairs after a text line's message, so lines from several deployments that
end up in one place can be told apart.

The request id is read when the record is made (``_RequestIdFilter`` runs in the thread and task
that logged), not when it is formatted, so handlers that format later elsewhere (the exception
mailer's thread) still see it. A call may name another id with ``extra={"request_id": ...}`` (the
search service does, for the request an event came from).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from services.common import request_ids
from services.common.alerts import ExceptionMailer, first_report
from services.common.config import EmailExceptionsSettings, Settings
from services.common.metrics import EXCEPTIONS

Formatter = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from ``extra``. Also left out:
# what the formatters add, and uvicorn's ``color_message`` (the message again, with ANSI colours).
_NOT_EXTRA = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "request_id",
    "rid",
    "color_message",
}


class _RequestIdFilter(logging.Filter):
    """Stamps the current request id on the record, unless the call named one itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_ids.current()
        return True


class TextFormatter(logging.Formatter):
    """``12:00:01 gateway   INFO    berth.gateway [abc123]: message env=prod`` (no brackets without
    an id; the fields, on the message's line, ahead of any traceback)."""

    def __init__(self, service: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(f"%(asctime)s {service:<9} %(levelname)-7s %(name)s%(rid)s: %(message)s", "%H:%M:%S")
        self.suffix = "".join(f" {key}={_logfmt(value)}" for key, value in (fields or {}).items())

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging.Formatter's name
        rid = getattr(record, "request_id", "")
        record.rid = f" [{rid}]" if rid else ""
        return super().formatMessage(record) + self.suffix


def _logfmt(value: str) -> str:
    """The value as it is, or quoted (logfmt's way) when it is empty or a space, quote, ``=`` or
    line break would blur where it ends."""
    return json.dumps(value, ensure_ascii=False) if not value or any(c in value for c in ' "=\t\r\n') else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, request_id, exc_info,
    extras, then the configured fields (what a record says itself wins over them)."""

    def __init__(self, service: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.service = service
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "")
        if rid:
            out["request_id"] = rid
        if record.exc_info and not record.exc_text:
            # Cached on the record, as logging.Formatter does, so several handlers format it once.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _NOT_EXTRA and key not in out:
                out[key] = value
        for key, value in self.fields.items():
            out.setdefault(key, value)
        return json.dumps(out, default=str, ensure_ascii=False)


class _ExceptionCounter(logging.Handler):
    """Counts logged exceptions (``berth_unhandled_exceptions_total``), each exception once even
    when it is logged twice (a service's own handler, then uvicorn's "Exception in ASGI application")."""

    def __init__(self, service: str) -> None:
        super().__init__(logging.ERROR)
        self.counter = EXCEPTIONS.labels(service)

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and first_report(exc, "_berth_counted"):
            self.counter.inc()


# What the last ``setup`` installed.
_installed: list[logging.Handler] = []


def formatter_for(service: str, formatter: Formatter, fields: Mapping[str, str] | None = None) -> logging.Formatter:
    return JsonFormatter(service, fields) if formatter == "json" else TextFormatter(service, fields)


def setup(
    service: str,
    level: str,
    *,
    formatter: Formatter = "text",
    email: EmailExceptionsSettings | None = None,
    fields: Mapping[str, str] | None = None,
) -> None:
    """Routes every log record of the process to stderr in ``formatter``'s shape, at ``level``,
    with ``fields`` on every line; mails exceptions when ``email`` names an SMTP host."""
    request_id = _RequestIdFilter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(service, formatter, fields))
    handlers: list[logging.Handler] = [handler, _ExceptionCounter(service)]
    if email is not None and email.smtp_host:
        handlers.append(ExceptionMailer(service, email))
    for h in handlers:
        h.addFilter(request_id)
    root = logging.getLogger()
    for old in _installed:  # a second setup (tests) stops the first one's mail thread
        old.close()
    _installed[:] = handlers
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # uvicorn's access log is our request log; its own handlers would print everything twice.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx logs every request it makes at INFO (webhook deliveries, search forwarding); the
    # services log what matters about those themselves.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def configure(service: str, settings: Settings) -> None:
    """``setup`` with everything the configuration says about logs (level, format, mails)."""
    setup(service, settings.loglevel, formatter=settings.log.formatter, email=settings.email_exceptions, fields=settings.log.fields)
