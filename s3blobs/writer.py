"""BlobWriter on an S3 multipart upload: resumable by id from any process.

Bytes are hashed on the caller's thread as they arrive and buffered (a MiB at a time,
within the process's budget) up to the part size; full parts upload in the
background, at most ``max_concurrency`` at a time. ``close()`` saves what a later
``resume()`` needs: the hash state, the part ETags, and the buffered tail as a piece.
Parts follow the bytes in order, so a retried chunk rewrites the same part with the
same bytes.

Each byte is sent once where the store allows parts of different sizes
(``S3BLOBS_EQUAL_PARTS``): the last full part is held back until more bytes come, so
that a request ends on a part boundary (a short tail joins the held part; a tail of
at least S3's 5 MiB minimum is a part of its own), and a whole blob below that is
saved at ``close()`` as its own entry, under the digest of what arrived, which the
commit then only has to confirm. Only tails between parts that are too short to
stand alone (small chunks) are saved as pieces and sent again inside a part. Where
parts must all be of one size (Cloudflare R2), every part but the last is exactly
``part_size`` and each tail is a piece.

``commit()`` verifies length and digest from the hash state, with no read-back, and
finishes the upload where its bytes already are: nothing is ever copied. It is
idempotent across processes: where it moves bytes itself (a tail, a body sent with
the PUT) it first seals the upload state once every byte is durable, so a commit
interrupted anywhere (a crash, a lost answer, a concurrent duplicate) is finished by
the next one from the state alone (a commit that moves none is finished from the
state as the PATCHes left it); it recognises its own earlier steps
(a completed upload by its ETag, an entry by the data object it names) and deletes
data only when the blob's entry is proven to name another object.

There is no lock or lease on an upload: two writers of one upload are told apart by
conditional state writes (the loser carries on only if the winner recorded the same
bytes), and a stray writer that overwrote a part with other bytes is caught at
completion, where S3 refuses a part whose ETag differs from the one recorded.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from types import TracebackType
from typing import IO

from .buffers import ChunkReader, PartBuffer
from .config import MIN_PART_SIZE
from .descriptor import Descriptor
from .digests import Digest, parse_digest
from .errors import (
    BlobInvalidDigest,
    BlobInvalidLength,
    BlobTooLarge,
    BlobUnknown,
    BlobUploadClosed,
    BlobUploadConflict,
    BlobUploadUnknown,
    StorageError,
)
from .hashing import ResumableHash
from .s3 import error_code, s3_errors
from .store import DEFAULT_MEDIA_TYPE, BlobEntries
from .uploads import Part, Piece, StoredState, UploadStore

log = logging.getLogger(__name__)

#: S3's limit on the parts of one multipart upload.
MAX_PARTS = 10_000
READ_CHUNK = 1024 * 1024
INVALID_PART = frozenset({"InvalidPart", "InvalidPartOrder"})

Body = list[memoryview]


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
        self._hash_state = state.hash_state
        self._hasher: ResumableHash | None = None  # restored at the first byte
        self._algorithm = state.algorithm
        self._part_size = state.part_size
        self._size = state.size
        self._parts: list[Part] = list(state.parts)
        self._pieces = list(state.pieces)  # saved tail not yet inside a part, oldest first
        self._buffer = PartBuffer(self._part_size, uploads.budget)  # tail received here
        self._consumed: list[str] = []  # keys of pieces already inside a part
        self._equal_parts = uploads.config.equal_parts
        self._held: tuple[Body, int] | None = None  # a full part kept back, and its budget
        self._inflight: deque[Future[Part]] = deque()
        self._executor: ThreadPoolExecutor | None = None
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
        return self._algorithm

    @property
    def committing(self) -> str:
        """The digest a commit sealed this upload for ('' when none did): such an
        upload takes no more bytes, and ``commit`` with that digest finishes it."""
        return self._stored.state.committing

    def computed_digest(self) -> str:
        """The digest of everything written so far, in the algorithm being computed."""
        return f"{self._algorithm}:{self._hash().hexdigest()}"

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
            self._hash().update(view)
            self._size += view.nbytes
            pos = 0
            while pos < view.nbytes:
                take = min(self._part_size - self._tail_size(), view.nbytes - pos)
                self._buffer.append(view[pos : pos + take])
                pos += take
                if self._tail_size() == self._part_size:
                    if self._equal_parts:
                        self._submit_part(*self._take_tail())
                    else:  # more bytes came: the part held back is not the last one
                        self._submit_held()
                        self._held = self._take_tail()
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
            self._flush_parts(final=False)
            self._drain()
            pieces = list(self._pieces)
            new_piece = self._save_tail() if len(self._buffer) else None
            if new_piece is not None:
                pieces.append(new_piece)
            state = replace(
                self._stored.state,
                size=self._size,
                parts=tuple(self._parts),
                pieces=tuple(pieces),
                hash_state=self._hash_state if self._hasher is None else self._hasher.state(),
            )
            if state != self._stored.state:
                # A failed save leaves the new piece alone: the write may have happened
                # with its answer lost, and a state may name it (gc sweeps it if not).
                self._uploads.save(self._stored, state)
                if new_piece is not None and new_piece not in self._stored.state.pieces:
                    # Another request saved the same bytes first, and its state won:
                    # no state names this piece.
                    self._uploads.delete_keys(self._piece_keys([new_piece]))
            # Consumed pieces go only once the state that no longer names them is saved.
            self._uploads.delete_keys(self._consumed)
        self._end("closed")

    def _save_tail(self) -> Piece:
        """Save the buffered tail. A whole blob (nothing before it) that is too short
        for a part is saved as its own entry, under the digest of these bytes: if the
        client commits it as that digest, nothing is sent again. Otherwise the entry
        is just a blob nobody links, for registry garbage collection."""
        views = self._buffer.views()
        if not self._parts and not self._pieces and self._size == len(self._buffer):
            digest = parse_digest(self.computed_digest())
            # Only an entry this call wrote: one that was there already may be old
            # enough for a running gc to delete it while this upload still needs it.
            if self._entries.create_small(digest, DEFAULT_MEDIA_TYPE, ChunkReader(views)):
                return Piece("", self._size, entry=str(digest))
        return self._uploads.put_piece(self._stored.state, ChunkReader(views))

    # Finishing -------------------------------------------------------------------

    def commit(self, provisional: Descriptor) -> Descriptor:
        """Verify and store the blob; returns its descriptor (again, if called again)."""
        if self._descriptor is not None:
            return self._descriptor
        if self._ended:
            self._check_writable()
        digest = parse_digest(provisional.digest)
        media_type = provisional.media_type or DEFAULT_MEDIA_TYPE
        with self._breaking_on_error(keep_open=(BlobInvalidDigest, BlobInvalidLength)):
            self._drain()
            if provisional.size != self._size:
                raise BlobInvalidLength(f"declared {provisional.size} bytes, received {self._size}")
            verified = self._verify(digest)
            if self._parts or self._held:
                descriptor = self._commit_parts(digest, media_type, verified)
            else:
                descriptor = self._commit_small(digest, media_type, verified)
        self._descriptor = descriptor
        self._end("committed")
        return descriptor

    def cancel(self) -> None:
        """Abort the upload and remove its state; a no-op when committed or cancelled."""
        if self._ended in ("committed", "cancelled"):
            return
        self._end("cancelled")
        state = self._stored.state
        self._uploads.abort(state)
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

    # Commit steps ----------------------------------------------------------------

    def _verify(self, digest: Digest) -> bool:
        """Check the digest against the hash state; False when it is in an algorithm
        that was not computed (the bytes are then hashed once they are stored)."""
        sealed = self.committing
        if sealed:
            # The digest was checked before the seal; only the same one may finish it.
            if sealed != str(digest):
                raise BlobInvalidDigest(str(digest), f"the upload is being committed as {sealed}")
            return True
        if digest.algorithm != self._algorithm:
            return False
        if self._hash().hexdigest() != digest.hex:
            raise BlobInvalidDigest(str(digest), f"content is {self.computed_digest()}")
        return True

    def _commit_small(self, digest: Digest, media_type: str, verified: bool) -> Descriptor:
        """Below one part the blob's bytes become its entry, then the state is sealed:
        a PATCH that saved more bytes in between keeps its upload open instead."""
        if self.committing:  # the entry was written before the seal
            descriptor = self._entries.stat(digest)
        else:
            # Writing the entry is a conditional create and the saved bytes stay until
            # the state goes: a retry repeats it. Only a body sent with this request
            # (gone if the request fails) needs the seal.
            new_bytes = self._size != self._stored.state.size
            descriptor = self._store_small(digest, media_type, verified)
            if new_bytes and not self._seal(digest, keep_open_on_conflict=True):
                self._link(descriptor)
                return descriptor
        self._abort_quietly()
        self._finish(descriptor)
        return descriptor

    def _store_small(self, digest: Digest, media_type: str, verified: bool) -> Descriptor:
        """The entry of a blob below one part: written now, or by close() already."""
        if self._saved_as_entry(digest):
            # S3 says it is still there (garbage collection may sweep an entry that
            # waited long unlinked): a blob is never confirmed from memory.
            try:
                return self._entries.stat(digest)
            except BlobUnknown:
                raise BlobUploadUnknown(f"upload {self.id[:100]} lost saved bytes") from None
        if verified and self._pieces:
            # The same bytes may be stored already (a push of content the registry has):
            # then the saved ones need not be read, nor sent again.
            try:
                return self._entries.stat(digest)
            except BlobUnknown:
                pass
        body, reserved = self._take_tail()
        try:
            if not verified and _hexdigest(digest.algorithm, body) != digest.hex:
                raise BlobInvalidDigest(str(digest), "content does not match")
            return self._entries.put_small(digest, media_type, ChunkReader(body))
        finally:
            self._uploads.budget.release(reserved)

    def _commit_parts(self, digest: Digest, media_type: str, verified: bool) -> Descriptor:
        """Upload the tail as the last part and seal (if there is a tail or a body),
        complete, then write the entry."""
        state = self._stored.state
        if not self.committing and not self._in_parts_already():
            self._flush_parts(final=True)
            self._drain()
            self._seal(digest)
        self._complete(digest, verified)
        if not verified and not self._read_back_matches(digest):
            self._uploads.delete_keys([state.data_key])
            self._uploads.remove(state, self._consumed)
            self._end("cancelled")
            raise BlobInvalidDigest(str(digest), "content does not match")
        descriptor, ours = self._entries.put_pointer(digest, media_type, state.data_key, self._size)
        if not ours:
            # The entry is proven to name another data object (an earlier commit of
            # the same content): nothing can name ours.
            self._uploads.delete_keys([state.data_key])
        self._finish(descriptor)
        return descriptor

    def _in_parts_already(self) -> bool:
        """Whether every byte is in uploaded parts and none came with this request: the
        common commit, a PUT with no body after PATCHes that ended on part boundaries.
        Such a commit moves no bytes, and the state as it is lets any retry of it take
        the same steps again, so it needs no seal."""
        return (
            self._size == self._stored.state.size
            and self._held is None
            and not len(self._buffer)
            and not self._pieces
        )

    def _seal(self, digest: Digest, keep_open_on_conflict: bool = False) -> bool:
        """Record that the commit of ``digest`` is under way, with every byte durable.
        Needed where the commit itself moves bytes (a tail sent as the last part, or
        a body that came with the PUT): a retried PUT must not append its body again,
        and no PATCH may add bytes behind a commit's back.

        False (with ``keep_open_on_conflict``) when another request changed the upload
        first: it then goes on with that request's bytes."""
        sealed = replace(
            self._stored.state,
            size=self._size,
            parts=tuple(self._parts),
            pieces=self._stored.state.pieces,
            hash_state=self._hash().state(),
            committing=str(digest),
        )
        try:
            self._uploads.save(self._stored, sealed)
        except BlobUploadConflict:
            if keep_open_on_conflict:
                return False
            raise
        return True

    def _complete(self, digest: Digest, verified: bool) -> None:
        state = self._stored.state
        parts = [
            {
                "PartNumber": n,
                "ETag": part.etag,
                **({"ChecksumCRC32": part.crc32} if part.crc32 else {}),
            }
            for n, part in enumerate(self._parts, 1)
        ]
        try:
            with s3_errors("completing the upload", not_found=self._gone):
                self._uploads.client.complete_multipart_upload(
                    Bucket=self._uploads.bucket,
                    Key=state.data_key,
                    UploadId=state.upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except (BlobUploadUnknown, StorageError) as exc:
            # Completed already (by this commit before a crash or a lost answer, or
            # by a concurrent duplicate): the object then carries these parts' ETag.
            stored = self._stored_etag(state.data_key)
            if stored == _multipart_etag(self._parts):
                return
            if error_code(exc.__cause__ or exc) in INVALID_PART:
                raise BlobUploadConflict(
                    f"upload {self.id[:100]}: a part was overwritten with other bytes by a "
                    "concurrent request; start the upload again"
                ) from None
            # Or completed by an earlier attempt that found the entry naming another
            # object (the same bytes, stored before) and deleted its own data: the
            # upload and its object are gone, the blob is there.
            if stored is None and verified and self._entry_exists(digest):
                return
            raise

    def _entry_exists(self, digest: Digest) -> bool:
        try:
            self._entries.stat(digest)
        except BlobUnknown:
            return False
        return True

    def _finish(self, descriptor: Descriptor) -> None:
        """Link the committed blob, then clean up. The blob is stored and linked once
        the link is written: a failed cleanup is only garbage (gc and the bucket's
        lifecycle rules sweep it, and a sealed state left over finishes again), never a
        reason to tell the client its blob failed."""
        self._link(descriptor)
        try:
            self._uploads.remove(self._stored.state, self._consumed)
        except StorageError as exc:
            log.warning("upload %s committed; its state stays for gc: %s", self.id[:100], exc)

    # Internals -------------------------------------------------------------------

    def _saved_as_entry(self, digest: Digest) -> bool:
        """Whether close() saved the whole blob as the entry of ``digest``."""
        return (
            not len(self._buffer)
            and len(self._pieces) == 1
            and self._pieces[0].entry == str(digest)
        )

    def _flush_parts(self, final: bool) -> None:
        """At the end of a request, upload what can be a part: the part held back (with
        a tail too short to stand alone joined to it), a tail that may be a part of its
        own (any tail, when the upload ends here)."""
        tail = self._tail_size()
        if self._held is not None:
            if 0 < tail < MIN_PART_SIZE:
                held, held_budget = self._held
                self._held = None
                body, reserved = self._take_tail()
                self._submit_part(held + body, held_budget + reserved)
                return
            self._submit_held()
        if tail and (final or (not self._equal_parts and tail >= MIN_PART_SIZE)):
            self._submit_part(*self._take_tail())

    def _submit_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._submit_part(*held)

    def _abort_quietly(self) -> None:
        """Abort the multipart upload a small blob did not need; one left open is
        garbage that gc and lifecycle rules sweep, not a failed commit."""
        try:
            self._uploads.abort(self._stored.state)
        except StorageError as exc:
            log.warning("upload %s: multipart upload left for gc: %s", self.id[:100], exc)

    def _hash(self) -> ResumableHash:
        if self._hasher is None:
            self._hasher = ResumableHash.from_state(self._algorithm, self._hash_state)
        return self._hasher

    def _tail_size(self) -> int:
        return sum(p.size for p in self._pieces) + len(self._buffer)

    def _take_tail(self) -> tuple[Body, int]:
        """The whole buffered tail (saved pieces, then this writer's bytes) with the
        budget it holds, leaving it empty; the pieces are deleted at the next save."""
        reserved = 0
        body: Body = []
        if self._pieces:
            size = sum(p.size for p in self._pieces)
            self._uploads.budget.reserve(size)
            reserved = size
            try:
                state = self._stored.state
                # One GET per piece, side by side: a tail saved by many small closes
                # costs one round trip, not one each.
                fetched = self._pool().map(
                    lambda p: self._uploads.get_piece(state, p), self._pieces
                )
                body = [memoryview(data) for data in fetched]
            except BaseException:
                self._uploads.budget.release(reserved)
                raise
            self._consumed += self._piece_keys(self._pieces)
            self._pieces = []
        views, held = self._buffer.take()
        return body + views, reserved + held

    def _piece_keys(self, pieces: list[Piece]) -> list[str]:
        return self._uploads.piece_keys(self._stored.state, pieces)

    def _submit_part(self, body: Body, reserved: int) -> None:
        while len(self._inflight) >= self._uploads.config.max_concurrency:
            self._parts.append(self._inflight.popleft().result())
        number = len(self._parts) + len(self._inflight) + 1
        if number > MAX_PARTS:
            self._uploads.budget.release(reserved)
            raise BlobTooLarge(
                f"a blob may hold at most {MAX_PARTS} parts; send larger chunks, "
                "or raise S3BLOBS_PART_SIZE"
            )
        # In the request's context: its S3 calls count, and log, as the request's.
        upload = contextvars.copy_context().run
        self._inflight.append(
            self._pool().submit(upload, self._upload_part, number, body, reserved)
        )

    def _pool(self) -> ThreadPoolExecutor:
        """This writer's threads for S3 transfers, started at the first need."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self._uploads.config.max_concurrency, thread_name_prefix="s3blobs-part"
            )
        return self._executor

    def _upload_part(self, number: int, body: Body, reserved: int) -> Part:
        state = self._stored.state
        try:
            with s3_errors(f"uploading part {number}", not_found=self._gone):
                response = self._uploads.client.upload_part(
                    Bucket=self._uploads.bucket,
                    Key=state.data_key,
                    UploadId=state.upload_id,
                    PartNumber=number,
                    Body=ChunkReader(body),
                    ChecksumAlgorithm="CRC32",
                )
        finally:
            self._uploads.budget.release(reserved)
        size = sum(view.nbytes for view in body)
        return Part(str(response["ETag"]), str(response.get("ChecksumCRC32", "")), size)

    def _drain(self) -> None:
        while self._inflight:
            self._parts.append(self._inflight.popleft().result())

    def _stored_etag(self, key: str) -> str | None:
        try:
            with s3_errors("checking the upload's data", not_found=self._gone):
                response = self._uploads.client.head_object(Bucket=self._uploads.bucket, Key=key)
        except BlobUploadUnknown:
            return None
        return str(response["ETag"]).strip('"')

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

    def _gone(self) -> BlobUploadUnknown:
        return BlobUploadUnknown(f"upload {self.id[:100]} was committed or cancelled")

    def _check_writable(self) -> None:
        if self._ended:
            raise BlobUploadClosed(
                f"writer {self.id[:100]} is {self._ended}"
                + ("; resume it to continue" if self._ended in ("closed", "broken") else "")
            )
        if self.committing:
            raise BlobUploadClosed(f"upload {self.id[:100]} is being committed")

    def _end(self, how: str) -> None:
        self._ended = how
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._buffer.clear()
        if self._held is not None:
            self._uploads.budget.release(self._held[1])
            self._held = None

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
            raise


def _multipart_etag(parts: list[Part]) -> str:
    """The ETag S3 gives an object completed from ``parts``: the MD5 of their MD5s."""
    md5s = b"".join(bytes.fromhex(part.etag.strip('"')) for part in parts)
    return f"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"


def _hexdigest(algorithm: str, body: Body) -> str:
    hasher = hashlib.new(algorithm)
    for view in body:
        hasher.update(view)
    return hasher.hexdigest()
