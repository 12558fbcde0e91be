"""What watching the registry costs: requests/s of a blob HEAD and a manifest GET through
the registry's pipeline without its observability layers ("off": security headers,
authentication and authorization of an open registry, the API), through the whole
pipeline ("on": add the request id, metrics, the /healthz layer, and the access log
written to a file), and through the pipeline with access lines turned off
(S3BLOBS_LOG_LEVEL=warning), in the same run.

    python -m bench.bench_observability

The apps are served by werkzeug's threaded server (HTTP/1.1, keep-alive) in this
process, each with its own storage on one bucket of a moto server running in its own
process; the load comes from client processes with persistent connections, so the
server's GIL is the registry's alone. Rounds rotate the variants; the median counts.
The server's CPU time per request (this process's, clients excluded) is the steadier
figure on a shared machine.
"""

from __future__ import annotations

import http.client
import json
import logging
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from bench.support import moto_server, new_bucket
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.registry import RegistryApp, make_app
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.auth.wsgi import Authentication, Authorization
from s3blobs.registry.hardening import SecurityHeaders, WSGIApp
from s3blobs.registry.logformat import install_logging
from s3blobs.registry.requestlog import RequestLog
from s3blobs.registry.settings import OperationsSettings

ROUNDS = 5
SECONDS = 2.0
CLIENTS = 2  # processes, one persistent connection each
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class KeepAlive(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # werkzeug's own access line would be a third log


def serve(app: Any) -> int:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.port)


def hammer(port: int, method: str, path: str, seconds: float, counts: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request(method, path, headers={"Accept": MANIFEST})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        done += 1
    counts.put(done)


def rate(port: int, method: str, path: str) -> tuple[float, float]:
    """Requests/s, and the server's CPU time per request (this process's: the clients
    are other processes), in microseconds."""
    counts: Any = multiprocessing.Queue()
    cpu = time.process_time()
    clients = [
        multiprocessing.Process(target=hammer, args=(port, method, path, SECONDS, counts))
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    total = sum(counts.get(timeout=60) for _ in clients)
    cpu = time.process_time() - cpu
    for client in clients:
        client.join(timeout=10)
    return total / SECONDS, cpu / total * 1e6


def in_process(
    variants: dict[str, tuple[Any, bool]], method: str, path: str, count: int
) -> dict[str, float]:
    """Microseconds of CPU per request for each (app, access lines) variant: runs of
    ``count`` requests rotate the variants seven times; the median counts."""
    environ = EnvironBuilder(path=path, method=method, headers={"Accept": MANIFEST}).get_environ()
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(7):
        for name, (app, access_lines) in variants.items():
            access_log(access_lines)
            started = time.process_time()
            for _ in range(count):
                _, status, _ = run_wsgi_app(app, dict(environ), buffered=True)
                assert status.startswith("200"), status
            runs[name].append((time.process_time() - started) / count * 1e6)
    access_log(True)
    return {name: statistics.median(values) for name, values in runs.items()}


def unobserved(storage: S3BlobStorage) -> WSGIApp:
    """``make_app(storage)`` without the layers measured here: the same security
    layers of an open registry around the same API."""
    security = SecuritySettings()
    app: WSGIApp = RegistryApp(storage)
    app = Authorization(app, security.access, security.authenticator)
    return SecurityHeaders(Authentication(app, security.authenticator))


def access_log(on: bool) -> None:
    """Access lines on (INFO) or off, as S3BLOBS_LOG_LEVEL=warning would have it."""
    logging.getLogger("s3blobs.access").setLevel(logging.NOTSET if on else logging.WARNING)


def storage_on(endpoint: str, bucket: str) -> S3BlobStorage:
    config = Config(
        bucket=bucket, endpoint_url=endpoint, region="us-east-1", addressing_style="path"
    )
    return S3BlobStorage(config, DescriptorCacheFactory(config.cache_size, config.cache_ttl))


def push(storage: S3BlobStorage) -> str:
    """A config blob and a manifest tagged v1; returns the blob's digest."""
    config = storage.repository("bench/obs").put(
        "application/vnd.oci.image.config.v1+json", b'{"os": "linux"}'
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": config.media_type, "size": config.size, "digest": config.digest},
        "layers": [],
    }
    answer = Client(RegistryApp(storage)).put(
        "/v2/bench/obs/manifests/v1",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": MANIFEST},
    )
    assert answer.status_code == 201, answer.data
    return config.digest


def main() -> None:
    multiprocessing.set_start_method("fork")
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        bucket = new_bucket(endpoint)
        bare_storage, observed_storage = storage_on(endpoint, bucket), storage_on(endpoint, bucket)
        digest = push(bare_storage)
        log_file = open(Path(tmp) / "access.log", "w")  # noqa: SIM115 (closed with the dir)
        install_logging(OperationsSettings(), log_file)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        observed = serve(make_app(observed_storage))
        # variant: (port, whether access lines are written)
        variants = {
            "off": (serve(unobserved(bare_storage)), False),
            "on, no access lines": (observed, False),
            "on": (observed, True),
        }
        requests = {
            "blob HEAD (warm cache: no S3 request)": ("HEAD", f"/v2/bench/obs/blobs/{digest}"),
            "manifest GET by tag (2 S3 requests)": ("GET", "/v2/bench/obs/manifests/v1"),
        }
        in_process_count = dict(zip(requests, (1000, 100), strict=True))
        print(
            f"{CLIENTS} client processes x 1 keep-alive connection, {SECONDS:.0f} s per round, "
            f"{ROUNDS} rounds rotating the variants, median; werkzeug threaded server\n"
        )
        print("| request | variant | req/s | change | server CPU per request (us) |")
        print("|---|---|---|---|---|")
        rounds = []
        for label, (method, path) in requests.items():
            for port, _ in variants.values():  # warm: caches, connections
                rate(port, method, path)
            rates: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for round_number in range(ROUNDS):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    port, access_lines = variants[name]
                    access_log(access_lines)
                    per_second, cpu_us = rate(port, method, path)
                    rates[name].append(round(per_second))
                    cpu[name].append(round(cpu_us))
            access_log(True)
            off = statistics.median(rates["off"])
            for name in names:
                median = statistics.median(rates[name])
                change = "" if name == "off" else f"{(median - off) / off * 100:+.1f}%"
                print(
                    f"| {label} | {name} | {median:.0f} | {change} "
                    f"| {statistics.median(cpu[name]):.0f} |"
                )
                rounds.append(f"{label}, {name}: {rates[name]}")
        print("\nEvery round (req/s):\n" + "\n".join(rounds))
        print(
            "\nIn process, no HTTP server (werkzeug's run_wsgi_app), CPU time per request (us):\n"
        )
        bare = unobserved(bare_storage)
        layers = {
            "off": (bare, False),
            "+ request id and context": (RequestLog(bare), False),
            "+ metrics, /healthz layer": (make_app(observed_storage), False),
            "+ access line = on": (make_app(observed_storage), True),
        }
        print("| request | " + " | ".join(layers) + " |")
        print("|---|" + "---|" * len(layers))
        for label, (method, path) in requests.items():
            costs = in_process(layers, method, path, in_process_count[label])
            print(f"| {label} | " + " | ".join(f"{cost:.0f}" for cost in costs.values()) + " |")
        log_file.close()
        with open(Path(tmp) / "access.log") as written:
            print(f"\naccess log lines written by the 'on' apps: {sum(1 for _ in written)}")


if __name__ == "__main__":
    main()
