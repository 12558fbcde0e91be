"""The fence: what a running garbage collection is deleting, told to the request path.

Before gc re-reads the bucket for the last time it publishes the digests it means to
delete. A request that has just *written* something that makes a blob needed (a link
at a commit, a mount or a refresh; a manifest revision) *reads* the fence afterwards
and backs off when its digest is on it. gc writes first and reads (the re-list) after;
the request writes first and reads (the fence) after; S3 is strongly consistent, so at
least one of the two sees the other: gc sees the write and spares the blob, or the
request sees the fence and does not tell its client the blob is there. See
:mod:`s3blobs.gc` for the whole argument.

Layout: ``_gc/fence`` is JSON (the run, its expiry, the shards present), and
``_gc/<run>/<hh>`` lists the digests of one shard, one a line. A process keeps its copy
of ``_gc/fence`` for at most ``ttl`` seconds, timed from before the GET, and gc waits
longer than that between publishing and re-reading. The fence expires unless gc renews
it, so one left by a gc that died holds for at most ``LEASE`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from .digests import parse_digest
from .errors import StorageError
from .paths import Paths
from .s3 import delete_keys, s3_errors

#: How long a process answers from its copy of ``_gc/fence`` (seconds).
FENCE_TTL = 5.0
#: How long a fence holds without renewal (seconds); gc renews it every quarter of this.
LEASE = 600.0


class GcBusy(StorageError):
    """Another garbage collection holds the fence."""


@dataclass(frozen=True)
class FenceIndex:
    run: str
    expires: float  # seconds since the epoch, by gc's clock
    shards: frozenset[str]

    def to_json(self) -> bytes:
        body = {"run": self.run, "expires": self.expires, "shards": sorted(self.shards)}
        return json.dumps(body).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FenceIndex:
        data = json.loads(raw)
        return cls(str(data["run"]), float(data["expires"]), frozenset(data["shards"]))


def shard_of(digest: str) -> str:
    return parse_digest(digest).hex[:2]


class SweepFence:
    """Both sides of the fence: ``fenced`` for the request path, ``publish`` for gc."""

    def __init__(self, client: Any, bucket: str, paths: Paths, ttl: float = FENCE_TTL) -> None:
        self.client, self.bucket, self.paths = client, bucket, paths
        self.ttl = ttl
        self._lock = threading.Lock()
        self._index: tuple[float, FenceIndex | None] | None = None  # (fetched at, index)
        # A run's shards never change: kept without expiry, a bounded number of them.
        self._shards: LRUCache[tuple[str, str], frozenset[str]] = LRUCache(maxsize=256)

    # The request path -------------------------------------------------------------

    def fenced(self, digests: Iterable[str]) -> list[str]:
        """Those of ``digests`` a running gc is deleting. Costs no request while the
        process's copy of the fence is younger than ``ttl``, and one (a 404) per ``ttl``
        when no gc runs."""
        index = self._current_index()
        if index is None or time.time() >= index.expires:
            return []
        found = []
        for digest in digests:
            shard = shard_of(digest)
            if shard in index.shards and digest in self._shard(index.run, shard):
                found.append(digest)
        return found

    def prime(self) -> None:
        """Read the fence now (a process does at start-up, with its HeadBucket). Best
        effort: a failure here is met again, and answered, by the first request that
        needs the fence."""
        with contextlib.suppress(StorageError):
            self._current_index()

    def _current_index(self) -> FenceIndex | None:
        with self._lock:
            cached = self._index
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        started = time.monotonic()  # the copy is as old as the moment we asked
        index = self.read_index()[0]
        with self._lock:
            self._index = (started, index)
        return index

    def read_index(self) -> tuple[FenceIndex | None, str | None]:
        """The fence as S3 has it now, and its ETag; (None, None) when there is none."""
        try:
            with s3_errors("reading the gc fence", not_found=_NoFence):
                response = self.client.get_object(Bucket=self.bucket, Key=self.paths.gc_fence())
                raw = response["Body"].read()
        except _NoFence:
            return None, None
        try:
            return FenceIndex.from_json(raw), response["ETag"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"the gc fence is unreadable: {exc}") from None

    def _shard(self, run: str, shard: str) -> frozenset[str]:
        with self._lock:
            found = self._shards.get((run, shard))
        if found is None:
            key = self.paths.gc_fence_shard(run, shard)
            try:
                with s3_errors("reading the gc fence", not_found=_NoFence):
                    raw = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except _NoFence:  # the run ended and removed it
                raw = b""
            found = frozenset(raw.decode().split())
            with self._lock:
                self._shards[(run, shard)] = found
        return found

    # gc --------------------------------------------------------------------------

    def publish(
        self, digests: Iterable[str], run_all: Callable[[Callable[[Any], None], list[Any]], None]
    ) -> FenceLease:
        """Put up a fence around ``digests``; GcBusy if another gc holds one.

        ``run_all(function, items)`` calls ``function`` on every item (gc passes its
        thread pool). The shards go first, then the index that names them."""
        lease = FenceLease(self, self._put_shards(digests, run_all))
        try:
            lease.acquire()
        except BaseException:
            lease.remove_shards()
            raise
        return lease

    def _put_shards(
        self, digests: Iterable[str], run_all: Callable[[Callable[[Any], None], list[Any]], None]
    ) -> FenceIndex:
        """Write the shards of a new fence (not yet named by the index)."""
        run = uuid.uuid4().hex
        shards: dict[str, list[str]] = defaultdict(list)
        for digest in digests:
            shards[shard_of(digest)].append(digest)

        def put_shard(item: tuple[str, list[str]]) -> None:
            shard, members = item
            with s3_errors("writing the gc fence"):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.paths.gc_fence_shard(run, shard),
                    Body="\n".join(sorted(members)).encode(),
                )

        run_all(put_shard, list(shards.items()))
        return FenceIndex(run, 0.0, frozenset(shards))


class FenceLease:
    """A published fence, held by one gc run. A thread renews it every quarter of the
    lease; gc calls ``ensure`` before each batch of deletes, may ``narrow`` it to what
    it still means to delete, and ``lift``s it at the end."""

    def __init__(self, fence: SweepFence, index: FenceIndex) -> None:
        self.fence = fence
        self.index = index
        self.etag: str | None = None
        self.written_at = 0.0  # time.monotonic() before the last write began
        self._written = [index]  # every set of shards this run wrote, removed at the end
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._renew_error: BaseException | None = None

    def acquire(self) -> None:
        """Write the index if there is none, or if the one there has expired."""
        current, etag = self.fence.read_index()
        if current is not None and time.time() < current.expires:
            raise GcBusy(
                f"another gc (run {current.run}) is deleting; its fence expires in "
                f"{current.expires - time.time():.0f}s unless it renews it"
            )
        self._write(self.index, {"IfMatch": etag} if etag else {"IfNoneMatch": "*"})
        self._renewer = threading.Thread(target=self._renew, name="s3blobs-gc-fence", daemon=True)
        self._renewer.start()

    def narrow(
        self, digests: Iterable[str], run_all: Callable[[Callable[[Any], None], list[Any]], None]
    ) -> None:
        """Fence only ``digests`` (a subset) from now on: what gc spared is no longer
        refused once every process has read the fence again. The old shards stay
        until ``lift``: a process with an older copy of the index still reads them."""
        narrower = self.fence._put_shards(digests, run_all)
        self._written.append(narrower)
        self._write(narrower)

    def _renew(self) -> None:
        while not self._stop.wait(LEASE / 4):
            try:
                self._write(self.index)
            except BaseException as exc:
                self._renew_error = exc
                return

    def ensure(self) -> None:
        """GcBusy unless the fence surely holds: renewed within half its lease (every
        process still sees it, whatever its clock says within a few minutes)."""
        if self._renew_error is not None or time.monotonic() - self.written_at > LEASE / 2:
            raise GcBusy(
                f"the gc fence could not be renewed ({self._renew_error}); stopping before "
                "deleting more"
            )

    def _write(self, index: FenceIndex, condition: dict[str, Any] | None = None) -> None:
        """Write the index; by default only over this run's own last write."""

        def taken() -> GcBusy:
            return GcBusy("another gc took the fence over; stopping before deleting more")

        fence = self.fence
        with self._lock:
            started = time.monotonic()
            index = FenceIndex(index.run, time.time() + LEASE, index.shards)
            if condition is None:  # read under the lock: renewals and narrow take turns
                condition = {"IfMatch": self.etag}
            with s3_errors("writing the gc fence", not_found=taken, precondition_failed=taken):
                response = fence.client.put_object(
                    Bucket=fence.bucket,
                    Key=fence.paths.gc_fence(),
                    Body=index.to_json(),
                    ContentType="application/json",
                    **condition,
                )
            self.index, self.etag, self.written_at = index, response["ETag"], started

    def lift(self) -> None:
        """Remove the index, then the shards: the request path stops backing off."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        fence = self.fence
        with s3_errors("removing the gc fence"):
            fence.client.delete_object(Bucket=fence.bucket, Key=fence.paths.gc_fence())
        self.remove_shards()

    def remove_shards(self) -> None:
        fence = self.fence
        keys = [
            fence.paths.gc_fence_shard(index.run, shard)
            for index in self._written
            for shard in sorted(index.shards)
        ]
        delete_keys(fence.client, fence.bucket, keys, "removing the gc fence")


class _NoFence(Exception):
    pass
