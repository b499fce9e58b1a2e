"""``berth search reindex``: rebuild the search index from a registry's catalog."""

from __future__ import annotations

import argparse
import sys

from services.cli import configuration
from services.cli.exit_status import EXIT_CODES, unusable
from services.common import logs

REINDEX_HELP = """examples:
  berth search reindex
  berth --config /etc/berth/config.yml search reindex --registry https://registry.example.com

Progress goes to stderr (repositories done / total, once a second), then a summary and the
repositories that failed.

""" + EXIT_CODES.format(
    runtime="some repositories failed (the rest are indexed), or the registry or the database could not be reached",
    usage="bad arguments, an invalid configuration, or an unusable search.database (bad URL, written by a newer Berth)",
)


def _local_url(addr: str, https: bool = False) -> str:
    """http(s)://host:port for a listen address, 0.0.0.0 and :: read as the local host."""
    host, _, port = addr.rpartition(":")
    return f"{'https' if https else 'http'}://{'127.0.0.1' if host in ('0.0.0.0', '::', '[::]') else host}:{port}"


def cmd_search_reindex(args: argparse.Namespace) -> int:
    """Exit codes: see REINDEX_HELP."""
    settings = configuration.load(args)
    logs.configure("search", settings)
    if settings.search_backend != "sqlalchemy":
        what = "no search index" if not settings.search_backend else f"the module {settings.search_backend!r} keeps its own index"
        return unusable(ValueError(f"search_backend: {what}; reindex rebuilds the sqlalchemy index only"))
    import asyncio

    import sqlalchemy

    from services.search.index import Index
    from services.search.reindex import RegistryUnavailable, reindex
    from services.search.schema import SchemaError

    registry = (
        args.registry
        or settings.search.registry
        or (_local_url(settings.http.addr, https=bool(settings.http.tls.certificate)) + settings.http.prefix)
    )
    try:
        index = Index.open(settings.search.database)
    except sqlalchemy.exc.OperationalError as exc:  # a database server that does not answer: try again later
        print(f"berth: search index unreachable: {getattr(exc, 'orig', None) or exc}", file=sys.stderr)
        return 1
    except (SchemaError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        print(f"berth: configuration error: search.database unusable: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(reindex(index, registry)).exit_code
    except RegistryUnavailable as exc:
        print(f"berth: {exc}", file=sys.stderr)
        return 1
    except sqlalchemy.exc.SQLAlchemyError as exc:
        print(f"berth: search index write failed: {exc}", file=sys.stderr)
        return 1
    finally:
        index.close()
