"""BlobDescriptorService on S3: the global one, and a repository's (scoped by links)."""

from __future__ import annotations

from typing import Any, Protocol

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

    def __init__(self, entries: BlobEntries) -> None:
        self._entries = entries

    def stat(self, digest: str) -> Descriptor:
        return self._entries.stat(parse_digest(digest))

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        # Entries are the descriptors: they are written at commit, never set apart.
        validate_descriptor(digest, descriptor)

    def clear(self, digest: str) -> None:
        """Delete the blob itself (entry, then data)."""
        self._entries.delete(parse_digest(digest))


class LinkedDescriptors:
    """Descriptors of the blobs linked into one repository.

    stat is a HeadObject on the link and one on the entry (the entry can be gone
    under a stale link, after garbage collection); clear removes the link only.
    """

    def __init__(self, entries: BlobEntries, repository: str) -> None:
        self._entries = entries
        self.scope = repository

    def stat(self, digest: str) -> Descriptor:
        parsed = parse_digest(digest)
        self._head_link(digest)
        return self._entries.stat(parsed)

    def set_descriptor(self, digest: str, descriptor: Descriptor) -> None:
        # The link is written by the store that links the blob; nothing to add here.
        validate_descriptor(digest, descriptor)

    def clear(self, digest: str) -> None:
        self._head_link(digest)
        with s3_errors(f"unlinking {digest}"):
            self._entries.client.delete_object(Bucket=self._entries.bucket, Key=self._key(digest))

    def link(self, digest: str) -> None:
        with s3_errors(f"linking {digest} into {self.scope}"):
            self._entries.client.put_object(
                Bucket=self._entries.bucket, Key=self._key(digest), Body=b""
            )

    def _key(self, digest: str) -> str:
        return self._entries.paths.link(self.scope, parse_digest(digest))

    def _head_link(self, digest: str) -> Any:
        unknown = lambda: BlobUnknown(f"{digest} in {self.scope}")  # noqa: E731
        with s3_errors(f"stat {digest} in {self.scope}", not_found=unknown):
            return self._entries.client.head_object(
                Bucket=self._entries.bucket, Key=self._key(digest)
            )
