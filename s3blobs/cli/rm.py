"""``s3blobs rm DIGEST``: with ``--repo``, unlink the blob from that repository (its
bytes stay for the others); without, delete the blob itself, entry and data, for
every repository (their links then name nothing)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import emit, json_flag, note
from .stores import blob_store, open_storage, repo_flag


def add_parser(commands: Any) -> None:
    rm = commands.add_parser(
        "rm",
        help="remove a blob (from one repository with --repo)",
        description=__doc__,
        parents=[repo_flag(), json_flag()],
    )
    rm.add_argument("digest", metavar="DIGEST")
    rm.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    blob_store(open_storage(), args.repo).delete(args.digest)
    if args.json:
        emit(args, {"deleted": args.digest, "repository": args.repo})
    else:
        note(f"{args.digest} {'unlinked from ' + args.repo if args.repo else 'deleted'}")
    return 0
