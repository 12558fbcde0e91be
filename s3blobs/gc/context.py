"""What every phase of one garbage collection shares: the client, the thread pool, the
clock and cut-offs, the report, and the two bulk operations (listing, deleting)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..config import Config
from ..paths import Paths
from ..s3 import s3_errors
from .progress import Progress
from .report import GcReport

T = TypeVar("T")
R = TypeVar("R")

#: S3 keeps LastModified in whole seconds: an object may have been written up to this
#: much later than it says. Every "older than" test adds it, never the other way.
SLACK = 1.0
#: DeleteObjects takes at most this many keys.
DELETE_BATCH = 1000


@dataclass(frozen=True)
class KeyRange:
    """Keys under ``prefix``, after ``start_after`` and before ``end`` (when given)."""

    prefix: str
    start_after: str = ""
    end: str = ""


@dataclass
class GcContext:
    client: Any
    config: Config
    paths: Paths
    pool: ThreadPoolExecutor
    progress: Progress
    report: GcReport
    started: float  # when the run began, seconds since the epoch
    grace: float
    link_grace: float
    dry_run: bool

    @property
    def bucket(self) -> str:
        return self.config.bucket

    @property
    def entry_cutoff(self) -> float:
        """An entry (or revision, or data object) older than this may go."""
        return self.started - self.grace

    @property
    def link_cutoff(self) -> float:
        """A blob may go only when every link to it is older than this."""
        return self.started - self.link_grace

    @staticmethod
    def older(modified: float, cutoff: float) -> bool:
        return modified + SLACK < cutoff

    def map(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``function`` over ``items`` on the pool; the first exception is raised."""
        return list(self.pool.map(function, items))

    def run_all(self, function: Callable[[T], Any], items: list[T]) -> None:
        self.map(function, items)

    def list_prefixes(
        self,
        prefixes: Sequence[str],
        on_page: Callable[[list[dict[str, Any]]], None],
        action: str,
    ) -> None:
        """List every prefix side by side, a page (1,000 keys) at a time."""
        self.list_ranges([KeyRange(prefix) for prefix in prefixes], on_page, action)

    def list_ranges(
        self,
        ranges: Sequence[KeyRange],
        on_page: Callable[[list[dict[str, Any]]], None],
        action: str,
    ) -> None:
        """List every range side by side, a page (1,000 keys) at a time; ``on_page``
        runs on the pool's threads and must guard what it shares."""

        def list_one(keys: KeyRange) -> None:
            args = {"Bucket": self.bucket, "Prefix": keys.prefix}
            if keys.start_after:
                args["StartAfter"] = keys.start_after
            with s3_errors(action):
                for page in self.client.get_paginator("list_objects_v2").paginate(**args):
                    items = page.get("Contents", [])
                    if keys.end and items and items[-1]["Key"] >= keys.end:
                        on_page([item for item in items if item["Key"] < keys.end])
                        return  # the next range lists the rest; no further page is fetched
                    on_page(items)

        self.map(list_one, ranges)

    def delete(
        self,
        keys: Sequence[str],
        action: str,
        before_batch: Callable[[], None] | None = None,
    ) -> set[str]:
        """Delete ``keys``, 1,000 per DeleteObjects, batches side by side; returns the
        keys S3 could not delete. ``before_batch`` runs before each request (gc renews
        its fence there). Nothing is sent in a dry run."""
        if self.dry_run or not keys:
            return set()
        batches = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]
        phase = self.progress.phase(action, total=len(keys))

        def delete_batch(batch: Sequence[str]) -> set[str]:
            if before_batch is not None:
                before_batch()
            with s3_errors(action):
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                )
            failed = {error["Key"] for error in response.get("Errors", ())}
            for error in response.get("Errors", ())[:3]:
                self.report.warn(f"{action}: could not delete {error['Key']}: {error['Code']}")
            phase.update(len(batch))
            return failed

        with phase:
            return set().union(*self.map(delete_batch, batches))
