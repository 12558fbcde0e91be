"""Sweep: the blobs nothing marked, with their links; untagged revisions.

A blob is a candidate when nothing marked it, its entry is older than the grace and
every link to it is older than the grace plus the registry's refresh interval (or it
has no entry at all: a link left behind). Then, in this order: the fence goes up
around the candidates; gc waits until every process must have seen it; it re-reads
the repositories (a second listing); what came back into use since the first (a link
written or refreshed, a revision that names it) is spared; the links of the rest are
deleted, then their entries (only where every link went), then their data objects.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..digests import parse_digest
from ..fence import SweepFence
from ..s3 import s3_errors
from ..store import DATA_META, SIZE_META
from .context import GcContext
from .listing import Inventory, RepositoryListing, list_repositories, upload_entries_since
from .mark import Marker

#: Entries of size 0 that are the empty blob itself, not pointers to data.
EMPTY = frozenset(
    f"{algorithm}:{hashlib.new(algorithm, b'').hexdigest()}" for algorithm in ("sha256", "sha512")
)


@dataclass
class Pointed:
    """Where the bytes of blobs stored in parts are, as their entries say."""

    data: dict[str, tuple[str, int]] = field(default_factory=dict)  # digest -> (key, size)

    def head_all(self, ctx: GcContext, digests: set[str]) -> None:
        """One HeadObject per entry not yet read; entries gone meanwhile are skipped."""

        def head(digest: str) -> tuple[str, tuple[str, int] | None]:
            key = ctx.paths.blob(parse_digest(digest))
            try:
                with s3_errors(f"reading entry {digest}", not_found=_Gone):
                    metadata = ctx.client.head_object(Bucket=ctx.bucket, Key=key)["Metadata"]
            except _Gone:
                return digest, None
            name = metadata.get(DATA_META)
            if not name:
                return digest, None
            return digest, (ctx.paths.data(name), int(metadata.get(SIZE_META, 0)))

        for digest, found in ctx.map(head, sorted(digests - self.data.keys())):
            if found is not None:
                self.data[digest] = found

    def named(self) -> set[str]:
        return {key for key, _ in self.data.values()}


def is_pointer(digest: str, size: int) -> bool:
    return size == 0 and digest not in EMPTY


def candidates(ctx: GcContext, inventory: Inventory, marked: set[str]) -> set[str]:
    """What nothing kept needs, old enough, its links too; an entry an open upload
    keeps its bytes in stays while the upload does."""
    links = inventory.repositories.newest_link
    marked = marked | inventory.upload_entries
    found = set()
    for digest, entry in inventory.entries.items():
        newest = links.get(digest)
        if (
            digest not in marked
            and ctx.older(entry.modified, ctx.entry_cutoff)
            and (newest is None or ctx.older(newest, ctx.link_cutoff))
        ):
            found.add(digest)
    for digest, newest in links.items():  # links whose blob is gone
        gone = digest not in inventory.entries and digest not in marked
        if gone and ctx.older(newest, ctx.link_cutoff):
            found.add(digest)
    return found


class Sweeper:
    def __init__(
        self,
        ctx: GcContext,
        inventory: Inventory,
        marker: Marker,
        fence: SweepFence,
        settle: float,
    ) -> None:
        self.ctx, self.inventory, self.marker = ctx, inventory, marker
        self.fence, self.settle = fence, settle
        self.pointed = Pointed()
        self.deleted_data: set[str] = set()

    def run(self) -> None:
        ctx, first = self.ctx, self.inventory.repositories
        doomed = candidates(ctx, self.inventory, self.marker.marked)
        untagged = self.marker.untagged(first)
        pointers = {d for d in doomed if d in self.inventory.entries and self._pointer(d)}
        if not doomed and not untagged:
            return
        with ctx.progress.phase("to delete", unit="blobs", total=len(doomed)) as phase:
            phase.update(len(doomed))
            phase.note(marked=len(self.marker.marked), manifests=len(_digests(untagged)))
        lease = None
        if not ctx.dry_run:
            lease = self.fence.publish(sorted(doomed | _digests(untagged)), ctx.run_all)
        try:
            # Every process must have seen the fence before the re-read starts; the
            # entries' data keys are read meanwhile.
            began = time.monotonic()
            self.pointed.head_all(ctx, pointers)
            if lease is not None:
                time.sleep(max(0.0, self.settle - (time.monotonic() - began)))
            again = list_repositories(ctx, watch=frozenset(doomed), again=True)
            saved = upload_entries_since(ctx, self.inventory) & doomed
            if self._spare(doomed, untagged, again, saved) and lease is not None:
                # What came back into use is no longer refused while the rest goes.
                lease.narrow(sorted(doomed | _digests(untagged)), ctx.run_all)
            self._delete(doomed, untagged, again, lease.ensure if lease is not None else None)
        finally:
            if lease is not None:
                lease.lift()

    def _pointer(self, digest: str) -> bool:
        return is_pointer(digest, self.inventory.entries[digest].size)

    def _spare(
        self,
        doomed: set[str],
        untagged: dict[str, set[str]],
        again: RepositoryListing,
        saved: set[str],
    ) -> bool:
        """Drop from ``doomed`` and ``untagged`` what the re-read shows in use (and the
        entries ``saved`` by uploads since); True if anything was."""
        ctx = self.ctx
        newly = self.marker.mark_again(again, self.inventory.repositories)
        touched = {
            digest
            for digest in doomed
            if digest in again.newest_link
            and not ctx.older(again.newest_link[digest], ctx.link_cutoff)
        }
        spared = doomed & (newly | touched | saved)
        doomed -= spared
        before = _digests(untagged)
        for repository in list(untagged):
            untagged[repository] -= self.marker.kept.get(repository, set())
            untagged[repository] &= set(again.revisions.get(repository, {}))
        ctx.report.spared = len(spared)
        return bool(spared) or _digests(untagged) != before

    def _delete(
        self,
        doomed: set[str],
        untagged: dict[str, set[str]],
        again: RepositoryListing,
        before: Callable[[], None] | None,
    ) -> None:
        ctx, paths, report = self.ctx, self.ctx.paths, self.ctx.report
        # Links first: an entry goes only once no link names it.
        link_keys = sorted(key for digest in doomed for key in again.watched_links.get(digest, ()))
        failed = ctx.delete(link_keys, "deleting links", before)
        report.delete("links", len(link_keys) - len(failed))
        kept_links = {paths.parse_repository_key(key) for key in failed}
        doomed -= {key.digest for key in kept_links if key is not None}

        revision_keys = []
        for repository, digests in untagged.items():
            revision_keys += [paths.revision(repository, parse_digest(d)) for d in digests]
        referrer_keys = [
            paths.referrer(repository, parse_digest(subject), parse_digest(referrer))
            for repository, pairs in self.inventory.repositories.referrers.items()
            for subject, referrer in pairs
            if referrer in untagged.get(repository, ())
        ]
        failed = ctx.delete(revision_keys, "deleting untagged manifests", before)
        report.delete("manifests", len(revision_keys) - len(failed))
        failed = ctx.delete(referrer_keys, "deleting referrer entries", before)
        report.delete("referrers", len(referrer_keys) - len(failed))

        entries = self.inventory.entries
        with_entry = sorted(d for d in doomed if d in entries)
        failed = ctx.delete([paths.blob(parse_digest(d)) for d in with_entry], "deleting", before)
        gone = [d for d in with_entry if paths.blob(parse_digest(d)) not in failed]
        for digest in gone:
            pointed = self.pointed.data.get(digest)
            report.delete("blobs", 1, pointed[1] if pointed else entries[digest].size)
        data_keys = sorted(self.pointed.data[d][0] for d in gone if d in self.pointed.data)
        failed = ctx.delete(data_keys, "deleting data objects", before)
        self.deleted_data = set(data_keys) - failed


def _digests(untagged: dict[str, set[str]]) -> set[str]:
    return {digest for digests in untagged.values() for digest in digests}


class _Gone(Exception):
    pass
