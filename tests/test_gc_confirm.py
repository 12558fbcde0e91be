"""What the registry does for gc when it tells a client a blob is there: an old link is
refreshed (once per half grace), a young one costs nothing, and a cached "exists" is
not trusted once gc may have deleted the blob."""

from __future__ import annotations

import time
from typing import Any

from conftest import BUCKET, S3Calls
from gcsupport import Registry, gc_config, has_entry
from s3blobs import BlobUnknown, DescriptorCacheFactory, S3BlobStorage


def link_modified(s3: Any, repository: str, digest: str) -> float:
    key = f"repositories/{repository}/_layers/sha256/{digest.split(':')[1]}"
    return float(s3.head_object(Bucket=BUCKET, Key=key)["LastModified"].timestamp())


def cached_storage(gc_grace: float = 1.0, ttl: float = 1.0) -> S3BlobStorage:
    config = gc_config(BUCKET, cache_size=100, cache_ttl=1.0, gc_grace=gc_grace)
    return S3BlobStorage(config, DescriptorCacheFactory(maxsize=100, ttl=ttl))


def test_an_old_link_is_refreshed_once_and_a_young_one_costs_nothing(s3: Any) -> None:
    # Links are refreshed when older than 1.5s: S3 keeps whole seconds, so a link just
    # rewritten may look up to a second old.
    storage = cached_storage(gc_grace=3.0)
    registry = Registry(storage)
    digest = registry.blob("team/app", b"a base layer")
    pushed_at = link_modified(s3, "team/app", digest)
    calls = S3Calls(storage.client)
    assert registry.exists("team/app", digest)
    assert calls.count == 0  # young link, cached descriptor: no request
    time.sleep(1.6)

    assert registry.exists("team/app", digest)
    assert calls.by_op()["PutObject"] == 1  # the link, rewritten
    assert link_modified(s3, "team/app", digest) > pushed_at
    calls.reset()
    assert registry.exists("team/app", digest)
    assert registry.client.get(f"/v2/team/app/blobs/{digest}").status_code == 307
    assert calls.ops == [], calls.ops


def test_a_cached_exists_does_not_outlive_gc(s3: Any) -> None:
    pusher = Registry(S3BlobStorage(gc_config(BUCKET)))
    digest = pusher.blob("team/app", b"pushed, unused, then swept")
    time.sleep(2.8)  # older than the grace (1s) and the refresh age (0.5s)
    serving = cached_storage(ttl=60)  # a cache that outlives the whole run
    repo = serving.repository("team/app")
    repo.stat(digest)  # a plain stat (not a confirmation) fills the cache

    report = cached_storage().collect_garbage(settle=0, progress=False)
    assert report.deleted["blobs"].count == 1 and not has_entry(s3, BUCKET, digest)

    assert repo.stat(digest).digest == digest  # the cache still says "exists"...
    try:
        repo.confirm(digest)  # ...which a confirmation does not take on trust
        raise AssertionError("confirmed a blob gc deleted")
    except BlobUnknown:
        pass
    assert not Registry(serving).exists("team/app", digest)
    # The same content pushed again works at once.
    assert pusher.blob("team/app", b"pushed, unused, then swept") == digest
    assert Registry(serving).exists("team/app", digest)
