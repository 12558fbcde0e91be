"""The registries the benchmarks compare, started on loopback against one S3 endpoint:
s3blobs (in this process on werkzeug, or as ``python -m s3blobs serve``, i.e. gunicorn)
and the Go registry 2.8.2 (Debian's ``docker-registry``) with its S3 driver. Also the
peak RSS of a registry's processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.serving import make_server

from bench.attribution import S3CallsByRequest
from bench.support import free_port, new_bucket, server_counts, wait_for_port
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import RegistryApp

ROOT = Path(__file__).resolve().parent.parent

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
  redirect:
    disable: {no_redirect}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Registry:
    address: str  # host:port
    pids: list[int] = field(default_factory=list)  # its processes; empty when in this one
    bucket: str = ""
    s3_calls: S3CallsByRequest | None = None  # in this process: S3 calls by HTTP request


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install {tool}")


@contextlib.contextmanager
def s3blobs_in_process(endpoint: str, equal_parts: bool) -> Iterator[Registry]:
    """``RegistryApp`` on werkzeug's threaded server in this process (defaults: 16 MiB
    parts, descriptor cache on), counting its S3 calls by HTTP request (bench.attribution; the calls
    of the writer's part-upload threads only inside ``attributing()``)."""
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)  # skopeo's TLS probes
    config = Config(
        bucket=new_bucket(endpoint),
        endpoint_url=endpoint,
        region="us-east-1",
        addressing_style="path",
        equal_parts=equal_parts,
    )
    storage = S3BlobStorage(config, DescriptorCacheFactory(config.cache_size, config.cache_ttl))
    app = S3CallsByRequest(RegistryApp(storage), storage.client)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Registry(f"127.0.0.1:{server.port}", bucket=config.bucket, s3_calls=app)
    finally:
        server.shutdown()


def s3blobs_environ(endpoint: str, bucket: str) -> dict[str, str]:
    """The environment of an s3blobs process of this checkout on ``bucket`` at ``endpoint``."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "S3BLOBS_BUCKET": bucket,
        "S3BLOBS_ENDPOINT_URL": endpoint,
        "S3BLOBS_REGION": "us-east-1",
        "S3BLOBS_ADDRESSING_STYLE": "path",
    }


@contextlib.contextmanager
def s3blobs_process(
    endpoint: str, workdir: Path, *, workers: int, env: dict[str, str], bucket: str = ""
) -> Iterator[Registry]:
    """``python -m s3blobs serve`` (gunicorn, gthread workers) of this checkout, on the
    counting S3 server ``endpoint``; on ``bucket``, or on a new one."""
    port = free_port()
    bucket = bucket or new_bucket(endpoint)
    server_counts(endpoint, reset=True)
    environ = {**s3blobs_environ(endpoint, bucket), **env}
    command = [sys.executable, "-m", "s3blobs", "serve", "--port", str(port)]
    log = (workdir / f"s3blobs-{port}.log").open("wb")
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)], env=environ, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, proc, "s3blobs serve", seconds=60)
        _wait_for_workers(endpoint, proc, workers)
        yield Registry(f"127.0.0.1:{port}", [proc.pid], bucket)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _wait_for_workers(endpoint: str, proc: subprocess.Popen[bytes], workers: int) -> None:
    """Return once every worker has built its storage. gunicorn listens before its
    workers have started; each process checks the bucket once as it starts (one
    HeadBucket), and a worker that had not yet would count its start-up in the first
    step measured."""
    deadline = time.monotonic() + 60
    while server_counts(endpoint)["ops"]["HeadBucket"] < workers + 1:
        if proc.poll() is not None:
            raise RuntimeError("s3blobs serve exited")
        if time.monotonic() > deadline:
            print("warning: s3blobs workers not seen checking the bucket", file=sys.stderr)
            return
        time.sleep(0.2)


@contextlib.contextmanager
def go_registry(
    endpoint: str, workdir: Path, *, redirect: bool = True, bucket: str = ""
) -> Iterator[Registry]:
    """distribution 2.8.2 with its S3 driver: in-memory blob descriptor cache, the
    default 10 MiB chunks, blob GETs redirected to S3 (as s3blobs does) unless told.
    Its upload purger is off: it starts at a random minute of the first hour and would
    add a walk of the bucket to whichever step it fell in. On ``bucket``, or a new one."""
    port = free_port()
    bucket = bucket or new_bucket(endpoint)
    config = workdir / f"go-registry-{port}.yml"
    config.write_text(
        GO_CONFIG.format(
            endpoint=endpoint, bucket=bucket, port=port, no_redirect=str(not redirect).lower()
        )
    )
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
        yield Registry(f"127.0.0.1:{port}", [proc.pid], bucket)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a gunicorn master and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def memory_of(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of a live process from /proc/PID/status, in bytes: VmHWM is its
    resident set's high-water mark, VmRSS its resident set now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for process {pid}")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port, nothing saved to disk; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, "redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
