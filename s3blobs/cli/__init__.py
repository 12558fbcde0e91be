"""The s3blobs command: a registry's blob storage on S3, from the shell.

Every command reads the same S3BLOBS_* configuration as the registry (see
``s3blobs serve --help`` for the list). Exit codes: 0 done, 1 not found, 2 bad
usage or configuration, 3 storage trouble.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import gc, get, ls, manifest, put, repos, rm, serve, stat, tags, uploads
from .exits import USAGE, exit_code

COMMANDS = (serve, put, get, stat, ls, rm, repos, tags, manifest, uploads, gc)


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (exit 2) instead of the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("s3blobs")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(
        prog="s3blobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"s3blobs {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help, --version, usage errors: SystemExit
    try:
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        print("s3blobs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``s3blobs ls | head``): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        code_for = exit_code(exc)
        if code_for is None:
            raise
        print(f"s3blobs: {one_line(exc)}", file=sys.stderr)
        return code_for


def one_line(exc: BaseException) -> str:
    """The error's message on one line, naming what was wrong."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or text}"
    return text
