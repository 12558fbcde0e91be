"""The global, content-addressed blob store on one bucket.

An entry ``blobs/<alg>/<hh>/<hex>`` holds a small blob's bytes, or, for a blob that
was uploaded in parts, nothing but metadata naming its ``data/`` object: the bytes
stay where the multipart upload wrote them, and no step ever copies them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .buffers import ChunkReader
from .caches import MemoryCache, ValueCache
from .config import Config
from .descriptor import Descriptor
from .digests import Digest, parse_digest
from .errors import BlobExists, BlobUnknown
from .paths import Paths
from .reader import BlobReader
from .s3 import encryption_args, list_objects, s3_errors

DATA_META = "s3blobs-data"
SIZE_META = "s3blobs-size"
DEFAULT_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Location:
    """Where a blob's bytes are: its entry key, or the data key the entry names."""

    key: str
    size: int


class BlobEntries:
    """Reads and writes entries; the one class that knows what an entry looks like."""

    def __init__(
        self,
        client: Any,
        config: Config,
        paths: Paths,
        locations: ValueCache[Location] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.bucket = config.bucket
        self.paths = paths
        # digest -> Location. Blobs are immutable, so only a delete makes one stale:
        # deletes forget it (in every process, with a shared cache), and every
        # HeadObject of the entry (each descriptor-cache miss) refreshes it, so a blob
        # deleted and pushed again by a process with its own cache is followed within
        # the descriptor cache's TTL.
        self._locations = locations if locations is not None else MemoryCache(10_000)

    # Reads ---------------------------------------------------------------------

    def head(self, digest: Digest) -> tuple[Descriptor, Location]:
        """One HeadObject on the entry; BlobUnknown if there is none."""
        key = self.paths.blob(digest)
        with s3_errors(f"stat {digest}", not_found=lambda: BlobUnknown(str(digest))):
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        return self._remember(digest, key, response)

    def stat(self, digest: Digest) -> Descriptor:
        return self.head(digest)[0]

    def locate(self, digest: Digest) -> Location:
        """Where the bytes are: from the location cache when known, else one HeadObject."""
        location = self._locations.get(str(digest))
        return location if location is not None else self.head(digest)[1]

    def get(self, digest: Digest) -> bytes:
        """The blob's bytes: one GET for a small blob (or a known large one), two otherwise."""
        location = self._locations.get(str(digest))
        key = location.key if location else self.paths.blob(digest)
        response = self._get_object(digest, key)
        if location is None and DATA_META in response.get("Metadata", {}):
            location = self._remember(digest, key, response)[1]
            response = self._get_object(digest, location.key)
        with s3_errors(f"reading {digest}"):
            return bytes(response["Body"].read())

    def open(self, digest: Digest) -> BlobReader:
        location = self.locate(digest)
        return BlobReader(self.client, self.bucket, location.key, location.size)

    def enumerate(self) -> Iterator[str]:
        """Every stored digest, one listing page (1,000 keys) in memory at a time."""
        for digest, _ in self._listing():
            yield digest

    def data_in_use(self) -> set[str]:
        """Every data key an entry names: a listing of the entries, and one HeadObject
        per empty entry (pointers are empty objects; so is the empty blob)."""
        in_use = set()
        for digest, item in self._listing():
            if item["Size"] == 0:
                location = self.head(parse_digest(digest))[1]
                if location.key != item["Key"]:
                    in_use.add(location.key)
        return in_use

    def _listing(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(digest, listed object) of every entry, a page at a time."""
        for item in list_objects(self.client, self.bucket, self.paths.blobs_root, "listing blobs"):
            digest = self.paths.digest_of_blob_key(item["Key"])
            if digest is not None:
                yield digest, item

    # Writes --------------------------------------------------------------------

    def put_small(self, digest: Digest, media_type: str, data: bytes | ChunkReader) -> Descriptor:
        """Store ``data`` at its entry: one conditional PutObject that S3 checksums.

        When the entry is already there (content-addressed: the same bytes, written by
        an earlier request or by our own write whose answer was lost) its descriptor
        is returned.
        """
        return self._put_small(digest, media_type, data) or self.stat(digest)

    def create_small(self, digest: Digest, media_type: str, data: bytes | ChunkReader) -> bool:
        """put_small, saying whether this call wrote the entry (False: it was there,
        or our own write's answer was lost)."""
        return self._put_small(digest, media_type, data) is not None

    def _put_small(
        self, digest: Digest, media_type: str, data: bytes | ChunkReader
    ) -> Descriptor | None:
        args: dict[str, Any] = {}
        if digest.algorithm == "sha256":
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(digest.hex)).decode()
        return self._create_entry(
            digest, Body=data, ContentType=media_type or DEFAULT_MEDIA_TYPE, **args
        )

    def put_pointer(
        self, digest: Digest, media_type: str, data_key: str, size: int
    ) -> tuple[Descriptor, bool]:
        """Write the entry of a blob whose bytes are at ``data_key``; returns the
        entry's descriptor and whether the entry names ``data_key``.

        An entry that is already there is read and compared: naming ``data_key`` it is
        this upload's own (a retried request, or a write whose answer was lost);
        naming another object, an earlier commit stored the content, and only then
        may the caller delete ``data_key``.
        """
        for _ in range(3):
            created = self._create_entry(
                digest,
                Body=b"",
                ContentType=media_type or DEFAULT_MEDIA_TYPE,
                Metadata={DATA_META: self.paths.data_name(data_key), SIZE_META: str(size)},
                size=size,
            )
            if created is not None:
                return created, True
            try:
                descriptor, location = self.head(digest)
            except BlobUnknown:  # deleted between the two requests: try again
                continue
            return descriptor, location.key == data_key
        raise BlobUnknown(f"{digest}: the entry kept appearing and disappearing")

    def delete(self, digest: Digest) -> None:
        """Remove the entry, then the data it names; BlobUnknown if there is no entry."""
        _, location = self.head(digest)
        self.forget(digest)
        with s3_errors(f"deleting {digest}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.paths.blob(digest))
            if location.key != self.paths.blob(digest):
                self.client.delete_object(Bucket=self.bucket, Key=location.key)

    def forget(self, digest: Digest) -> None:
        self._locations.discard(str(digest))

    # Helpers -------------------------------------------------------------------

    def _create_entry(
        self, digest: Digest, *, size: int | None = None, **args: Any
    ) -> Descriptor | None:
        key = self.paths.blob(digest)
        try:
            with s3_errors(f"storing {digest}", precondition_failed=BlobExists):
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    IfNoneMatch="*",
                    **args,
                    **encryption_args(self.config),
                )
        except BlobExists:
            return None
        body_size = len(args["Body"])  # bytes, or a ChunkReader
        descriptor = Descriptor(
            args["ContentType"], body_size if size is None else size, str(digest)
        )
        data = args.get("Metadata", {}).get(DATA_META)
        location = Location(self.paths.data(data) if data else key, descriptor.size)
        self._locations.put(str(digest), location)
        return descriptor

    def _get_object(self, digest: Digest, key: str) -> dict[str, Any]:
        with s3_errors(f"reading {digest}", not_found=lambda: BlobUnknown(str(digest))):
            response: dict[str, Any] = self.client.get_object(Bucket=self.bucket, Key=key)
        return response

    def _remember(
        self, digest: Digest, key: str, response: dict[str, Any]
    ) -> tuple[Descriptor, Location]:
        metadata = response.get("Metadata", {})
        if DATA_META in metadata:
            size = int(metadata[SIZE_META])
            location = Location(self.paths.data(metadata[DATA_META]), size)
        else:
            size = int(response["ContentLength"])
            location = Location(key, size)
        self._locations.put(str(digest), location)
        media_type = response.get("ContentType") or DEFAULT_MEDIA_TYPE
        return Descriptor(media_type, size, str(digest)), location
