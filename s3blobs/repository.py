"""Blob stores: the global one (admin, garbage collection) and a repository's.

A repository sees only the blobs linked into it; its writer links what it commits,
and ``create(mount_from=...)`` links a blob from another repository without upload.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Response

from .descriptor import Descriptor
from .descriptors import BlobDescriptorService, LinkedDescriptors
from .digests import CANONICAL, check_algorithm, parse_digest
from .errors import BlobMounted, BlobTooLarge, BlobUnknown, ReferenceInvalid
from .hashing import ResumableHash
from .names import parse_reference, validate_repository_name
from .reader import BlobReader
from .s3 import list_objects
from .serving import serve
from .store import DEFAULT_MEDIA_TYPE, BlobEntries
from .uploads import UploadStore
from .writer import S3BlobWriter

log = logging.getLogger(__name__)

#: The repository an upload of the global store records: none (no name is empty).
GLOBAL_SCOPE = ""


class BlobStore:
    """What both stores share: stat, get, open, delete through a descriptor service."""

    def __init__(self, entries: BlobEntries, descriptors: BlobDescriptorService) -> None:
        self._entries = entries
        self.descriptors = descriptors

    def stat(self, digest: str) -> Descriptor:
        """The blob's descriptor; BlobUnknown if this store does not hold it."""
        return self.descriptors.stat(digest)

    def get(self, digest: str) -> bytes:
        self._require(digest)
        return self._entries.get(parse_digest(digest))

    def open(self, digest: str) -> BlobReader:
        """A seekable binary file object; BlobUnknown at once for a missing blob."""
        self._require(digest)
        return self._entries.open(parse_digest(digest))

    def delete(self, digest: str) -> None:
        self.descriptors.clear(digest)

    def serve_blob(self, environ: dict[str, Any], digest: str) -> Response:
        """The blob as a WSGI response (a werkzeug Response): GET redirects to a
        presigned S3 URL (or streams, with redirects off), HEAD answers from the
        descriptor. BlobUnknown for a blob this store does not hold, so the caller
        answers."""
        descriptor = self.stat(digest)
        location = self._entries.locate(parse_digest(digest))
        return serve(environ, descriptor, location, self._entries.client, self._entries.config)

    def _require(self, digest: str) -> None:
        self.stat(digest)


class GlobalBlobStore(BlobStore):
    """Every blob in the bucket, whatever repositories link it."""

    def __init__(
        self,
        entries: BlobEntries,
        descriptors: BlobDescriptorService,
        uploads: UploadStore | None = None,
    ) -> None:
        super().__init__(entries, descriptors)
        self._uploads = uploads

    def create(self, *, digest_algorithm: str = CANONICAL) -> S3BlobWriter:
        """Start an upload of a blob that no repository links (``s3blobs put`` without
        ``--repo``); resumable by ``resume(id)`` on the global store only."""
        hasher = ResumableHash(check_algorithm(digest_algorithm))
        stored = self._upload_store().start(GLOBAL_SCOPE, hasher.algorithm, hasher.state())
        return S3BlobWriter(self._upload_store(), self._entries, stored, _no_link)

    def resume(self, writer_id: str) -> S3BlobWriter:
        stored = self._upload_store().load(writer_id, GLOBAL_SCOPE)
        return S3BlobWriter(self._upload_store(), self._entries, stored, _no_link)

    def _upload_store(self) -> UploadStore:
        if self._uploads is None:
            raise TypeError("this global store was made without an upload store")
        return self._uploads

    def _require(self, digest: str) -> None:
        parse_digest(digest)  # reading the entry itself answers BlobUnknown

    def enumerate(self) -> Iterator[str]:
        return self._entries.enumerate()

    def put(self, media_type: str, data: bytes, *, digest_algorithm: str = CANONICAL) -> Descriptor:
        """Store content of up to one part without linking it anywhere (manifests):
        one conditional PutObject; existing content is not rewritten."""
        if len(data) > self._entries.config.part_size:
            raise BlobTooLarge("the global store takes at most one part; use a writer")
        return _put_small(self._entries, media_type, data, check_algorithm(digest_algorithm))


class RepositoryBlobStore(BlobStore):
    """One repository's blobs: stat, get, open, put, delete, enumerate, create, resume."""

    def __init__(
        self,
        name: str,
        entries: BlobEntries,
        uploads: UploadStore,
        links: LinkedDescriptors,
        descriptors: BlobDescriptorService,
    ) -> None:
        super().__init__(entries, descriptors)
        self.name = validate_repository_name(name)
        self._uploads = uploads
        self._links = links

    def enumerate(self) -> Iterator[str]:
        """The digests linked into this repository, one listing page at a time."""
        entries = self._entries
        root = entries.paths.layers_root(self.name)
        for item in list_objects(entries.client, entries.bucket, root, f"listing {self.name}"):
            digest = entries.paths.digest_of_link_key(self.name, item["Key"])
            if digest is not None:
                yield digest

    def put(self, media_type: str, data: bytes, *, digest_algorithm: str = CANONICAL) -> Descriptor:
        """Store ``data`` and link it here. Idempotent: existing content is not rewritten.

        Up to one part it is one PutObject (that S3 verifies by its SHA-256 checksum,
        for a sha256 digest); larger data goes through the multipart writer.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"put takes bytes, not {type(data).__name__}")
        media_type = media_type or DEFAULT_MEDIA_TYPE
        if len(data) > self._uploads.config.part_size:
            with self.create(digest_algorithm=digest_algorithm) as writer:
                writer.write(data)
                return writer.commit(Descriptor(media_type, writer.size, writer.computed_digest()))
        descriptor = _put_small(self._entries, media_type, data, check_algorithm(digest_algorithm))
        self.link(descriptor)
        return descriptor

    def create(
        self,
        *,
        mount_from: str | None = None,
        stat: Descriptor | None = None,
        digest_algorithm: str = CANONICAL,
    ) -> S3BlobWriter:
        """Start an upload, or mount: with ``mount_from="<name>@<digest>"`` a blob the
        source repository holds is linked here and BlobMounted is raised. ``stat`` is
        the source's descriptor when the caller already checked access to it. A
        malformed reference or a source without the blob starts a normal upload, as
        the OCI distribution spec allows."""
        if mount_from is not None:
            self._mount(mount_from, stat)
        hasher = ResumableHash(check_algorithm(digest_algorithm))
        stored = self._uploads.start(self.name, hasher.algorithm, hasher.state())
        return S3BlobWriter(self._uploads, self._entries, stored, self.link)

    def resume(self, writer_id: str) -> S3BlobWriter:
        """The upload with this id, from any process: one GET. BlobUploadUnknown if none."""
        stored = self._uploads.load(writer_id, self.name)
        return S3BlobWriter(self._uploads, self._entries, stored, self.link)

    def link(self, descriptor: Descriptor) -> None:
        """Make a stored blob part of this repository."""
        self._links.link(descriptor.digest)
        self.descriptors.set_descriptor(descriptor.digest, descriptor)

    def _mount(self, reference: str, stat: Descriptor | None) -> None:
        try:
            source, digest = parse_reference(reference)
        except ReferenceInvalid as exc:
            log.info("not mounting %r: %s; starting an upload", reference[:300], exc)
            return
        descriptor = stat
        if descriptor is None:
            # The decision to mount checks S3 itself, never a cache.
            try:
                descriptor = LinkedDescriptors(self._entries, source).stat(str(digest))
            except BlobUnknown:
                return
        self.link(descriptor)
        raise BlobMounted(f"{source}@{digest}", descriptor)

    def __repr__(self) -> str:
        return f"RepositoryBlobStore({self.name!r})"


def _no_link(descriptor: Descriptor) -> None:
    """Blobs of the global store are linked nowhere."""


def _put_small(entries: BlobEntries, media_type: str, data: bytes, algorithm: str) -> Descriptor:
    digest = parse_digest(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")
    return entries.put_small(digest, media_type or DEFAULT_MEDIA_TYPE, bytes(data))
