"""How every ``berth`` command reads its configuration: one loader, one way of failing (exit 2) and
of warning, so the commands cannot drift apart."""

from __future__ import annotations

import argparse
import os
import sys

from services.common import config

# Set by `berth run` for its children, so what the configuration warns about is said once.
QUIET_ENV = "BERTH_CONFIG_WARNED"


def load(args: argparse.Namespace) -> config.Settings:
    """The settings every command reads (``--config``), or exit 2 with the reason; warnings go to
    stderr, except in the children of `berth run`, whose parent said them already."""
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"berth: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not os.environ.get(QUIET_ENV):
        for warning in settings.warnings:
            print(f"berth: configuration warning: {warning}", file=sys.stderr)
    return settings
