"""``s3blobs serve``: the registry, on gunicorn (threaded workers), or with ``--dev`` on
werkzeug's development server.

With ``S3BLOBS_BUCKET`` it serves that bucket; with ``--data DIR`` a persistent local
store in DIR; with neither an embedded S3 in memory, a demo (see :mod:`serve_store`).

gunicorn, because a registry's requests are long and many: its gthread workers run a
bounded number of threads, stream request bodies to the app, heartbeat while a
multi-GiB PATCH streams, and shut down gracefully. A client that stops sending in the
middle of a body is cut off after ``--read-timeout`` seconds (what arrived is kept),
so a few hundred stalled clients cannot hold every thread forever.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError
from ..variables import help_text
from . import serve_store
from .output import say

DESCRIPTION = """Run the OCI distribution registry on gunicorn.

Storage: the bucket S3BLOBS_BUCKET names; or, with --data DIR, a persistent local S3
in DIR (rclone, started and stopped by serve); or, with neither, an embedded S3 that
lives in this process's memory (a demo). The first lines say which, where the
registry listens, and whether blobs are redirected to S3 or streamed."""
LISTEN_NOTE = "A non-loopback --host needs authentication, or S3BLOBS_AUTH=none set explicitly."
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def add_parser(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the OCI registry",
        description=DESCRIPTION,
        epilog=help_text() + "\n\n" + LISTEN_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=5000, help="port, 0 to 65535 (5000; 0 picks a free one)"
    )
    serve.add_argument("--tls-cert", help="serve HTTPS: certificate chain (PEM)")
    serve.add_argument("--tls-key", help="serve HTTPS: private key (PEM)")
    serve.add_argument(
        "--workers", type=_positive, default=2, help="worker processes (2; gunicorn)"
    )
    serve.add_argument(
        "--threads", type=_positive, default=16, help="threads per worker, i.e. requests (16)"
    )
    serve.add_argument(
        "--read-timeout",
        type=_positive,
        default=60,
        help="seconds a client may pause while sending a body before it is cut off (60)",
    )
    serve.add_argument(
        "--dev", action="store_true", help="werkzeug's development server instead of gunicorn"
    )
    serve.add_argument(
        "--data",
        metavar="DIR",
        help="keep everything in DIR across restarts: a local S3 (rclone) that serve "
        "starts and stops; instead of S3BLOBS_BUCKET",
    )
    serve.add_argument(
        "--metrics-addr",
        help="serve Prometheus metrics on HOST:PORT (S3BLOBS_METRICS_ADDR; off by default)",
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.metrics_addr:
        os.environ["S3BLOBS_METRICS_ADDR"] = args.metrics_addr  # for gunicorn's master too
    if os.environ.get("S3BLOBS_METRICS_ADDR") and not args.dev:
        shared_metrics_dir()  # before prometheus_client is imported

    from ..config import Config
    from ..registry import create_app
    from ..registry.auth.settings import SecuritySettings, check_listen_address
    from ..registry.settings import OperationsSettings
    from ..storage import S3BlobStorage

    environ = dict(os.environ)
    # Security first: it needs no S3, and a registry open to the network by mistake
    # must not start at all.
    security = SecuritySettings.from_env(environ, tls_cert=args.tls_cert, tls_key=args.tls_key)
    check_listen_address(args.host, security)
    tls = security.ssl_context()
    store = serve_store.choose(args, environ)  # starts an embedded or local S3 if asked
    try:
        environ.update(store.environ)
        os.environ.update(store.environ)  # gunicorn's workers build their storage from it
        for line in store.lines:
            say(line)
        if store.kind == "local":
            args.workers = 1
        config = Config.from_env(environ)  # a bad variable fails here, before anything listens
        OperationsSettings.from_env(environ)  # S3BLOBS_METRICS_ADDR, _LOG_*, _NOTIFY_* too
        S3BlobStorage(config)  # and so does a missing bucket (one HeadBucket)
        listener = _listen(args.host, args.port)
        port = listener.getsockname()[1]
        workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
        server = "werkzeug (development)" if args.dev else f"gunicorn, {workers}"
        scheme = "https" if tls else "http"
        say(f"registry on {scheme}://{args.host}:{port} (bucket {config.bucket!r}; {server})")
        say(f"authentication: {security.mode}")

        def build() -> WSGIApp:
            app = create_app(environ, security, client=store.client(environ))
            return with_read_timeout(app, args.read_timeout)

        if args.dev:
            return _serve_dev(listener, build(), tls)
        return _serve_gunicorn(listener, build, args, security.tls_cert, security.tls_key)
    finally:
        store.stop()


def with_read_timeout(app: WSGIApp, seconds: float) -> WSGIApp:
    """Give the connection a timeout for every read of the request (gunicorn only:
    werkzeug's development server has none to offer)."""

    def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(seconds)
        return app(environ, start_response)

    return timed


def _serve_gunicorn(
    listener: socket.socket,
    build: Callable[[], WSGIApp],
    args: argparse.Namespace,
    certfile: str | None,
    keyfile: str | None,
) -> int:
    from gunicorn.app.base import BaseApplication

    from ..registry.metrics import gunicorn_when_ready

    options = {
        "bind": f"fd://{listener.fileno()}",
        "worker_class": "gthread",
        "workers": args.workers,
        "threads": args.threads,
        "timeout": 120,  # a silent worker; gthread workers heartbeat during long requests
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "control_socket_disable": True,  # one fixed path per user: replicas would collide
        "when_ready": gunicorn_when_ready,  # the master serves every worker's metrics
        **({"certfile": certfile, "keyfile": keyfile} if certfile else {}),
    }

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WSGIApp:
            # Each worker builds its own storage (and boto3 client) after the fork.
            return build()

    Server().run()
    return 0


def _serve_dev(listener: socket.socket, app: WSGIApp, tls: ssl.SSLContext | None) -> int:
    from werkzeug.serving import make_server

    host, port = listener.getsockname()[:2]
    server = make_server(host, port, app, threaded=True, fd=listener.fileno(), ssl_context=tls)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def shared_metrics_dir() -> None:
    """Several workers: each writes its metrics to files in PROMETHEUS_MULTIPROC_DIR
    and the master's listener serves their sum. A fresh directory unless one is given
    (it must start empty); it is left in the temporary directory."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="s3blobs-metrics-")


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so that a bad host or a busy port is a clear message, and port 0
    tells which port it picked."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: not an address this machine has ({exc})") from None
    listener = socket.socket(info[0], socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(info[4])
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(1024)
    listener.set_inheritable(True)
    return listener


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected 1 or more")
    return value
