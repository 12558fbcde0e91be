"""What the gc tests share: a registry client that pushes images through the app, and
a way to let time make what exists old."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from werkzeug.test import Client

from s3blobs import Config, S3BlobStorage
from s3blobs.registry import RegistryApp

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

#: A grace of a fifth of a second; the registry refreshes links older than half that.
GRACE = 0.2


def gc_config(bucket: str, **overrides: Any) -> Config:
    values: dict[str, Any] = dict(
        bucket=bucket,
        part_size=5 * 1024 * 1024,
        max_concurrency=2,
        cache_size=0,
        cache_ttl=0.1,
        gc_grace=GRACE,
    )
    values.update(overrides)
    return Config(**values)


def age() -> None:
    """Wait until what was written so far is older than GRACE + GRACE/2 as gc reads
    LastModified: whole seconds, plus a second of slack (s3blobs.gc.context.SLACK)."""
    time.sleep(1.0 + 1.5 * GRACE + 0.2)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "size": len(data), "digest": digest_of(data), **extra}


class Registry:
    """Pushes through ``RegistryApp`` as a client would (werkzeug's test client)."""

    def __init__(self, storage: S3BlobStorage) -> None:
        self.storage = storage
        self.client = Client(RegistryApp(storage))

    def blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        answer = self.client.post(
            f"/v2/{repository}/blobs/uploads/", query_string={"digest": digest}, data=data
        )
        assert answer.status_code == 201, answer.get_data(as_text=True)
        return digest

    def manifest(
        self, repository: str, reference: str, body: dict[str, Any], media_type: str = MANIFEST
    ) -> tuple[int, str]:
        raw = json.dumps(body).encode()
        answer = self.client.put(
            f"/v2/{repository}/manifests/{reference}",
            data=raw,
            headers={"Content-Type": media_type},
        )
        return answer.status_code, digest_of(raw)

    def image(
        self,
        repository: str,
        reference: str | None,
        layers: list[bytes],
        subject: dict[str, Any] | None = None,
    ) -> tuple[str, list[str], dict[str, Any]]:
        """Push an image (its config is unique to it); returns the manifest's digest, the
        blob digests and the manifest's descriptor."""
        config = json.dumps({"layers": [digest_of(layer) for layer in layers]}).encode()
        blobs = [self.blob(repository, config)] + [self.blob(repository, x) for x in layers]
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(CONFIG, config),
            "layers": [descriptor(LAYER, layer) for layer in layers],
        }
        if subject is not None:
            body["subject"] = subject
        raw = json.dumps(body).encode()
        status, digest = self.manifest(repository, reference or digest_of(raw), body)
        assert status == 201
        return digest, blobs, {"mediaType": MANIFEST, "size": len(raw), "digest": digest}

    def exists(self, repository: str, digest: str) -> bool:
        return self.client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200

    def manifest_exists(self, repository: str, reference: str) -> bool:
        answer = self.client.get(
            f"/v2/{repository}/manifests/{reference}", headers={"Accept": f"{MANIFEST},{INDEX}"}
        )
        return answer.status_code == 200


def entry_keys(s3: Any, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="blobs/")
    return {item["Key"] for page in pages for item in page.get("Contents", ())}


def has_entry(s3: Any, bucket: str, digest: str) -> bool:
    hex_ = digest.split(":")[1]
    return f"blobs/sha256/{hex_[:2]}/{hex_}" in entry_keys(s3, bucket)
