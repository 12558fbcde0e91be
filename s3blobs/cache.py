"""The caching BlobDescriptorService middleware (distribution's cachedBlobStatter).

:class:`CachedDescriptors` puts a :class:`DescriptorCache` in front of a descriptor
service; :class:`DescriptorCacheFactory` is the one in this process's memory (a Redis
shared by replicas is ``s3blobs.redis_cache``). One cache serves every repository of
a storage and its global store, keyed by (scope, digest); a global delete drops the
digest from every scope. Only hits are cached; misses and errors always go to the
service behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from .descriptor import Descriptor
from .descriptors import BlobDescriptorService, validate_descriptor
from .digests import parse_digest
from .errors import BlobUnknown


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    errors: int = 0


class DescriptorCache(Protocol):
    """Where :class:`CachedDescriptors` keeps descriptors.

    ``lookup`` answers the cached descriptor (or None) and a generation token read
    at the same moment; ``put`` with that token stores nothing if an invalidation of
    the digest came in between (a stat that raced a delete must not put back what
    the delete removed); ``put`` with None stores unconditionally.
    """

    stats: CacheStats

    def lookup(self, digest: str, scope: str) -> tuple[Descriptor | None, Hashable]: ...

    def put(
        self, digest: str, scope: str, descriptor: Descriptor, generation: Hashable | None
    ) -> None: ...

    def invalidate(self, digest: str, scope: str) -> None: ...

    def error(self) -> None: ...


class _CountingTTLCache(TTLCache[tuple[str, str], Descriptor]):
    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float], stats: CacheStats
    ) -> None:
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._stats = stats

    def popitem(self) -> tuple[tuple[str, str], Descriptor]:
        item = super().popitem()
        self._stats.evictions += 1
        return item


class DescriptorCacheFactory:
    """``BlobDescriptorServiceFactory``: pass as ``S3BlobStorage(config,
    descriptor_service_factory=DescriptorCacheFactory(maxsize=..., ttl=...))``.

    ``maxsize`` counts descriptors (one per repository and digest); ``ttl`` (seconds)
    bounds how long another process's delete can go unseen here. Deletes in this
    process invalidate at once.
    """

    def __init__(
        self, maxsize: int = 10_000, ttl: float = 60.0, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if maxsize < 1 or ttl <= 0:
            raise ValueError("a descriptor cache needs maxsize >= 1 and ttl > 0")
        self.stats = CacheStats()
        self._cache = _CountingTTLCache(maxsize, ttl, timer, self.stats)
        self._lock = threading.Lock()
        # Bumped by every clear: a stat that raced a clear must not put back what
        # the clear removed.
        self._generation = 0

    def blob_access_controller(self, service: BlobDescriptorService) -> BlobDescriptorService:
        return CachedDescriptors(self, service)

    # Cache access, always under the lock and never around a call to S3.

    def lookup(self, digest: str, scope: str) -> tuple[Descriptor | None, Hashable]:
        with self._lock:
            found = self._cache.get((scope, digest))
            if found is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
            return found, self._generation

    def put(
        self, digest: str, scope: str, descriptor: Descriptor, generation: Hashable | None
    ) -> None:
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._cache[(scope, digest)] = descriptor

    def invalidate(self, digest: str, scope: str) -> None:
        """Drop ``digest`` for ``scope``; for the global scope (''), everywhere."""
        with self._lock:
            self._generation += 1
            if scope:
                self._cache.pop((scope, digest), None)
                return
            # A global delete (rare: garbage collection) looks at every entry.
            for key in [key for key in self._cache if key[1] == digest]:
                del self._cache[key]

    def error(self) -> None:
        with self._lock:
            self.stats.errors += 1


class CachedDescriptors:
    """A descriptor service with the factory's cache in front of ``stat``."""

    def __init__(self, factory: DescriptorCache, service: BlobDescriptorService) -> None:
        self._factory = factory
        self._service = service
        self.scope = service.scope

    def stat(self, digest: str) -> Descriptor:
        key = str(parse_digest(digest))
        cached, generation = self._factory.lookup(key, self.scope)
        if cached is not None:
            return cached
        try:
            descriptor = self._service.stat(key)
        except BlobUnknown:
            raise
        except Exception:
            self._factory.error()
            raise
        self._factory.put(key, self.scope, descriptor, generation)
        return descriptor

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        validate_descriptor(digest, descriptor)
        self._service.set_descriptor(digest, descriptor)
        self._factory.put(str(parse_digest(digest)), self.scope, descriptor, None)

    def clear(self, digest: str) -> None:
        key = str(parse_digest(digest))
        try:
            self._service.clear(key)
        finally:
            self._factory.invalidate(key, self.scope)
