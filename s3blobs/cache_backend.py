"""``S3BLOBS_CACHE``: every cache of a storage and its registry, in this process's
memory (``memory``, the default) or in a Redis that every replica shares
(``redis://`` or ``rediss://``)."""

from __future__ import annotations

from dataclasses import dataclass

from .cache import DescriptorCacheFactory
from .caches import MemoryCache, ValueCache
from .config import Config, MiB
from .descriptors import DescriptorServiceFactory
from .store import Location

#: Manifest bytes kept in one process's memory (a manifest is at most 4 MiB).
MANIFEST_CACHE_BYTES = 64 * MiB
#: Data locations kept in one process's memory.
LOCATION_CACHE_SIZE = 10_000


@dataclass
class Caches:
    """The caches of one storage and its registry, on one backend."""

    #: Middleware for descriptor services; None when ``S3BLOBS_CACHE_SIZE=0``.
    descriptors: DescriptorServiceFactory | None
    #: digest -> where the blob's bytes are.
    locations: ValueCache[Location]
    #: digest -> (media type, bytes) of a manifest.
    manifests: ValueCache[tuple[str, bytes]]


def memory_manifest_cache(max_bytes: int = MANIFEST_CACHE_BYTES) -> ValueCache[tuple[str, bytes]]:
    """(media type, bytes) of manifests by digest in this process, bounded by their size."""
    return MemoryCache(max_bytes, getsizeof=lambda item: len(item[1]) + 100)


def caches_from_config(config: Config) -> Caches:
    """The caches ``S3BLOBS_CACHE`` names.

    ``S3BLOBS_CACHE_SIZE=0`` turns the descriptor cache off on either backend; in
    memory it bounds the descriptors kept. ``S3BLOBS_CACHE_TTL`` is a descriptor's
    lifetime on both.
    """
    if config.cache == "memory":
        return Caches(
            descriptors=(
                DescriptorCacheFactory(maxsize=config.cache_size, ttl=config.cache_ttl)
                if config.cache_size
                else None
            ),
            locations=MemoryCache(LOCATION_CACHE_SIZE),
            manifests=memory_manifest_cache(),
        )
    from .redis_cache import redis_caches  # redis-py is imported only when it is used

    return redis_caches(config)
