"""Exit codes, and which error means which: 0 done, 1 not found, 2 bad usage or
configuration, 3 storage trouble (S3 failed, or holds something wrong)."""

from __future__ import annotations

from ..errors import (
    BlobDigestUnsupported,
    BlobError,
    BlobInvalidDigest,
    BlobTooLarge,
    BlobUnknown,
    BlobUploadUnknown,
    BucketNotFound,
    ConfigError,
    ReferenceInvalid,
    RepositoryNameInvalid,
)

OK = 0
NOT_FOUND = 1
USAGE = 2
STORAGE = 3


class UsageError(Exception):
    """A command was given something it cannot work with (a missing file, a bad
    reference): exit 2, with this message."""


class NotFound(Exception):
    """What the command was asked about is not there (besides the Blob* unknowns)."""


def exit_code(exc: BaseException) -> int | None:
    """The exit code for an error the commands expect, None for a bug."""
    if isinstance(exc, (BlobUnknown, BlobUploadUnknown, NotFound)):
        return NOT_FOUND
    if isinstance(
        exc,
        (
            UsageError,
            ConfigError,
            BucketNotFound,  # the configuration names a bucket that is not there
            RepositoryNameInvalid,
            ReferenceInvalid,
            BlobInvalidDigest,
            BlobDigestUnsupported,
            BlobTooLarge,
        ),
    ):
        return USAGE
    if isinstance(exc, (BlobError, OSError)):
        return STORAGE
    return None
