"""s3blobs: the blob storage layer of a container registry, on Amazon S3."""

from .cache import CacheStats, DescriptorCacheFactory
from .config import Config
from .descriptor import Descriptor
from .digests import Digest, parse_digest
from .errors import (
    BlobBeingCollected,
    BlobDigestUnsupported,
    BlobError,
    BlobExists,
    BlobInvalidDigest,
    BlobInvalidLength,
    BlobMounted,
    BlobTooLarge,
    BlobUnknown,
    BlobUploadClosed,
    BlobUploadConflict,
    BlobUploadUnknown,
    BucketNotFound,
    ConfigError,
    ReferenceInvalid,
    RepositoryNameInvalid,
    StorageError,
    StorageThrottled,
    UploadBufferFull,
)
from .hashing import ResumableHash
from .names import parse_reference, validate_repository_name
from .repository import GlobalBlobStore, RepositoryBlobStore
from .storage import S3BlobStorage
from .writer import S3BlobWriter

__all__ = [
    "BlobBeingCollected",
    "BlobDigestUnsupported",
    "BlobError",
    "BlobExists",
    "BlobInvalidDigest",
    "BlobInvalidLength",
    "BlobMounted",
    "BlobTooLarge",
    "BlobUnknown",
    "BlobUploadClosed",
    "BlobUploadConflict",
    "BlobUploadUnknown",
    "BucketNotFound",
    "CacheStats",
    "Config",
    "ConfigError",
    "Descriptor",
    "DescriptorCacheFactory",
    "Digest",
    "GlobalBlobStore",
    "ReferenceInvalid",
    "RepositoryBlobStore",
    "RepositoryNameInvalid",
    "ResumableHash",
    "S3BlobStorage",
    "S3BlobWriter",
    "StorageError",
    "StorageThrottled",
    "UploadBufferFull",
    "parse_digest",
    "parse_reference",
    "validate_repository_name",
]
