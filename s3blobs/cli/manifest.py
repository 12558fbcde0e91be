"""``s3blobs manifest NAME:TAG|NAME@DIGEST``: a manifest as it was pushed (its bytes,
unchanged), or with ``--json`` one object with its digest, media type and size."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .exits import UsageError
from .output import emit, json_flag
from .stores import open_storage


def add_parser(commands: Any) -> None:
    manifest = commands.add_parser(
        "manifest", help="print a manifest", description=__doc__, parents=[json_flag()]
    )
    manifest.add_argument("reference", metavar="NAME:TAG|NAME@DIGEST")
    manifest.set_defaults(run=run)


def split_reference(reference: str) -> tuple[str, str]:
    """``library/app:v1`` -> (``library/app``, ``v1``); ``library/app@sha256:..`` ->
    (``library/app``, ``sha256:..``)."""
    name, at, digest = reference.partition("@")
    if at:
        return name, digest
    name, colon, tag = reference.rpartition(":")
    if not colon or not name or "/" in tag:
        raise UsageError(f"{reference!r}: expected NAME:TAG or NAME@DIGEST")
    return name, tag


def run(args: argparse.Namespace) -> int:
    name, reference = split_reference(args.reference)
    descriptor, body = open_storage().catalog.manifest(name, reference)
    if args.json:
        emit(args, {**descriptor.to_dict(), "manifest": json.loads(body)})
    else:
        sys.stdout.buffer.write(body)
        if sys.stdout.isatty() and not body.endswith(b"\n"):
            sys.stdout.buffer.write(b"\n")  # for the prompt; a pipe gets the exact bytes
        sys.stdout.flush()
    return 0
