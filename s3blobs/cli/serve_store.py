"""Which S3 ``s3blobs serve`` stores into, and what it says about it first.

- ``S3BLOBS_BUCKET`` set: that bucket (credentials from boto3's chain).
- ``--data DIR``: the persistent local store (rclone over DIR, see
  :mod:`local_store`), kept across restarts; one worker, whose threads share the
  in-process serialization of conditional writes (:mod:`s3blobs.single_owner`).
- neither: an embedded S3 (a moto server on loopback, in this process's memory),
  gone when the process ends: a demo.

The embedded and local stores listen on 127.0.0.1 only. A registry bound to another
address has clients that could not follow a redirect there, so it streams blobs
itself (``S3BLOBS_REDIRECT=false``) and says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..errors import ConfigError

EMBEDDED_BUCKET = "s3blobs"


@dataclass
class ServeStore:
    """The store chosen: variables to set, lines to say, and how a worker opens it."""

    kind: str  # "bucket", "embedded" or "local"
    environ: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    client_factory: Callable[[Config], Any] | None = None
    stop: Callable[[], None] = lambda: None

    def client(self, environ: Mapping[str, str]) -> Any:
        """The S3 client a worker's storage uses (None: s3blobs' own), made after the
        fork, in each worker."""
        if self.client_factory is None:
            return None
        return self.client_factory(Config.from_env(environ))


def choose(args: argparse.Namespace, environ: Mapping[str, str]) -> ServeStore:
    """Start the embedded or local S3 where the arguments ask for one."""
    if args.data and environ.get("S3BLOBS_BUCKET"):
        raise ConfigError("--data and S3BLOBS_BUCKET both name a store: give one of them")
    if args.data:
        store = _local(args.data)
    elif not environ.get("S3BLOBS_BUCKET"):
        store = _embedded()
    else:
        return ServeStore("bucket")
    if not is_loopback(args.host):
        store.environ["S3BLOBS_REDIRECT"] = "false"
        store.lines.append(
            f"blobs are streamed by the registry (S3BLOBS_REDIRECT=false): the {store.kind} "
            "S3 listens on 127.0.0.1, where remote clients could not follow a redirect"
        )
    return store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _embedded() -> ServeStore:
    endpoint = start_embedded_s3()
    return ServeStore(
        "embedded",
        _store_environ(EMBEDDED_BUCKET, endpoint),
        [
            f"no S3BLOBS_BUCKET: started an embedded S3 (moto) at {endpoint}",
            f"bucket {EMBEDDED_BUCKET!r} lives in this process's memory and ends with it "
            "(--data DIR keeps it)",
        ],
    )


def _local(directory: str) -> ServeStore:
    from ..s3 import make_client
    from ..single_owner import MetadataStore, SingleOwnerClient
    from .local_store import BUCKET, LocalStore

    local = LocalStore(directory)
    endpoint = local.start()
    # This process talks to no other S3: sign with the key the store was started with.
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = local.credentials
    os.environ.pop("AWS_SESSION_TOKEN", None)

    def client(config: Config) -> SingleOwnerClient:
        return SingleOwnerClient(
            make_client(config), MetadataStore(local.metadata_path), local.files
        )

    return ServeStore(
        "local",
        _store_environ(BUCKET, endpoint),
        [
            f"persistent local store in {local.directory} (rclone serve s3 at {endpoint})",
            "one worker: this process owns the store and serializes its conditional writes",
        ],
        client,
        local.stop,
    )


def _store_environ(bucket: str, endpoint: str) -> dict[str, str]:
    return {
        "S3BLOBS_BUCKET": bucket,
        "S3BLOBS_ENDPOINT_URL": endpoint,
        "S3BLOBS_REGION": "us-east-1",
        "S3BLOBS_ADDRESSING_STYLE": "path",
    }


def start_embedded_s3() -> str:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ConfigError(
            "S3BLOBS_BUCKET is not set and the embedded S3 needs moto: "
            "pip install 's3blobs[embedded]', or set S3BLOBS_BUCKET (or use --data DIR)"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # The embedded store checks no credentials; boto3 still wants some to sign with.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "s3blobs-embedded")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "s3blobs-embedded")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket=EMBEDDED_BUCKET
    )
    return endpoint
