"""``berth config check``: validate the configuration and print the effective result."""

from __future__ import annotations

import argparse
import json
import sys

from services.cli import configuration
from services.cli.exit_status import unusable
from services.common import config

CONFIG_CHECK_HELP = """examples:
  berth --config /etc/berth/config.yml config check
  SETTINGS_FLAVOR=prod berth config check | jq .storage
  berth config check >/dev/null && systemctl restart berth

exit status:
  0  the configuration is valid; the effective configuration is on stdout
  2  usage or configuration error: stderr names the offending key (config key 'http.addr': ...)"""


def cmd_config_check(args: argparse.Namespace) -> int:
    """Exit codes: see CONFIG_CHECK_HELP. Checks what validation alone cannot (files, address
    lists) the way the services will at startup, so a bad setting shows here first."""
    settings = configuration.load(args)
    from services.common import forwarded, https, redact, search_security
    from services.search import backends

    try:
        https.server_context(settings.http.tls, "http.tls")
        forwarded.TrustedProxies(settings.http.trusted_proxies, header=settings.http.forwarded_header)
        backends.check(settings.search_backend)
        if settings.search_service:
            search_security.required_token(settings)
    except config.ConfigError as exc:
        return unusable(exc)
    names = {"berth": "Berth's own", "classic": "the classic registry's", "registry2": "registry:2's"}
    print(f"berth: configuration read in {names[settings.dialect]} form", file=sys.stderr)
    print(json.dumps(redact.redact(settings.model_dump()), indent=2))
    return 0
