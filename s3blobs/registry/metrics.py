"""Prometheus metrics: what the registry answered, what it asked S3, and what it holds.

HTTP figures come from each finished request (``RegistryMetrics.observe``, an
observer of :class:`~.requestlog.RequestLog`): the route, method and status say
when an upload started, committed, failed or was cancelled, a manifest was
pushed or pulled, a redirect was issued, or authentication failed. S3 figures come
from the botocore events the storage's client already emits, registered in
:func:`instrument_s3_client`: one count per HTTP attempt (retries included, as S3
counts them) by operation and outcome, and the latency of each call. The
descriptor cache counts its own hits, misses and evictions (``CacheStats``); they
are copied here as they grow.

Metrics are served on their own listener (``serve_metrics``; S3BLOBS_METRICS_ADDR),
never by the registry's port. With ``PROMETHEUS_MULTIPROC_DIR`` set (several
gunicorn workers) every process writes its figures there and the listener, held by
whichever process binds the address first, serves their sum. That is gunicorn's
master when its ``when_ready`` hook is :func:`gunicorn_when_ready`, so the listener
outlives worker restarts; without the hook, a worker holds it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server

from ..errors import ConfigError
from ..s3 import THROTTLED
from ..storage import S3BlobStorage
from .auth.wsgi import AUTH_FAILURE
from .requestlog import Exchange, current_exchange
from .settings import OperationsSettings

log = logging.getLogger(__name__)

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_REQUESTS = Counter(
    "s3blobs_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "s3blobs_http_request_duration_seconds",
    "Time from a request's arrival to the last byte of its answer",
    ["route", "method"],
    buckets=_SECONDS,
)
RECEIVED_BYTES = Counter("s3blobs_http_received_bytes", "Request body bytes read", ["route"])
SENT_BYTES = Counter("s3blobs_http_sent_bytes", "Response body bytes sent", ["route"])
REDIRECTS = Counter("s3blobs_blob_redirects", "Blob GETs answered by a redirect to S3")
UPLOADS_STARTED = Counter("s3blobs_uploads_started", "Blob uploads started")
UPLOADS_COMMITTED = Counter("s3blobs_uploads_committed", "Blob uploads committed")
UPLOADS_FAILED = Counter(
    "s3blobs_uploads_failed", "Upload requests (POST with a body, PATCH, PUT) that failed"
)
UPLOADS_CANCELLED = Counter("s3blobs_uploads_cancelled", "Blob uploads cancelled by the client")
UPLOADS_OPEN = Gauge(
    "s3blobs_uploads_open",
    "Uploads started here and not yet committed or cancelled",
    multiprocess_mode="sum",  # started in one worker, finished in another
)
MANIFESTS_PUSHED = Counter("s3blobs_manifests_pushed", "Manifests stored")
MANIFESTS_PULLED = Counter("s3blobs_manifests_pulled", "Manifests served (GET)")
AUTH_FAILURES = Counter("s3blobs_auth_failures", "Requests refused a 401 or 403", ["reason"])
S3_REQUESTS = Counter(
    "s3blobs_s3_requests", "HTTP requests to S3, retries included", ["operation", "outcome"]
)
S3_DURATION = Histogram(
    "s3blobs_s3_request_duration_seconds",
    "Time an S3 call took, its retries included",
    ["operation"],
    buckets=_SECONDS,
)
CACHE_HITS = Counter("s3blobs_descriptor_cache_hits", "Descriptor cache hits")
CACHE_MISSES = Counter("s3blobs_descriptor_cache_misses", "Descriptor cache misses")
CACHE_EVICTIONS = Counter("s3blobs_descriptor_cache_evictions", "Descriptors evicted for room")
GC_RUNS = Counter("s3blobs_gc_runs", "Garbage collection runs", ["outcome"])
GC_DELETED_OBJECTS = Counter("s3blobs_gc_deleted_objects", "Objects deleted by gc", ["kind"])
GC_DELETED_BYTES = Counter("s3blobs_gc_deleted_bytes", "Bytes deleted by gc")
EVENTS_SENT = Counter("s3blobs_events_sent", "Notification events delivered", ["endpoint"])
EVENTS_DROPPED = Counter(
    "s3blobs_events_dropped", "Notification events given up on", ["endpoint", "reason"]
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RegistryMetrics:
    """The metrics of one registry app: instruments its storage's S3 client, and
    observes every finished request."""

    def __init__(self, storage: S3BlobStorage) -> None:
        instrument_s3_client(storage.client)
        stats = getattr(storage.descriptor_service_factory, "stats", None)
        self._cache = _CacheStatsExport(stats) if stats is not None else None
        # prometheus_client's .labels() takes a lock and builds a key: remember the
        # children per (route, method, status) instead (a few dozen at most).
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    def observe(self, exchange: Exchange) -> None:
        route = exchange.route
        method = exchange.method if exchange.method in _METHODS else "OTHER"
        status = exchange.status
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(route, method, str(status)),
                HTTP_DURATION.labels(route, method),
                RECEIVED_BYTES.labels(route),
                SENT_BYTES.labels(route),
            )
            self._children[key] = children
        requests, duration, received, sent = children
        requests.inc()
        duration.observe(exchange.duration)
        if exchange.bytes_in:
            received.inc(exchange.bytes_in)
        if exchange.bytes_out:
            sent.inc(exchange.bytes_out)
        if route in _ROUTE_COUNTS:
            _ROUTE_COUNTS[route](exchange, method, status)
        if status in (401, 403):
            _auth_failure(exchange, status)
        if self._cache is not None:
            self._cache.sync()


def _uploads(exchange: Exchange, method: str, status: int) -> None:
    """POST .../blobs/uploads/: 202 opens an upload; ``?digest=`` is a whole upload."""
    if method != "POST":
        return
    if status == 202:
        UPLOADS_STARTED.inc()
        UPLOADS_OPEN.inc()
    elif "digest=" in exchange.query:
        UPLOADS_STARTED.inc()
        if status == 201:
            UPLOADS_COMMITTED.inc()
        elif status >= 400:
            UPLOADS_FAILED.inc()


def _upload(exchange: Exchange, method: str, status: int) -> None:
    """PATCH, PUT and DELETE on an open upload."""
    if method == "PUT" and status == 201:
        UPLOADS_COMMITTED.inc()
        UPLOADS_OPEN.dec()
    elif method in ("PUT", "PATCH") and status >= 400:
        UPLOADS_FAILED.inc()
    elif method == "DELETE" and status == 204:
        UPLOADS_CANCELLED.inc()
        UPLOADS_OPEN.dec()


def _manifest(exchange: Exchange, method: str, status: int) -> None:
    if method == "PUT" and status == 201:
        MANIFESTS_PUSHED.inc()
    elif method == "GET" and status == 200:
        MANIFESTS_PULLED.inc()


def _blob(exchange: Exchange, method: str, status: int) -> None:
    if method == "GET" and status == 307:
        REDIRECTS.inc()


_ROUTE_COUNTS = {"uploads": _uploads, "upload": _upload, "manifest": _manifest, "blob": _blob}


def _auth_failure(exchange: Exchange, status: int) -> None:
    """Why a request was refused, in a few words (bounded: a label)."""
    environ = exchange.environ
    if status == 403:
        reason = "denied"  # who it is may not do this
    elif AUTH_FAILURE in environ:
        reason = "rejected_credentials"  # a password or token that does not check out
    elif "HTTP_AUTHORIZATION" in environ:
        reason = "insufficient_scope"  # a valid token without this access
    else:
        reason = "no_credentials"  # the challenge every client starts with
    AUTH_FAILURES.labels(reason).inc()


class _CacheStatsExport:
    """Adds what a CacheStats gained since the last look to the cache counters."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats
        self._lock = threading.Lock()
        self._seen = (0, 0, 0)

    def sync(self) -> None:
        stats = self._stats
        with self._lock:  # read under it too: a late reader must not move _seen back
            hits, misses, evictions = stats.hits, stats.misses, getattr(stats, "evictions", 0)
            seen_hits, seen_misses, seen_evictions = self._seen
            self._seen = (hits, misses, evictions)
        if hits > seen_hits:
            CACHE_HITS.inc(hits - seen_hits)
        if misses > seen_misses:
            CACHE_MISSES.inc(misses - seen_misses)
        if evictions > seen_evictions:
            CACHE_EVICTIONS.inc(evictions - seen_evictions)


# S3 ----------------------------------------------------------------------------------

_STARTED = "s3blobs_metrics_started"
# Label children by key, as for HTTP: .labels() costs a lock and a tuple each time.
_S3_COUNTS: dict[tuple[str, str], Any] = {}
_S3_DURATIONS: dict[str, Any] = {}


def instrument_s3_client(client: Any) -> None:
    """Count every S3 request ``client`` makes (once per client, however often called)."""
    events = client.meta.events
    events.register("before-call.s3.*", _call_started, unique_id="s3blobs-metrics-call")
    events.register("response-received.s3.*", _attempt_answered, unique_id="s3blobs-metrics-try")
    events.register("after-call.s3.*", _call_ended, unique_id="s3blobs-metrics-done")
    events.register("after-call-error.s3.*", _call_ended, unique_id="s3blobs-metrics-error")


def _call_started(context: dict[str, Any], **_: Any) -> None:
    context[_STARTED] = time.perf_counter()


def _attempt_answered(
    event_name: str,
    response_dict: dict[str, Any] | None = None,
    parsed_response: dict[str, Any] | None = None,
    exception: Exception | None = None,
    **_: Any,
) -> None:
    """One HTTP attempt answered (or failed to be): what S3 itself would count."""
    key = (event_name.rpartition(".")[2], s3_outcome(response_dict, parsed_response, exception))
    counter = _S3_COUNTS.get(key)
    if counter is None:
        counter = _S3_COUNTS.setdefault(key, S3_REQUESTS.labels(*key))
    counter.inc()
    exchange = current_exchange()
    if exchange is not None:
        exchange.s3_requests += 1


def _call_ended(event_name: str, context: dict[str, Any], **_: Any) -> None:
    started = context.get(_STARTED)
    if started is None:
        return
    operation = event_name.rpartition(".")[2]
    histogram = _S3_DURATIONS.get(operation)
    if histogram is None:
        histogram = _S3_DURATIONS.setdefault(operation, S3_DURATION.labels(operation))
    histogram.observe(time.perf_counter() - started)


def s3_outcome(
    response: dict[str, Any] | None, parsed: dict[str, Any] | None, exception: Exception | None
) -> str:
    """ok, not_found, precondition_failed (the expected misses and races), or one of
    client_error, throttled, server_error, network_error (what an operator alerts on)."""
    if exception is not None or response is None:
        return "network_error"
    status = int(response.get("status_code", 0))
    if status < 400:
        return "ok"
    code = str(((parsed or {}).get("Error") or {}).get("Code", ""))
    if status == 429 or code in THROTTLED:
        return "throttled"
    if status >= 500:
        return "server_error"
    if status == 404:
        return "not_found"
    if status in (409, 412):
        return "precondition_failed"
    return "client_error"


# The listener -----------------------------------------------------------------------


class MetricsListener:
    """The HTTP server answering scrapes; ``port`` is where it listens."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def serve_metrics(addr: tuple[str, int]) -> MetricsListener | None:
    """Serve the metrics on ``addr``. In multiprocess mode the address is shared by
    every worker: the first to bind serves all, and the others get None."""
    host, port = addr
    registry: Any = REGISTRY
    directory = multiprocess_dir()
    if directory is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    try:
        server, thread = _start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if directory is not None and exc.errno == errno.EADDRINUSE:
            log.info("metrics: %s:%d is served by another process", host, port)
            return None
        hint = (
            " (several worker processes? set PROMETHEUS_MULTIPROC_DIR so they share it)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(
            f"S3BLOBS_METRICS_ADDR={host}:{port}: cannot listen there: {exc.strerror}{hint}"
        ) from None
    listener = MetricsListener(server, thread)
    log.info("metrics on http://%s:%d/metrics", host, listener.port)
    return listener


def gunicorn_when_ready(server: Any) -> None:
    """gunicorn's ``when_ready`` hook: in multiprocess mode the master serves the
    metrics of every worker (the workers find the address taken and leave it).
    Otherwise it does nothing: the master has no figures of its own to serve."""
    addr = OperationsSettings.from_env().metrics_addr
    if addr is not None and multiprocess_dir() is not None:
        serve_metrics(addr)
