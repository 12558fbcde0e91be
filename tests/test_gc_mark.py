"""gc's mark: what every kept manifest needs stays (config, layers, an index's manifests
recursively, the referrers of kept manifests), foreign layers need not exist, and
--delete-untagged deletes what no tag reaches."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from conftest import BUCKET
from gcsupport import (
    FOREIGN,
    INDEX,
    LAYER,
    Registry,
    age,
    descriptor,
    digest_of,
    gc_config,
    has_entry,
)
from s3blobs import S3BlobStorage
from s3blobs.gc import listing


def test_every_revision_keeps_what_it_names(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    tagged, tagged_blobs, _ = registry.image("team/app", "v1", [b"base", b"app-1"])
    untagged, untagged_blobs, _ = registry.image("team/app", None, [b"base", b"app-2"])
    elsewhere, elsewhere_blobs, _ = registry.image("team/other", "v1", [b"other"])
    loose = registry.blob("team/app", b"pushed, never used")
    age()
    young = registry.blob("team/app", b"pushed just now")

    report = storage.collect_garbage(settle=0, progress=False)

    assert report.kept["manifests"] == 3
    for digest in [tagged, untagged, elsewhere, *tagged_blobs, *untagged_blobs, *elsewhere_blobs]:
        assert has_entry(s3, BUCKET, digest), digest
    assert registry.exists("team/app", untagged_blobs[-1])
    assert not has_entry(s3, BUCKET, loose) and not registry.exists("team/app", loose)
    assert registry.exists("team/app", young)  # younger than the grace
    assert report.deleted["blobs"].count == 1 and report.deleted["links"].count == 1
    assert report.warnings == []


def test_index_recursion_referrers_and_delete_untagged(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    repo = "team/multi"
    amd64, amd64_blobs, amd64_desc = registry.image(repo, None, [b"amd64 layer"])
    arm64, arm64_blobs, arm64_desc = registry.image(repo, None, [b"arm64 layer"])
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [amd64_desc, arm64_desc]}
    status, index_digest = registry.manifest(repo, "v1", index, INDEX)
    assert status == 201
    index_desc = {"mediaType": INDEX, "size": len(json.dumps(index)), "digest": index_digest}
    # A signature of the index (a referrer, untagged), and one of the signature.
    signature, signature_blobs, signature_desc = registry.image(
        repo, None, [b"signature of the index"], subject=index_desc
    )
    countersign, countersign_blobs, _ = registry.image(
        repo, None, [b"signature of the signature"], subject=signature_desc
    )
    # Untagged and unreachable: an old build, and a signature of it.
    old, old_blobs, old_desc = registry.image(repo, None, [b"old build layer"])
    old_signature, old_signature_blobs, _ = registry.image(
        repo, None, [b"signature of the old build"], subject=old_desc
    )
    age()

    dry = storage.collect_garbage(delete_untagged=True, settle=0, progress=False, dry_run=True)
    assert dry.deleted["manifests"].count == 2 and has_entry(s3, BUCKET, old)
    report = storage.collect_garbage(delete_untagged=True, settle=0, progress=False)

    kept = [index_digest, amd64, arm64, signature, countersign]
    kept += amd64_blobs + arm64_blobs + signature_blobs + countersign_blobs
    for digest in kept:
        assert has_entry(s3, BUCKET, digest), digest
    for reference in (index_digest, amd64, arm64, signature, countersign):
        assert registry.manifest_exists(repo, reference), reference
    # The old build and its signature: revisions, referrer entry, manifests, blobs.
    assert not registry.manifest_exists(repo, old)
    assert not registry.manifest_exists(repo, old_signature)
    for digest in [old, old_signature, *old_blobs, *old_signature_blobs]:
        assert not has_entry(s3, BUCKET, digest), digest
    referrers = registry.client.get(f"/v2/{repo}/referrers/{old}").get_json()
    assert referrers["manifests"] == []
    listed = registry.client.get(f"/v2/{repo}/referrers/{index_digest}").get_json()
    assert [m["digest"] for m in listed["manifests"]] == [signature]
    assert report.deleted["manifests"].count == 2
    assert report.deleted["referrers"].count == 1
    assert report.kept["manifests"] == 5
    # One GET per kept manifest, one of the fence; the tag costs none (its ETag is the
    # MD5 of the digest it names).
    assert report.requests["GetObject"] == 5 + 1


def test_without_delete_untagged_untagged_manifests_stay(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    untagged, blobs, _ = registry.image("team/app", None, [b"untagged layer"])
    age()

    storage.collect_garbage(settle=0, progress=False)
    assert registry.manifest_exists("team/app", untagged)
    assert all(has_entry(s3, BUCKET, d) for d in blobs)

    time.sleep(1.0)
    young, young_blobs, _ = registry.image("team/app", None, [b"young untagged"])
    report = storage.collect_garbage(delete_untagged=True, grace=1.0, settle=0, progress=False)

    # The old untagged one goes; the young one is within the grace.
    assert not registry.manifest_exists("team/app", untagged)
    assert not any(has_entry(s3, BUCKET, d) for d in [untagged, *blobs])
    assert registry.manifest_exists("team/app", young)
    assert all(has_entry(s3, BUCKET, d) for d in young_blobs)
    assert report.deleted["manifests"].count == 1


def test_foreign_layers_need_not_exist(s3: Any) -> None:
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    config = registry.blob("team/win", b'{"os": "windows"}')
    pushed_foreign = os.urandom(64)
    registry.blob("team/win", pushed_foreign)  # a foreign layer that was pushed anyway
    absent = b"never pushed: it lives at its urls"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", b'{"os": "windows"}'),
        "layers": [
            descriptor(FOREIGN, absent, urls=["https://example.invalid/base.tar.gz"]),
            descriptor(FOREIGN, pushed_foreign, urls=["https://example.invalid/2.tar.gz"]),
            descriptor(LAYER, b"a normal layer"),
        ],
    }
    registry.blob("team/win", b"a normal layer")
    status, digest = registry.manifest("team/win", "ltsc", manifest)
    assert status == 201
    age()

    report = storage.collect_garbage(settle=0, progress=False)

    assert report.warnings == [] and report.deleted["blobs"].count == 0
    for blob in (config, digest_of(pushed_foreign), digest_of(b"a normal layer"), digest):
        assert has_entry(s3, BUCKET, blob)
    assert registry.manifest_exists("team/win", "ltsc")


def test_repositories_are_listed_in_ranges_each_key_once(
    s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names that sort around each other's separators: "a-b/" < "a.b/" < "a/" < "a_b/".
    names = ["a", "a-b", "a.b", "a/b", "a/b-c", "a_b", "a.b.c/d", "ab", "b", "z9/x"]
    storage = S3BlobStorage(gc_config(BUCKET))
    registry = Registry(storage)
    for name in names:
        registry.image(name, "v1", [f"layer of {name}".encode()])
    for ranges in (1, 2, 3, 64):
        monkeypatch.setattr(listing, "MAX_RANGES", ranges)
        report = storage.collect_garbage(settle=0, progress=False, dry_run=True)
        assert report.listed["revisions"] == len(names), ranges
        assert report.listed["links"] == 2 * len(names) and report.listed["tags"] == len(names)
        assert report.kept["manifests"] == len(names)
