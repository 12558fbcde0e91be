"""``s3blobs put FILE|-``: store a blob and print its descriptor.

Up to one part it is one request; anything larger goes through the resumable writer,
whose id is printed first, and the upload's progress is saved every few parts: an
interrupted ``put`` (a crash, Ctrl-C, a network failure) goes on where the last save
left it with ``--resume ID``. A resumed file is checked first: its first bytes must
hash to what the upload already holds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
from typing import IO, Any

from ..descriptor import Descriptor
from ..digests import HEX_LENGTHS
from ..repository import GlobalBlobStore, RepositoryBlobStore
from ..store import DEFAULT_MEDIA_TYPE
from ..writer import S3BlobWriter
from .exits import UsageError
from .output import emit, json_flag, note
from .progress import progress
from .stores import blob_store, open_storage, repo_flag

CHUNK = 1024 * 1024


def add_parser(commands: Any) -> None:
    put = commands.add_parser(
        "put",
        help="store a file (or standard input) as a blob; print its descriptor",
        description=__doc__,
        parents=[repo_flag(), json_flag()],
    )
    put.add_argument("file", metavar="FILE|-", help="the file to store; - for standard input")
    put.add_argument(
        "--media-type",
        default=DEFAULT_MEDIA_TYPE,
        help=f"the blob's media type ({DEFAULT_MEDIA_TYPE})",
    )
    put.add_argument(
        "--digest-algorithm",
        choices=sorted(HEX_LENGTHS),
        default="sha256",
        help="the digest to address the blob by (sha256)",
    )
    put.add_argument(
        "--resume", metavar="ID", help="go on with the interrupted upload ID (printed by put)"
    )
    put.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    source, size = _open(args.file)
    storage = open_storage()
    store = blob_store(storage, args.repo)
    part_size = storage.config.part_size
    checkpoint = storage.config.max_concurrency * part_size
    if args.resume:
        writer = store.resume(args.resume)
        _skip_checked(source, writer)
        descriptor = _upload(store, writer, source, size, checkpoint, args.media_type)
    else:
        head = source.read(part_size + 1)
        if len(head) <= part_size:  # the whole input: one request
            descriptor = store.put(args.media_type, head, digest_algorithm=args.digest_algorithm)
        else:
            writer = store.create(digest_algorithm=args.digest_algorithm)
            note(f"upload {writer.id} started; if it is interrupted: --resume {writer.id}")
            writer.write(head)
            descriptor = _upload(store, writer, source, size, checkpoint, args.media_type)
    emit(
        args,
        descriptor.to_dict(),
        descriptor.digest,
        descriptor.size,
        descriptor.media_type,
    )
    return 0


def _open(path: str) -> tuple[IO[bytes], int | None]:
    """The source and its size (None for a pipe)."""
    if path == "-":
        return sys.stdin.buffer, None
    try:
        source = open(path, "rb")  # noqa: SIM115 - read until the command ends
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a file") from None
    stat = os.fstat(source.fileno())
    return source, stat.st_size if os.path.isfile(path) else None


def _skip_checked(source: IO[bytes], writer: S3BlobWriter) -> None:
    """Read past what the upload holds, checking that it is the same bytes."""
    hasher = hashlib.new(writer.algorithm)
    left = writer.size
    while left:
        chunk = source.read(min(CHUNK, left))
        if not chunk:
            raise UsageError(
                f"the input is shorter ({writer.size - left} bytes) than what upload "
                f"{writer.id} already holds ({writer.size} bytes)"
            )
        hasher.update(chunk)
        left -= len(chunk)
    if f"{writer.algorithm}:{hasher.hexdigest()}" != writer.computed_digest():
        raise UsageError(
            f"the first {writer.size} bytes of the input differ from what upload "
            f"{writer.id} holds: resume it with the same input"
        )


def _upload(
    store: GlobalBlobStore | RepositoryBlobStore,
    writer: S3BlobWriter,
    source: IO[bytes],
    size: int | None,
    checkpoint: int,
    media_type: str,
) -> Descriptor:
    """Write the rest of ``source``, saving progress every ``checkpoint`` bytes (a
    save waits for the parts in flight, so it comes every few parts), then commit."""
    upload_id = writer.id
    saved = writer.size
    try:
        with progress(size, "put", initial=writer.size) as bar:
            while chunk := source.read(CHUNK):
                writer.write(chunk)
                bar.update(len(chunk))
                if writer.size - saved >= checkpoint:
                    writer.close()
                    writer = store.resume(upload_id)
                    saved = writer.size
        return writer.commit(Descriptor(media_type, writer.size, writer.computed_digest()))
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()  # keep what can be kept (nothing more, if the writer broke)
        note(f"upload {upload_id} kept ({saved} bytes or more saved): --resume {upload_id}")
        raise
