"""The one error of configuration loading."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key (and where it came from)."""
