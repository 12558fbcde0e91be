"""The named errors of s3blobs.

The ``Blob*`` errors mirror the ``Err*`` values of distribution's ``blobs.go``;
every one subclasses :class:`BlobError`, so a caller can catch the family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .descriptor import Descriptor


class BlobError(Exception):
    """Base of every blob error."""


class BlobExists(BlobError):
    """The blob is already stored."""


class BlobDigestUnsupported(BlobError):
    """The digest's algorithm is not one s3blobs stores (sha256, sha512)."""


class BlobUnknown(BlobError):
    """No such blob (in this repository, for a repository's store)."""


class ManifestUnknown(BlobUnknown):
    """No manifest by this tag or digest in the repository."""


class BlobUploadUnknown(BlobError):
    """No upload has this id: never started, committed, cancelled, or garbage."""


class BlobInvalidLength(BlobError):
    """The declared length does not match the bytes received."""


class BlobInvalidDigest(BlobError):
    """A digest is malformed, or does not match the content."""

    def __init__(self, digest: str, reason: str) -> None:
        super().__init__(f"invalid digest {digest[:200]!r}: {reason}")
        self.digest = digest
        self.reason = reason


class BlobMounted(BlobError):
    """``create(mount_from=...)`` linked an existing blob: no upload is needed."""

    def __init__(self, from_: str, descriptor: Descriptor) -> None:
        super().__init__(f"blob mounted from {from_}")
        self.from_ = from_
        self.descriptor = descriptor


class BlobUploadConflict(BlobError):
    """Another writer changed this upload since it was resumed; resume it again."""


class BlobUploadClosed(BlobError):
    """The writer was committed, cancelled or closed: resume it to write more."""


class BlobTooLarge(BlobError):
    """The blob would need more than S3's 10,000 parts at the configured part size."""


class StorageError(BlobError):
    """S3 failed in a way the contract names no error for (after botocore's retries)."""


class StorageThrottled(StorageError):
    """S3 kept answering SlowDown / 503 after botocore's retries."""


class UploadBufferFull(StorageThrottled):
    """The process holds as many upload bytes as S3BLOBS_MAX_BUFFER allows: retry later."""


class BlobBeingCollected(StorageThrottled):
    """A running garbage collection is deleting this blob: retry once it is done."""


class RepositoryNameInvalid(ValueError):
    """A repository name outside the OCI distribution grammar."""


class ReferenceInvalid(ValueError):
    """A canonical reference ``<name>@<digest>`` that does not parse."""


class ConfigError(ValueError):
    """An ``S3BLOBS_*`` variable with a value s3blobs does not accept."""


class BucketNotFound(StorageError):
    """The configured bucket does not exist (or is not visible to these credentials)."""
