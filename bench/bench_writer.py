"""Writer benchmark: throughput against boto3's transfer manager, hashing against hashlib,
S3 requests and bytes sent per blob byte, and peak memory.

    python -m bench.bench_writer            # 64 MiB and 1 GiB
    python -m bench.bench_writer --quick    # 64 MiB only
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from boto3.s3.transfer import TransferConfig

from bench.support import Counted, MiB, RepeatedReader, moto_server, new_bucket, raw_client
from s3blobs import Config, Descriptor, ResumableHash, S3BlobStorage

PART = 16 * MiB
CONCURRENCY = 4
ROUNDS = 3


def storage_for(endpoint: str, bucket: str) -> S3BlobStorage:
    config = Config(
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        part_size=PART,
        max_concurrency=CONCURRENCY,
        addressing_style="path",
        cache_size=0,
    )
    return S3BlobStorage(config)


def s3blobs_upload(endpoint: str, size: int) -> tuple[float, Counted]:
    storage = storage_for(endpoint, new_bucket(endpoint))
    counted = Counted(storage.client)
    source = RepeatedReader(size)
    start = time.perf_counter()
    writer = storage.repository("bench/app").create()
    writer.read_from(source)
    writer.commit(Descriptor("application/octet-stream", size, writer.computed_digest()))
    return time.perf_counter() - start, counted


def transfer_manager_upload(endpoint: str, size: int) -> float:
    bucket = new_bucket(endpoint)
    client = raw_client(endpoint, max_pool=4 * CONCURRENCY)
    config = TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )
    start = time.perf_counter()
    client.upload_fileobj(RepeatedReader(size), bucket, "baseline", Config=config)
    return time.perf_counter() - start


def chunked_upload(endpoint: str, size: int, chunk: int) -> Counted:
    """A registry's PATCH pattern: each chunk resumes the writer, writes, closes."""
    storage = storage_for(endpoint, new_bucket(endpoint))
    repo = storage.repository("bench/app")
    data = os.urandom(size)
    counted = Counted(storage.client)
    writer = repo.create()
    writer.close()
    for pos in range(0, size, chunk):
        writer = repo.resume(writer.id)
        writer.write(data[pos : pos + chunk])
        writer.close()
    writer = repo.resume(writer.id)
    writer.commit(
        Descriptor("application/octet-stream", size, "sha256:" + hashlib.sha256(data).hexdigest())
    )
    return counted


def post_patch_put(endpoint: str, size: int) -> list[tuple[str, Counter[str]]]:
    """Requests of each step of one POST / PATCH (all bytes) / PUT upload."""
    storage = storage_for(endpoint, new_bucket(endpoint))
    repo = storage.repository("bench/app")
    data = os.urandom(size)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    counted = Counted(storage.client)
    steps: list[tuple[str, Counter[str]]] = []

    def step(name: str) -> None:
        steps.append((name, counted.ops.copy()))
        counted.reset()

    writer = repo.create()
    writer.close()
    step("POST (create, close)")
    writer = repo.resume(writer.id)
    writer.write(data)
    writer.close()
    step("PATCH (resume, write all, close)")
    writer = repo.resume(writer.id)
    writer.commit(Descriptor("application/octet-stream", size, digest))
    step("PUT (resume, commit)")
    return steps


def hashing(total: int) -> dict[str, float]:
    chunk = os.urandom(MiB)
    results = {}
    for name, make in (
        ("hashlib sha256", lambda: hashlib.sha256()),
        ("s3blobs ResumableHash sha256", lambda: ResumableHash("sha256")),
        ("hashlib sha512", lambda: hashlib.sha512()),
        ("s3blobs ResumableHash sha512", lambda: ResumableHash("sha512")),
    ):
        h: Any = make()
        start = time.perf_counter()
        for _ in range(total // MiB):
            h.update(chunk)
        results[name] = total / (time.perf_counter() - start) / 1e6
    h = ResumableHash("sha256")
    start = time.perf_counter()
    for _ in range(total // MiB):
        h.update(chunk)
        h = ResumableHash.from_state("sha256", h.state())
    results["s3blobs sha256, state saved+restored every MiB"] = (
        total / (time.perf_counter() - start) / 1e6
    )
    return results


# Run in a fresh process; VmHWM (unlike ru_maxrss) does not inherit the parent's peak.
PEAK_RSS = """
import json, sys
from bench.bench_writer import storage_for
from bench.support import RepeatedReader, new_bucket
from s3blobs import Descriptor
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
endpoint, size = sys.argv[1], int(sys.argv[2])
storage = storage_for(endpoint, new_bucket(endpoint))
writer = storage.repository("bench/app").create()
before = hwm()
writer.read_from(RepeatedReader(size))
writer.commit(Descriptor("application/octet-stream", size, writer.computed_digest()))
print(json.dumps({"before_kib": before, "after_kib": hwm()}))
"""


def peak_rss(endpoint: str, size: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, endpoint, str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 MiB only")
    args = parser.parse_args()
    sizes = [64 * MiB] if args.quick else [64 * MiB, 1024 * MiB]
    out = io.StringIO()

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.write(line + "\n")

    say(
        f"part size {PART // MiB} MiB, concurrency {CONCURRENCY}, moto server on 127.0.0.1 "
        "(own process)"
    )
    with moto_server() as endpoint:
        say(f"\n| blob (median of {ROUNDS}) | s3blobs writer | boto3 upload_fileobj | ratio |")
        say("|---|---|---|---|")
        for size in sizes:
            # Alternate the two, three rounds each; report medians.
            ours, theirs = [], []
            for _ in range(ROUNDS):
                ours.append(s3blobs_upload(endpoint, size)[0])
                theirs.append(transfer_manager_upload(endpoint, size))
            mine, base = statistics.median(ours), statistics.median(theirs)
            say(
                f"| {size // MiB} MiB | {size / mine / 1e6:.0f} MB/s "
                f"| {size / base / 1e6:.0f} MB/s | {base / mine:.2f}x |"
            )

        say("\n| upload pattern (64 MiB blob) | S3 requests | bytes sent / blob byte |")
        say("|---|---|---|")
        size = 64 * MiB
        _, whole = s3blobs_upload(endpoint, size)
        say(
            f"| (a) one whole-blob write, commit | {whole.total} ({whole.summary()}) "
            f"| {whole.sent / size:.3f} |"
        )
        chunked = chunked_upload(endpoint, size, MiB)
        say(
            f"| (b) 1 MiB chunks, close/resume after each | {chunked.total} ({chunked.summary()}) "
            f"| {chunked.sent / size:.3f} |"
        )

        say("\n| step of POST / PATCH / PUT (20 MiB blob) | S3 requests |")
        say("|---|---|")
        for name, ops in post_patch_put(endpoint, 20 * MiB):
            detail = ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
            say(f"| {name} | {sum(ops.values())} ({detail}) |")

        size = sizes[-1]
        rss = peak_rss(endpoint, size)
        grown = (rss["after_kib"] - rss["before_kib"]) / 1024
        say(
            f"\npeak RSS for a {size // MiB} MiB blob: {rss['after_kib'] / 1024:.0f} MiB "
            f"({rss['before_kib'] / 1024:.0f} MiB before the upload, +{grown:.0f} MiB during it); "
            f"bound part size x (concurrency + 1) = {PART * (CONCURRENCY + 1) // MiB} MiB"
        )

    say("\n| hashing, 512 MiB in 1 MiB chunks | MB/s |")
    say("|---|---|")
    for name, rate in hashing(512 * MiB).items():
        say(f"| {name} | {rate:.0f} |")


if __name__ == "__main__":
    main()
