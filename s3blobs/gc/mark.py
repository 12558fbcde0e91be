"""Mark: which manifest revisions stay, and every digest they need.

Every revision of every repository stays, unless ``delete_untagged``: then only those
a tag reaches (directly, or as a manifest of a kept index), those younger than the
grace (a push may tag them in a moment), and the referrers of a kept manifest (the
revisions whose ``subject`` it is, from the referrer entries) stay. A kept manifest
marks its own digest, its config, layers and ``blobs``, and its index's manifests,
recursively. Foreign layers (with ``urls``) are marked too, but need not exist.

Each manifest is read once (one GetObject) whatever the number of repositories that
hold it; only the digests it names are kept, and an index's list of manifests.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections import defaultdict
from typing import Any

from ..digests import parse_digest
from ..errors import BlobError
from ..s3 import s3_errors
from ..store import DATA_META
from .context import GcContext
from .listing import RepositoryListing
from .progress import Phase


class _Missing(Exception):
    pass


class Marker:
    def __init__(self, ctx: GcContext, delete_untagged: bool) -> None:
        self.ctx = ctx
        self.delete_untagged = delete_untagged
        self.marked: set[str] = set()  # every digest something kept needs
        self.kept: dict[str, set[str]] = defaultdict(set)  # repository -> kept revisions
        self._children: dict[str, tuple[str, ...]] = {}  # index digest -> its manifests
        self._fetched: set[str] = set()
        self._lock = threading.Lock()
        self._phase = ctx.progress.phase("", enabled=False)

    def mark(self, listing: RepositoryListing) -> None:
        """The first mark, from the first listing of the repositories."""
        with self._progress("reading manifests"):
            targets = self._tag_targets(listing) if self.delete_untagged else {}
            roots = {}
            for repository, revisions in listing.revisions.items():
                if self.delete_untagged:
                    young = {
                        digest
                        for digest, modified in revisions.items()
                        if not self.ctx.older(modified, self.ctx.entry_cutoff)
                    }
                    roots[repository] = young | (targets.get(repository, set()) & set(revisions))
                else:
                    roots[repository] = set(revisions)
            self._close(listing, roots)

    def mark_again(self, listing: RepositoryListing, first: RepositoryListing) -> set[str]:
        """After the re-read: every revision written since the first listing is a
        root. Returns the digests this newly marked."""
        roots = {
            repository: {
                digest
                for digest, modified in revisions.items()
                if modified > first.revisions.get(repository, {}).get(digest, -1.0)
            }
            for repository, revisions in listing.revisions.items()
        }
        with self._progress("reading new manifests"):
            return self._close(listing, roots)

    def _progress(self, name: str) -> Phase:
        self._phase = self.ctx.progress.phase(name, unit="manifests")
        return self._phase

    def untagged(self, listing: RepositoryListing) -> dict[str, set[str]]:
        """The revisions to delete: with ``delete_untagged``, those nothing kept."""
        if not self.delete_untagged:
            return {}
        found = {
            repository: set(revisions) - self.kept.get(repository, set())
            for repository, revisions in listing.revisions.items()
        }
        return {repository: digests for repository, digests in found.items() if digests}

    # The closure ----------------------------------------------------------------------

    def _close(self, listing: RepositoryListing, roots: dict[str, set[str]]) -> set[str]:
        referrers: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for repository, pairs in listing.referrers.items():
            for subject, referrer in pairs:
                referrers[repository][subject].append(referrer)
        newly: set[str] = set()
        frontier = {(r, d) for r, ds in roots.items() for d in ds if d not in self.kept[r]}
        while frontier:
            for repository, digest in frontier:
                self.kept[repository].add(digest)
            self._fetch_all({digest for _, digest in frontier} - self._fetched, newly)
            following = set()
            for repository, digest in frontier:
                revisions = listing.revisions.get(repository, {})
                for child in self._children.get(digest, ()):
                    following.add((repository, child))
                for referrer in referrers[repository].get(digest, ()):
                    if referrer in revisions:
                        following.add((repository, referrer))
            frontier = {(r, d) for r, d in following if d not in self.kept[r]}
        return newly

    def _fetch_all(self, digests: set[str], newly: set[str]) -> None:
        def fetch(digest: str) -> None:
            blobs, children = self._references(digest)
            needed = {digest, *blobs, *children}
            with self._lock:
                newly.update(needed - self.marked)
                self.marked.update(needed)
                if children:
                    self._children[digest] = children
                self._fetched.add(digest)
            self._phase.update()
            self._phase.note(marked=len(self.marked))

        with self._lock:
            self.marked.update(digests)  # a manifest needs its own entry, even unreadable
        self.ctx.map(fetch, sorted(digests))

    def _references(self, digest: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(blobs, manifests) a manifest names; nothing for one that is missing or is
        not a manifest (a warning: it cannot be served either)."""
        try:
            manifest = json.loads(self._read(digest))
        except _Missing:
            self.ctx.report.warn(f"a revision names manifest {digest}, which is missing")
            return (), ()
        except ValueError:
            self.ctx.report.warn(f"manifest {digest} is not JSON")
            return (), ()
        if not isinstance(manifest, dict):
            return (), ()
        blobs = _digests(manifest.get("config")) + _digests(manifest.get("layers"))
        blobs += _digests(manifest.get("blobs"))
        return blobs, _digests(manifest.get("manifests"))

    def _read(self, digest: str) -> bytes:
        ctx = self.ctx
        key = ctx.paths.blob(parse_digest(digest))
        with s3_errors(f"reading manifest {digest}", not_found=_Missing):
            response = ctx.client.get_object(Bucket=ctx.bucket, Key=key)
            body = bytes(response["Body"].read())
            data = response.get("Metadata", {}).get(DATA_META)
            if data:  # a manifest stored in parts: not one the registry writes
                body = ctx.client.get_object(Bucket=ctx.bucket, Key=ctx.paths.data(data))[
                    "Body"
                ].read()
        return body

    def _tag_targets(self, listing: RepositoryListing) -> dict[str, set[str]]:
        """What each repository's tags name. A tag's body is the digest, and the ETag of
        a plain PutObject is the MD5 of the body: matched against the repository's
        revisions, most tags cost no request; the others are read (one GET each)."""
        targets: dict[str, set[str]] = defaultdict(set)
        unread: list[tuple[str, str]] = []
        for repository, tags in listing.tags.items():
            by_md5 = {
                hashlib.md5(digest.encode(), usedforsecurity=False).hexdigest(): digest
                for digest in listing.revisions.get(repository, {})
            }
            for tag, etag in tags:
                if etag in by_md5:
                    targets[repository].add(by_md5[etag])
                else:
                    unread.append((repository, tag))

        def read(item: tuple[str, str]) -> tuple[str, str]:
            repository, tag = item
            key = self.ctx.paths.tag(repository, tag)
            try:
                with s3_errors(f"reading tag {tag} of {repository}", not_found=_Missing):
                    body = self.ctx.client.get_object(Bucket=self.ctx.bucket, Key=key)["Body"]
                    return repository, body.read().decode(errors="replace").strip()
            except _Missing:  # deleted since the listing
                return repository, ""

        for repository, digest in self.ctx.map(read, unread):
            targets[repository].add(digest)
        return targets


def _digests(items: Any) -> tuple[str, ...]:
    """The digests of one descriptor or a list of them; what is not one is skipped (the
    registry checked the manifest when it took it)."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        return ()
    found = []
    for item in items:
        digest = item.get("digest") if isinstance(item, dict) else None
        if isinstance(digest, str):
            try:
                found.append(sys.intern(str(parse_digest(digest))))
            except BlobError:  # not a digest s3blobs stores: nothing of it is here
                continue
    return tuple(found)
