"""One garbage collection, phase by phase (see the package docstring for why in this
order)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import s3 as s3module
from ..errors import ConfigError
from ..fence import FENCE_TTL, SweepFence
from .context import GcContext
from .listing import (
    Inventory,
    list_data,
    list_entries,
    list_repositories,
    list_uploads,
    run_side_by_side,
)
from .mark import Marker
from .orphans import sweep_orphaned_data
from .progress import Progress
from .report import GcReport
from .sweep import Sweeper
from .uploads import sweep_stale_uploads

if TYPE_CHECKING:
    from ..storage import S3BlobStorage

DEFAULT_UPLOADS_OLDER_THAN = 7 * 24 * 3600.0
DEFAULT_WORKERS = 16


def seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def check_grace(grace: float, cache_ttl: float) -> None:
    """ConfigError for a grace shorter than the descriptor cache's TTL, saying why."""
    if grace < cache_ttl:
        raise ConfigError(
            f"a grace of {grace:g}s is shorter than the descriptor cache TTL "
            f"(S3BLOBS_CACHE_TTL={cache_ttl:g}s): a registry process may answer 'this "
            "blob exists' from its cache for that long after S3 last said so, and a "
            "client that heard it must still find the blob when it pushes its manifest"
        )


def collect_garbage(
    storage: S3BlobStorage,
    *,
    grace: float | timedelta | None = None,
    delete_untagged: bool = False,
    uploads_older_than: float | timedelta = DEFAULT_UPLOADS_OLDER_THAN,
    dry_run: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: bool | None = None,
    settle: float = FENCE_TTL + 1.0,
) -> GcReport:
    """Delete every blob no manifest needs, and the leftovers of uploads, while the
    registry keeps serving; returns the report.

    ``grace`` (default ``S3BLOBS_GC_GRACE``, at least the cache TTL) spares what was
    pushed, linked, mounted or confirmed to a client more recently; ``settle`` is how
    long gc waits after putting up its fence (longer than every registry process's
    copy of it may be old: ``s3blobs.fence.FENCE_TTL``). ``progress``: bars on
    standard error (default: when it is a terminal).
    """
    config = storage.config
    grace_seconds = config.gc_grace if grace is None else seconds(grace)
    check_grace(grace_seconds, config.cache_ttl)
    if workers < 1:
        raise ConfigError(f"workers={workers}: expected at least 1")
    # The registry refreshes a link it confirms once it is older than half of
    # S3BLOBS_GC_GRACE: a link can be that much older than the last confirmation.
    link_grace = grace_seconds + config.gc_grace / 2
    report = GcReport(
        dry_run=dry_run,
        grace_seconds=grace_seconds,
        link_grace_seconds=link_grace,
        uploads_older_than_seconds=seconds(uploads_older_than),
        delete_untagged=delete_untagged,
    )
    began = time.monotonic()
    client = _client(storage, workers, report)
    with ThreadPoolExecutor(workers, thread_name_prefix="s3blobs-gc") as pool:
        ctx = GcContext(
            client=client,
            config=config,
            paths=storage.paths,
            pool=pool,
            progress=Progress(progress),
            report=report,
            started=time.time(),
            grace=grace_seconds,
            link_grace=link_grace,
            dry_run=dry_run,
        )
        inventory = Inventory()
        with _timed(report, "list"):
            # Upload states before entries: a commit that completes its data object
            # after this still has its state listed here (see orphans.py).
            list_uploads(ctx, inventory)
            run_side_by_side(
                lambda: list_entries(ctx, inventory),
                lambda: _set_repositories(ctx, inventory),
                lambda: list_data(ctx, inventory),
            )
        marker = Marker(ctx, delete_untagged)
        with _timed(report, "mark"):
            marker.mark(inventory.repositories)
        fence = SweepFence(client, config.bucket, storage.paths)
        sweeper = Sweeper(ctx, inventory, marker, fence, settle)
        with _timed(report, "sweep"):
            sweeper.run()
        with _timed(report, "orphaned data"):
            sweep_orphaned_data(ctx, inventory, sweeper.pointed, sweeper.deleted_data)
        with _timed(report, "uploads"):
            sweep_stale_uploads(ctx, inventory, report.uploads_older_than_seconds)
    _count_kept(report, inventory, marker)
    report.seconds = time.monotonic() - began
    return report


def _set_repositories(ctx: GcContext, inventory: Inventory) -> None:
    inventory.repositories = list_repositories(ctx)


def _client(storage: S3BlobStorage, workers: int, report: GcReport) -> Any:
    """A client of its own, with a connection per worker, whose calls the report counts."""
    concurrency = max(storage.config.max_concurrency, min(64, -(-workers // 4)))
    client = s3module.make_client(dataclasses.replace(storage.config, max_concurrency=concurrency))
    client.meta.events.register(
        "before-call.s3.*", lambda model, **_: report.count_request(model.name)
    )
    return client


def _count_kept(report: GcReport, inventory: Inventory, marker: Marker) -> None:
    report.kept["manifests"] = sum(len(digests) for digests in marker.kept.values())
    report.kept["blobs"] = len(inventory.entries) - report.deleted["blobs"].count
    stored = sum(e.size for e in inventory.entries.values()) + sum(
        d.size for d in inventory.data.values()
    )
    swept = report.deleted["blobs"].bytes + report.deleted["orphaned_data"].bytes
    report.kept["bytes"] = max(0, stored - swept)


@contextmanager
def _timed(report: GcReport, phase: str) -> Iterator[None]:
    began = time.monotonic()
    try:
        yield
    finally:
        report.phases[phase] = time.monotonic() - began
