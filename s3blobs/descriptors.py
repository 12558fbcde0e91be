"""BlobDescriptorService on S3: the global one, and a repository's (scoped by links)."""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple, Protocol

from cachetools import LRUCache

from .descriptor import Descriptor
from .digests import CANONICAL, parse_digest
from .errors import BlobInvalidDigest, BlobUnknown
from .s3 import s3_errors
from .store import BlobEntries


class BlobDescriptorService(Protocol):
    """What middleware wraps (distribution's BlobDescriptorService).

    ``scope`` is the repository name, or '' for the global store: a cache keys on it.
    """

    scope: str

    def stat(self, digest: str) -> Descriptor: ...

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None: ...

    def clear(self, digest: str) -> None: ...


class DescriptorServiceFactory(Protocol):
    """Middleware (distribution's BlobDescriptorServiceFactory): wraps a service."""

    def blob_access_controller(self, service: BlobDescriptorService) -> BlobDescriptorService: ...


def validate_descriptor(digest: str, descriptor: Descriptor) -> None:
    """The rules every set_descriptor applies, as distribution's caches do.

    The descriptor must be valid. Its digest is ``digest`` itself, or the canonical
    (sha256) digest of the same content when ``digest`` is in another algorithm: a
    mapping from, say, a sha512 digest to the canonical descriptor.
    """
    key = parse_digest(digest)
    if not isinstance(descriptor, Descriptor):
        raise TypeError("set_descriptor takes a Descriptor")
    descriptor.validate()
    if not descriptor.media_type:
        raise BlobInvalidDigest(descriptor.digest, "a descriptor needs a media type")
    if descriptor.digest == str(key):
        return
    target = parse_digest(descriptor.digest)
    if target.algorithm == key.algorithm or target.algorithm != CANONICAL:
        raise BlobInvalidDigest(
            digest,
            f"descriptor digest {descriptor.digest} is neither this digest nor its "
            f"canonical ({CANONICAL}) counterpart",
        )


class GlobalDescriptors:
    """Descriptors of every blob in the bucket: stat is one HeadObject on the entry."""

    scope = ""

    def __init__(self, entries: BlobEntries, ages: LinkAges | None = None) -> None:
        self._entries = entries
        self._ages = ages

    def stat(self, digest: str) -> Descriptor:
        return self._entries.stat(parse_digest(digest))

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        # Entries are the descriptors: they are written at commit, never set apart.
        validate_descriptor(digest, descriptor)

    def clear(self, digest: str) -> None:
        """Delete the blob itself (entry, then data); every link this process
        remembers as proof of it is forgotten first."""
        if self._ages is not None:
            self._ages.forget_everywhere(str(parse_digest(digest)))
        self._entries.delete(parse_digest(digest))


class LinkSeen(NamedTuple):
    """A link as S3 last showed it to this process."""

    modified: float  # its LastModified, seconds since the epoch
    etag: str


class LinkAccepted(NamedTuple):
    """A link this process wrote and then found its blob off gc's fence
    (``RepositoryBlobStore.link``)."""

    written: float  # no later than the write, seconds since the epoch
    descriptor: Descriptor


class LinkAges:
    """The last LastModified and ETag this process saw of each (repository, digest)
    link, bounded; what lets a repository tell an old link from a young one without
    asking S3 when its descriptor cache answers (see ``RepositoryBlobStore.confirm``).
    A LastModified only grows while the link exists, so a remembered one is a lower
    bound. Apart, the links this process wrote and saw accepted
    (``RepositoryBlobStore.linked_recently``)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._seen: LRUCache[tuple[str, str], LinkSeen] = LRUCache(maxsize=maxsize)
        self._accepted: LRUCache[tuple[str, str], LinkAccepted] = LRUCache(maxsize=maxsize)
        self._lock = threading.Lock()

    def get(self, scope: str, digest: str) -> LinkSeen | None:
        with self._lock:
            return self._seen.get((scope, digest))

    def put(self, scope: str, digest: str, seen: LinkSeen) -> None:
        with self._lock:
            self._seen[(scope, digest)] = seen

    def forget(self, scope: str, digest: str) -> None:
        with self._lock:
            self._seen.pop((scope, digest), None)
            self._accepted.pop((scope, digest), None)

    def forget_everywhere(self, digest: str) -> None:
        with self._lock:
            for memory in (self._seen, self._accepted):
                for key in [key for key in memory if key[1] == digest]:
                    del memory[key]

    def accept(self, scope: str, digest: str, descriptor: Descriptor) -> None:
        """Remember that the link this process just wrote was accepted."""
        with self._lock:
            seen = self._seen.get((scope, digest))
            if seen is not None:
                self._accepted[(scope, digest)] = LinkAccepted(seen.modified, descriptor)

    def accepted(self, scope: str, digest: str) -> LinkAccepted | None:
        with self._lock:
            return self._accepted.get((scope, digest))


class LinkedDescriptors:
    """Descriptors of the blobs linked into one repository.

    stat is a HeadObject on the link and one on the entry (the entry can be gone
    under a stale link, after garbage collection); clear removes the link only.
    Every answer about a link is remembered in ``ages`` (when given).
    """

    def __init__(self, entries: BlobEntries, repository: str, ages: LinkAges | None = None) -> None:
        self._entries = entries
        self.scope = repository
        self._ages = ages if ages is not None else LinkAges(maxsize=1)

    def stat(self, digest: str) -> Descriptor:
        parsed = parse_digest(digest)
        self.head_link(digest)
        return self._entries.stat(parsed)

    def seen(self, digest: str) -> LinkSeen | None:
        """What this process last saw of the link, without asking S3."""
        return self._ages.get(self.scope, str(parse_digest(digest)))

    def accept(self, digest: str, descriptor: Descriptor) -> None:
        self._ages.accept(self.scope, str(parse_digest(digest)), descriptor)

    def accepted(self, digest: str) -> LinkAccepted | None:
        """The link as this process last wrote it and saw it accepted, if it did."""
        return self._ages.accepted(self.scope, str(parse_digest(digest)))

    def of(self, repository: str) -> LinkedDescriptors:
        """Another repository's links, remembered in the same ``ages``."""
        return LinkedDescriptors(self._entries, repository, self._ages)

    def forget(self, digest: str) -> None:
        self._ages.forget(self.scope, str(parse_digest(digest)))

    def head_link(self, digest: str) -> LinkSeen:
        """The link as S3 has it now; BlobUnknown if there is none."""
        response = self._head_link(digest)
        seen = LinkSeen(response["LastModified"].timestamp(), response["ETag"])
        self._ages.put(self.scope, str(parse_digest(digest)), seen)
        return seen

    def refresh(self, digest: str, seen: LinkSeen) -> None:
        """Rewrite an existing link so that its LastModified is now. Conditional on the
        ETag, so it never re-creates a link that was deleted meanwhile: BlobUnknown."""
        unknown = lambda: BlobUnknown(f"{digest} in {self.scope}")  # noqa: E731
        started = time.time()
        with s3_errors(
            f"refreshing {digest} in {self.scope}", not_found=unknown, precondition_failed=unknown
        ):
            response = self._entries.client.put_object(
                Bucket=self._entries.bucket, Key=self._key(digest), Body=b"", IfMatch=seen.etag
            )
        self._remember_write(digest, started, response)

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        # The link is written by the store that links the blob; nothing to add here.
        validate_descriptor(digest, descriptor)

    def clear(self, digest: str) -> None:
        self._head_link(digest)
        self.unlink(digest)

    def unlink(self, digest: str) -> None:
        """Delete the link, whether or not it exists."""
        self.forget(digest)
        with s3_errors(f"unlinking {digest}"):
            self._entries.client.delete_object(Bucket=self._entries.bucket, Key=self._key(digest))

    def link(self, digest: str) -> None:
        started = time.time()
        with s3_errors(f"linking {digest} into {self.scope}"):
            response = self._entries.client.put_object(
                Bucket=self._entries.bucket, Key=self._key(digest), Body=b""
            )
        self._remember_write(digest, started, response)

    def _remember_write(self, digest: str, started: float, response: Any) -> None:
        # S3 does not return the new LastModified; the moment the write began is a
        # lower bound on it (in whole seconds, as S3 keeps them).
        seen = LinkSeen(float(int(started)), response["ETag"])
        self._ages.put(self.scope, str(parse_digest(digest)), seen)

    def _key(self, digest: str) -> str:
        return self._entries.paths.link(self.scope, parse_digest(digest))

    def _head_link(self, digest: str) -> Any:
        unknown = lambda: BlobUnknown(f"{digest} in {self.scope}")  # noqa: E731
        with s3_errors(f"stat {digest} in {self.scope}", not_found=unknown):
            return self._entries.client.head_object(
                Bucket=self._entries.bucket, Key=self._key(digest)
            )
