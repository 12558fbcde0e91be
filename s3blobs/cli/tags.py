"""``s3blobs tags NAME``: the tags of a repository, in lexical order."""

from __future__ import annotations

import argparse
from typing import Any

from .exits import NotFound
from .output import emit, json_flag
from .stores import open_storage


def add_parser(commands: Any) -> None:
    tags = commands.add_parser(
        "tags", help="list a repository's tags", description=__doc__, parents=[json_flag()]
    )
    tags.add_argument("name", metavar="NAME", help="the repository, e.g. library/app")
    tags.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    catalog = open_storage().catalog
    found = False
    for tag in catalog.tags(args.name):
        found = True
        emit(args, {"tag": tag}, tag)
    if not found and not catalog.repository_exists(args.name):
        raise NotFound(f"no repository {args.name!r}")
    return 0
