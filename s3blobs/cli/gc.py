"""``s3blobs gc``: registry garbage collection, online (see :mod:`s3blobs.gc`)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from ..config import parse_duration
from ..errors import StorageError

if TYPE_CHECKING:
    from ..gc import GcReport


DESCRIPTION = """\
Delete every blob no manifest needs, and the leftovers of uploads, while the registry
keeps serving (the design: s3blobs/gc/__init__.py).

Exit codes: 0 done (warnings are in the report), 2 bad usage or a refused grace,
3 storage trouble (or another gc holding the fence).

Each run adds to the registry's gc counters (s3blobs_gc_runs_total and friends): with
PROMETHEUS_MULTIPROC_DIR shared with the registry's gunicorn, its metrics listener
serves them.
"""


def duration(raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Any) -> None:
    gc = commands.add_parser(
        "gc",
        help="delete blobs no manifest needs, and stale uploads, while the registry serves",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument(
        "--grace",
        type=duration,
        metavar="DURATION",
        default=None,
        help="keep what was pushed, linked or confirmed to a client more recently than "
        "this (90s, 30m, 2h, 7d; default S3BLOBS_GC_GRACE, 1h; at least S3BLOBS_CACHE_TTL)",
    )
    gc.add_argument(
        "--delete-untagged",
        action="store_true",
        help="first delete manifest revisions no tag reaches (older than the grace)",
    )
    gc.add_argument(
        "--uploads-older-than",
        type=duration,
        metavar="DURATION",
        default=7 * 86400.0,
        help="delete uploads untouched for this long, and abort their multipart uploads (7d)",
    )
    gc.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    gc.add_argument("--json", action="store_true", help="print the report as JSON")
    gc.add_argument(
        "--workers", type=int, default=16, metavar="N", help="S3 requests in flight at once (16)"
    )
    gc.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..storage import S3BlobStorage
    from .output import say

    storage = S3BlobStorage.from_env()
    try:
        report = storage.collect_garbage(
            grace=args.grace,
            delete_untagged=args.delete_untagged,
            uploads_older_than=args.uploads_older_than,
            dry_run=args.dry_run,
            workers=args.workers,
        )
    except StorageError:
        count(None)
        raise
    count(report)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2), flush=True)
    else:
        for line in report.summary():
            say(line)
    return 0


def count(report: GcReport | None) -> None:
    """Add a run (None: one that failed) to the registry's gc counters."""
    from ..registry.metrics import GC_DELETED_BYTES, GC_DELETED_OBJECTS, GC_RUNS

    if report is None:
        GC_RUNS.labels("failed").inc()
        return
    GC_RUNS.labels("dry_run" if report.dry_run else "ok").inc()
    if not report.dry_run:
        for kind, tally in report.deleted.items():
            GC_DELETED_OBJECTS.labels(kind).inc(tally.count)
            GC_DELETED_BYTES.inc(tally.bytes)
