"""The small cache interface the store and the registry take, and its in-memory form.

A :class:`ValueCache` maps a string to a value that never changes under it: the data
location of a blob (``BlobEntries``), a manifest's bytes (the registry). This
process's memory (:class:`MemoryCache`, the default) or a Redis shared by every
replica (``s3blobs.redis_cache``) implement it; ``s3blobs.cache_backend`` picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


class ValueCache(Protocol[V]):
    """A cache of values that never change under their key; only ``discard`` (a
    delete) makes one stale. A miss is None; a cache never raises for a miss."""

    def get(self, key: str) -> V | None: ...

    def put(self, key: str, value: V) -> None: ...

    def discard(self, key: str) -> None: ...


class MemoryCache(Generic[V]):
    """A thread-safe LRU in this process, bounded by ``maxsize`` (items, or the sum
    of ``getsizeof`` over the values). A value larger than the whole cache is not kept."""

    def __init__(self, maxsize: int, getsizeof: Callable[[V], int] | None = None) -> None:
        self._cache: LRUCache[str, V] = LRUCache(maxsize=maxsize, getsizeof=getsizeof)
        self._size = getsizeof or (lambda value: 1)
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            return self._cache.get(key)

    def put(self, key: str, value: V) -> None:
        if self._size(value) > self._cache.maxsize:
            return
        with self._lock:
            self._cache[key] = value

    def discard(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
