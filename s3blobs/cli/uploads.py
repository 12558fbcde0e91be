"""``s3blobs uploads [ls]``: open uploads (started, neither committed nor cancelled),
with their repository, the bytes they hold, and their age; ``s3blobs uploads abort
ID`` cancels one (its multipart upload and saved state)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..catalog import OpenUpload
from ..repository import GLOBAL_SCOPE
from .output import emit, json_flag, note
from .stores import blob_store, open_storage


def add_parser(commands: Any) -> None:
    uploads = commands.add_parser(
        "uploads", help="list or abort open uploads", description=__doc__, parents=[json_flag()]
    )
    uploads.set_defaults(run=run_ls)
    actions = uploads.add_subparsers(dest="action", metavar="ls|abort")
    ls = actions.add_parser("ls", help="list open uploads (the default)", parents=[json_flag()])
    ls.set_defaults(run=run_ls)
    abort = actions.add_parser("abort", help="cancel an open upload", parents=[json_flag()])
    abort.add_argument("id", metavar="ID", help="the upload's id, as `uploads ls` prints it")
    abort.set_defaults(run=run_abort)


def run_ls(args: argparse.Namespace) -> int:
    now = time.time()
    for upload in open_storage().catalog.uploads():
        row = describe(upload, now)
        emit(
            args,
            row,
            upload.id,
            row["repository"] or "-",
            row["size"] if row["size"] is not None else "?",
            _age(row["ageSeconds"]),
            "committing" if row["committing"] else "",
        )
    return 0


def describe(upload: OpenUpload, now: float) -> dict[str, Any]:
    """An open upload as ``uploads ls --json`` prints it."""
    state = upload.state
    started = state.started_at if state else upload.updated.timestamp()
    return {
        "id": upload.id,
        "repository": (state.repository or None) if state else None,
        "size": state.size if state else None,
        "startedAt": _iso(started),
        "updatedAt": _iso(upload.updated.timestamp()),
        "ageSeconds": round(now - started),
        "committing": state.committing if state else "",
        "readable": state is not None,
    }


def run_abort(args: argparse.Namespace) -> int:
    storage = open_storage()
    state = storage.catalog.upload(args.id)
    repository = state.repository if state.repository != GLOBAL_SCOPE else None
    blob_store(storage, repository).resume(args.id).cancel()
    if args.json:
        emit(args, {"aborted": args.id, "repository": repository})
    else:
        note(f"upload {args.id} aborted ({state.size} bytes dropped)")
    return 0


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _age(seconds: int) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"
