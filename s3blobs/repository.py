"""Blob stores: the global one (admin, garbage collection) and a repository's.

A repository sees only the blobs linked into it; its writer links what it commits,
and ``create(mount_from=...)`` links a blob from another repository without upload.

Garbage collection runs while the registry serves (:mod:`s3blobs.gc`); two things
here let it: ``confirm`` (what the registry uses when it tells a client a blob is
there) refreshes a link older than half the grace, and every link written for a blob
that may already exist is checked against gc's fence afterwards (:mod:`s3blobs.fence`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from werkzeug.wrappers import Response

from .descriptor import Descriptor
from .descriptors import BlobDescriptorService, LinkAccepted, LinkedDescriptors
from .digests import CANONICAL, Digest, check_algorithm, parse_digest
from .errors import (
    BlobBeingCollected,
    BlobMounted,
    BlobTooLarge,
    BlobUnknown,
    ReferenceInvalid,
)
from .fence import SweepFence
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

    def confirm(self, digest: str) -> Descriptor:
        """stat, for an answer that tells a client the blob is here."""
        return self.stat(digest)

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
        descriptor = self.confirm(digest)
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
        self._check_one_part(data)
        return _put_small(self._entries, media_type, data, check_algorithm(digest_algorithm))

    def store(self, media_type: str, data: bytes, digest: Digest) -> None:
        """put, for a caller that needs no descriptor back (manifests): one conditional
        PutObject, whether or not the content was there already."""
        self._check_one_part(data)
        self._entries.create_small(digest, media_type, data)

    def _check_one_part(self, data: bytes) -> None:
        if len(data) > self._entries.config.part_size:
            raise BlobTooLarge("the global store takes at most one part; use a writer")


class RepositoryBlobStore(BlobStore):
    """One repository's blobs: stat, get, open, put, delete, enumerate, create, resume."""

    def __init__(
        self,
        name: str,
        entries: BlobEntries,
        uploads: UploadStore,
        links: LinkedDescriptors,
        descriptors: BlobDescriptorService,
        fence: SweepFence | None = None,
        refresh_after: float | None = None,
    ) -> None:
        super().__init__(entries, descriptors)
        self.name = validate_repository_name(name)
        self._uploads = uploads
        self._links = links
        self._fence = fence
        #: A link older than this (seconds) is refreshed when confirmed: gc's grace / 2.
        self.refresh_after = entries.config.gc_grace / 2 if refresh_after is None else refresh_after

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

    def confirm(self, digest: str) -> Descriptor:
        """stat, for an answer that tells a client the blob is here (blob HEAD and GET,
        through ``serve_blob``): the client may rely on it for gc's grace period.

        A cached descriptor is trusted only while the link is known to be younger than
        ``refresh_after`` (from this process's last sight of it, or one HeadObject); a
        link older than that is rewritten (at most once per ``refresh_after``) and the
        entry read from S3. Either way, a blob that a running gc is deleting is
        answered BlobUnknown. See :mod:`s3blobs.gc`."""
        key = str(parse_digest(digest))
        try:
            descriptor = self.stat(key)  # the cache, or S3 (which records the link)
            # Cached (perhaps by another process, in Redis), the link's age unknown here:
            # ask S3 for it. Its entry is read below if the link is old.
            seen = self._links.seen(key) or self._links.head_link(key)
            if time.time() - seen.modified > self.refresh_after:
                self._links.refresh(key, seen)
                self._check_fence(key)
                descriptor = self._entries.stat(parse_digest(key))
                self._links.accept(key, descriptor)
                return descriptor
            self._check_fence(key)
            return descriptor
        except (BlobUnknown, BlobBeingCollected):
            self._links.forget(key)
            raise BlobUnknown(f"{digest} in {self.name}") from None

    def link(self, descriptor: Descriptor) -> None:
        """Make a stored blob part of this repository. BlobBeingCollected (retry later)
        if a running gc is deleting that blob. The fence is read before the write (so
        the write is almost always spared) and after it (what gc's proof needs); a link
        written in between stays, naming a blob about to go: every reader checks the
        entry behind a link, and the next gc removes it."""
        self._check_fence(descriptor.digest)
        self._links.link(descriptor.digest)
        try:
            self._check_fence(descriptor.digest)
        except BlobBeingCollected:
            self._links.forget(descriptor.digest)
            raise
        self._links.accept(descriptor.digest, descriptor)
        self.descriptors.set_descriptor(descriptor.digest, descriptor)

    def linked_recently(self, digest: str) -> Descriptor | None:
        """The blob's descriptor when this process wrote its link here less than
        ``refresh_after`` ago, for an entry it had just written or read, and then
        found the blob off gc's fence; else None (ask S3).

        While that link stays, it proves the entry without asking S3: gc deletes an
        entry only after every link to it, and a link only once it is older than the
        grace plus ``refresh_after`` (or, for a link written after gc's last listing,
        when the fence read after the write shows the blob): see :mod:`s3blobs.gc`.
        It says nothing of the link itself (a client may delete it, served by any
        process), so callers read the link from S3. A link deleted by another process
        and written again by a request gc's fence refused, while gc deleted the entry,
        all within ``refresh_after``, would defeat it; this process forgets the links
        it deletes."""
        return _recent(self._links.accepted(digest), self.refresh_after)

    def _check_fence(self, digest: str) -> None:
        if self._fence is not None and self._fence.fenced([digest]):
            raise BlobBeingCollected(f"{digest} is being garbage-collected; retry shortly")

    def _mount(self, reference: str, stat: Descriptor | None) -> None:
        try:
            source, digest = parse_reference(reference)
        except ReferenceInvalid as exc:
            log.info("not mounting %r: %s; starting an upload", reference[:300], exc)
            return
        descriptor = stat
        if descriptor is None:
            # The decision to mount asks S3 for the source's link, never a cache (a
            # client may have deleted it), and for its entry unless this process linked
            # the blob there moments ago (see ``linked_recently``).
            links = self._links.of(source)
            recent = _recent(links.accepted(str(digest)), self.refresh_after)
            try:
                if recent is None:
                    descriptor = links.stat(str(digest))
                else:
                    links.head_link(str(digest))
                    descriptor = recent
            except BlobUnknown:
                return
        try:
            self.link(descriptor)
        except BlobBeingCollected:
            return  # an upload instead: the blob is on its way out
        raise BlobMounted(f"{source}@{digest}", descriptor)

    def __repr__(self) -> str:
        return f"RepositoryBlobStore({self.name!r})"


def _recent(accepted: LinkAccepted | None, within: float) -> Descriptor | None:
    """The descriptor of a link this process wrote and saw accepted ``within`` seconds."""
    if accepted is None or time.time() - accepted.written >= within:
        return None
    return accepted.descriptor


def _no_link(descriptor: Descriptor) -> None:
    """Blobs of the global store are linked nowhere."""


def _put_small(entries: BlobEntries, media_type: str, data: bytes, algorithm: str) -> Descriptor:
    digest = parse_digest(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")
    return entries.put_small(digest, media_type, bytes(data))
