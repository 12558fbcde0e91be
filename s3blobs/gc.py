"""Garbage collection of data objects that no entry names.

A commit completes its multipart upload in ``data/`` and then writes the entry; a
process that dies between the two leaves a data object nobody can reach. Such objects
are swept once older than a grace period, which must exceed the time between those
two steps (seconds), and the time a client may take to retry a failed commit. Data an
entry names is never deleted. Whole blobs that no manifest uses are a registry-level
question (mark and sweep over manifests) that this does not answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .s3 import delete_keys, list_objects
from .store import BlobEntries

DEFAULT_GRACE = timedelta(hours=1)


def sweep_orphan_data(
    entries: BlobEntries, grace: timedelta = DEFAULT_GRACE, dry_run: bool = False
) -> list[str]:
    """Delete (or, with ``dry_run``, only list) the orphaned data keys; returns them."""
    in_use = entries.data_in_use()
    cutoff = datetime.now(timezone.utc) - grace
    listing = list_objects(
        entries.client, entries.bucket, entries.paths.data_root, "listing data objects"
    )
    orphans = [
        item["Key"]
        for item in listing
        if item["Key"] not in in_use and item["LastModified"] < cutoff
    ]
    if not dry_run:
        delete_keys(entries.client, entries.bucket, orphans, "sweeping orphaned data")
    return orphans
