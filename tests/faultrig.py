"""The fault suite's rig: a moto server in its own process, a fault proxy in front of
it, and the registry app served on a real loopback socket with its storage pointed
at the proxy. The tests' fixtures are in faultfixtures.py; the benchmark uses the
same pieces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wsgi import ClosingIterator

from faultcheck import direct_client
from faultproxy import FaultProxy
from netutil import free_port, wait_for_port
from s3blobs import Config, S3BlobStorage
from s3blobs.config import MiB
from s3blobs.registry import RegistryApp
from s3blobs.s3 import make_client

# moto checks no credentials; boto3 wants some to sign with (set for the benchmark).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "faults")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "faults")

PART = 5 * MiB  # S3's minimum part size, which moto enforces
REGION = "us-east-1"


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """A moto server in a process of its own (the registry and the proxy keep this
    process's GIL busy enough), on a loopback port; yields its URL."""
    port = free_port()
    serve = "from moto.server import main; main()"
    command = [sys.executable, "-c", serve, "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "moto server")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def new_bucket(endpoint: str) -> str:
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    direct_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def storage_config(endpoint: str, bucket: str, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": REGION,
        "addressing_style": "path",
        "part_size": PART,
        "max_concurrency": 2,
        "cache_size": 0,
        **overrides,
    }
    return Config(**values)


def botocore_attempts(config: Config) -> int:
    """How many attempts botocore makes per request with s3blobs' client configuration
    (``max_attempts`` counts retries, so one more than it says)."""
    retries = make_client(config).meta.config.retries or {}
    if "total_max_attempts" in retries:
        return int(retries["total_max_attempts"])
    return int(retries.get("max_attempts", 4)) + 1


#: Attempts per S3 request of the registry's client: a fault repeated this many times
#: reaches the registry; fewer, botocore absorbs it.
ATTEMPTS = botocore_attempts(storage_config("http://127.0.0.1:9", "attempts-probe"))


def storage_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The same configuration as ``S3BLOBS_*`` variables, for a ``s3blobs serve`` process."""
    return {
        "S3BLOBS_BUCKET": bucket,
        "S3BLOBS_ENDPOINT_URL": endpoint,
        "S3BLOBS_REGION": REGION,
        "S3BLOBS_ADDRESSING_STYLE": "path",
        "S3BLOBS_PART_SIZE": str(PART),
        "S3BLOBS_CACHE_SIZE": "0",
    }


class RegistryServer:
    """``RegistryApp`` under werkzeug's threaded server on 127.0.0.1, in a thread.

    It counts the requests in progress, so that a test can wait until the registry
    is done with a request whose client went away (:meth:`wait_idle`)."""

    def __init__(self, storage: S3BlobStorage) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.storage = storage
        self._app = RegistryApp(storage)
        self._active = 0
        self._idle = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._counting, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _counting(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with self._idle:
            self._active += 1
        try:
            return ClosingIterator(self._app(environ, start_response), [self._done])
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, seconds: float = 30.0) -> bool:
        """Wait until no request is in progress; False if one still is after ``seconds``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout=seconds)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def serve_registry(proxy: FaultProxy, bucket: str, **overrides: Any) -> Iterator[RegistryServer]:
    with proxy.quiet():  # the storage's bucket check is not under test
        storage = S3BlobStorage(storage_config(proxy.url, bucket, **overrides))
    server = RegistryServer(storage)
    try:
        yield server
    finally:
        server.close()


def secrets(proxy: FaultProxy, moto: str, bucket: str) -> list[str]:
    """What no response body may name: the bucket, the endpoints, key prefixes of
    internals, and every S3 upload id the proxy saw."""
    return [
        bucket,
        proxy.url.split("//", 1)[1],
        moto.split("//", 1)[1],
        "data/",
        "_uploads/",
        *sorted(proxy.upload_ids()),
    ]
