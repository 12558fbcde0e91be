"""BlobWriter on an S3 multipart upload: resumable by id from any process.

Bytes are hashed on the caller's thread as they arrive and buffered up to the part
size; every full part (all exactly ``part_size`` bytes) uploads in the background,
at most ``max_concurrency`` at a time. ``close()`` saves what a later ``resume()``
needs: the hash state, the part ETags, and the buffered tail as a new piece.
``commit()`` verifies length and digest from the hash state, with no read-back, and
finishes the upload where its bytes already are: nothing is ever copied.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import IO

from .descriptor import Descriptor
from .digests import Digest, parse_digest
from .errors import (
    BlobError,
    BlobInvalidDigest,
    BlobInvalidLength,
    BlobTooLarge,
    BlobUploadClosed,
    BlobUploadUnknown,
)
from .hashing import ResumableHash
from .s3 import s3_errors
from .store import DEFAULT_MEDIA_TYPE, BlobEntries
from .uploads import CLAIM_SECONDS, Part, StoredState, UploadStore

#: S3's limit on the parts of one multipart upload.
MAX_PARTS = 10_000
READ_CHUNK = 1024 * 1024


class S3BlobWriter:
    """One open upload; see :meth:`__exit__` for what leaving a ``with`` block does."""

    def __init__(
        self,
        uploads: UploadStore,
        entries: BlobEntries,
        stored: StoredState,
        link: Callable[[Descriptor], None],
    ) -> None:
        self._uploads = uploads
        self._entries = entries
        self._stored = stored
        self._link = link
        state = stored.state
        self._hasher = ResumableHash.from_state(state.algorithm, state.hash_state)
        self._part_size = state.part_size
        self._size = state.size
        self._parts: list[Part] = list(state.parts)
        self._pieces = list(state.pieces)  # saved tail, oldest first
        self._saved_tail: bytes | None = None  # their bytes, once fetched
        self._buffer = _PartBuffer(self._part_size)  # tail received by this writer
        self._consumed: list[str] = []  # keys of pieces already inside a part
        self._inflight: deque[Future[Part]] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._token = uuid.uuid4().hex  # this writer's claim on the upload
        self._claimed = False
        self._ended: str | None = None  # "closed", "committed", "cancelled" or "broken"
        self._descriptor: Descriptor | None = None

    # The contract's properties ---------------------------------------------------

    @property
    def id(self) -> str:
        """The S3 upload id in URL-safe form: resume(id) finds this upload from anywhere."""
        return self._stored.state.id

    @property
    def size(self) -> int:
        return self._size

    @property
    def started_at(self) -> datetime:
        return self._stored.state.started

    @property
    def algorithm(self) -> str:
        return self._hasher.algorithm

    def computed_digest(self) -> str:
        """The digest of everything written so far, in the algorithm being computed."""
        return f"{self._hasher.algorithm}:{self._hasher.hexdigest()}"

    # Writing ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_writable()
        view = memoryview(data).cast("B")
        limit = MAX_PARTS * self._part_size
        if self._size + view.nbytes > limit:
            raise BlobTooLarge(
                f"a blob may hold at most {MAX_PARTS} parts of {self._part_size} bytes "
                f"({limit} bytes); raise S3BLOBS_PART_SIZE for larger blobs"
            )
        with self._breaking_on_error():
            self._hasher.update(view)
            self._size += view.nbytes
            pos = 0
            while pos < view.nbytes:
                take = min(self._part_size - self._tail_size(), view.nbytes - pos)
                self._buffer.append(view[pos : pos + take])
                pos += take
                if self._tail_size() == self._part_size:
                    self._submit_part(self._take_tail())
        return view.nbytes

    def read_from(self, fileobj: IO[bytes]) -> int:
        """Write everything ``fileobj`` yields until EOF; returns the byte count."""
        total = 0
        while chunk := fileobj.read(READ_CHUNK):
            total += self.write(chunk)
        return total

    def close(self) -> None:
        """Suspend: save what resume() needs. The upload stays open in S3."""
        if self._ended:
            return
        with self._breaking_on_error():
            self._drain()
            pieces = list(self._pieces)
            if len(self._buffer):
                pieces.append(self._uploads.put_piece(self._stored.state, self._buffer.copy()))
            state = replace(
                self._stored.state,
                size=self._size,
                parts=tuple(self._parts),
                pieces=tuple(pieces),
                hash_state=self._hasher.state(),
                claim="",
                claimed_at=0.0,
            )
            if state != self._stored.state:
                self._uploads.save(self._stored, state)
            # Consumed pieces go only once the state that no longer names them is saved.
            self._uploads.delete_keys(self._consumed)
        self._end("closed")

    # Finishing -------------------------------------------------------------------

    def commit(self, provisional: Descriptor) -> Descriptor:
        """Verify and store the blob; returns its descriptor (again, if called again)."""
        if self._descriptor is not None:
            return self._descriptor
        self._check_writable()
        digest = parse_digest(provisional.digest)
        with self._breaking_on_error(keep_open=(BlobInvalidDigest, BlobInvalidLength)):
            self._drain()
            if provisional.size != self._size:
                raise BlobInvalidLength(f"declared {provisional.size} bytes, received {self._size}")
            verified = digest.algorithm == self._hasher.algorithm
            if verified and self._hasher.hexdigest() != digest.hex:
                raise BlobInvalidDigest(str(digest), f"content is {self.computed_digest()}")
            media_type = provisional.media_type or DEFAULT_MEDIA_TYPE
            tail = self._tail_bytes()
            if not self._parts:
                descriptor = self._commit_small(digest, media_type, tail, verified)
            else:
                descriptor = self._commit_parts(digest, media_type, tail, verified)
            self._link(descriptor)
            self._uploads.remove(self._stored.state, self._consumed)
        self._descriptor = descriptor
        self._end("committed")
        return descriptor

    def cancel(self) -> None:
        """Abort the upload and remove its state; a no-op when committed or cancelled."""
        if self._ended in ("committed", "cancelled"):
            return
        self._end("cancelled")
        state = self._stored.state
        self._abort()
        self._uploads.remove(state, self._consumed)

    def __enter__(self) -> S3BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leaving the block closes the writer (resumable later) when it ended normally,
        and cancels the upload when an exception is on its way out. After a commit or
        a cancel it does nothing."""
        if exc_type is None:
            self.close()
        else:
            self.cancel()

    # Internals -------------------------------------------------------------------

    def _tail_size(self) -> int:
        return sum(p.size for p in self._pieces) + len(self._buffer)

    def _tail_bytes(self) -> bytes:
        """The whole buffered tail: the saved pieces (fetched once), then this writer's."""
        if self._pieces and self._saved_tail is None:
            state = self._stored.state
            # One GET per piece, side by side: a tail saved by many small closes
            # costs one round trip, not one each.
            pieces = self._pool().map(lambda p: self._uploads.get_piece(state, p), self._pieces)
            self._saved_tail = b"".join(pieces)
        return (self._saved_tail or b"") + self._buffer.copy()

    def _take_tail(self) -> bytes | bytearray:
        """The whole buffered tail, leaving it empty; its pieces go at the next close.

        Without saved pieces the buffer itself is handed over, not a copy: memory
        stays at part size x (concurrency + 1)."""
        if self._pieces:
            tail: bytes | bytearray = self._tail_bytes()
            self._consumed += self._uploads.piece_keys(self._stored.state, self._pieces)
            self._buffer.take()
        else:
            tail = self._buffer.take()
        self._pieces, self._saved_tail = [], None
        return tail

    def _submit_part(self, body: bytes | bytearray) -> None:
        self._keep_claim()
        while len(self._inflight) >= self._uploads.config.max_concurrency:
            self._parts.append(self._inflight.popleft().result())
        number = len(self._parts) + len(self._inflight) + 1
        self._inflight.append(self._pool().submit(self._upload_part, number, body))

    def _pool(self) -> ThreadPoolExecutor:
        """This writer's threads for S3 transfers, started at the first need."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._uploads.config.max_concurrency, thread_name_prefix="s3blobs-part"
            )
        return self._executor

    def _upload_part(self, number: int, body: bytes | bytearray) -> Part:
        state = self._stored.state
        with s3_errors(f"uploading part {number}", not_found=self._gone):
            response = self._uploads.client.upload_part(
                Bucket=self._uploads.bucket,
                Key=state.data_key,
                UploadId=state.upload_id,
                PartNumber=number,
                Body=body,
                ChecksumAlgorithm="CRC32",
            )
        return Part(str(response["ETag"]), str(response.get("ChecksumCRC32", "")))

    def _drain(self) -> None:
        while self._inflight:
            self._parts.append(self._inflight.popleft().result())

    def _keep_claim(self) -> None:
        """Claim the upload before this writer's first part, and renew the claim while
        it lasts, so no other writer uploads parts under the same numbers meanwhile."""
        age = time.time() - self._stored.state.claimed_at
        if not self._claimed or age > CLAIM_SECONDS / 2:
            self._uploads.claim(self._stored, self._token)
            self._claimed = True

    def _commit_small(
        self, digest: Digest, media_type: str, data: bytes, verified: bool
    ) -> Descriptor:
        if not verified and hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            raise BlobInvalidDigest(str(digest), "content does not match")
        descriptor = self._entries.put_small(digest, media_type, data)
        self._abort()
        return descriptor

    def _commit_parts(
        self, digest: Digest, media_type: str, tail: bytes, verified: bool
    ) -> Descriptor:
        state = self._stored.state
        uploaded = self._parts + ([self._upload_part(len(self._parts) + 1, tail)] if tail else [])
        parts = [
            {
                "PartNumber": n,
                "ETag": part.etag,
                **({"ChecksumCRC32": part.crc32} if part.crc32 else {}),
            }
            for n, part in enumerate(uploaded, 1)
        ]
        try:
            with s3_errors("completing the upload", not_found=self._gone):
                self._uploads.client.complete_multipart_upload(
                    Bucket=self._uploads.bucket,
                    Key=state.data_key,
                    UploadId=state.upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BlobUploadUnknown:
            # A commit that failed after completing (say, writing the entry) and is
            # now retried finds the upload gone but its bytes in place.
            if self._stored_size(state.data_key) != self._size:
                raise
        if not verified and not self._read_back_matches(digest):
            self._uploads.delete_keys([state.data_key])
            self._uploads.remove(state, self._consumed)
            self._end("cancelled")
            raise BlobInvalidDigest(str(digest), "content does not match")
        descriptor = self._entries.put_pointer(digest, media_type, state.data_key, self._size)
        if descriptor is None:  # an earlier commit stored this digest: keep that one
            self._uploads.delete_keys([state.data_key])
            descriptor = self._entries.stat(digest)
        return descriptor

    def _stored_size(self, key: str) -> int | None:
        try:
            with s3_errors("checking the upload's data", not_found=self._gone):
                response = self._uploads.client.head_object(Bucket=self._uploads.bucket, Key=key)
        except BlobUploadUnknown:
            return None
        return int(response["ContentLength"])

    def _read_back_matches(self, digest: Digest) -> bool:
        """For a digest in an algorithm not declared up front: hash the stored bytes once."""
        hasher = hashlib.new(digest.algorithm)
        with s3_errors("reading the upload back"):
            body = self._uploads.client.get_object(
                Bucket=self._uploads.bucket, Key=self._stored.state.data_key
            )["Body"]
            for chunk in iter(lambda: body.read(READ_CHUNK), b""):
                hasher.update(chunk)
        return bool(hasher.hexdigest() == digest.hex)

    def _abort(self) -> None:
        state = self._stored.state
        try:
            with s3_errors("aborting the upload", not_found=self._gone):
                self._uploads.client.abort_multipart_upload(
                    Bucket=self._uploads.bucket, Key=state.data_key, UploadId=state.upload_id
                )
        except BlobUploadUnknown:
            pass  # already aborted or completed: what abort wants

    def _gone(self) -> BlobUploadUnknown:
        return BlobUploadUnknown(f"upload {self.id[:100]} was committed or cancelled")

    def _check_writable(self) -> None:
        if self._ended:
            raise BlobUploadClosed(
                f"writer {self.id[:100]} is {self._ended}"
                + ("; resume it to continue" if self._ended in ("closed", "broken") else "")
            )

    def _end(self, how: str) -> None:
        self._ended = how
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @contextmanager
    def _breaking_on_error(self, keep_open: tuple[type[Exception], ...] = ()) -> Iterator[None]:
        """On an unexpected error, mark the writer broken: its memory no longer matches
        S3, and the upload continues from the last close() through resume()."""
        try:
            yield
        except keep_open:
            raise
        except BaseException:
            if self._ended is None:
                self._end("broken")
                self._release_claim()
            raise

    def _release_claim(self) -> None:
        """Best effort, after a failure: let the next resume() continue at once rather
        than wait for the claim to lapse."""
        if self._claimed:
            with suppress(BlobError):
                self._uploads.save(
                    self._stored, replace(self._stored.state, claim="", claimed_at=0.0)
                )


class _PartBuffer:
    """The bytes received since the last part, in one allocation of a part's size:
    growing a bytearray chunk by chunk would reallocate (and briefly double) it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._data: bytearray | None = None
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def append(self, view: memoryview) -> None:
        if self._data is None:
            self._data = bytearray(self._capacity)
        self._data[self._filled : self._filled + view.nbytes] = view
        self._filled += view.nbytes

    def copy(self) -> bytes:
        return bytes(self._data[: self._filled]) if self._data else b""

    def take(self) -> bytearray:
        """Hand the buffer over (no copy when it is full) and start an empty one."""
        if self._data is None:
            data = bytearray()
        elif self._filled == self._capacity:
            data = self._data
        else:
            data = self._data[: self._filled]
        self._data, self._filled = None, 0
        return data
