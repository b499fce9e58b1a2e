"""Tests here install log handlers (logs.setup); each test gets the logging it found back."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from services.common import logs, request_ids


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    token = request_ids.set_current("")
    yield
    for handler in logs._installed:
        handler.close()
    logs._installed.clear()
    root.handlers[:] = handlers
    root.setLevel(level)
    request_ids.reset(token)
