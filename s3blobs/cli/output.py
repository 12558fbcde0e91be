"""What commands print. Data goes to standard output, one item a line (or, with
``--json``, one JSON object a line); status and errors go to standard error, one
line each, prefixed ``s3blobs:``. ``serve`` says its status on standard output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def say(line: str) -> None:
    print(f"s3blobs: {line}", flush=True)


def note(line: str) -> None:
    """A status line for the person at the terminal, kept out of the data."""
    print(f"s3blobs: {line}", file=sys.stderr, flush=True)


def json_flag() -> argparse.ArgumentParser:
    """A parent parser that gives a command ``--json``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", help="JSON output: one object per line, for scripts"
    )
    return parent


def emit(args: argparse.Namespace, obj: dict[str, Any], *columns: object) -> None:
    """One item: ``obj`` as a JSON line with ``--json``, else ``columns`` tab-separated."""
    if getattr(args, "json", False):
        print(json.dumps(obj, separators=(",", ":")), flush=True)
    else:
        print("\t".join(str(c) for c in columns), flush=True)
