"""The persisted state of an open upload, and the S3 objects that carry it.

One small JSON object per upload, ``_uploads/<writer id>/state``, found from the
writer id alone, so ``resume`` is a single GET. It is written conditionally
(``IfNoneMatch`` when new, ``IfMatch`` on its ETag after), so of two processes that
resumed the same state only one can write the next one. A write whose condition
fails reads the state back: when it already holds what this writer meant to write
(its own write whose answer was lost and that botocore retried, or a duplicate
request that carried the same bytes) the writer carries on; only a different state
is a conflict.

A buffered tail smaller than a part is saved at each ``close()`` as a new piece
(``_uploads/<id>/piece.<hex>``) rather than by rewriting the whole tail, so each
byte goes to S3 at most twice: once in a piece, once in a part.

A commit *seals* the state (``committing`` names the digest) once every byte is
durable where the blob will take it from, before the step that consumes the upload:
after that no PATCH can be acknowledged, and any process can finish the commit
from the state alone, without the request's body.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from .buffers import BufferBudget, ChunkReader
from .config import Config
from .digests import parse_digest
from .errors import BlobUploadConflict, BlobUploadUnknown
from .paths import Paths, is_valid_upload_token
from .s3 import delete_keys, encryption_args, s3_errors


def writer_id(upload_id: str) -> str:
    """The URL-safe form of an S3 upload id: base64url, unpadded."""
    return base64.urlsafe_b64encode(upload_id.encode()).decode().rstrip("=")


def upload_id_of(token: str) -> str:
    """S3's upload id back from a writer id; BlobUploadUnknown for anything else."""
    if not is_valid_upload_token(token):
        raise BlobUploadUnknown("not a writer id")
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BlobUploadUnknown("not a writer id") from None


@dataclass(frozen=True)
class Piece:
    """Bytes saved at a close(), waiting to become part of a part: an object of the
    upload's own (``name``), or, for a whole blob too short for a part, the entry of
    the digest those bytes have (``entry``), which is a blob in its own right and is
    never deleted with the upload."""

    name: str
    size: int
    entry: str = ""


@dataclass(frozen=True)
class Part:
    """An uploaded part, as CompleteMultipartUpload wants it back, and its size."""

    etag: str
    crc32: str = ""  # S3's CRC32 of the part, where the store returns one
    size: int = 0


@dataclass(frozen=True)
class UploadState:
    """What a process needs to continue an upload: invariant
    ``size == sum(part sizes) + sum(piece sizes)``, except once sealed.

    A sealed state (``committing`` is the digest being committed) holds every byte
    in its parts (the last one short), or, for a blob below one part, in the blob's
    entry already; ``pieces`` then lists saved pieces that only wait to be deleted.
    """

    upload_id: str
    data_key: str
    repository: str
    started_at: float
    part_size: int
    algorithm: str
    hash_state: bytes
    size: int = 0
    parts: tuple[Part, ...] = ()
    pieces: tuple[Piece, ...] = ()
    committing: str = ""

    @property
    def id(self) -> str:
        return writer_id(self.upload_id)

    @property
    def started(self) -> datetime:
        return datetime.fromtimestamp(self.started_at, tz=timezone.utc)

    def holds_same_bytes(self, other: UploadState) -> bool:
        """True when ``other`` records exactly the bytes this state records, in the
        same parts: the same upload, length and hash state, whatever its pieces are
        called. A writer whose conditional write lost to such a state carries on."""
        return (
            self.upload_id == other.upload_id
            and self.size == other.size
            and self.hash_state == other.hash_state
            and self.parts == other.parts
            and self.committing == other.committing
        )

    def to_json(self) -> bytes:
        data: dict[str, Any] = asdict(self)
        data["hash_state"] = base64.b64encode(self.hash_state).decode()
        data["pieces"] = [[p.name, p.size, p.entry] for p in self.pieces]
        data["parts"] = [[p.etag, p.crc32, p.size] for p in self.parts]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> UploadState:
        # Fields this version does not know (a claim, from the first releases) are dropped.
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in json.loads(raw).items() if k in known}
        data["hash_state"] = base64.b64decode(data["hash_state"])
        # Parts saved by the first releases had no size: they were all part_size.
        data["parts"] = tuple(
            Part(part[0], part[1], part[2] if len(part) > 2 else data["part_size"])
            for part in data["parts"]
        )
        data["pieces"] = tuple(Piece(*piece) for piece in data["pieces"])
        return cls(**data)


@dataclass
class StoredState:
    """A state and the ETag it was read or written with (for the next conditional write)."""

    state: UploadState
    etag: str | None = None


class UploadStore:
    """Creates, reads, writes and removes upload states, pieces and multipart uploads."""

    def __init__(self, client: Any, config: Config, paths: Paths) -> None:
        self.client = client
        self.config = config
        self.bucket = config.bucket
        self.paths = paths
        self.budget = BufferBudget(config.max_buffer)

    def start(self, repository: str, algorithm: str, hash_state: bytes) -> StoredState:
        """CreateMultipartUpload on a fresh data key, then the first state: 2 requests."""
        data_key = self.paths.new_data_key()
        with s3_errors("starting an upload"):
            response = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=data_key,
                ChecksumAlgorithm="CRC32",
                **encryption_args(self.config),
            )
        state = UploadState(
            upload_id=response["UploadId"],
            data_key=data_key,
            repository=repository,
            started_at=time.time(),
            part_size=self.config.part_size,
            algorithm=algorithm,
            hash_state=hash_state,
        )
        stored = StoredState(state)
        try:
            self.save(stored, state)
        except BaseException:
            self.abort(state)  # no state names it: nobody could ever resume or abort it
            raise
        return stored

    def load(self, token: str, repository: str) -> StoredState:
        """One GET. BlobUploadUnknown for garbage, a finished upload, or another repository."""
        upload_id = upload_id_of(token)

        def unknown() -> BlobUploadUnknown:
            return BlobUploadUnknown(f"no upload {token[:100]!r}")

        with s3_errors("resuming an upload", not_found=unknown):
            key = self.paths.upload_state(token)
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            raw = response["Body"].read()
        try:
            state = UploadState.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise BlobUploadUnknown(f"upload {token[:100]!r} has an unreadable state") from exc
        if state.upload_id != upload_id or state.repository != repository:
            raise unknown()
        return StoredState(state, response["ETag"])

    def save(self, stored: StoredState, state: UploadState) -> None:
        """Write ``state`` if nobody wrote since ``stored`` was read.

        When the condition fails and the state now in S3 holds the same bytes (our own
        write, answered late, or a duplicate request's), that state is adopted; any
        other state is BlobUploadConflict, and a removed one BlobUploadUnknown.
        """
        condition = {"IfMatch": stored.etag} if stored.etag else {"IfNoneMatch": "*"}

        def conflict() -> BlobUploadConflict:
            return BlobUploadConflict(
                f"upload {state.id[:100]} was changed by another request; resume it again"
            )

        def removed() -> BlobUploadUnknown:
            return BlobUploadUnknown(f"upload {state.id[:100]} was committed or cancelled")

        try:
            with s3_errors("saving upload state", not_found=removed, precondition_failed=conflict):
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.paths.upload_state(state.id),
                    Body=state.to_json(),
                    ContentType="application/json",
                    **condition,
                    **encryption_args(self.config),
                )
        except BlobUploadConflict:
            current = self.load(state.id, state.repository)  # BlobUploadUnknown if removed
            if not current.state.holds_same_bytes(state):
                raise
            stored.state, stored.etag = current.state, current.etag
            return
        stored.state, stored.etag = state, response["ETag"]

    def put_piece(self, state: UploadState, data: ChunkReader) -> Piece:
        piece = Piece(uuid.uuid4().hex, len(data))
        with s3_errors("saving an upload's buffered bytes"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.paths.upload_piece(state.id, piece.name),
                Body=data,
                **encryption_args(self.config),
            )
        return piece

    def get_piece(self, state: UploadState, piece: Piece) -> bytes:
        def expired() -> BlobUploadUnknown:
            return BlobUploadUnknown(f"upload {state.id[:100]} lost saved bytes (expired?)")

        if piece.entry:
            key = self.paths.blob(parse_digest(piece.entry))
        else:
            key = self.paths.upload_piece(state.id, piece.name)
        with s3_errors("reading an upload's buffered bytes", not_found=expired):
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            data = bytes(response["Body"].read())
        if len(data) != piece.size:
            raise BlobUploadConflict(f"upload {state.id[:100]}: a saved piece has the wrong size")
        return data

    def piece_keys(self, state: UploadState, pieces: tuple[Piece, ...] | list[Piece]) -> list[str]:
        """The upload's own objects among ``pieces`` (an entry is a blob: never deleted)."""
        return [self.paths.upload_piece(state.id, p.name) for p in pieces if not p.entry]

    def delete_keys(self, keys: list[str]) -> None:
        delete_keys(self.client, self.bucket, keys, "removing upload state")

    def remove(self, state: UploadState, extra: list[str]) -> None:
        """Remove the state, its pieces and ``extra`` keys: one request for most uploads."""
        keys = [self.paths.upload_state(state.id), *self.piece_keys(state, state.pieces), *extra]
        self.delete_keys(list(dict.fromkeys(keys)))

    def abort(self, state: UploadState) -> None:
        """Abort the multipart upload; one already gone is what abort wants. Best
        effort: what cannot be aborted now is swept by gc and lifecycle rules."""
        try:
            with s3_errors("aborting an upload", not_found=lambda: BlobUploadUnknown("gone")):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=state.data_key, UploadId=state.upload_id
                )
        except BlobUploadUnknown:
            pass
