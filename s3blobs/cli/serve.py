"""``s3blobs serve``: the registry.

Without ``S3BLOBS_BUCKET``, ``serve`` starts an embedded S3 (a moto server on
loopback, in this process, in memory) so that the registry runs on a machine with no
AWS account: a demo, not storage.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any

from ..errors import ConfigError
from .output import say

EMBEDDED_BUCKET = "s3blobs"


def add_parser(commands: Any) -> None:
    from ..registry.auth.settings import HELP

    serve = commands.add_parser(
        "serve",
        help="run the OCI registry (WSGI, threaded)",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port (5000; 0 picks a free one)")
    serve.add_argument("--tls-cert", help="serve HTTPS: certificate chain (PEM)")
    serve.add_argument("--tls-key", help="serve HTTPS: private key (PEM)")
    serve.set_defaults(
        run=lambda args: run_serve(args.host, args.port, args.tls_cert, args.tls_key)
    )


def run_serve(host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None) -> int:
    from werkzeug.serving import make_server

    from ..registry import make_app
    from ..registry.auth.settings import SecuritySettings, check_listen_address
    from ..storage import S3BlobStorage

    environ = dict(os.environ)
    security = SecuritySettings.from_env(environ, tls_cert=tls_cert, tls_key=tls_key)
    check_listen_address(host, security)  # before anything starts
    if not environ.get("S3BLOBS_BUCKET"):
        endpoint = start_embedded_s3()
        environ.update(
            S3BLOBS_BUCKET=EMBEDDED_BUCKET,
            S3BLOBS_ENDPOINT_URL=endpoint,
            S3BLOBS_REGION="us-east-1",
            S3BLOBS_ADDRESSING_STYLE="path",
        )
        say(f"no S3BLOBS_BUCKET: started an embedded S3 (moto) at {endpoint}")
        say(f"bucket {EMBEDDED_BUCKET!r} lives in this process's memory and ends with it")
    storage = S3BlobStorage.from_env(environ)
    app = make_app(storage, security)
    tls = security.ssl_context()
    server = make_server(host, port, app, threaded=True, ssl_context=tls)
    scheme = "https" if tls else "http"
    say(f"registry on {scheme}://{host}:{server.port} (bucket {storage.config.bucket!r})")
    say(f"authentication: {security.mode}")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def start_embedded_s3() -> str:
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ConfigError(
            "S3BLOBS_BUCKET is not set and the embedded S3 needs moto: "
            "pip install 's3blobs[embedded]', or set S3BLOBS_BUCKET"
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
