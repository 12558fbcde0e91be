"""What is in a bucket, for an operator: tags, manifests, open uploads (repositories:
:func:`s3blobs.registry.catalog.repositories`).

Read-only views, each a lazy listing (one page of keys in memory at a time) over
the layout :mod:`paths` defines; the registry's write paths are not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .descriptor import Descriptor
from .digests import Digest, parse_digest
from .errors import BlobUnknown, BlobUploadUnknown, ManifestUnknown
from .names import validate_repository_name
from .paths import Paths, is_valid_tag
from .repository import GlobalBlobStore
from .s3 import list_objects, s3_errors
from .uploads import UploadState


@dataclass(frozen=True)
class OpenUpload:
    """An upload that was started and neither committed nor cancelled.

    ``state`` is None when the state object cannot be read (written by something
    else, or cut short); ``updated`` is when the state was last saved.
    """

    id: str
    updated: datetime
    state: UploadState | None


class Catalog:
    def __init__(self, client: Any, bucket: str, paths: Paths, blobs: GlobalBlobStore) -> None:
        self.client, self.bucket, self.paths, self.blobs = client, bucket, paths, blobs

    def repository_exists(self, name: str) -> bool:
        """True when anything (a link, a manifest, a tag) is stored under ``name``."""
        root = self.paths.repository(validate_repository_name(name))
        with s3_errors(f"looking up {name}"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=root, MaxKeys=1)
        return bool(page.get("KeyCount") or page.get("Contents"))

    def tags(self, name: str) -> Iterator[str]:
        """The tags of repository ``name`` in lexical order (none for an unknown name)."""
        root = self.paths.tags_root(validate_repository_name(name))
        for item in list_objects(self.client, self.bucket, root, f"listing tags of {name}"):
            tag = item["Key"][len(root) :]
            if is_valid_tag(tag):
                yield tag

    def resolve(self, name: str, reference: str) -> Digest:
        """The digest a tag or digest names in repository ``name``; ManifestUnknown if none."""
        validate_repository_name(name)
        if is_valid_tag(reference):
            body = self._read(self.paths.tag(name, reference))
            if body is None:
                raise ManifestUnknown(f"no tag {reference!r} in {name}")
            digest = parse_digest(body.decode())
        else:
            digest = parse_digest(reference)
        if self._read(self.paths.revision(name, digest)) is None:
            raise ManifestUnknown(f"no manifest {digest} in {name}")
        return digest

    def manifest(self, name: str, reference: str) -> tuple[Descriptor, bytes]:
        """A manifest's descriptor (its media type as pushed) and its bytes."""
        digest = str(self.resolve(name, reference))
        try:
            return self.blobs.stat(digest), self.blobs.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest {digest} of {name} has no content") from None

    def uploads(self) -> Iterator[OpenUpload]:
        """Every open upload, in key order: a listing, and one GET per upload's state."""
        root = self.paths.uploads_root
        for item in list_objects(self.client, self.bucket, root, "listing uploads"):
            token = self.paths.upload_of_state_key(item["Key"])
            if token is None:
                continue
            body = self._read(item["Key"])
            if body is None:  # committed or cancelled since the listing
                continue
            try:
                state: UploadState | None = UploadState.from_json(body)
            except (ValueError, KeyError, TypeError):
                state = None
            yield OpenUpload(token, item["LastModified"], state)

    def upload(self, token: str) -> UploadState:
        """The state of open upload ``token``; BlobUploadUnknown if there is none."""
        try:
            key = self.paths.upload_state(token)
        except ValueError:
            raise BlobUploadUnknown(f"not an upload id: {token[:100]!r}") from None
        body = self._read(key)
        if body is None:
            raise BlobUploadUnknown(f"no open upload {token[:100]!r}")
        try:
            return UploadState.from_json(body)
        except (ValueError, KeyError, TypeError):
            raise BlobUploadUnknown(f"upload {token[:100]!r} has an unreadable state") from None

    def _read(self, key: str) -> bytes | None:
        try:
            with s3_errors(f"reading {key}", not_found=_Missing):
                return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except _Missing:
            return None


class _Missing(Exception):
    pass
