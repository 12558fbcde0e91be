"""``s3blobs repos``: every repository in the bucket, in name order (the listing
the registry's ``/v2/_catalog`` answers from)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import emit, json_flag
from .stores import open_storage


def add_parser(commands: Any) -> None:
    repos = commands.add_parser(
        "repos", help="list repositories", description=__doc__, parents=[json_flag()]
    )
    repos.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..registry.catalog import repositories

    for name in repositories(open_storage()):
        emit(args, {"name": name}, name)
    return 0
