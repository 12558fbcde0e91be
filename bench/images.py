"""OCI image layouts for the benchmarks: random content, new digests on every call.

New digests matter: skopeo's blob-info cache (shared by every skopeo on the machine)
remembers where it has seen each digest, and a layer it already knows on the same
registry would be mounted instead of pushed, so a "cold" push of a known layer is not
cold. The config carries a nonce for the same reason.

Layers are gzip streams of stored (level 0) deflate blocks wrapping a tar of one file of
random bytes: valid gzip, which skopeo sees as compressed and sends as it is, written at
disk speed (a 1 GiB layer takes seconds; compressing random bytes would only waste CPU).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import BinaryIO

MiB = 1024 * 1024
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TAR_BLOCK = 512


class _Hashing:
    """A file that hashes and counts what is written to it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def write_layer(layout: Path, size: int) -> dict[str, object]:
    """A gzip'd tar holding one file of ``size`` random bytes, written into ``layout``'s
    blobs; returns its descriptor."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    partial = blobs / f"partial-{uuid.uuid4().hex}"
    with partial.open("wb") as raw:
        hashing = _Hashing(raw)
        with gzip.GzipFile(fileobj=hashing, mode="wb", compresslevel=0, mtime=0) as tar:
            info = tarfile.TarInfo(f"random-{uuid.uuid4().hex[:8]}")
            info.size = size
            tar.write(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
            left = size
            while left:
                chunk = os.urandom(min(MiB, left))
                tar.write(chunk)
                left -= len(chunk)
            tar.write(b"\0" * (-size % TAR_BLOCK) + b"\0" * (2 * TAR_BLOCK))  # end of archive
    digest = hashing.sha256.hexdigest()
    partial.rename(blobs / digest)
    return {"mediaType": LAYER, "size": hashing.size, "digest": f"sha256:{digest}"}


def write_json_blob(layout: Path, document: object, media_type: str) -> dict[str, object]:
    data = json.dumps(document).encode()
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "size": len(data), "digest": f"sha256:{digest}"}


def random_image(layout: Path, layer_sizes: list[int], tag: str = "latest") -> int:
    """Write an OCI layout of one image with new random layers of the given sizes (of
    the files inside); returns the image's size: every blob, manifest included."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    layers = [write_layer(layout, size) for size in layer_sizes]
    config = write_json_blob(
        layout,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench.nonce": uuid.uuid4().hex}},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{'0' * 64}" for _ in layers]},
        },
        CONFIG,
    )
    manifest = write_json_blob(
        layout,
        {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers},
        MANIFEST,
    )
    index = {
        "schemaVersion": 2,
        "manifests": [{**manifest, "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return sum(int(str(blob["size"])) for blob in (*layers, config, manifest))


def config_digest(layout: Path) -> str:
    """The digest of the config of the image in ``layout`` (its only manifest)."""
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    return str(manifest["config"]["digest"])
