"""What a garbage collection did: counts and bytes per category, S3 requests, seconds.

``GcReport.to_dict()`` is the shape ``s3blobs gc --json`` prints::

    {"dry_run": false, "grace_seconds": 3600.0, "link_grace_seconds": 5400.0,
     "uploads_older_than_seconds": 604800.0, "delete_untagged": false,
     "listed": {"entries": 0, "links": 0, "revisions": 0, "tags": 0, "referrers": 0,
                "data": 0, "upload_objects": 0, "multipart_uploads": 0},
     "kept": {"manifests": 0, "blobs": 0, "bytes": 0},
     "deleted": {"blobs": {"count": 0, "bytes": 0}, "links": {...}, "manifests": {...},
                 "referrers": {...}, "orphaned_data": {...}, "uploads": {...},
                 "multipart_uploads": {...}},
     "spared": 0, "requests": {"ListObjectsV2": 0, ...}, "requests_total": 0,
     "phases": {"list": 0.0, ...}, "seconds": 0.0, "warnings": []}

With ``dry_run`` the ``deleted`` counts are what a real run would have deleted.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

LISTED = (
    "entries",
    "links",
    "revisions",
    "tags",
    "referrers",
    "data",
    "upload_objects",
    "multipart_uploads",
)
#: What gc deletes: blob entries (bytes: the blobs' sizes), repository links, untagged
#: manifest revisions, referrer entries, data objects no entry names, the objects of
#: stale uploads (count: uploads), and multipart uploads aborted.
DELETED = (
    "blobs",
    "links",
    "manifests",
    "referrers",
    "orphaned_data",
    "uploads",
    "multipart_uploads",
)


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "bytes": self.bytes}


@dataclass
class GcReport:
    dry_run: bool
    grace_seconds: float
    link_grace_seconds: float
    uploads_older_than_seconds: float
    delete_untagged: bool
    listed: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    deleted: dict[str, Tally] = field(default_factory=lambda: {name: Tally() for name in DELETED})
    spared: int = 0  # candidates the last re-read found in use again
    requests: Counter[str] = field(default_factory=Counter)
    phases: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_request(self, operation: str) -> None:
        with self._lock:
            self.requests[operation] += 1

    def count_listed(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.listed[what] += n

    def delete(self, what: str, count: int = 1, size: int = 0) -> None:
        with self._lock:
            self.deleted[what].count += count
            self.deleted[what].bytes += size

    def warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "link_grace_seconds": self.link_grace_seconds,
            "uploads_older_than_seconds": self.uploads_older_than_seconds,
            "delete_untagged": self.delete_untagged,
            "listed": {name: self.listed[name] for name in LISTED},
            "kept": {name: self.kept[name] for name in ("manifests", "blobs", "bytes")},
            "deleted": {name: self.deleted[name].to_dict() for name in DELETED},
            "spared": self.spared,
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }

    def summary(self) -> list[str]:
        """A few lines for a person."""
        verb = "would delete" if self.dry_run else "deleted"
        deleted = self.deleted
        lines = [
            f"kept {self.kept['manifests']} manifests and {self.kept['blobs']} blobs "
            f"({_size(self.kept['bytes'])})",
            f"{verb} {deleted['blobs'].count} blobs ({_size(deleted['blobs'].bytes)}), "
            f"{deleted['links'].count} links, {deleted['manifests'].count} untagged manifests, "
            f"{deleted['referrers'].count} referrer entries",
            f"{verb} {deleted['orphaned_data'].count} orphaned data objects "
            f"({_size(deleted['orphaned_data'].bytes)}), {deleted['uploads'].count} stale "
            f"uploads, {deleted['multipart_uploads'].count} multipart uploads",
        ]
        if self.spared:
            lines.append(f"spared {self.spared} blobs that came back into use while gc ran")
        lines.append(
            f"{sum(self.requests.values())} S3 requests in {self.seconds:.1f}s: "
            + ", ".join(f"{op} {n}" for op, n in sorted(self.requests.items()))
        )
        lines += [f"warning: {warning}" for warning in self.warnings]
        return lines


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover
