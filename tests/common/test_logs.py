"""Log lines: the readable text line with the request id, one JSON object per line, the level and
uvicorn's loggers going through the same handler, and exceptions counted once."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

from prometheus_client import REGISTRY

from services.common import config, logs, request_ids


def capture(service: str, formatter: str, level: str = "info", fields: dict[str, str] | None = None) -> io.StringIO:
    """Sets logging up as the services do, with stderr swapped for a buffer."""
    logs.setup(service, level, formatter=formatter, fields=fields)  # type: ignore[arg-type]
    return redirected()


def redirected() -> io.StringIO:
    """The installed handler's stderr swapped for a buffer."""
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    return out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_text_line_names_service_level_logger_and_request_id() -> None:
    out = capture("gateway", "text")
    log = logging.getLogger("berth.gateway")
    log.info("no request here")
    request_ids.adopt("abc123")
    log.warning("pushed %s", "x/y:1")
    first, second = lines(out)
    assert first.endswith(" gateway   INFO    berth.gateway: no request here")
    assert "[" not in first
    assert second.endswith(" gateway   WARNING berth.gateway [abc123]: pushed x/y:1")


def test_json_line_has_the_fields_and_extras() -> None:
    out = capture("search", "json")
    request_ids.adopt("req-1")
    logging.getLogger("berth.search").info("applied %d events", 3, extra={"repository": "a/b", "odd": object()})
    (line,) = lines(out)
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["service"] == "search"
    assert record["logger"] == "berth.search"
    assert record["message"] == "applied 3 events"
    assert record["request_id"] == "req-1"
    assert record["repository"] == "a/b"
    assert record["odd"].startswith("<object object")  # what JSON cannot hold is written as text
    assert record["time"].endswith("Z")
    moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
    assert moment.utcoffset() is not None and moment.utcoffset().total_seconds() == 0
    assert "exc_info" not in record


def test_json_line_carries_the_traceback_and_no_empty_request_id() -> None:
    out = capture("auth", "json")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logging.getLogger("berth.auth").exception("unhandled error on GET /token")
    (line,) = lines(out)  # the traceback stays inside the one line
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert "request_id" not in record
    assert "Traceback (most recent call last)" in record["exc_info"]
    assert "ZeroDivisionError: division by zero" in record["exc_info"]


def test_a_request_id_passed_in_extra_wins() -> None:
    """The search service logs an event under the id of the registry request it came from."""
    out = capture("search", "json")
    request_ids.adopt("post-events-request")
    logging.getLogger("berth.search").info("a/b:v1 pushed", extra={"request_id": "abc123"})
    assert json.loads(lines(out)[0])["request_id"] == "abc123"


def test_level_and_uvicorn_loggers() -> None:
    out = capture("gateway", "json", level="warning")
    logging.getLogger("berth.gateway").info("not shown")
    request_ids.adopt("rid-9")
    # uvicorn's access log, as uvicorn writes it.
    logging.getLogger("uvicorn.access").warning('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "GET", "/v2/", "1.1", 200)
    logging.getLogger("uvicorn.error").error("Exception in ASGI application")
    records = [json.loads(line) for line in lines(out)]
    assert [r["logger"] for r in records] == ["uvicorn.access", "uvicorn.error"]
    assert records[0]["message"] == '127.0.0.1:5555 - "GET /v2/ HTTP/1.1" 200'
    assert all(r["request_id"] == "rid-9" for r in records)


def test_configure_reads_the_settings() -> None:
    settings = config.load(environ={"REGISTRY_LOG_FORMATTER": "json", "REGISTRY_LOGLEVEL": "error"})
    logs.configure("blobstore", settings)
    assert logging.getLogger().level == logging.ERROR
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler.formatter, logs.JsonFormatter)
    # No SMTP host: no mailer.
    assert not any(type(h).__name__ == "ExceptionMailer" for h in logging.getLogger().handlers)


def test_an_exception_logged_twice_counts_once() -> None:
    """A service logs its unhandled error, then uvicorn logs the same exception again."""
    capture("search", "text")
    before = exceptions_counted("search")
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        logging.getLogger("berth.search").exception("unhandled error")
        logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=exc)
    logging.getLogger("berth.search").error("an error without an exception")
    assert exceptions_counted("search") == before + 1


def exceptions_counted(service: str) -> float:
    return REGISTRY.get_sample_value("berth_unhandled_exceptions_total", {"service": service}) or 0.0


def test_fields_go_on_every_line_of_either_format() -> None:
    """log.fields (registry:2's): text ``key=value`` pairs after the message (quoted where a space
    would blur the value's end), ahead of any traceback; JSON keys."""
    out = capture("gateway", "text", fields={"environment": "production", "site": "eu west"})
    log = logging.getLogger("berth.gateway")
    log.info("pushed %s", "a/b:1")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    first, second, *traceback = lines(out)
    assert first.endswith(' berth.gateway: pushed a/b:1 environment=production site="eu west"')
    assert second.endswith(' berth.gateway: failed environment=production site="eu west"')
    assert traceback[0].startswith("Traceback") and traceback[-1] == "RuntimeError: boom"

    out = capture("search", "json", fields={"environment": "production", "service": "registry", "repository": "x"})
    logging.getLogger("berth.search").info("applied", extra={"repository": "a/b"})
    record = json.loads(lines(out)[0])
    assert record["environment"] == "production"
    # What the record says itself wins: the service's name, and a call's own extra.
    assert record["service"] == "search" and record["repository"] == "a/b"


def test_configure_passes_the_fields_on() -> None:
    settings = config.load(environ={"REGISTRY_LOG_FORMATTER": "json", "REGISTRY_LOG_FIELDS": "{environment: staging}"})
    logs.configure("blobstore", settings)
    out = redirected()
    logging.getLogger("berth.blobstore").warning("slow storage")
    assert json.loads(lines(out)[0])["environment"] == "staging"
