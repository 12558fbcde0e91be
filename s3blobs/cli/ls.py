"""``s3blobs ls``: the blobs of the bucket, or of one repository, as the listing
pages arrive (1,000 a request); ``--long`` adds size and media type (one HEAD each,
two in a repository)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import emit, json_flag
from .stores import blob_store, open_storage, repo_flag


def add_parser(commands: Any) -> None:
    ls = commands.add_parser(
        "ls", help="list blobs", description=__doc__, parents=[repo_flag(), json_flag()]
    )
    ls.add_argument("-l", "--long", action="store_true", help="with size and media type")
    ls.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = blob_store(open_storage(), args.repo)
    for digest in store.enumerate():
        if args.long:
            descriptor = store.stat(digest)
            emit(args, descriptor.to_dict(), digest, descriptor.size, descriptor.media_type)
        else:
            emit(args, {"digest": digest}, digest)
    return 0
