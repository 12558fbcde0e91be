"""Registry benchmark: push an image of three gzip layers (1, 20, 120 MiB) with skopeo
through the s3blobs registry into empty storage, then pull it twice; count S3
requests by operation and the bytes written to S3.

    python -m bench.bench_registry

The registry runs in this process (werkzeug, threaded) so its S3 client can be
counted; S3 is a moto server in its own process; skopeo is the client.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from werkzeug.serving import make_server

from bench.support import Counted, MiB, moto_server, new_bucket
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import RegistryApp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oci import image_layout

LAYERS = [1 * MiB, 20 * MiB, 120 * MiB]


def skopeo(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def table(title: str, counted: Counter[str], seconds: float, extra: str = "") -> None:
    print(f"\n{title}: {sum(counted.values())} S3 requests in {seconds:.1f} s{extra}")
    for op, n in sorted(counted.items()):
        print(f"  {op:28} {n}")


def main() -> None:
    if shutil.which("skopeo") is None:
        sys.exit("skopeo is needed: apt-get install skopeo")
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        layout = Path(tmp) / "image"
        blobs = image_layout(layout, LAYERS)
        image_bytes = sum(len(b) for b in blobs.values())
        config = Config(
            bucket=new_bucket(endpoint),
            endpoint_url=endpoint,
            region="us-east-1",
            addressing_style="path",
        )
        storage = S3BlobStorage(config, DescriptorCacheFactory(config.cache_size, config.cache_ttl))
        counted = Counted(storage.client)
        server = make_server("127.0.0.1", 0, RegistryApp(storage), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        registry = f"127.0.0.1:{server.port}"
        print(
            f"image: {len(LAYERS)} gzip layers of {[s // MiB for s in LAYERS]} MiB, "
            f"{len(blobs)} blobs with config and manifest, {image_bytes / MiB:.1f} MiB; "
            f"part size {config.part_size // MiB} MiB"
        )

        seconds = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:latest",
            f"docker://{registry}/bench/image:v1",
        )
        ratio = counted.sent / image_bytes
        table(
            "push",
            counted.ops,
            seconds,
            f"; {counted.sent / MiB:.1f} MiB written to S3 = {ratio:.3f}x the image",
        )

        for label in ("first pull (same registry process)", "second pull"):
            counted.reset()
            seconds = skopeo(
                "copy",
                "--src-tls-verify=false",
                f"docker://{registry}/bench/image:v1",
                f"oci:{Path(tmp) / label.split()[0]}:v1",
            )
            table(label, counted.ops, seconds, f"; {len(blobs) - 1} blob GETs answered by 307")
        server.shutdown()


if __name__ == "__main__":
    main()
