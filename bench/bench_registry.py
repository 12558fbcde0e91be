"""Registry benchmark: push an image of three gzip layers (1, 20 and 120 MiB) with skopeo
into empty storage, then pull it twice, through s3blobs and, in the same run, through
the Go registry (distribution 2.8, Debian's docker-registry) with its S3 driver.

    python -m bench.bench_registry

S3 is a moto server in its own process that counts the operations and the bytes
written (uploaded, and copied server-side) for both registries alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from werkzeug.serving import make_server

from bench.s3_counter import PRESIGNED_GET
from bench.support import MiB, free_port, moto_server, new_bucket, server_counts, wait_for_port
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import RegistryApp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oci import image_layout

LAYERS = [1 * MiB, 20 * MiB, 120 * MiB]

GO_CONFIG = """
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  s3:
    accesskey: bench
    secretkey: bench
    region: us-east-1
    regionendpoint: {endpoint}
    bucket: {bucket}
    secure: false
    v4auth: true
http:
  addr: 127.0.0.1:{port}
"""


@contextlib.contextmanager
def s3blobs_registry(endpoint: str) -> Iterator[str]:
    config = Config(
        bucket=new_bucket(endpoint),
        endpoint_url=endpoint,
        region="us-east-1",
        addressing_style="path",
    )
    storage = S3BlobStorage(config, DescriptorCacheFactory(config.cache_size, config.cache_ttl))
    server = make_server("127.0.0.1", 0, RegistryApp(storage), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def go_registry(endpoint: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    config = workdir / "go-registry.yml"
    config.write_text(GO_CONFIG.format(endpoint=endpoint, bucket=new_bucket(endpoint), port=port))
    # The Go SDK cannot use a custom CA bundle with the driver's transport; none is
    # needed for an http:// endpoint.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "docker-registry")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def skopeo(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def measure(
    endpoint: str, registry: str, layout: Path, workdir: Path, name: str
) -> list[tuple[str, Counter[str], Counter[str], float]]:
    steps = []
    server_counts(endpoint, reset=True)
    seconds = skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{layout}:latest",
        f"docker://{registry}/bench/image:v1",
    )
    counts = server_counts(endpoint, reset=True)
    steps.append(("push", counts["ops"], counts["written"], seconds))
    for label in ("first pull", "second pull"):
        seconds = skopeo(
            "copy",
            "--src-tls-verify=false",
            f"docker://{registry}/bench/image:v1",
            f"oci:{workdir / (name + label.split()[0])}:v1",
        )
        counts = server_counts(endpoint, reset=True)
        steps.append((label, counts["ops"], counts["written"], seconds))
    return steps


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {tool}")
    with tempfile.TemporaryDirectory() as tmp, moto_server(counting=True) as endpoint:
        workdir = Path(tmp)
        layout = workdir / "image"
        blobs = image_layout(layout, LAYERS)
        image_bytes = sum(len(b) for b in blobs.values())
        print(
            f"image: gzip layers of {[s // MiB for s in LAYERS]} MiB + config + manifest = "
            f"{len(blobs)} blobs, {image_bytes / MiB:.1f} MiB; s3blobs part size 16 MiB (default), "
            "distribution 2.8 chunk size 10 MiB (default)\n"
        )
        results = {}
        with s3blobs_registry(endpoint) as registry:
            results["s3blobs"] = measure(endpoint, registry, layout, workdir, "s3blobs")
        with go_registry(endpoint, workdir) as registry:
            results["distribution 2.8"] = measure(endpoint, registry, layout, workdir, "go")

        print(
            "| registry | step | S3 requests by the registry | + presigned GETs by the client "
            "| written to S3: uploaded + copied | x image | s |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, steps in results.items():
            for step, ops, written, seconds in steps:
                total = written["uploaded"] + written["copied"]
                uploaded, copied = written["uploaded"] / MiB, written["copied"] / MiB
                presigned = ops[PRESIGNED_GET]
                ratio = total / image_bytes
                print(
                    f"| {name} | {step} | {sum(ops.values()) - presigned} | {presigned} "
                    f"| {uploaded:.1f} + {copied:.1f} MiB | {ratio:.2f}x | {seconds:.1f} |"
                )
        for name, steps in results.items():
            for step, ops, _, _ in steps:
                detail = ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
                print(f"\n{name}, {step}: {detail}")


if __name__ == "__main__":
    main()
