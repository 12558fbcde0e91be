"""A bucket checker: walks every object with a plain boto3 client (straight to S3,
not through any proxy) and reports what would break a promise to a client.

- every entry ``blobs/<alg>/<hh>/<hex>`` that names a data object (metadata
  ``s3blobs-data``) names an existing object of the recorded size
  (``s3blobs-size``) whose bytes hash to the digest;
- every other entry's own bytes hash to its digest;
- every repository link ``repositories/<name>/_layers/<alg>/<hex>`` names an entry.

Data objects that no entry names (a crashed commit's, a lost race's) are listed
apart: they are garbage for ``s3blobs gc``, not a broken promise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.config

from s3blobs.paths import Paths
from s3blobs.store import DATA_META, SIZE_META

READ_CHUNK = 1024 * 1024


@dataclass
class BucketReport:
    """What the walk found; ``problems`` empty means every promise holds."""

    problems: list[str] = field(default_factory=list)
    entries: dict[str, str] = field(default_factory=dict)  # digest -> key of its bytes
    links: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    data_objects: set[str] = field(default_factory=set)
    upload_objects: list[str] = field(default_factory=list)  # _uploads/ keys
    open_uploads: list[str] = field(default_factory=list)  # multipart upload keys

    @property
    def orphan_data(self) -> set[str]:
        return self.data_objects - set(self.entries.values())

    def __str__(self) -> str:
        return "\n".join(self.problems) or "bucket is consistent"


def direct_client(endpoint: str) -> Any:
    """A client straight to S3 with botocore's default retries."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


def check_bucket(
    client: Any, bucket: str, prefix: str = "", digests: Collection[str] | None = None
) -> BucketReport:
    """Walk the bucket. With ``digests``, only the entries and links of those digests
    are checked (a test on a shared bucket checks the blobs it pushed)."""
    paths = Paths(prefix)
    report = BucketReport()
    links_re = re.compile(
        rf"{re.escape(paths.root)}repositories/(?P<name>.+)/_layers/(?P<alg>\w+)/(?P<hex>[0-9a-f]+)"
    )
    listed: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=paths.root):
        listed += page.get("Contents", ())
    existing = {item["Key"] for item in listed}
    for item in listed:
        key = item["Key"]
        digest = paths.digest_of_blob_key(key)
        if digest is not None:
            if digests is None or digest in digests:
                _check_entry(client, bucket, paths, key, digest, report)
        elif key.startswith(paths.data_root):
            report.data_objects.add(key)
        elif key.startswith(paths.uploads_root):
            report.upload_objects.append(key)
        elif match := links_re.fullmatch(key):
            digest = f"{match['alg']}:{match['hex']}"
            report.links.append((match["name"], digest))
            entry = f"{paths.blobs_root}{match['alg']}/{match['hex'][:2]}/{match['hex']}"
            if entry not in existing and (digests is None or digest in digests):
                report.problems.append(f"link {key} names {digest}, which has no entry")
    pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
    report.open_uploads = [u["Key"] for page in pages for u in page.get("Uploads", ())]
    return report


def _check_entry(
    client: Any, bucket: str, paths: Paths, key: str, digest: str, report: BucketReport
) -> None:
    algorithm, hex_ = digest.split(":", 1)
    head = client.head_object(Bucket=bucket, Key=key)
    metadata = head.get("Metadata", {})
    if DATA_META not in metadata:
        report.entries[digest] = key
        actual = _hash_object(client, bucket, key, algorithm)
        if actual != hex_:
            report.problems.append(f"entry {digest} holds bytes hashing to {algorithm}:{actual}")
        return
    try:
        data_key = paths.data(metadata[DATA_META])
    except ValueError:
        report.problems.append(f"entry {digest} names a malformed data object")
        return
    report.entries[digest] = data_key
    try:
        data_head = client.head_object(Bucket=bucket, Key=data_key)
    except client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        report.problems.append(f"entry {digest} names {data_key}: {code or exc}")
        return
    recorded = metadata.get(SIZE_META)
    if recorded is None or int(recorded) != int(data_head["ContentLength"]):
        report.problems.append(
            f"entry {digest} records size {recorded}, its data holds {data_head['ContentLength']}"
        )
    actual = _hash_object(client, bucket, data_key, algorithm)
    if actual != hex_:
        report.problems.append(f"entry {digest}: its data hashes to {algorithm}:{actual}")


def _hash_object(client: Any, bucket: str, key: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    for chunk in iter(lambda: body.read(READ_CHUNK), b""):
        hasher.update(chunk)
    return hasher.hexdigest()
