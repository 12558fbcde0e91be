"""A randomized fault run: pushes through a registry whose S3 requests fail at random,
then every promise checked with faults off. The test asserts on its figures; the
benchmark prints them over several seeds.
"""

from __future__ import annotations

import random
import time
from typing import Any

from faultcheck import check_bucket, direct_client
from faultclient import MODES, Push, RetryingClient, audit
from faultproxy import FaultProxy
from faultrig import ATTEMPTS, PART, secrets, serve_registry
from s3blobs import S3BlobStorage
from s3blobs.errors import BlobError

KiB = 1024
# The sizes the issue names: empty, 1 byte, under a part, just past one part, whole
# parts, parts and a tail.
SIZES = [0, 1, 100 * KiB, PART + 1, 2 * PART, 2 * PART + 300 * KiB]


def randomized_run(
    moto: str, bucket: str, seed: int, uploads: int, rate: float = 0.025
) -> dict[str, Any]:
    """``uploads`` pushes through a registry whose S3 requests fail at random, then
    everything checked with faults off. Returns the figures (the benchmark prints them)."""
    rng = random.Random(seed)
    # A fault lasts 1 to ATTEMPTS + 2 consecutive attempts of one request, so that about
    # a third of them outlast botocore's retries and reach the registry; rate 0.025
    # with such bursts faults about 10% of all S3 requests.
    burst = (1, ATTEMPTS + 2)
    with (
        FaultProxy(moto, seed=seed, rate=rate, burst=burst) as proxy,
        serve_registry(proxy, bucket) as registry,
    ):
        client = RetryingClient(registry.url, name=f"rand/s{seed}")
        pushes: list[Push] = []
        started = time.monotonic()
        for i in range(uploads):
            mode = MODES[i % len(MODES)]
            if i % 10 == 9 and pushes:  # a re-push of content stored before
                data = rng.choice(pushes).data
            else:
                data = rng.randbytes(SIZES[(i // len(MODES) + i) % len(SIZES)])
            pushes.append(client.push(data, mode))
        elapsed = time.monotonic() - started
        proxy.enabled = False
        requests = len(proxy.records)
        faults = proxy.faults_by_kind()
        lost = []
        for push in pushes:
            if not push.acknowledged:
                continue
            problem = read_back(client, registry.storage, push.digest, push.data)
            if problem:
                lost.append(f"{len(push.data)} B by {push.mode}: {problem}")
        report = check_bucket(direct_client(moto), bucket)
        problems = audit(client.exchanges, secrets(proxy, moto, bucket))
    return {
        "pushes": pushes,
        "lost": lost,
        "bucket": report,
        "problems": problems,
        "regressions": client.regressions,
        "requests": requests,
        "faults": faults,
        "statuses": _statuses(client),
        "seconds": elapsed,
        "exchanges": client.exchanges,
    }


def read_back(
    client: RetryingClient, storage: S3BlobStorage | None, digest: str, data: bytes
) -> str:
    """'' when the blob reads back as ``data`` through the registry (307, then the
    presigned URL) and straight from S3 (``storage.blobs``); else what went wrong."""
    try:
        if client.get_blob(digest) != data:
            return f"{digest}: the registry serves other bytes"
        if storage is not None and storage.blobs.get(digest) != data:
            return f"{digest}: S3 holds other bytes"
    except (AssertionError, BlobError) as exc:
        return f"{digest}: {type(exc).__name__}: {str(exc)[:300]}"
    return ""


def _statuses(client: RetryingClient) -> dict[int, int]:
    counts: dict[int, int] = {}
    for exchange in client.exchanges:
        if exchange.status is not None:
            counts[exchange.status] = counts.get(exchange.status, 0) + 1
    return counts


def summary(problems: dict[str, list[str]]) -> str:
    """One line per kind of problem, with its count and the first few instances."""
    return "\n".join(
        f"{kind} ({len(items)}): " + " | ".join(item[:300] for item in items[:3])
        for kind, items in problems.items()
        if items
    )
