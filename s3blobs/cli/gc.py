"""``s3blobs gc``: delete data objects that no blob entry names."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any


def add_parser(commands: Any) -> None:
    gc = commands.add_parser("gc", help="delete data objects no blob entry names")
    gc.add_argument(
        "--grace", type=float, default=3600, help="only objects older than this, seconds (3600)"
    )
    gc.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    gc.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..storage import S3BlobStorage
    from .output import say

    swept = S3BlobStorage.from_env().sweep_orphan_data(timedelta(seconds=args.grace), args.dry_run)
    for key in swept:
        print(key)
    say(f"{len(swept)} orphaned data objects {'found' if args.dry_run else 'deleted'}")
    return 0
