"""The read path and simple writes: stat, get, open, put, delete, enumerate."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import pytest

from conftest import BUCKET, PART, S3Calls, all_keys, s3_error
from s3blobs import (
    BlobDigestUnsupported,
    BlobInvalidDigest,
    BlobUnknown,
    BucketNotFound,
    Config,
    RepositoryNameInvalid,
    S3BlobStorage,
    StorageError,
    StorageThrottled,
    parse_digest,
)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_then_read(repo: Any, storage: S3BlobStorage) -> None:
    descriptor = repo.put("application/vnd.oci.image.config.v1+json", b'{"a":1}')
    assert descriptor.digest == sha256(b'{"a":1}')
    assert descriptor.size == 7
    assert repo.stat(descriptor.digest) == descriptor
    assert storage.blobs.stat(descriptor.digest) == descriptor
    assert repo.get(descriptor.digest) == b'{"a":1}'
    with repo.open(descriptor.digest) as f:
        assert f.read() == b'{"a":1}'


def test_put_is_one_request_checked_by_s3(repo: Any, calls: S3Calls, s3: Any) -> None:
    data = b"layer bytes"
    descriptor = repo.put("application/octet-stream", data)
    # one PutObject for the entry, one for the repository's link
    assert calls.ops == ["PutObject", "PutObject"]
    head = s3.head_object(
        Bucket=BUCKET,
        Key=f"blobs/sha256/{descriptor.digest[7:9]}/{descriptor.digest[7:]}",
        ChecksumMode="ENABLED",
    )
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/octet-stream"


def test_put_is_idempotent(repo: Any, calls: S3Calls, s3: Any) -> None:
    first = repo.put("application/octet-stream", b"same")
    second = repo.put("application/octet-stream", b"same")
    assert first == second
    assert len([k for k in all_keys(s3) if k.startswith("blobs/")]) == 1


def test_put_rejects_non_bytes(repo: Any, calls: S3Calls) -> None:
    with pytest.raises(TypeError):
        repo.put("text/plain", "a string")
    assert calls.count == 0


def test_empty_blob(repo: Any) -> None:
    descriptor = repo.put("application/octet-stream", b"")
    assert descriptor.size == 0
    assert descriptor.digest == sha256(b"")
    assert repo.get(descriptor.digest) == b""
    assert repo.stat(descriptor.digest).size == 0


def test_stat_requests(repo: Any, storage: S3BlobStorage, calls: S3Calls) -> None:
    digest = repo.put("a/b", b"x").digest
    calls.reset()
    storage.blobs.stat(digest)
    assert calls.ops == ["HeadObject"]
    calls.reset()
    repo.stat(digest)
    assert calls.ops == ["HeadObject", "HeadObject"]  # the link, then the entry


def test_missing_blobs_are_unknown(repo: Any, storage: S3BlobStorage) -> None:
    missing = sha256(b"never stored")
    for call in (
        repo.stat,
        repo.get,
        repo.open,
        repo.delete,
        storage.blobs.stat,
        storage.blobs.get,
        storage.blobs.open,
        storage.blobs.delete,
    ):
        with pytest.raises(BlobUnknown):
            call(missing)


def test_bad_digests_never_reach_s3(repo: Any, storage: S3BlobStorage, calls: S3Calls) -> None:
    for call in (
        repo.stat,
        repo.get,
        repo.open,
        repo.delete,
        storage.blobs.stat,
        storage.blobs.get,
        storage.blobs.delete,
    ):
        with pytest.raises(BlobInvalidDigest):
            call("sha256:../../../_uploads")
        with pytest.raises(BlobDigestUnsupported):
            call("md5:" + "0" * 32)
    assert calls.count == 0


def test_repository_names_are_checked(storage: S3BlobStorage, calls: S3Calls) -> None:
    for name in ("../x", "a//b", "Upper", "a" * 300):
        with pytest.raises(RepositoryNameInvalid):
            storage.repository(name)
    assert calls.count == 0


def test_repository_sees_only_linked_blobs(storage: S3BlobStorage) -> None:
    ours, theirs = storage.repository("ours"), storage.repository("theirs")
    digest = theirs.put("a/b", b"private layer").digest
    with pytest.raises(BlobUnknown):
        ours.stat(digest)
    with pytest.raises(BlobUnknown):
        ours.get(digest)
    assert storage.blobs.get(digest) == b"private layer"


def test_delete(storage: S3BlobStorage, s3: Any) -> None:
    a, b = storage.repository("a"), storage.repository("b")
    digest = a.put("x/y", b"shared").digest
    b.put("x/y", b"shared")
    a.delete(digest)  # removes a's link only
    with pytest.raises(BlobUnknown):
        a.stat(digest)
    assert b.get(digest) == b"shared"
    storage.blobs.delete(digest)  # removes the blob itself
    with pytest.raises(BlobUnknown):
        storage.blobs.stat(digest)
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]


def test_delete_large_blob_removes_its_data(storage: S3BlobStorage, repo: Any, s3: Any) -> None:
    digest = repo.put("x/y", os.urandom(PART + 10)).digest
    assert [k for k in all_keys(s3) if k.startswith("data/")]
    storage.blobs.delete(digest)
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]


def test_enumerate_pages_lazily(storage: S3BlobStorage, repo: Any, calls: S3Calls, s3: Any) -> None:
    # Entries and links written straight to S3: enumerate only lists keys.
    digests = {sha256(str(i).encode()) for i in range(1001)}
    linked = sorted(digests)[:3]
    for digest in digests:
        s3.put_object(Bucket=BUCKET, Key=storage.paths.blob(parse_digest(digest)), Body=b"")
    for digest in linked:
        key = storage.paths.link(repo.name, parse_digest(digest))
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    s3.put_object(Bucket=BUCKET, Key="blobs/sha256/zz/not-a-blob", Body=b"")
    listing = storage.blobs.enumerate()
    first = next(listing)
    assert calls.ops == ["ListObjectsV2"]  # one page of 1,000 so far
    rest = set(listing)
    assert {first, *rest} == digests
    assert calls.ops == ["ListObjectsV2", "ListObjectsV2"]
    assert sorted(repo.enumerate()) == linked


def test_open_reads_ranges_not_the_object(repo: Any, storage: S3BlobStorage) -> None:
    data = os.urandom(3 * PART)
    digest = repo.put("a/b", data).digest
    received: list[int] = []
    storage.client.meta.events.register(
        "after-call.s3.GetObject",
        lambda parsed, **_: received.append(int(parsed["ContentLength"])),
    )
    with repo.open(digest) as f:
        assert f.seekable() and f.readable()
        f.seek(2 * PART + 123)
        assert f.read(1024) == data[2 * PART + 123 : 2 * PART + 1147]
        assert f.tell() == 2 * PART + 1147
        assert sum(received) <= 64 * 1024
        f.seek(-10, io.SEEK_END)
        assert f.read() == data[-10:]
        f.seek(0)
        assert f.read() == data
        buf = bytearray(100)
        f.seek(5)
        assert f.readinto(buf) == 100 and bytes(buf) == data[5:105]
        assert f.read(10) == data[105:115]
        f.seek(len(data) + 10)
        assert f.read(5) == b""
        with pytest.raises(ValueError):
            f.seek(-1)
    with pytest.raises(ValueError):
        f.read(1)  # closed


def test_get_of_large_blob_is_two_requests_then_one(repo: Any, storage: S3BlobStorage) -> None:
    data = os.urandom(PART + 1)
    digest = repo.put("a/b", data).digest
    fresh = S3BlobStorage(storage.config)
    calls = S3Calls(fresh.client)
    assert fresh.blobs.get(digest) == data
    assert calls.ops == ["GetObject", "GetObject"]  # the entry names the data object
    calls.reset()
    assert fresh.blobs.get(digest) == data
    assert calls.ops == ["GetObject"]


def test_missing_bucket_is_named(s3: Any) -> None:
    with pytest.raises(BucketNotFound, match="no-such-bucket"):
        S3BlobStorage(Config(bucket="no-such-bucket"))


def test_prefix_places_every_key(s3: Any) -> None:
    storage = S3BlobStorage(Config(bucket=BUCKET, prefix="registry/v2", part_size=PART))
    repo = storage.repository("a")
    repo.put("a/b", b"small")
    repo.put("a/b", os.urandom(PART + 1))
    keys = all_keys(s3)
    assert keys and all(k.startswith("registry/v2/") for k in keys)
    assert len(list(storage.blobs.enumerate())) == 2


def _inject(client: Any, operation: str, status: int, code: str, times: int) -> list[int]:
    seen: list[int] = []

    def fail(**_: Any) -> Any:
        if len(seen) >= times:
            return None
        seen.append(status)
        return s3_error(status, code)

    client.meta.events.register_first(f"before-send.s3.{operation}", fail)
    return seen


def test_transient_errors_are_retried(repo: Any, storage: S3BlobStorage) -> None:
    seen = _inject(storage.client, "PutObject", 500, "InternalError", times=1)
    descriptor = repo.put("a/b", b"retried")
    assert seen == [500]
    assert repo.get(descriptor.digest) == b"retried"


def test_throttling_that_persists_is_named(repo: Any, storage: S3BlobStorage) -> None:
    _inject(storage.client, "PutObject", 503, "SlowDown", times=100)
    with pytest.raises(StorageThrottled):
        repo.put("a/b", b"throttled")


def test_other_s3_failures_are_storage_errors(repo: Any, storage: S3BlobStorage) -> None:
    digest = repo.put("a/b", b"x").digest
    _inject(storage.client, "HeadObject", 403, "AccessDenied", times=100)
    with pytest.raises(StorageError, match=r"403|AccessDenied"):
        storage.blobs.stat(digest)
