"""What the benchmarks share: a moto S3 server in its own process, and S3 call counting."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config

# The benchmarks share helpers with the tests (image layouts, ports).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from netutil import free_port as free_port  # re-exported for the benchmarks
from netutil import wait_for_port as wait_for_port

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

MiB = 1024 * 1024


@contextlib.contextmanager
def moto_server(counting: bool = False) -> Iterator[str]:
    """A moto server in a separate process (so it does not share our GIL), on loopback;
    with ``counting``, one that counts S3 operations and bytes (bench.s3_counter)."""
    port = free_port()
    if counting:
        command = [sys.executable, "-m", "bench.s3_counter", str(port)]
    else:
        serve = "from moto.server import main; main()"
        command = [sys.executable, "-c", serve, "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, proc, "moto server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def server_counts(endpoint: str, reset: bool = False) -> dict[str, Counter[str]]:
    """What a counting server (``moto_server(counting=True)``) saw; ``reset`` zeroes it."""
    request = urllib.request.Request(f"{endpoint}/__counts", method="POST" if reset else "GET")
    with urllib.request.urlopen(request) as response:
        data = json.load(response)
    return {name: Counter(values) for name, values in data.items()}


def new_bucket(endpoint: str) -> str:
    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    raw_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def raw_client(endpoint: str, max_pool: int = 10) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=botocore.config.Config(
            s3={"addressing_style": "path"}, max_pool_connections=max_pool
        ),
    )


class Counted:
    """S3 API calls by operation, and request body bytes, on one client."""

    def __init__(self, client: Any) -> None:
        self.ops: Counter[str] = Counter()
        self.sent = 0
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, params: Any, **_: Any) -> None:
        self.ops[model.name] += 1
        body = params.get("body")
        if isinstance(body, (bytes, bytearray)):
            self.sent += len(body)
        elif hasattr(body, "seek"):
            here = body.tell()
            self.sent += body.seek(0, 2) - here
            body.seek(here)

    def reset(self) -> None:
        self.ops.clear()
        self.sent = 0

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def summary(self) -> str:
        return ", ".join(f"{op} {n}" for op, n in sorted(self.ops.items()))


class RepeatedReader:
    """``size`` bytes made of one random MiB repeated: a large source in 1 MiB of memory."""

    def __init__(self, size: int) -> None:
        self._chunk = os.urandom(MiB)
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        out = bytearray()
        while len(out) < n:
            out += self._chunk[: n - len(out)]
        self._left -= n
        return bytes(out)
