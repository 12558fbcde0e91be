"""Repositories: links, the descriptor service's rules, and cross-repository mount."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest

from conftest import BUCKET, PART, S3Calls, all_keys, open_uploads
from s3blobs import (
    BlobInvalidDigest,
    BlobMounted,
    BlobUnknown,
    Descriptor,
    DescriptorCacheFactory,
    RepositoryNameInvalid,
    S3BlobStorage,
    parse_digest,
)


def sha(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def test_put_and_commit_link_into_their_repository(storage: S3BlobStorage) -> None:
    a = storage.repository("team/a")
    put = a.put("x/y", b"put bytes")
    writer = a.create()
    writer.write(b"written bytes")
    committed = writer.commit(Descriptor("x/y", 13, sha(b"written bytes")))
    assert set(a.enumerate()) == {put.digest, committed.digest}
    other = storage.repository("team/b")
    for digest in (put.digest, committed.digest):
        for call in (other.stat, other.get, other.open, other.delete):
            with pytest.raises(BlobUnknown):
                call(digest)
        assert storage.blobs.stat(digest)  # stored, just not linked into team/b


def test_repository_delete_unlinks_global_delete_removes(storage: S3BlobStorage, s3: Any) -> None:
    a, b = storage.repository("a"), storage.repository("b")
    big = os.urandom(PART + 1)
    digest = a.put("x/y", big).digest
    b.put("x/y", big)
    a.delete(digest)
    with pytest.raises(BlobUnknown):
        a.stat(digest)
    with pytest.raises(BlobUnknown):
        a.delete(digest)
    assert b.get(digest) == big
    storage.blobs.delete(digest)
    with pytest.raises(BlobUnknown):
        b.get(digest)  # b's link outlived the blob: still unknown, never an S3 error
    assert not [k for k in all_keys(s3) if k.startswith(("blobs/", "data/"))]


# The descriptor service's rules ---------------------------------------------------


def test_set_descriptor_rules(repo: Any) -> None:
    service = repo.descriptors
    data = b"content"
    canonical = Descriptor("x/y", len(data), sha(data))
    service.set_descriptor(canonical.digest, canonical)
    # a sha512 digest may map to the canonical sha256 descriptor of the same content
    service.set_descriptor(sha(data, "sha512"), canonical)
    bad = [
        (sha(b"other"), canonical),  # same algorithm, different digest
        (canonical.digest, Descriptor("x/y", -1, canonical.digest)),  # negative size
        (canonical.digest, Descriptor("x/y", 1, "sha256:zz")),  # malformed digest
        (canonical.digest, Descriptor("", 1, canonical.digest)),  # no media type
        (sha(data), Descriptor("x/y", 7, sha(data, "sha512"))),  # maps away from canonical
        ("sha256:nothex", canonical),
    ]
    for digest, descriptor in bad:
        with pytest.raises(BlobInvalidDigest):
            service.set_descriptor(digest, descriptor)


def test_descriptor_rules_apply_through_the_cache(config: Any) -> None:
    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=10, ttl=60))
    service = storage.repository("a").descriptors
    with pytest.raises(BlobInvalidDigest):
        service.set_descriptor(sha(b"a"), Descriptor("x/y", -5, sha(b"a")))
    with pytest.raises(BlobInvalidDigest):
        service.set_descriptor(sha(b"a"), Descriptor("x/y", 1, sha(b"b")))


# Mount ------------------------------------------------------------------------------


def test_mount_links_without_upload(storage: S3BlobStorage, s3: Any) -> None:
    source, target = storage.repository("src/app"), storage.repository("dst/app")
    descriptor = source.put("x/y", b"layer")
    calls = S3Calls(storage.client)
    with pytest.raises(BlobMounted) as info:
        target.create(mount_from=f"src/app@{descriptor.digest}")
    assert info.value.from_ == f"src/app@{descriptor.digest}"
    assert info.value.descriptor == descriptor
    # the source's link; not its entry: this process linked it there moments ago
    assert calls.ops == ["HeadObject", "PutObject"]
    assert target.get(descriptor.digest) == b"layer"
    assert open_uploads(s3) == []


def test_a_mount_from_what_another_process_linked_checks_the_entry(
    config: Any, storage: S3BlobStorage
) -> None:
    descriptor = S3BlobStorage(config).repository("src").put("x/y", b"layer")
    calls = S3Calls(storage.client)
    with pytest.raises(BlobMounted):
        storage.repository("dst").create(mount_from=f"src@{descriptor.digest}")
    assert calls.ops == ["HeadObject", "HeadObject", "PutObject"]  # source link, entry, link


def test_mount_with_stat_skips_the_source_check(storage: S3BlobStorage) -> None:
    source, target = storage.repository("src"), storage.repository("dst")
    descriptor = source.put("x/y", b"layer")
    calls = S3Calls(storage.client)
    with pytest.raises(BlobMounted):
        target.create(mount_from=f"src@{descriptor.digest}", stat=descriptor)
    assert calls.ops == ["PutObject"]


@pytest.mark.parametrize(
    "reference",
    [
        "src@sha256:zz",
        "../src@sha256:" + "a" * 64,
        "src",
        "src@",
        "Src@sha256:" + "a" * 64,
        "src@md5:" + "a" * 32,
    ],
)
def test_malformed_mount_reference_starts_an_upload(
    storage: S3BlobStorage, s3: Any, reference: str
) -> None:
    writer = storage.repository("dst").create(mount_from=reference)
    assert len(open_uploads(s3)) == 1
    writer.cancel()


def test_mount_from_a_source_without_the_blob_starts_an_upload(storage: S3BlobStorage) -> None:
    elsewhere = storage.repository("elsewhere").put("x/y", b"not in src")
    writer = storage.repository("dst").create(mount_from=f"src@{elsewhere.digest}")
    writer.write(b"abc")
    assert writer.commit(Descriptor("x/y", 3, sha(b"abc"))).size == 3


def test_mount_decision_checks_s3_not_the_cache(config: Any, s3: Any) -> None:
    storage = S3BlobStorage(config, DescriptorCacheFactory(maxsize=100, ttl=3600))
    source = storage.repository("src")
    descriptor = source.put("x/y", b"layer")
    assert source.stat(descriptor.digest) == descriptor  # now cached
    # another process unlinks it from src
    s3.delete_object(Bucket=BUCKET, Key=storage.paths.link("src", parse_digest(descriptor.digest)))
    assert source.stat(descriptor.digest) == descriptor  # the cache has not seen the delete
    writer = storage.repository("dst").create(mount_from=f"src@{descriptor.digest}")
    writer.cancel()  # no mount: it started an upload


def test_invalid_repository_names(storage: S3BlobStorage, calls: S3Calls) -> None:
    for name in ("", "../etc", "a//b", "A", "a" * 256, "a/_layers/../../b"):
        with pytest.raises(RepositoryNameInvalid):
            storage.repository(name)
    assert calls.count == 0
