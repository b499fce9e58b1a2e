"""Berth: a container image registry as small services."""
