"""Manifests, tags and referrers of one repository, on S3.

A manifest's bytes are a blob entry (content-addressed, shared); the repository
holds a revision link per manifest, one object per tag (its body: the digest) and,
for a manifest with a ``subject``, a referrer entry under the subject (its body: the
descriptor the referrers API lists).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from itertools import islice
from typing import Any

from ..caches import ValueCache
from ..descriptor import Descriptor
from ..digests import CANONICAL, Digest, parse_digest
from ..errors import BlobBeingCollected, BlobError, BlobUnknown
from ..paths import is_valid_tag
from ..s3 import delete_keys, list_objects, s3_errors
from ..storage import S3BlobStorage
from .errors import RegistryError, manifest_invalid, manifest_unknown
from .validation import INDEX_TYPES, MANIFEST_TYPES, validate_manifest

MAX_MANIFEST = 4 * 1024 * 1024
# Layers that live elsewhere (the manifest gives their urls): not required to be here.
FOREIGN = (
    "application/vnd.docker.image.rootfs.foreign",
    "application/vnd.oci.image.layer.nondistributable",
)


class Manifests:
    """``cache`` maps a manifest's digest to its (media type, bytes): immutable, so
    never invalidated (every request resolves the reference through S3 first)."""

    def __init__(
        self, storage: S3BlobStorage, name: str, cache: ValueCache[tuple[str, bytes]]
    ) -> None:
        self.storage, self.name, self.cache = storage, name, cache
        self.repo = storage.repository(name)
        self.paths = storage.paths
        self.client, self.bucket = storage.client, storage.config.bucket

    # PUT ---------------------------------------------------------------------------

    def put(self, reference: str, content_type: str, body: bytes) -> tuple[str, str | None]:
        """Store a manifest; returns its digest and its subject's digest (or None)."""
        if len(body) > MAX_MANIFEST:
            raise RegistryError("MANIFEST_INVALID", 413, "manifest too large", len(body))
        # Everything is checked, and everything to write is computed, before the first write.
        media_type, manifest = validate_manifest(body, content_type)
        algorithm = CANONICAL
        if not is_valid_tag(reference):
            algorithm = parse_digest(reference).algorithm
        digest = parse_digest(f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}")
        if not is_valid_tag(reference) and str(digest) != reference:
            raise RegistryError(
                "DIGEST_INVALID",
                400,
                "provided digest did not match uploaded content",
                f"content is {digest}",
            )
        references = self._references(manifest, media_type)
        needed = [str(digest), *references]
        subject = self._subject(manifest)
        referrer = _referrer_descriptor(manifest, media_type, len(body), str(digest))
        if subject is None and self._tagged_already(reference, digest):
            # The same manifest under the same tag: nothing to write, and nothing to
            # check (a tagged revision keeps what it names, see s3blobs.gc).
            self._refuse_if_fenced(needed)
            self.cache.put(str(digest), (media_type, body))
            return str(digest), None
        self._check_present(references, media_type in INDEX_TYPES)
        self._refuse_if_fenced(needed)
        self.storage.blobs.store(media_type, body, digest)
        revision = self.paths.revision(self.name, digest)
        self._put(revision, b"")
        # After the write too: a running gc either sees this revision or is seen here.
        self._refuse_if_fenced(needed, taking_back=revision)
        if is_valid_tag(reference):
            self._put(self.paths.tag(self.name, reference), str(digest).encode())
        if subject is not None:
            self._put(
                self.paths.referrer(self.name, subject, digest), json.dumps(referrer).encode()
            )
        self.cache.put(str(digest), (media_type, body))
        return str(digest), str(subject) if subject else None

    def _references(self, manifest: dict[str, Any], media_type: str) -> dict[str, str]:
        """What a manifest names that must be in this repository, by digest: the key
        of each blob's link (or, for an index, of each manifest's revision)."""
        if media_type in INDEX_TYPES:
            return {
                child.digest: self.paths.revision(self.name, parse_digest(child.digest))
                for child in _descriptors(manifest.get("manifests"))
            }
        blobs = _descriptors([manifest["config"]] if "config" in manifest else [])
        blobs += _descriptors(manifest.get("layers"))
        return {
            blob.digest: self.paths.link(self.name, parse_digest(blob.digest))
            for blob in blobs
            if not (blob.urls and blob.media_type.startswith(FOREIGN))
        }

    def _check_present(self, references: dict[str, str], index: bool) -> None:
        """Every reference must be here with its entry, as S3 says now: never a cache
        (a client may have deleted a link; a link can outlive its blob, see s3blobs.gc).
        Links are listed when there are several. An entry is not asked for when this
        process linked the blob moments ago (``linked_recently``: a proof that gc keeps
        it, and the only thing a listing of links cannot show)."""
        links = list(references.values())
        listed = (
            self._existing(self.paths.layers_root(self.name), links)
            if len(links) > 1 and not index
            else None
        )
        missing = [
            digest
            for digest, key in references.items()
            if not (
                (key in listed if listed is not None else self._exists(key))
                and (
                    (not index and self.repo.linked_recently(digest) is not None)
                    or self._exists(self.paths.blob(parse_digest(digest)))
                )
            )
        ]
        if missing:
            raise RegistryError(
                "MANIFEST_BLOB_UNKNOWN",
                400,
                "manifest references what this repository lacks",
                missing,
            )

    def _tagged_already(self, reference: str, digest: Digest) -> bool:
        """Whether ``reference`` is a tag naming this manifest's revision, both in S3."""
        return (
            is_valid_tag(reference)
            and self._exists(self.paths.revision(self.name, digest))
            and self._get(self.paths.tag(self.name, reference)) == str(digest).encode()
        )

    def _refuse_if_fenced(self, digests: list[str], taking_back: str | None = None) -> None:
        """BlobBeingCollected (429, retry) when a running gc is deleting any of
        ``digests``; ``taking_back`` is the revision this request wrote, removed first."""
        fenced = self.storage.fence.fenced(digests)
        if fenced:
            if taking_back is not None:
                self._delete([taking_back])
            raise BlobBeingCollected(f"{', '.join(fenced[:5])}: being garbage-collected")

    @staticmethod
    def _subject(manifest: dict[str, Any]) -> Digest | None:
        if "subject" not in manifest:
            return None
        [subject] = _descriptors([manifest["subject"]])
        return parse_digest(subject.digest)

    # GET / DELETE ------------------------------------------------------------------

    def resolve(self, reference: str) -> str:
        """The digest a tag or digest reference names in this repository."""
        if is_valid_tag(reference):
            body = self._get(self.paths.tag(self.name, reference))
            if body is None:
                raise manifest_unknown(reference)
            reference = body.decode()
        try:
            digest = parse_digest(reference)
        except BlobError:
            # Neither a tag nor a digest: no manifest can have that name (the OCI
            # conformance suite expects 404 here, not 400).
            raise manifest_unknown(reference) from None
        if not self._exists(self.paths.revision(self.name, digest)):
            raise manifest_unknown(reference)
        return str(digest)

    def get(self, reference: str) -> tuple[str, str, bytes]:
        """(digest, media type, bytes) of a manifest; MANIFEST_UNKNOWN if not here."""
        digest = self.resolve(reference)
        cached = self.cache.get(digest)
        if cached is None:
            try:
                body = self.storage.blobs.get(digest)
                media_type = self.storage.blobs.stat(digest).media_type
            except BlobUnknown:
                raise manifest_unknown(reference) from None
            if media_type not in MANIFEST_TYPES:
                # Stored before types were checked: never serve it as what it claimed.
                media_type = "application/octet-stream"
            cached = (media_type, body)
            self.cache.put(digest, (media_type, body))
        return digest, cached[0], cached[1]

    def delete(self, reference: str) -> None:
        if is_valid_tag(reference):
            if self._get(self.paths.tag(self.name, reference)) is None:
                raise manifest_unknown(reference)
            self._delete([self.paths.tag(self.name, reference)])
            return
        digest, _, body = self.get(reference)
        keys = [self.paths.revision(self.name, parse_digest(digest))]
        keys += [self.paths.tag(self.name, t) for t, d in self._tag_targets() if d == digest]
        try:
            subject = self._subject(json.loads(body))
        except (ValueError, BlobError):
            subject = None
        if subject is not None:
            keys.append(self.paths.referrer(self.name, subject, parse_digest(digest)))
        self._delete(keys)

    def tags(self, n: int | None, last: str | None) -> tuple[list[str], bool]:
        """Tags in lexical order after ``last``, at most ``n``; and whether more follow."""
        root = self.paths.tags_root(self.name)
        listing = list_objects(
            self.client,
            self.bucket,
            root,
            f"listing tags of {self.name}",
            start_after=root + last if last else "",
        )
        # One tag past ``n`` tells whether more follow, and no page after it is fetched.
        tags = [item["Key"][len(root) :] for item in islice(listing, None if n is None else n + 1)]
        if n is not None and len(tags) > n:
            return tags[:n], True
        return tags, False

    def repository_exists(self) -> bool:
        with s3_errors(f"looking up {self.name}"):
            page = self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.paths.repository(self.name), MaxKeys=1
            )
        return bool(page.get("KeyCount"))

    def referrers(self, subject: Digest, artifact_type: str | None) -> list[dict[str, Any]]:
        root = self.paths.referrers_root(self.name, subject)
        found = []
        for item in list_objects(self.client, self.bucket, root, f"listing referrers of {subject}"):
            body = self._get(item["Key"])
            if body is not None:
                found.append(json.loads(body))
        if artifact_type:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return found

    # S3 helpers --------------------------------------------------------------------

    def _tag_targets(self) -> list[tuple[str, str]]:
        tags, _ = self.tags(None, None)
        targets = []
        for tag in tags:
            body = self._get(self.paths.tag(self.name, tag))
            if body is not None:
                targets.append((tag, body.decode()))
        return targets

    def _put(self, key: str, body: bytes) -> None:
        with s3_errors(f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def _get(self, key: str) -> bytes | None:
        try:
            with s3_errors(f"reading {key}", not_found=_Missing):
                return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except _Missing:
            return None

    def _existing(self, prefix: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` (all under ``prefix``) exist, by listing from just before
        the first one not yet answered: a page answers for every key up to the last it
        returns, so a repository of up to 1,000 links takes one request, and a larger
        one never more than one per key."""
        wanted = sorted(keys)
        found: set[str] = set()
        position, start_after = 0, ""
        while position < len(wanted):
            # Just before the next key to answer, or on from the last page if it fell short.
            start_after = max(start_after, wanted[position][:-1])
            with s3_errors(f"listing {prefix}"):
                page = self.client.list_objects_v2(
                    Bucket=self.bucket, Prefix=prefix, StartAfter=start_after
                )
            listed = [item["Key"] for item in page.get("Contents", [])]
            found.update(listed)
            if not page.get("IsTruncated") or not listed:
                break  # the listing has reached the end: every key is answered
            start_after = listed[-1]
            while position < len(wanted) and wanted[position] <= start_after:
                position += 1
        return found.intersection(wanted)

    def _exists(self, key: str) -> bool:
        try:
            with s3_errors(f"checking {key}", not_found=_Missing):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except _Missing:
            return False
        return True

    def _delete(self, keys: list[str]) -> None:
        delete_keys(self.client, self.bucket, keys, f"deleting manifest keys of {self.name}")


class _Missing(Exception):
    pass


def _descriptors(items: Any) -> list[Descriptor]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise manifest_invalid("expected a list of descriptors")
    out = []
    for item in items:
        try:
            out.append(Descriptor.from_dict(item).validate())
        except (ValueError, BlobError, AttributeError) as exc:
            raise manifest_invalid(f"bad descriptor {str(item)[:200]}: {exc}") from None
    return out


def _referrer_descriptor(
    manifest: dict[str, Any], media_type: str, size: int, digest: str
) -> dict[str, Any]:
    descriptor: dict[str, Any] = {"mediaType": media_type, "size": size, "digest": digest}
    config = manifest.get("config")
    artifact_type = manifest.get("artifactType") or (
        config.get("mediaType") if isinstance(config, dict) else None
    )
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if manifest.get("annotations"):
        descriptor["annotations"] = manifest["annotations"]
    return descriptor
