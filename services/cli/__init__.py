"""``berth``: one command line for every service.

    berth blobstore         the gRPC blobstore
    berth gateway           the registry HTTP API
    berth auth              the token service (Docker token auth, JWKS)
    berth search            the search service (POST /events, GET /v1/search)
    berth search reindex    rebuild the search index from a registry's catalog
    berth run               every service as child processes, stopped together on Ctrl-C
    berth config check      validate the configuration and print the effective result
    berth garbage-collect   remove blobs no manifest references (offline, or while pushes go on)
    berth users add|list|remove|passwd   accounts of the token service (its SQL user table)

One module per command group (``serve``, ``run``, ``users``, ``search_reindex``,
``garbage_collect``, ``config_check``), the argument parser in ``parser``; ``python -m
services.cli`` and the ``berth`` console script both enter through ``main``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default: the process's arguments) and runs the chosen command; its return
    value is the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
