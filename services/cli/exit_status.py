"""The exit statuses of every ``berth`` command, one rule everywhere, so scripts can tell "try
again later" (1) from "fix the command or the configuration" (2); and the --help text saying so.
"""

from __future__ import annotations

import sys

# Help texts of the operator commands end with these (each command fills in its own reasons).
EXIT_CODES = """exit status:
  0  success
  1  runtime failure: {runtime}
  2  usage or configuration error: {usage}"""

SERVICE_EXIT = EXIT_CODES.format(
    runtime="the service failed while running",
    usage="bad arguments, or a setting that cannot be used (the key is named on stderr); nothing was started",
)


def unusable(exc: Exception, what: str = "configuration error") -> int:
    """Settings that validate but cannot be used (keys, rules, a newer database): exit 2."""
    print(f"berth: {what}: {exc}", file=sys.stderr)
    return 2
