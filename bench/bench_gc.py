"""gc benchmark: a bucket of 20,000 blobs in 2,000 manifests across 200 repositories,
half of the blobs unreferenced, collected by ``s3blobs gc`` in a process of its own;
S3 requests counted by a moto server in another process.

    python -m bench.bench_gc [--workers 16]

The bucket is written directly with boto3 from threads, in the registry's key layout
(entries, data objects for one blob in ten, links, revisions, tags), not through the
registry: only gc is measured. Prints S3 requests by operation (counted at the server
and by gc's own report), wall time, peak RSS of the gc process, requests per 1,000
objects, and the time 1M objects would take on S3 worked out from those counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.support import moto_server, new_bucket, raw_client, server_counts
from s3blobs.paths import Paths
from s3blobs.store import DATA_META, SIZE_META

REPOSITORIES = 200
MANIFESTS_PER_REPOSITORY = 10
LAYERS_PER_MANIFEST = 4  # + a config: 5 blobs per manifest, 10,000 in all
UNREFERENCED_PER_REPOSITORY = 50  # 10,000 more, linked but named by no manifest
LARGE_EVERY = 10  # one blob in ten stored in parts: an empty entry naming a data object
ORPHANED_DATA = 100
LOST_UPLOADS = 20
MANIFEST = "application/vnd.oci.image.manifest.v1+json"

#: Request latencies assumed for S3 from within its region (seconds), and S3's
#: documented request rates per partitioned prefix (per second).
LATENCY = {"list": 0.15, "get": 0.03, "head": 0.02, "put": 0.04, "delete_batch": 0.5}
PREFIX_READS, PREFIX_WRITES = 5500, 3500


def blob(index: int) -> tuple[str, bytes]:
    data = f"blob {index} ".encode() + secrets.token_bytes(32)
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


class Populator:
    """Writes the bucket the way the registry lays it out, 32 requests at a time."""

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.client = raw_client(endpoint, max_pool=32)
        self.bucket = bucket
        self.paths = Paths()
        self.objects = Counter[str]()
        self.counter = 0

    def put(self, key: str, body: bytes = b"", **extra: Any) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def store_blob(self, repository: str) -> dict[str, Any]:
        """An entry (a data object too, for one in ten) and its link; its descriptor."""
        self.counter += 1
        digest, data = blob(self.counter)
        parsed = digest.split(":")[1]
        key = f"blobs/sha256/{parsed[:2]}/{parsed}"
        writes = []
        if self.counter % LARGE_EVERY == 0:
            data_key = self.paths.new_data_key()
            name = self.paths.data_name(data_key)
            writes.append((data_key, data, {}))
            meta = {DATA_META: name, SIZE_META: str(len(data))}
            writes.append((key, b"", {"Metadata": meta}))
            self.objects["data"] += 1
        else:
            writes.append((key, data, {}))
        link = f"repositories/{repository}/_layers/sha256/{parsed}"
        writes.append((link, b"", {}))
        self.objects["entries"] += 1
        self.objects["links"] += 1
        self._pending += writes
        return {"mediaType": "application/octet-stream", "size": len(data), "digest": digest}

    def build(self) -> list[tuple[str, bytes, dict[str, Any]]]:
        self._pending: list[tuple[str, bytes, dict[str, Any]]] = []
        for r in range(REPOSITORIES):
            repository = f"team{r % 20}/app{r}"
            for m in range(MANIFESTS_PER_REPOSITORY):
                config = self.store_blob(repository)
                layers = [self.store_blob(repository) for _ in range(LAYERS_PER_MANIFEST)]
                body = json.dumps(
                    {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers}
                ).encode()
                digest = hashlib.sha256(body).hexdigest()
                self._pending.append((f"blobs/sha256/{digest[:2]}/{digest}", body, {}))
                revision = f"repositories/{repository}/_manifests/revisions/sha256/{digest}"
                self._pending.append((revision, b"", {}))
                tag = f"repositories/{repository}/_manifests/tags/v{m}"
                self._pending.append((tag, f"sha256:{digest}".encode(), {}))
                self.objects.update(["manifests", "revisions", "tags"])
            for _ in range(UNREFERENCED_PER_REPOSITORY):
                self.store_blob(repository)
                self.objects["unreferenced"] += 1
        for _ in range(ORPHANED_DATA):
            self._pending.append((self.paths.new_data_key(), b"a commit died here", {}))
            self.objects["orphaned data"] += 1
        return self._pending

    def run(self) -> float:
        writes = self.build()
        started = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda w: self.put(w[0], w[1], **w[2]), writes))
        month_ago = int((time.time() - 30 * 86400) * 1000)
        for _ in range(LOST_UPLOADS):
            key = f"data/{month_ago:012x}-{secrets.token_hex(10)}"
            self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        self.objects["total"] = len(writes)
        return time.perf_counter() - started


#: ``s3blobs gc`` that tells its peak RSS (KiB) on its last line of standard error: VmHWM,
#: the high-water mark of this process image (getrusage's ru_maxrss would carry over
#: the RSS of the parent that forked it).
GC_WITH_RSS = (
    "import atexit, re, runpy, sys\n"
    "hwm = lambda: re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
    "atexit.register(lambda: print(hwm(), file=sys.stderr))\n"
    "sys.argv = ['s3blobs', *sys.argv[1:]]\n"
    "runpy.run_module('s3blobs', run_name='__main__')\n"
)


def run_gc(env: dict[str, str], workers: int) -> tuple[dict[str, Any], float, int]:
    """``s3blobs gc --json`` in a process of its own: its report, wall time, peak RSS."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", GC_WITH_RSS, "gc", "--json", "--workers", str(workers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gc failed: {done.stderr}")
    return json.loads(done.stdout), wall, int(done.stderr.split()[-1])


def per_thousand(counts: Counter[str], objects: int) -> str:
    return ", ".join(f"{op} {1000 * n / objects:.2f}" for op, n in sorted(counts.items()))


def estimate(counts: Counter[str], objects: int, deleted: int, workers: int) -> list[str]:
    """Seconds for 1M objects on S3. The requests scale with the objects; each kind
    costs its latency, ``workers`` at a time; and, as a floor, S3's rate per prefix
    if every request went to one prefix (S3 partitions busy prefixes further)."""
    scale = 1_000_000 / objects
    lines, total = [], 0.0
    kinds = {
        "list": counts["ListObjectsV2"] + counts["ListMultipartUploads"],
        "get": counts["GetObject"],
        "head": counts["HeadObject"],
        "put": counts["PutObject"],
        "delete_batch": counts["DeleteObjects"] + counts["DeleteObject"],
    }
    for kind, n in kinds.items():
        # The fence's shards (at most 256) and its index do not grow with the bucket.
        scaled = n if kind == "put" else n * scale
        seconds = scaled * LATENCY[kind] / workers
        lines.append(
            f"{kind}: {scaled:,.0f} requests x {LATENCY[kind]}s / {workers} = {seconds:.0f}s"
        )
        total += seconds
    reads = (kinds["get"] + kinds["head"]) * scale
    rate_floor = reads / PREFIX_READS + deleted * scale / PREFIX_WRITES
    lines.append(
        f"one-prefix rate floor: {reads:,.0f} reads / {PREFIX_READS}/s + "
        f"{deleted * scale:,.0f} deletions / {PREFIX_WRITES}/s = {rate_floor:.0f}s"
    )
    total = max(total, rate_floor)
    lines.append(f"total: {total:.0f}s ({total / 60:.1f} min) + the settle wait")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    with moto_server(counting=True) as endpoint:
        bucket = new_bucket(endpoint)
        populator = Populator(endpoint, bucket)
        seconds = populator.run()
        objects = populator.objects
        print(f"populated {objects['total']:,} objects in {seconds:.0f}s: {dict(objects)}")
        env = {
            **os.environ,
            "S3BLOBS_BUCKET": bucket,
            "S3BLOBS_ENDPOINT_URL": endpoint,
            "S3BLOBS_REGION": "us-east-1",
            "S3BLOBS_ADDRESSING_STYLE": "path",
            "S3BLOBS_CACHE_TTL": "1",
            "S3BLOBS_GC_GRACE": "1s",
        }
        time.sleep(3.0)  # older than the grace (and the link grace) as gc reads it
        for run in ("first run", "second run (nothing left to delete)"):
            server_counts(endpoint, reset=True)
            report, wall, rss = run_gc(env, args.workers)
            counted = Counter(server_counts(endpoint)["ops"])
            print(f"\n## {run}: {wall:.1f}s wall, peak RSS {rss / 1024:.0f} MiB")
            print("phases:", {k: round(v, 1) for k, v in report["phases"].items()})
            print("deleted:", report["deleted"])
            print("kept:", report["kept"], "spared:", report["spared"])
            total = sum(counted.values())
            print(f"S3 requests at the server: {total}:", dict(sorted(counted.items())))
            print("S3 requests by gc's report:", report["requests"])
            print("per 1,000 objects:", per_thousand(counted, objects["total"]))
            deleted = sum(
                report["deleted"][k]["count"] for k in ("blobs", "links", "orphaned_data")
            )
            deleted += report["deleted"]["blobs"]["count"] // LARGE_EVERY  # their data objects
            for line in estimate(counted, objects["total"], deleted, args.workers):
                print("  1M objects,", line)


if __name__ == "__main__":
    main()
