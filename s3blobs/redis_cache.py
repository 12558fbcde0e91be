"""The caches on a Redis that every replica shares (``S3BLOBS_CACHE=redis://...``).

The descriptor cache keeps :class:`~s3blobs.cache.DescriptorCacheFactory`'s contract
and place in the middleware stack; the data-location and manifest caches are
:class:`~s3blobs.caches.ValueCache`\\ s. A delete in any replica is seen by all at
once: descriptors and locations of a digest share its generation, which every
invalidation replaces (see ``redis_client``). Manifests are content-addressed and
resolved through S3 at every request, so they are never invalidated.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Hashable

from .cache import CachedDescriptors, CacheStats
from .cache_backend import Caches
from .config import Config
from .descriptor import Descriptor
from .descriptors import BlobDescriptorService
from .errors import BlobError
from .redis_client import RedisCache, namespace_for
from .store import Location

DESCRIPTORS = "d"
LOCATIONS = "l"
MANIFESTS = "m:"
#: A manifest's bytes never change under its digest: kept a day since last stored.
MANIFEST_TTL = 24 * 3600.0
#: The largest manifest the registry accepts.
MAX_MANIFEST = 4 * 1024 * 1024


class _Unknown:
    """The token of a lookup Redis did not answer: nothing is stored after it."""


UNKNOWN = _Unknown()


class RedisDescriptorCacheFactory:
    """``BlobDescriptorServiceFactory`` on Redis: descriptors by (scope, digest) with a
    TTL, a global or repository delete invalidating the digest everywhere (one SET).

    ``stats`` counts hits, misses and S3 errors as the memory factory's do (evictions
    are Redis's own business); Redis's failures are in ``cache.stats``.
    """

    def __init__(self, cache: RedisCache, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("a descriptor cache needs ttl > 0")
        self.cache = cache
        self.ttl = ttl
        self.stats = CacheStats()
        self._lock = threading.Lock()
        cache.keep_generations_for(ttl)

    def blob_access_controller(self, service: BlobDescriptorService) -> BlobDescriptorService:
        return CachedDescriptors(self, service)

    def lookup(self, digest: str, scope: str) -> tuple[Descriptor | None, Hashable]:
        token, raw = self.cache.read(DESCRIPTORS, digest, scope)
        found = _descriptor(raw)
        with self._lock:
            if found is None:
                self.stats.misses += 1
            else:
                self.stats.hits += 1
        return found, UNKNOWN if token is None else token

    def put(
        self, digest: str, scope: str, descriptor: Descriptor, generation: Hashable | None
    ) -> None:
        if generation is UNKNOWN:
            return
        token = None if generation is None else str(generation)
        value = descriptor.to_json().encode()
        self.cache.write(DESCRIPTORS, digest, scope, value, self.ttl, token)

    def invalidate(self, digest: str, scope: str) -> None:
        # One generation per digest: a repository's delete also drops the other
        # repositories' entries (they cost one miss each), and a global delete is O(1).
        self.cache.invalidate(digest)

    def error(self) -> None:
        with self._lock:
            self.stats.errors += 1


class RedisLocationCache:
    """digest -> the blob's data location, under the digest's generation."""

    def __init__(self, cache: RedisCache, ttl: float) -> None:
        self.cache = cache
        self.ttl = ttl
        cache.keep_generations_for(ttl)

    def get(self, key: str) -> Location | None:
        _, raw = self.cache.read(LOCATIONS, key)
        if raw is None:
            return None
        try:
            found = json.loads(raw)
            return Location(str(found["key"]), int(found["size"]))
        except (ValueError, KeyError, TypeError):
            return None  # written by something else: a miss

    def put(self, key: str, value: Location) -> None:
        encoded = json.dumps({"key": value.key, "size": value.size}).encode()
        self.cache.write(LOCATIONS, key, "", encoded, self.ttl, None)

    def discard(self, key: str) -> None:
        self.cache.invalidate(key)


class RedisManifestCache:
    """digest -> (media type, bytes) of a manifest: its media type, a newline, its bytes."""

    def __init__(self, cache: RedisCache, ttl: float = MANIFEST_TTL) -> None:
        self.cache = cache
        self.ttl = ttl

    def get(self, key: str) -> tuple[str, bytes] | None:
        raw = self.cache.get(MANIFESTS + key)
        if raw is None or b"\n" not in raw:
            return None
        media_type, _, body = raw.partition(b"\n")
        return media_type.decode(errors="replace"), body

    def put(self, key: str, value: tuple[str, bytes]) -> None:
        media_type, body = value
        if "\n" in media_type or len(body) > MAX_MANIFEST:
            return
        self.cache.set(MANIFESTS + key, media_type.encode() + b"\n" + body, self.ttl)

    def discard(self, key: str) -> None:
        self.cache.delete(MANIFESTS + key)


def redis_caches(config: Config) -> Caches:
    """Every cache on the Redis of ``config.cache``, under the storage's namespace."""
    cache = RedisCache(config.cache, namespace_for(config))
    return Caches(
        descriptors=(
            RedisDescriptorCacheFactory(cache, config.cache_ttl) if config.cache_size else None
        ),
        locations=RedisLocationCache(cache, config.cache_ttl),
        manifests=RedisManifestCache(cache),
    )


def _descriptor(raw: bytes | None) -> Descriptor | None:
    if raw is None:
        return None
    try:
        return Descriptor.from_json(raw).validate()
    except (ValueError, TypeError, BlobError):
        return None  # written by something else: a miss
