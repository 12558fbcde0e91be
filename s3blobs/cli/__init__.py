"""The ``s3blobs`` command. Each subcommand is a module of this package that adds its
own parser (``add_parser``) and runs it (``run``): ``serve`` runs the registry,
``gc`` collects garbage.

Exit codes: 0 done, 1 not found, 2 bad usage or configuration, 3 storage trouble.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ConfigError, StorageError
from . import gc, serve

COMMANDS = (serve, gc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="s3blobs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"s3blobs: {exc}", file=sys.stderr)
        return 2
    except StorageError as exc:
        print(f"s3blobs: {exc}", file=sys.stderr)
        return 3
