"""S3BlobStorage: the entry point that wires a bucket into blob stores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .cache_backend import caches_from_config
from .caches import ValueCache
from .catalog import Catalog
from .config import Config
from .descriptors import (
    BlobDescriptorService,
    DescriptorServiceFactory,
    GlobalDescriptors,
    LinkAges,
    LinkedDescriptors,
)
from .errors import BucketNotFound
from .fence import SweepFence
from .paths import Paths
from .repository import GlobalBlobStore, RepositoryBlobStore
from .s3 import error_code, make_client, storage_error
from .store import BlobEntries, Location
from .uploads import UploadStore

if TYPE_CHECKING:
    from .gc import GcReport


class S3BlobStorage:
    """Blob storage on one bucket: ``storage.blobs`` is the global store,
    ``storage.repository(name)`` a repository's, ``storage.catalog`` lists what the
    bucket holds (tags, manifests, open uploads).

    ``descriptor_service_factory`` wraps every descriptor service (global and per
    repository): pass a :class:`DescriptorCacheFactory`, or any object with a
    ``blob_access_controller(service)`` method; stack several by wrapping one in
    another. ``location_cache`` remembers where each blob's bytes are (this
    process's memory by default). The bucket is checked once here (one HeadBucket,
    and a GetObject of gc's fence: see s3blobs.fence) unless ``check_bucket=False``.
    """

    def __init__(
        self,
        config: Config,
        descriptor_service_factory: DescriptorServiceFactory | None = None,
        *,
        client: Any = None,
        check_bucket: bool = True,
        location_cache: ValueCache[Location] | None = None,
    ) -> None:
        self.config = config
        self.client = client if client is not None else make_client(config)
        self.paths = Paths(config.prefix)
        self.descriptor_service_factory = descriptor_service_factory
        self._entries = BlobEntries(self.client, config, self.paths, location_cache)
        self._uploads = UploadStore(self.client, config, self.paths)
        # What lets gc run while the registry serves (see s3blobs.gc).
        self.fence = SweepFence(self.client, config.bucket, self.paths)
        self._link_ages = LinkAges(maxsize=max(config.cache_size, 1_000))
        if check_bucket:
            self._check_bucket()
            self.fence.prime()
        self.blobs = GlobalBlobStore(
            self._entries,
            self._wrap(GlobalDescriptors(self._entries, self._link_ages)),
            self._uploads,
        )
        self.catalog = Catalog(self.client, config.bucket, self.paths, self.blobs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> S3BlobStorage:
        """Configure from ``S3BLOBS_*``, with the descriptor and location caches that
        ``S3BLOBS_CACHE`` (memory or Redis), ``S3BLOBS_CACHE_SIZE`` (0: no descriptor
        cache) and ``S3BLOBS_CACHE_TTL`` describe."""
        config = Config.from_env(environ)
        caches = caches_from_config(config)
        return cls(config, caches.descriptors, location_cache=caches.locations, **kwargs)

    def repository(self, name: str) -> RepositoryBlobStore:
        """The store of repository ``name`` (RepositoryNameInvalid outside the OCI grammar)."""
        links = LinkedDescriptors(self._entries, name, self._link_ages)
        return RepositoryBlobStore(
            name, self._entries, self._uploads, links, self._wrap(links), self.fence
        )

    def collect_garbage(self, **options: Any) -> GcReport:
        """Registry garbage collection, online, while the registry serves; returns the
        report. Options: ``grace``, ``delete_untagged``, ``uploads_older_than``,
        ``dry_run``, ``workers`` (see :func:`s3blobs.gc.collect_garbage`)."""
        from .gc import collect_garbage

        return collect_garbage(self, **options)

    def _wrap(self, service: BlobDescriptorService) -> BlobDescriptorService:
        factory = self.descriptor_service_factory
        return factory.blob_access_controller(service) if factory is not None else service

    def _check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise BucketNotFound(
                    f"bucket {self.config.bucket!r} does not exist (S3BLOBS_BUCKET)"
                ) from None
            raise storage_error(f"checking bucket {self.config.bucket!r}", exc) from exc
        except BotoCoreError as exc:
            raise storage_error(f"checking bucket {self.config.bucket!r}", exc) from exc

    def __repr__(self) -> str:
        return f"S3BlobStorage(bucket={self.config.bucket!r}, prefix={self.config.prefix!r})"
