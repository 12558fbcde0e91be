"""An S3 client for a store that one process owns: ``s3blobs serve --data``.

The persistent local store is rclone's ``serve s3`` over a directory (see
:mod:`s3blobs.cli.local_store` for why). rclone stores object bytes as files, and
three things s3blobs relies on it does not keep:

- conditional writes: ``If-None-Match`` and ``If-Match`` on PutObject are ignored,
  so two commits of one digest could both write the entry, and two writers of one
  upload could both save their state;
- user metadata and Content-Type live in rclone's memory only (and come back with
  their keys' case changed): after a restart, an entry that names its data object
  in metadata would read as an empty blob, and every manifest as
  ``application/octet-stream``;
- the ETag of a completed multipart upload: HeadObject answers the MD5 of the whole
  object instead, so a commit could not recognise its own completed upload.

:class:`SingleOwnerClient` wraps the boto3 client and supplies the three, in this
process, which is the store's only writer (``serve --data`` runs one worker, with
threads; a lock file keeps a second ``serve`` off the directory):

- writes and deletes of a key hold that key's lock; a conditional write reads the
  object's ETag under the lock and answers 412 (or 404, for ``If-Match`` on a
  missing key) exactly as S3 does, so the code above cannot tell the difference;
- Content-Type, user metadata and a multipart ETag go to a SQLite file beside the
  store (synchronous, written before the object and restored if the write fails),
  and come back on every HeadObject and GetObject;
- every acknowledged write is fsynced (the file, and the directories that hold its
  entry and any new directory's), which rclone itself does not do: a registry must
  not acknowledge a blob and lose it.

Everything else (listings, parts, presigned URLs, ``meta`` for event hooks) is the
wrapped client's, untouched. A presigned GET goes to rclone itself, which answers
with its own Content-Type (``application/octet-stream`` after a restart): only blob
downloads take that path, and registry clients go by the digest, not by a blob's
Content-Type. Manifests are always answered by the registry, with their media type.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from .s3 import is_not_found

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    """What the store forgets and this process remembers for one object."""

    content_type: str | None
    metadata: dict[str, str]
    etag: str | None  # only where the store's own differs from S3's (multipart)


class MetadataStore:
    """Recorded attributes by (bucket, key), in SQLite (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS objects (bucket TEXT, key TEXT, "
                "content_type TEXT, metadata TEXT, etag TEXT, PRIMARY KEY (bucket, key))"
            )

    def get(self, bucket: str, key: str) -> Recorded | None:
        with self._lock:
            row = self._db.execute(
                "SELECT content_type, metadata, etag FROM objects WHERE bucket=? AND key=?",
                (bucket, key),
            ).fetchone()
        if row is None:
            return None
        return Recorded(row[0], json.loads(row[1]), row[2])

    def put(self, bucket: str, key: str, recorded: Recorded | None) -> None:
        with self._lock:
            if recorded is None:
                self._db.execute("DELETE FROM objects WHERE bucket=? AND key=?", (bucket, key))
                return
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                (
                    bucket,
                    key,
                    recorded.content_type,
                    json.dumps(recorded.metadata),
                    recorded.etag,
                ),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class KeyLocks:
    """One lock per key in use, made on demand and dropped when nobody holds it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, bucket: str, keys: list[str]) -> Iterator[None]:
        """Hold the locks of ``keys``, taken in sorted order so two callers never
        wait on each other in a circle."""
        names = [(bucket, key) for key in sorted(set(keys))]
        taken = []
        try:
            for name in names:
                self._acquire(name)
                taken.append(name)
            yield
        finally:
            for name in reversed(taken):
                self._release(name)

    def _acquire(self, name: tuple[str, str]) -> None:
        with self._guard:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        lock.acquire()

    def _release(self, name: tuple[str, str]) -> None:
        with self._guard:
            lock, users = self._locks[name]
            lock.release()
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class SingleOwnerClient:
    """A boto3 S3 client whose conditional writes, metadata and multipart ETags hold
    on a store that honours none of them, as long as this process is its only writer.

    ``files`` is the directory the store keeps bucket ``b``'s key ``k`` in as
    ``files/b/k``: every acknowledged write is fsynced there (None: not at all).
    """

    def __init__(self, client: Any, metadata: MetadataStore, files: Path | None) -> None:
        self._client = client
        self._metadata = metadata
        self._files = files
        self._locks = KeyLocks()
        # Directories whose entry in their parent is synced. rclone removes a directory
        # left empty by a delete, so every delete forgets them all.
        self._synced_dirs: set[Path] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    # Writes ------------------------------------------------------------------------

    def put_object(self, **args: Any) -> Any:
        bucket, key = args["Bucket"], args["Key"]
        conditions = _pop_conditions(args)
        recorded: Recorded | None = Recorded(
            args.get("ContentType"), dict(args.get("Metadata") or {}), None
        )
        if recorded == Recorded(None, {}, None):
            recorded = None  # nothing to remember (links, tags): no record
        with self._locks.hold(bucket, [key]):
            self._check(bucket, key, "PutObject", **conditions)
            response = self._recording(
                bucket, key, recorded, lambda: self._client.put_object(**args)
            )
            self._sync(bucket, key)
        return response

    def complete_multipart_upload(self, **args: Any) -> Any:
        bucket, key = args["Bucket"], args["Key"]
        conditions = _pop_conditions(args)
        with self._locks.hold(bucket, [key]):
            self._check(bucket, key, "CompleteMultipartUpload", **conditions)
            response = self._client.complete_multipart_upload(**args)
            # S3's ETag of a multipart object (MD5 of the parts' MD5s), which a commit
            # compares to recognise its own completed upload.
            self._metadata.put(bucket, key, Recorded(None, {}, response["ETag"]))
            self._sync(bucket, key)
        return response

    def delete_object(self, **args: Any) -> Any:
        bucket, key = args["Bucket"], args["Key"]
        with self._locks.hold(bucket, [key]):
            response = self._client.delete_object(**args)
            self._metadata.put(bucket, key, None)
            self._synced_dirs.clear()
        return response

    def delete_objects(self, **args: Any) -> Any:
        bucket = args["Bucket"]
        keys = [item["Key"] for item in args["Delete"]["Objects"]]
        with self._locks.hold(bucket, keys):
            response = self._client.delete_objects(**args)
            self._synced_dirs.clear()
            failed = {error.get("Key") for error in response.get("Errors", ())}
            for key in keys:
                if key not in failed:
                    self._metadata.put(bucket, key, None)
        return response

    # Reads -------------------------------------------------------------------------

    def head_object(self, **args: Any) -> Any:
        return self._restored(args, self._client.head_object(**args))

    def get_object(self, **args: Any) -> Any:
        return self._restored(args, self._client.get_object(**args))

    # Internals ---------------------------------------------------------------------

    def _restored(self, args: dict[str, Any], response: Any) -> Any:
        recorded = self._metadata.get(args["Bucket"], args["Key"])
        if recorded is None:
            # Written some other way: S3 gives metadata keys in lower case.
            response["Metadata"] = {k.lower(): v for k, v in response.get("Metadata", {}).items()}
            return response
        response["Metadata"] = dict(recorded.metadata)
        if recorded.content_type:
            response["ContentType"] = recorded.content_type
        if recorded.etag:
            response["ETag"] = recorded.etag
        return response

    def _check(
        self, bucket: str, key: str, operation: str, if_none_match: Any, if_match: Any
    ) -> None:
        """What S3 decides for a conditional write, decided here under the key's lock."""
        if if_none_match is None and if_match is None:
            return
        try:
            etag = self.head_object(Bucket=bucket, Key=key)["ETag"]
        except ClientError as exc:
            if not is_not_found(exc):
                raise
            etag = None
        if if_none_match == "*" and etag is not None:
            raise _client_error(412, "PreconditionFailed", "the object exists", operation)
        if if_match is not None:
            if etag is None:
                raise _client_error(404, "NoSuchKey", "the object does not exist", operation)
            if etag.strip('"') != str(if_match).strip('"'):
                raise _client_error(412, "PreconditionFailed", "the ETag differs", operation)

    def _recording(self, bucket: str, key: str, recorded: Recorded | None, write: Any) -> Any:
        """Record first (a crash then leaves a record with no object, which nothing
        reads), write, and put the old record back if the write failed."""
        before = self._metadata.get(bucket, key)
        self._metadata.put(bucket, key, recorded)
        try:
            return write()
        except BaseException:
            self._metadata.put(bucket, key, before)
            raise

    def _sync(self, bucket: str, key: str) -> None:
        """fsync the object's file, its directory (the file's entry), and each directory
        above whose own entry this process has not synced yet, up to the bucket's."""
        if self._files is None:
            return
        top = self._files / bucket
        path = top / key
        try:
            _fsync(path)
            directory = path.parent
            _fsync(directory)
            while directory != top and top in directory.parents:
                if directory in self._synced_dirs:
                    break
                _fsync(directory.parent)
                self._synced_dirs.add(directory)
                directory = directory.parent
        except OSError as exc:
            log.warning("could not fsync %s: %s", path, exc)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pop_conditions(args: dict[str, Any]) -> dict[str, Any]:
    return {"if_none_match": args.pop("IfNoneMatch", None), "if_match": args.pop("IfMatch", None)}


def _client_error(status: int, code: str, message: str, operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )
