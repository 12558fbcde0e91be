"""Repository benchmark: S3 requests for 1,000 stats of 100 blobs with and without the
descriptor cache, and for a cross-repository mount. Request counts are exact.

    python -m bench.bench_repository
"""

from __future__ import annotations

import contextlib
import random
import time

import boto3
from moto import mock_aws

from bench.support import Counted
from s3blobs import BlobMounted, Config, DescriptorCacheFactory, S3BlobStorage

BUCKET = "bench-repository"


def stats(cached: bool) -> tuple[Counted, float]:
    config = Config(bucket=BUCKET, cache_size=0)
    writer = S3BlobStorage(config).repository("bench/app")
    digests = [writer.put("application/octet-stream", f"{i}".encode()).digest for i in range(100)]
    # Another storage reads: its cache starts cold, as in a fresh registry process.
    factory = DescriptorCacheFactory(maxsize=10_000, ttl=60) if cached else None
    storage = S3BlobStorage(config, factory)
    repo = storage.repository("bench/app")
    counted = Counted(storage.client)
    rng = random.Random(0)
    start = time.perf_counter()
    for _ in range(1000):
        repo.stat(rng.choice(digests))
    return counted, time.perf_counter() - start


def mount() -> tuple[Counted, Counted]:
    storage = S3BlobStorage(Config(bucket=BUCKET, cache_size=0))
    source = storage.repository("bench/source")
    descriptor = source.put("application/octet-stream", b"a layer")
    counted = Counted(storage.client)
    with contextlib.suppress(BlobMounted):
        storage.repository("bench/target").create(mount_from=f"bench/source@{descriptor.digest}")
    with_stat = Counted(storage.client)
    with contextlib.suppress(BlobMounted):
        storage.repository("bench/other").create(
            mount_from=f"bench/source@{descriptor.digest}", stat=descriptor
        )
    counted.ops -= with_stat.ops
    return counted, with_stat


def main() -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        print(
            "| 1,000 stats of 100 blobs, one repository | S3 requests | seconds (in-process moto) |"
        )
        print("|---|---|---|")
        for name, cached in (
            ("no cache", False),
            ("DescriptorCacheFactory(maxsize=10000, ttl=60), starting cold", True),
        ):
            counted, seconds = stats(cached)
            print(f"| {name} | {counted.total} ({counted.summary()}) | {seconds:.2f} |")
        checked, trusted = mount()
        print("\n| mount | S3 requests |")
        print("|---|---|")
        print(f"| `create(mount_from=...)` | {checked.total} ({checked.summary()}) |")
        print(
            f"| `create(mount_from=..., stat=descriptor)` | {trusted.total} ({trusted.summary()}) |"
        )


if __name__ == "__main__":
    main()
