"""``berth garbage-collect``: remove blobs no manifest references, offline or while pushes go on."""

from __future__ import annotations

import argparse
import logging
import sys

from services.cli import configuration
from services.cli.exit_status import EXIT_CODES, unusable

GC_HELP = """examples:
  berth --config /etc/berth/config.yml garbage-collect --dry-run
  berth --config /etc/berth/config.yml garbage-collect --delete-untagged
  berth --config config.yml garbage-collect --delay 0     (the registry is stopped or read-only)

Marks every blob a manifest of any repository references (configs, layers, index children,
subjects; with --delete-untagged only manifests a tag reaches, through an index, or as a referrer
or subject of one), then removes the rest, links first. Safe while the registry serves pushes:
blobs younger than the delay (storage.maintenance.gc.delay, 1h by default) are never removed and
pushes during the run name what they reference. The delay does not default to 0, even though a
stopped registry would allow it (registry:2 has no delay): the command cannot tell whether the
registry is stopped, and 0 on a live one fails pushes in flight; offline, the 1h default only
leaves the last hour's unreferenced blobs for the next run. With cache_lru configured, what is
removed is dropped from the gateways' Redis cache as it goes. Safe to interrupt and run again. Removals are
listed on stdout (what would be removed, with --dry-run), then a summary; progress on a terminal.

""" + EXIT_CODES.format(
    runtime="the storage failed (nothing is left half-done: run it again), or cache_lru could not be told what was removed",
    usage="bad arguments or an invalid configuration (inmemory storage cannot be collected from outside)",
)


def cmd_garbage_collect(args: argparse.Namespace) -> int:
    """Exit codes: see GC_HELP."""
    settings = configuration.load(args)
    logging.basicConfig(level=logging.WARNING, format="berth: %(message)s")
    if settings.storage.driver == "inmemory":
        return unusable(ValueError("storage.driver: inmemory storage lives in the blobstore's own memory; nothing to collect from here"))
    from services.blobstore.drivers import StorageError, create
    from services.blobstore.gc import GarbageCollector
    from services.common.config.durations import to_seconds

    try:
        delay = settings.storage.maintenance.gc.delay if args.delay is None else float(to_seconds(args.delay))
    except ValueError as exc:
        return unusable(ValueError(f"--delay: {exc}"), "usage error")
    try:
        driver = create(settings.storage.driver, settings.storage.driver_parameters)
    except StorageError as exc:
        return unusable(exc)
    status_line = sys.stderr.isatty()

    def progress(message: str) -> None:
        if message.startswith(("would ", "removed ", "deleting ")):
            if status_line:
                print("\r\033[K", end="", file=sys.stderr)
            print(message, flush=True)
        elif status_line:
            print("\r\033[K" + message[:150], end="", file=sys.stderr, flush=True)

    from services.blobstore.gc_cache import CacheForgetter

    forget = CacheForgetter.from_settings(settings.cache_lru)
    collector = GarbageCollector(
        driver, dry_run=args.dry_run, delete_untagged=args.delete_untagged, delay=delay, progress=progress, forget=forget
    )
    try:
        report = collector.run()
    except KeyboardInterrupt:
        print("\nberth: garbage collection interrupted; nothing is half-done, run it again", file=sys.stderr)
        return 130
    except (StorageError, OSError) as exc:
        print(f"\nberth: garbage collection failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if status_line:
            print("\r\033[K", end="", file=sys.stderr)
    if forget is not None:
        forget.close()
    for warning in report.warnings:
        print(f"berth: warning: {warning}", file=sys.stderr)
    print(("dry run, nothing removed: " if args.dry_run else "") + report.summary())
    return 1 if report.errors else 0
