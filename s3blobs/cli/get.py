"""``s3blobs get DIGEST``: write a blob to a file or standard output, verifying its
digest as the bytes go by.

With ``-o FILE`` the bytes go to a temporary file beside FILE that becomes FILE only
once the digest matched: a mismatch, or any failure, leaves no FILE (and an existing
FILE untouched). On standard output the bytes are already out when a mismatch shows:
the command then fails (exit 3) so that a script knows.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from typing import IO, Any, Protocol

from ..digests import parse_digest
from ..errors import StorageError
from .output import note
from .progress import progress
from .stores import blob_store, open_storage, repo_flag

CHUNK = 1024 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes | None: ...


def add_parser(commands: Any) -> None:
    get = commands.add_parser(
        "get",
        help="write a blob to a file or standard output, verifying its digest",
        description=__doc__,
        parents=[repo_flag()],
    )
    get.add_argument("digest", metavar="DIGEST", help="e.g. sha256:<64 hex>")
    get.add_argument(
        "-o",
        "--output",
        metavar="FILE|-",
        default="-",
        help="where to write it (-: standard output)",
    )
    get.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    digest = parse_digest(args.digest)  # a malformed digest fails before any request
    store = blob_store(open_storage(), args.repo)
    size = store.stat(str(digest)).size
    with store.open(str(digest)) as blob:
        if args.output == "-":
            _copy_verified(blob, sys.stdout.buffer, str(digest), size)
        else:
            _write_file(blob, args.output, str(digest), size)
    return 0


def _write_file(blob: Readable, path: str, digest: str, size: int) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        with os.fdopen(fd, "wb") as out:
            _copy_verified(blob, out, digest, size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    note(f"{digest} written to {path} ({size} bytes)")


def _copy_verified(blob: Readable, out: IO[bytes], digest: str, size: int) -> None:
    expected = parse_digest(digest)
    hasher = hashlib.new(expected.algorithm)
    copied = 0
    with progress(size, "get") as bar:
        while chunk := blob.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
            copied += len(chunk)
            bar.update(len(chunk))
    out.flush()
    if copied != size or hasher.hexdigest() != expected.hex:
        raise StorageError(
            f"{digest}: the stored bytes ({copied} of {size} expected) hash to "
            f"{expected.algorithm}:{hasher.hexdigest()}; the blob is corrupt in the bucket"
        )
