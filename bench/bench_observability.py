"""What watching the registry costs: requests/s of a blob HEAD and a manifest GET
through the registry as ``s3blobs serve`` runs it (gunicorn, a gthread worker, keep-alive
connections) without its observability layers ("off": security headers, authentication
and authorization of an open registry, the API), with all of them ("on": the request
id, metrics in multiprocess mode as ``serve`` sets them up, the /healthz layer, and an
access line per request on the worker's stderr, a file), and with the access lines
turned off (S3BLOBS_LOG_LEVEL=warning), in the same run.

    python -m bench.bench_observability

Each variant is a gunicorn server of one worker with 4 threads, the app built by
:func:`variant_app` from the same ``S3BLOBS_*`` settings and caches as
``create_app()``; S3 is a moto server in its own process, the load two client
processes with one persistent connection each. Every round starts fresh servers, one
per variant, and measures them one after another in an order that rotates: two
processes of the same code differ by a few per cent (hash seeds, memory layout), more
than what is measured, so each figure is a median over rounds, and the change is the
median of each round's change against the two "off" servers ("off" and "off again",
their mean) measured beside it; "off again" against "off" shows how far two servers of
the same code differ by chance. Within a round each server is measured in SLICES
short turns, taken in turn with the others, so that the machine's own ups and downs
(a second's rate varies by several per cent here) fall on every variant alike; the
middle half of the rounds' changes is printed beside the median. The servers' CPU time
per request (from /proc, clients excluded) is given too. Then the layers one by one in
this process, no server.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from bench.registries import ROOT, process_tree, s3blobs_environ
from bench.support import free_port, moto_server, new_bucket, wait_for_port
from s3blobs import Config, DescriptorCacheFactory, S3BlobStorage
from s3blobs.cache_backend import caches_from_config
from s3blobs.caches import ValueCache
from s3blobs.registry import RegistryApp, create_app, make_app
from s3blobs.registry.auth.settings import SecuritySettings
from s3blobs.registry.auth.wsgi import Authentication, Authorization
from s3blobs.registry.hardening import SecurityHeaders, WSGIApp
from s3blobs.registry.logformat import install_logging, uninstall_logging
from s3blobs.registry.proxies import BehindProxies, trusted_proxies
from s3blobs.registry.requestlog import RequestLog
from s3blobs.registry.settings import OperationsSettings

ROUNDS = 16
SLICES = 3  # turns at each server a round, interleaved with the other servers'
SECONDS = 0.75  # a turn
WARM_SECONDS = 0.5
CLIENTS = 2  # processes, one persistent connection each
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: "off again" is a second server of "off": its change is the benchmark's noise.
VARIANTS = ("off", "off again", "on, no access lines", "on")


def variant_app(variant: str) -> WSGIApp:
    """gunicorn's app for a variant: "off" is :func:`create_app` without the layers
    measured; the others are :func:`create_app` itself (the access lines follow
    S3BLOBS_LOG_LEVEL)."""
    if not variant.startswith("off"):
        return create_app()
    config = Config.from_env()
    install_logging(OperationsSettings.from_env())
    caches = caches_from_config(config)
    storage = S3BlobStorage(config, caches.descriptors, location_cache=caches.locations)
    return BehindProxies(unobserved(storage, caches.manifests), trusted_proxies())


@contextlib.contextmanager
def gunicorn(
    variant: str,
    endpoint: str,
    bucket: str,
    workdir: Path,
    *,
    factory: str = "bench.bench_observability:variant_app",
    wrapper: Sequence[str] = (),
    seconds: float = 60,
    settings: Mapping[str, str] | None = None,
) -> Iterator[tuple[int, int]]:
    """A gunicorn server of ``variant`` (its app made by ``factory(variant)``; the
    command run under ``wrapper``, a tool such as valgrind, which may make it
    ``seconds`` slow to start and to stop; ``settings``: environment variables set
    besides); yields its port and its master's pid."""
    port = free_port()
    environ = s3blobs_environ(endpoint, bucket)
    environ["S3BLOBS_LOG_LEVEL"] = "warning" if variant == "on, no access lines" else "info"
    if not variant.startswith("off"):  # as `s3blobs serve` runs its workers
        metrics = workdir / f"metrics-{port}"
        metrics.mkdir()
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    environ.update(settings or {})
    command = [
        *wrapper,
        *(sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1"),
        *("--threads", "4", "--keep-alive", "75", "--no-control-socket"),
        *("--timeout", str(round(seconds)), "--bind", f"127.0.0.1:{port}"),
        f"{factory}({variant!r})",
    ]
    log = (workdir / f"{variant}-{port}.log").open("wb")
    proc = subprocess.Popen(command, env=environ, stdout=log, stderr=log, cwd=ROOT)
    try:
        wait_for_port(port, proc, f"gunicorn ({variant})", seconds=seconds)
        while len(process_tree(proc.pid)) < 2:  # gunicorn listens, then starts its worker
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=seconds)
        log.close()


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time of the processes so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def hammer(port: int, method: str, path: str, seconds: float, counts: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        connection.request(method, path, headers={"Accept": MANIFEST})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        assert not response.will_close, "the server closed a keep-alive connection"
        done += 1
    counts.put(done)


def rate(
    port: int, server: list[int], method: str, path: str, seconds: float = SECONDS
) -> tuple[float, float]:
    """Requests/s, and the server's CPU time per request in microseconds."""
    counts: Any = multiprocessing.Queue()
    cpu = cpu_seconds(server)
    clients = [
        multiprocessing.Process(target=hammer, args=(port, method, path, seconds, counts))
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    total = sum(counts.get(timeout=60) for _ in clients)
    cpu = cpu_seconds(server) - cpu
    for client in clients:
        client.join(timeout=10)
    return total / seconds, cpu / total * 1e6


def in_process(
    variants: dict[str, tuple[Any, bool]], method: str, path: str, count: int
) -> dict[str, float]:
    """Microseconds of CPU per request for each (app, access lines) variant: runs of
    ``count`` requests rotate the variants seven times; the median counts."""
    environ = EnvironBuilder(path=path, method=method, headers=[("Accept", MANIFEST)]).get_environ()
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


def unobserved(
    storage: S3BlobStorage, manifest_cache: ValueCache[tuple[str, bytes]] | None = None
) -> WSGIApp:
    """``make_app(storage)`` without the layers measured here: the same security
    layers of an open registry around the same API."""
    security = SecuritySettings()
    app: WSGIApp = RegistryApp(storage, manifest_cache)
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


REQUESTS = {
    "blob HEAD (warm cache: no S3 request)": "HEAD",
    "manifest GET by tag (warm cache: 1 S3 request)": "GET",
}


def measure_round(
    endpoint: str, bucket: str, workdir: Path, paths: dict[str, str], shift: int
) -> tuple[dict[tuple[str, str], tuple[float, float]], dict[str, Path]]:
    """One round on fresh servers: {(request, variant): (req/s, CPU us per request)},
    and each variant's log."""
    figures = {}
    with contextlib.ExitStack() as stack:
        # Started in the order they are measured in: when "off" was always started first
        # it was the slower of the two "off" servers in 13 and in 15 rounds of 16 (by 2%
        # and 3%, the median), in two runs.
        order = VARIANTS[shift:] + VARIANTS[:shift]
        servers = {
            variant: stack.enter_context(gunicorn(variant, endpoint, bucket, workdir))
            for variant in order
        }
        for label, method in REQUESTS.items():
            for variant in order:
                port, pid = servers[variant]
                rate(port, process_tree(pid), method, paths[label], seconds=WARM_SECONDS)
            turns: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
            for _ in range(SLICES):
                for variant in order:
                    port, pid = servers[variant]
                    turns[variant].append(rate(port, process_tree(pid), method, paths[label]))
            for variant, measured in turns.items():
                rates, cpu = zip(*measured, strict=True)
                figures[label, variant] = (statistics.mean(rates), statistics.mean(cpu))
        logs = {name: workdir / f"{name}-{port}.log" for name, (port, _) in servers.items()}
    return figures, logs


def change_in_round(
    figures: dict[tuple[str, str], tuple[float, float]], label: str, variant: str
) -> float:
    """The variant's req/s in one round, in % against "off": for "off again" against the
    other "off" server (the chance difference between two), for the others against the
    mean of both (a baseline measured twice)."""
    off, again = figures[label, "off"][0], figures[label, "off again"][0]
    baseline = off if variant == "off again" else (off + again) / 2
    return (figures[label, variant][0] / baseline - 1) * 100


def main() -> None:
    multiprocessing.set_start_method("fork")
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        workdir = Path(tmp)
        bucket = new_bucket(endpoint)
        bare_storage, observed_storage = storage_on(endpoint, bucket), storage_on(endpoint, bucket)
        digest = push(bare_storage)
        paths = dict(
            zip(
                REQUESTS,
                (f"/v2/bench/obs/blobs/{digest}", "/v2/bench/obs/manifests/v1"),
                strict=True,
            )
        )
        print(
            f"{ROUNDS} rounds, each on fresh servers (gunicorn, 1 gthread worker, 4 threads) "
            f"measured in {SLICES} turns of {SECONDS} s each, in a rotating order; "
            f"{CLIENTS} client processes x 1 keep-alive connection; medians over the rounds\n"
        )
        rounds: list[dict[tuple[str, str], tuple[float, float]]] = []
        access_lines = 0
        for number in range(ROUNDS):
            figures, logs = measure_round(endpoint, bucket, workdir, paths, number % len(VARIANTS))
            rounds.append(figures)
            access_lines += sum(
                " s3blobs.access " in line for line in logs["on"].read_text().splitlines()
            )
        print(
            "| request | variant | req/s | change | middle half of rounds "
            "| server CPU per request (us) |"
        )
        print("|---|---|---|---|---|---|")
        every = []
        for label in REQUESTS:
            for variant in VARIANTS:
                per_second = [figures[label, variant][0] for figures in rounds]
                cpu = [figures[label, variant][1] for figures in rounds]
                changes = [change_in_round(figures, label, variant) for figures in rounds]
                change = spread = ""
                if variant != "off":
                    low, middle, high = statistics.quantiles(changes, n=4)
                    change, spread = f"{middle:+.1f}%", f"{low:+.1f}% to {high:+.1f}%"
                print(
                    f"| {label} | {variant} | {statistics.median(per_second):.0f} | {change} "
                    f"| {spread} | {statistics.median(cpu):.0f} |"
                )
                every.append(
                    f"{label}, {variant}: {[round(value) for value in per_second]}"
                    + ("" if variant == "off" else f", change {[round(c, 1) for c in changes]}")
                )
        print("\nEvery round (req/s, and the change in the same round):\n" + "\n".join(every))
        print(f"\naccess lines written by the 'on' servers: {access_lines}")

        print(
            "\nIn process, no HTTP server (werkzeug's run_wsgi_app), CPU time per request (us):\n"
        )
        log_file = open(workdir / "access.log", "w")  # noqa: SIM115 (closed below)
        handler = install_logging(OperationsSettings(), log_file)
        bare = unobserved(bare_storage)
        layers = {
            "off": (bare, False),
            "+ request id and context": (RequestLog(bare), False),
            "+ metrics, /healthz layer": (make_app(observed_storage), False),
            "+ access line = on": (make_app(observed_storage), True),
        }
        print("| request | " + " | ".join(layers) + " |")
        print("|---|" + "---|" * len(layers))
        in_process_count = dict(zip(REQUESTS, (1000, 200), strict=True))
        for label, method in REQUESTS.items():
            costs = in_process(layers, method, paths[label], in_process_count[label])
            print(f"| {label} | " + " | ".join(f"{cost:.0f}" for cost in costs.values()) + " |")
        uninstall_logging(handler)  # writes its last lines while the file is open
        log_file.close()


if __name__ == "__main__":
    main()
