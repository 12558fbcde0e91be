"""``s3blobs stat DIGEST``: a blob's descriptor (digest, size, media type)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import emit, json_flag
from .stores import blob_store, open_storage, repo_flag


def add_parser(commands: Any) -> None:
    stat = commands.add_parser(
        "stat",
        help="print a blob's descriptor (exit 1 if it is not there)",
        description=__doc__,
        parents=[repo_flag(), json_flag()],
    )
    stat.add_argument("digest", metavar="DIGEST")
    stat.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    descriptor = blob_store(open_storage(), args.repo).stat(args.digest)
    emit(args, descriptor.to_dict(), descriptor.digest, descriptor.size, descriptor.media_type)
    return 0
