"""DescriptorCacheFactory: hits, misses, invalidation, threads, stacking."""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
from typing import Any

import pytest

from conftest import BUCKET, S3Calls
from s3blobs import (
    BlobUnknown,
    Config,
    Descriptor,
    DescriptorCacheFactory,
    S3BlobStorage,
    parse_digest,
)
from s3blobs.descriptors import BlobDescriptorService


@pytest.fixture
def cache() -> DescriptorCacheFactory:
    return DescriptorCacheFactory(maxsize=1000, ttl=3600)


@pytest.fixture
def cached(config: Config, cache: DescriptorCacheFactory) -> S3BlobStorage:
    return S3BlobStorage(config, cache)


def test_hits_cost_no_request(cached: S3BlobStorage, cache: DescriptorCacheFactory) -> None:
    repo = cached.repository("a")
    descriptor = repo.put("x/y", b"blob")  # put fills the cache through set_descriptor
    calls = S3Calls(cached.client)
    for _ in range(10):
        assert repo.stat(descriptor.digest) == descriptor
    assert calls.count == 0
    assert cache.stats.hits == 10


def test_misses_are_not_cached(cached: S3BlobStorage, cache: DescriptorCacheFactory) -> None:
    repo = cached.repository("a")
    missing = "sha256:" + hashlib.sha256(b"later").hexdigest()
    calls = S3Calls(cached.client)
    for _ in range(3):
        with pytest.raises(BlobUnknown):
            repo.stat(missing)
    assert calls.ops == ["HeadObject"] * 3
    assert cache.stats.misses == 3 and cache.stats.errors == 0
    repo.put("x/y", b"later")
    assert repo.stat(missing).size == 5


def test_cache_is_per_repository(cached: S3BlobStorage) -> None:
    a, b = cached.repository("a"), cached.repository("b")
    digest = a.put("x/y", b"only in a").digest
    a.stat(digest)
    with pytest.raises(BlobUnknown):
        b.stat(digest)


def test_deletes_invalidate_at_once(cached: S3BlobStorage) -> None:
    a, b = cached.repository("a"), cached.repository("b")
    digest = a.put("x/y", b"shared").digest
    b.put("x/y", b"shared")
    a.stat(digest), b.stat(digest), cached.blobs.stat(digest)
    a.delete(digest)
    with pytest.raises(BlobUnknown):
        a.stat(digest)
    assert b.stat(digest).size == 6
    cached.blobs.delete(digest)  # a global delete drops the digest for every scope
    with pytest.raises(BlobUnknown):
        b.stat(digest)
    with pytest.raises(BlobUnknown):
        cached.blobs.stat(digest)


def test_other_processes_deletes_are_seen_within_the_ttl(config: Config, s3: Any) -> None:
    clock = [0.0]
    factory = DescriptorCacheFactory(maxsize=10, ttl=5, timer=lambda: clock[0])
    repo = S3BlobStorage(config, factory).repository("a")
    digest = repo.put("x/y", b"gone soon").digest
    other = S3BlobStorage(config).repository("a")
    other.delete(digest)
    clock[0] = 4.9
    assert repo.stat(digest).size == 9  # still cached, as documented
    clock[0] = 5.1
    with pytest.raises(BlobUnknown):
        repo.stat(digest)


def test_evictions_are_counted(config: Config) -> None:
    factory = DescriptorCacheFactory(maxsize=3, ttl=60)
    repo = S3BlobStorage(config, factory).repository("a")
    for i in range(5):
        repo.put("x/y", str(i).encode())
    assert factory.stats.evictions == 2


def test_s3_errors_are_counted_not_cached(
    cached: S3BlobStorage, cache: DescriptorCacheFactory
) -> None:
    repo = cached.repository("a")
    digest = repo.put("x/y", b"x").digest
    cache.invalidate(digest, "")

    def deny(**_: Any) -> None:
        raise RuntimeError("network down")

    cached.client.meta.events.register_first("before-send.s3.HeadObject", deny)
    with pytest.raises(Exception, match="network down"):
        repo.stat(digest)
    assert cache.stats.errors == 1
    cached.client.meta.events.unregister("before-send.s3.HeadObject", deny)
    assert repo.stat(digest).size == 1


def test_from_env_builds_the_cache(s3: Any) -> None:
    env = {"S3BLOBS_BUCKET": BUCKET, "S3BLOBS_CACHE_SIZE": "50", "S3BLOBS_CACHE_TTL": "7"}
    storage = S3BlobStorage.from_env(env)
    assert isinstance(storage.descriptor_service_factory, DescriptorCacheFactory)
    off = S3BlobStorage.from_env({**env, "S3BLOBS_CACHE_SIZE": "0"})
    assert off.descriptor_service_factory is None


class CountingMiddleware:
    """Another middleware, stacked over the cache: counts what reaches it."""

    def __init__(self, inner: DescriptorCacheFactory) -> None:
        self.inner = inner
        self.stats = 0

    def blob_access_controller(self, service: BlobDescriptorService) -> BlobDescriptorService:
        return _Counting(self, self.inner.blob_access_controller(service))


class _Counting:
    def __init__(self, owner: CountingMiddleware, service: BlobDescriptorService) -> None:
        self.owner, self.service, self.scope = owner, service, service.scope

    def stat(self, digest: str) -> Descriptor:
        self.owner.stats += 1
        return self.service.stat(digest)

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        self.service.set_descriptor(digest, descriptor)

    def clear(self, digest: str) -> None:
        self.service.clear(digest)


def test_middleware_stacks(config: Config) -> None:
    cache = DescriptorCacheFactory(maxsize=10, ttl=60)
    outer = CountingMiddleware(cache)
    storage = S3BlobStorage(config, outer)
    repo = storage.repository("a")
    digest = repo.put("x/y", b"x").digest
    calls = S3Calls(storage.client)
    repo.stat(digest)
    repo.stat(digest)
    assert outer.stats == 2 and cache.stats.hits == 2 and calls.count == 0


def test_no_stale_descriptor_after_a_delete_under_16_threads(config: Config) -> None:
    factory = DescriptorCacheFactory(maxsize=50, ttl=3600)  # small: evictions happen too
    storage = S3BlobStorage(config, factory)
    repo = storage.repository("hammer")
    doomed = [repo.put("x/y", f"doomed {i}".encode()) for i in range(40)]
    kept = [repo.put("x/y", f"kept {i}".encode()) for i in range(40)]
    sequence = itertools.count()
    lock = threading.Lock()
    deleted_at: dict[str, int] = {}
    stale: list[str] = []
    errors: list[BaseException] = []
    to_delete = list(doomed)
    random.Random(1).shuffle(to_delete)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                roll = rng.random()
                if roll < 0.1:
                    with lock:
                        victim = to_delete.pop() if to_delete else None
                    if victim is not None:
                        repo.delete(victim.digest)
                        with lock:
                            deleted_at[victim.digest] = next(sequence)
                elif roll < 0.3:
                    descriptor = rng.choice(kept)
                    repo.descriptors.set_descriptor(descriptor.digest, descriptor)
                else:
                    descriptor = rng.choice(doomed + kept)
                    with lock:
                        started = next(sequence)
                    try:
                        found = repo.stat(descriptor.digest)
                    except BlobUnknown:
                        continue
                    assert found == descriptor
                    with lock:
                        gone = deleted_at.get(descriptor.digest)
                    if gone is not None and gone < started:
                        stale.append(descriptor.digest)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert deleted_at, "the hammer deleted nothing"
    assert stale == []
    assert factory.stats.hits > 0 and factory.stats.misses > 0
    for digest in deleted_at:
        with pytest.raises(BlobUnknown):
            repo.stat(digest)
    assert all(repo.stat(d.digest) == d for d in kept)
    assert parse_digest(kept[0].digest)
