"""Build OCI image layouts on disk for real clients (skopeo) to push."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def gzip_layer(size: int, seed: int) -> bytes:
    """A gzip'd tar of one file of ``size`` random (incompressible) bytes."""
    data = os.urandom(size) if seed < 0 else _random(size, seed)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"file{seed}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def _random(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"size": len(data), "digest": f"sha256:{digest}"}


def image_layout(
    layout: Path, layer_sizes: list[int], tag: str = "latest", first_seed: int = 1
) -> dict[str, bytes]:
    """Write an OCI layout holding one image whose config lists its layers' real
    diff_ids (podman checks them); returns every blob by digest. ``first_seed`` picks
    the layers' content, so that tests can push layers no other test pushed."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    blobs: dict[str, bytes] = {}
    layers, diff_ids = [], []
    for seed, size in enumerate(layer_sizes, first_seed):
        data = gzip_layer(size, seed)
        layers.append({"mediaType": LAYER, **write_blob(layout, data)})
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest())
        blobs[str(layers[-1]["digest"])] = data
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_descriptor = {"mediaType": CONFIG, **write_blob(layout, config)}
    blobs[str(config_descriptor["digest"])] = config
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_descriptor, "layers": layers}
    ).encode()
    manifest_descriptor = {"mediaType": MANIFEST, **write_blob(layout, manifest)}
    blobs[str(manifest_descriptor["digest"])] = manifest
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {"schemaVersion": 2, "manifests": [manifest_descriptor]}
    (layout / "index.json").write_text(json.dumps(index))
    return blobs
